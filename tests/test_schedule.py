import math

import pytest

from alexnet_jax import schedule
from alexnet_jax.configs import paper


def _cfg(**kw):
  cfg = paper.get_config().train  # Every field a run's config has.
  cfg.update(dict(
      schedule="plateau", learning_rate=0.01, lr_drop_factor=10.0, plateau_patience=2,
      plateau_min_delta=0.0, max_lr_drops=3, step_epochs=(1, 2)))
  cfg.update(kw)
  return cfg


def test_plateau_divides_after_patience_and_at_most_three_times():
  s = schedule.create(_cfg(), steps_per_epoch=10)
  errors = [0.9, 0.8, 0.8, 0.81, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4]
  rates = []
  for e in errors:
    s.update(e)
    rates.append(s.rate(0))
  # Drops after the 2nd bad eval in a row: evals 4 (0.81), 7, 10; then capped at 3 drops.
  assert [round(math.log10(0.01 / r)) for r in rates] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3,
                                                          3, 3, 3, 3]
  assert s.drops == 3 and s.best_error == 0.4


def test_plateau_keeps_the_rate_until_the_error_has_improved_at_it():
  """A network stuck at chance keeps its rate: the error never improved, so it cannot have
  stopped improving. After a drop, the new rate must improve the error before the next."""
  stuck = schedule.create(_cfg(), steps_per_epoch=10)
  assert not any(stuck.update(0.9) for _ in range(10)) and stuck.rate(0) == 0.01
  s = schedule.create(_cfg(), steps_per_epoch=10)
  dropped = [s.update(e) for e in [0.9, 0.9, 0.9, 0.85, 0.9, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8,
                                   0.8]]
  assert [i for i, d in enumerate(dropped) if d] == [5, 11]


def test_plateau_state_round_trips_through_a_dict():
  s = schedule.create(_cfg(), steps_per_epoch=10)
  for e in [0.5, 0.4, 0.6, 0.6]:
    s.update(e)
  fresh = schedule.create(_cfg(), steps_per_epoch=10)
  restored = schedule.from_dict(fresh, schedule.to_dict(s))
  assert restored == s and restored.rate(0) == 0.001


def test_step_schedule_divides_at_epoch_boundaries():
  s = schedule.create(_cfg(schedule="step"), steps_per_epoch=10)
  assert [s.rate(t) for t in (0, 9, 10, 19, 20, 99)] == [0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4]
  assert schedule.from_dict(s, schedule.to_dict(s)) == s


def test_unknown_schedule_is_refused():
  try:
    schedule.create(_cfg(schedule="cosine"), steps_per_epoch=1)
  except ValueError as e:
    assert "config.train.schedule" in str(e)
  else:
    raise AssertionError("expected ValueError")


def test_settings_changed_on_resume_are_applied_and_said():
  s = schedule.create(_cfg(), steps_per_epoch=10)
  for e in [0.5, 0.4, 0.6, 0.6]:   # Improved, then two bad evaluations: divided once.
    s.update(e)
  assert (s.drops, s.rate(0)) == (1, 0.001)
  said = []
  new = schedule.create(_cfg(learning_rate=0.02, plateau_patience=3), steps_per_epoch=10)
  resumed = schedule.from_dict(new, schedule.to_dict(s), log=said.append)
  assert resumed.rate(0) == pytest.approx(0.002) and resumed.patience == 3
  assert (resumed.drops, resumed.best_error, resumed.bad_evals) == (1, 0.4, 0)
  assert said == ["config.train.learning_rate changed on resume: the checkpoint's schedule had "
                  "initial_rate=0.01, this run's has initial_rate=0.02.",
                  "config.train.plateau_patience changed on resume: the checkpoint's schedule "
                  "had patience=2, this run's has patience=3."]


def test_a_checkpoint_without_the_initial_rate_resumes_unchanged():
  s = schedule.create(_cfg(), steps_per_epoch=10)
  for e in [0.5, 0.4, 0.6, 0.6]:
    s.update(e)
  old = {k: v for k, v in schedule.to_dict(s).items() if k != "initial_rate"}
  said = []
  resumed = schedule.from_dict(schedule.create(_cfg(), steps_per_epoch=10), old, said.append)
  assert resumed == s and said == []


def test_step_settings_on_resume_are_this_runs():
  s = schedule.create(_cfg(schedule="step"), steps_per_epoch=10)
  said = []
  new = schedule.create(_cfg(schedule="step", step_epochs=(3, 4)), steps_per_epoch=10)
  assert schedule.from_dict(new, schedule.to_dict(s), said.append) == new
  assert said == ["config.train.step_epochs changed on resume: the checkpoint's schedule had "
                  "boundaries=(10, 20), this run's has boundaries=(30, 40)."]


def test_rate_rules_scale_from_the_base_batch():
  train = paper.get_config().train
  train.update(batch_size=8192, learning_rate=0.01)
  assert schedule.scaled_rate(train) == 0.01  # "none": section 5's rate as given.
  train.lr_scaling = "sqrt"
  assert schedule.scaled_rate(train) == pytest.approx(0.08)  # x sqrt(64)
  train.lr_scaling = "linear"
  assert schedule.scaled_rate(train) == pytest.approx(0.64)  # x 64
  train.update(schedule="poly", warmup_epochs=2.0, poly_power=2.0)
  poly = schedule.create(train, steps_per_epoch=10, total_steps=120)
  assert [poly.rate(s) for s in (0, 10, 20)] == pytest.approx([0.01, 0.325, 0.64])
  assert poly.rate(70) == pytest.approx(0.64 * 0.5**2)  # Half-way through the decay.
  assert poly.rate(120) == 0.0
  # A resumed run goes on with its own poly schedule.
  assert schedule.from_dict(poly, schedule.to_dict(poly)) is poly
