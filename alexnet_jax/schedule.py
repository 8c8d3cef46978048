"""Learning-rate schedules, host-side state kept in the checkpoint: section 5's `Plateau`,
`Steps`, and for large batches `scaled_rate` and `Poly` (docs/design.md, "Schedules");
`create`, `to_dict`, `from_dict`."""
import dataclasses
import math

from alexnet_jax import errors


@dataclasses.dataclass
class Plateau:
  """Divides the rate by `factor` after `patience` evaluations without improvement, once the
  error has improved at this rate: a run stuck at chance keeps its rate."""
  learning_rate: float
  factor: float = 10.0
  patience: int = 1
  min_delta: float = 0.0
  max_drops: int = 3
  initial_rate: float = None    # config.train.learning_rate, the rate before any drop.
  best_error: float = float("inf")
  bad_evals: int = 0
  drops: int = 0
  improved: bool = False        # Whether the error improved since the rate was last set.

  def update(self, val_error):
    """Takes one validation error; returns True when the rate was just divided."""
    if val_error < self.best_error - self.min_delta:
      self.improved = self.improved or self.best_error != float("inf")
      self.best_error, self.bad_evals = val_error, 0
      return False
    self.bad_evals += 1
    if self.bad_evals < self.patience or self.drops >= self.max_drops or not self.improved:
      return False
    self.learning_rate /= self.factor
    self.drops, self.bad_evals, self.improved = self.drops + 1, 0, False
    return True

  def rate(self, step):
    del step
    return self.learning_rate


class _Fixed:
  """A schedule the validation error leaves as it is."""

  def update(self, val_error):
    del val_error
    return False


@dataclasses.dataclass
class Steps(_Fixed):
  """Divides the rate by `factor` at each of the given epochs (a fixed alternative)."""
  learning_rate: float
  boundaries: tuple = ()        # In steps.
  factor: float = 10.0

  def rate(self, step):
    drops = sum(step >= b for b in self.boundaries)
    return self.learning_rate / self.factor**drops


SCALINGS = ("none", "sqrt", "linear")


def scaled_rate(train_cfg):
  """config.train.learning_rate scaled by lr_scaling from lr_base_batch to batch_size."""
  rule = train_cfg.lr_scaling
  if rule not in SCALINGS:
    raise errors.ConfigError(f"config.train.lr_scaling={rule!r}: use one of {SCALINGS}.")
  if rule == "none":
    return train_cfg.learning_rate
  k = train_cfg.batch_size / train_cfg.lr_base_batch
  return train_cfg.learning_rate * (math.sqrt(k) if rule == "sqrt" else k)


@dataclasses.dataclass
class Poly(_Fixed):
  """Linear warmup from `start_rate` (Goyal et al. 2017, 2.2), then learning_rate x
  (1 - t / T)^power to 0 at `total_steps` (You et al. 2017): a function of the step alone."""
  learning_rate: float
  total_steps: int
  warmup_steps: int = 0
  start_rate: float = 0.0
  power: float = 2.0
  drops: int = 0
  max_drops: int = 0

  def rate(self, step):
    if step < self.warmup_steps:
      return self.start_rate + (self.learning_rate - self.start_rate) * step / self.warmup_steps
    span = max(1, self.total_steps - self.warmup_steps)
    left = max(0.0, 1.0 - (step - self.warmup_steps) / span)
    return self.learning_rate * left**self.power


def create(train_cfg, steps_per_epoch, total_steps=0):
  """The schedule `train_cfg.schedule` names, fresh, at `scaled_rate`."""
  rate = scaled_rate(train_cfg)
  if train_cfg.schedule == "poly":
    return Poly(learning_rate=rate, total_steps=int(total_steps),
                warmup_steps=int(round(train_cfg.warmup_epochs * steps_per_epoch)),
                start_rate=train_cfg.learning_rate, power=train_cfg.poly_power)
  if train_cfg.schedule == "plateau":
    return Plateau(learning_rate=rate, initial_rate=rate, factor=train_cfg.lr_drop_factor,
                   patience=train_cfg.plateau_patience, min_delta=train_cfg.plateau_min_delta,
                   max_drops=train_cfg.max_lr_drops)
  if train_cfg.schedule == "step":
    return Steps(learning_rate=rate, factor=train_cfg.lr_drop_factor,
                 boundaries=tuple(int(e * steps_per_epoch) for e in train_cfg.step_epochs))
  raise errors.ConfigError(f"config.train.schedule={train_cfg.schedule!r}: expected 'plateau', "
                           "'step' or 'poly'.")


def to_dict(schedule):
  return dataclasses.asdict(schedule)


# The settings each schedule takes from config.train, by field.
SETTINGS = {"initial_rate": "learning_rate", "factor": "lr_drop_factor",
            "patience": "plateau_patience", "min_delta": "plateau_min_delta",
            "max_drops": "max_lr_drops"}
STEP_SETTINGS = {"learning_rate": "learning_rate", "boundaries": "step_epochs",
                 "factor": "lr_drop_factor"}


def from_dict(schedule, state, log=print):
  """`schedule` (this run's config) with the progress `to_dict` saved in `state`; settings
  that changed are this run's, each said through `log` (docs/design.md, "Schedules")."""
  kind = Steps if "boundaries" in state else Poly if "total_steps" in state else Plateau
  if not isinstance(schedule, kind):
    log(f"config.train.schedule changed on resume: the checkpoint's {kind.__name__} "
        f"schedule is replaced by this run's {type(schedule).__name__}, from its start.")
    return schedule
  if kind is Steps:
    _log_changes({**state, "boundaries": tuple(state["boundaries"])},
                 dataclasses.asdict(schedule), STEP_SETTINGS, log)
  if kind is not Plateau:  # Poly is a function of the step alone: nothing to carry over.
    return schedule
  stored = Plateau(**state)
  if stored.initial_rate is None:  # Saved before the initial rate was: undo the drops.
    stored.initial_rate = stored.learning_rate * stored.factor**stored.drops
  changed = _log_changes(dataclasses.asdict(stored), dataclasses.asdict(schedule), SETTINGS, log)
  progress = {k: getattr(stored, k) for k in ("best_error", "bad_evals", "drops", "improved",
                                              "learning_rate")}
  if {"initial_rate", "factor"} & set(changed):
    progress["learning_rate"] = schedule.initial_rate / schedule.factor**stored.drops
  return dataclasses.replace(schedule, **progress)


def _log_changes(stored, now, settings, log):
  changed = [k for k in settings if k in stored and stored[k] != now[k]]
  for k in changed:
    log(f"config.train.{settings[k]} changed on resume: the checkpoint's schedule had "
        f"{k}={stored[k]!r}, this run's has {k}={now[k]!r}.")
  return changed
