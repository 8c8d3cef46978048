"""The program end to end on a tiny config (tests/tiny_config.py): metrics, checkpoints,
resume after SIGKILL, the NaN stop, CLI overrides, refused checkpoints, eval-only mode."""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import metrics
from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager
from tests import tiny_config
from tests import trees

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(cache_dir):
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  return config


def _final_params(workdir, config):
  mesh = parallel.make_mesh(config.mesh.model)
  mgr = manager.create(workdir)
  restored, _ = manager.restore_for_run(mgr, steps.abstract_state(config, mesh))
  mgr.close()
  return int(restored.step), jax.tree.map(np.asarray, restored.params)


def _run_cli(workdir, cache_dir, *overrides, prelude=""):
  """`python -m alexnet_jax.main` in a subprocess; `prelude` runs first (to plant a SIGKILL)."""
  argv = ["alexnet_jax.main", "--config=tests/tiny_config.py", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}", *overrides]
  code = (f"import sys\n{prelude}\nfrom absl import app\nfrom alexnet_jax import main\n"
          f"sys.argv = {argv!r}\napp.run(main.main)\n")
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_a_short_run_logs_evaluates_and_checkpoints(tmp_path, cache_dir):
  config = _config(cache_dir)
  summary = train.train_and_evaluate(config, tmp_path)
  assert summary["status"] == "finished" and summary["steps"] == 6
  rows = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  train_rows = [r for r in rows if "train_loss" in r]
  assert [r["step"] for r in train_rows] == [2, 4, 6]
  assert all(np.isfinite(r["train_loss"]) and 0 <= r["train_top1_error"] <= 1
             for r in train_rows)
  val_steps = [r["step"] for r in rows
               if "val_top1_error" in r and "val_top1_error_10crop" not in r]
  assert val_steps == [5, 6]  # Every half epoch (10 steps of 8 per epoch) and at the end.
  assert 0 <= summary["val_top1_error_10crop"] <= 1
  assert summary["best_val_top1_error"] == min(r["val_top1_error"] for r in rows
                                               if "val_top1_error" in r and "step" in r
                                               and "val_top1_error_10crop" not in r)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 0.125
  assert (tmp_path / "summary.json").exists() and list((tmp_path / "tensorboard").iterdir())
  step, params = _final_params(tmp_path, config)
  assert step == 6 and all(np.isfinite(p).all() for p in jax.tree.leaves(params))

  # Started again on a finished workdir, it trains no more and keeps the parameters.
  again = train.train_and_evaluate(config, tmp_path)
  assert again["steps"] == 6 and _final_params(tmp_path, config)[0] == 6
  assert again["final_val_top1_error"] == summary["final_val_top1_error"]
  assert again["val_top1_error_10crop"] == summary["val_top1_error_10crop"]

  # Eval-only: the latest checkpoint on the whole validation split (10 classes x 3).
  result = train.train_and_evaluate(_eval_only(config), tmp_path)
  assert result["count"] == 30
  assert result["val_top1_error_10crop"] == pytest.approx(summary["val_top1_error_10crop"])

  # Another width: refused, naming the field, and the checkpoint is left as it was.
  wider = _config(cache_dir)
  wider.model.width = 0.25
  with pytest.raises(compatibility.IncompatibleCheckpointError, match="model.width"):
    train.train_and_evaluate(wider, tmp_path)
  np.testing.assert_array_equal(_final_params(tmp_path, config)[1]["fc8"]["kernel"],
                                params["fc8"]["kernel"])


@pytest.mark.slow
def test_a_run_stops_at_its_target_training_error_and_stays_stopped(tmp_path, cache_dir):
  config = _config(cache_dir)
  config.train.num_steps, config.train.num_epochs = 0, 3  # 10 steps of 8 per epoch.
  config.train.stop_at_train_error = 1.0  # Any first epoch reaches it.
  summary = train.train_and_evaluate(config, tmp_path)
  assert summary["steps"] == 10 and summary["epochs"] == 1.0
  assert summary["stopped_at_train_error"] == 1.0
  rows = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows if "epoch_train_top1_error" in r] == [10]
  assert max(r["step"] for r in rows if "val_top1_error" in r) == 10
  assert _final_params(tmp_path, config)[0] == 10

  # Started again with the same target it trains no more; with the target off it goes on.
  assert train.train_and_evaluate(config, tmp_path)["steps"] == 10
  config.train.stop_at_train_error = 0.0
  config.train.num_epochs = 2
  assert train.train_and_evaluate(config, tmp_path)["steps"] == 20
  assert _final_params(tmp_path, config)[0] == 20
  config.train.stop_at_train_error = 25.0  # A percentage where a fraction belongs.
  with pytest.raises(ValueError, match="stop_at_train_error=25.0"):
    train.train_and_evaluate(config, tmp_path)
  # The resumed run's clock goes on from the time the first one had reached.
  rows = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  before = metrics.elapsed_at(tmp_path / "metrics.jsonl", 10)
  assert before > 0 and all(r["elapsed_s"] > before for r in rows if r["step"] > 10)


def _eval_only(config):
  config = config.copy_and_resolve_references()
  config.eval_only = True
  return config


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_parameters(tmp_path, cache_dir):
  """One run straight through; one killed with SIGKILL right after it asks for the step-4
  checkpoint (orbax may still be writing it: then it resumes from step 2), then restarted.
  Data order, augmentation and dropout follow from the seed and the step, so both end alike."""
  straight = _run_cli(tmp_path / "straight", cache_dir)
  assert straight.returncode == 0, straight.stderr[-3000:]
  kill = ("import os, signal\nfrom alexnet_jax.checkpoints import manager\n_save = manager.save\n"
          "def save(mgr, step, *a, **k):\n  r = _save(mgr, step, *a, **k)\n"
          "  if step == 4:\n    os.kill(os.getpid(), signal.SIGKILL)\n  return r\n"
          "manager.save = save")
  killed = _run_cli(tmp_path / "resumed", cache_dir, prelude=kill)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert not (tmp_path / "resumed" / "summary.json").exists()
  resumed = _run_cli(tmp_path / "resumed", cache_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from" in resumed.stdout
  config = _config(cache_dir)
  step_a, params_a = _final_params(tmp_path / "straight", config)
  step_b, params_b = _final_params(tmp_path / "resumed", config)
  assert step_a == step_b == 6
  trees.assert_trees_equal(params_a, params_b)


@pytest.mark.slow
def test_cli_overrides_reach_the_run(tmp_path, cache_dir):
  done = _run_cli(tmp_path, cache_dir, "--config.train.num_steps=3",
                  "--config.train.learning_rate=0.02", "--config.eval.ten_crop=False")
  assert done.returncode == 0, done.stderr[-3000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["num_steps"] == 3 and saved["train"]["learning_rate"] == 0.02
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 3 and summary["val_top1_error_10crop"] is None
  assert "Finished 3 steps" in done.stdout


@pytest.mark.slow
def test_a_diverging_run_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir):
  config = _config(cache_dir)
  config.train.learning_rate = 1e4
  config.train.num_steps = 40
  config.checkpoint.every_steps = 1
  config.eval.every_epochs = 100.0
  with pytest.raises(FloatingPointError, match="step"):
    train.train_and_evaluate(config, tmp_path)
  step, params = _final_params(tmp_path, config)
  assert 1 <= step < 40
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


@pytest.mark.slow
def test_bfloat16_learns_like_float32(tmp_path, cache_dir):
  """config.model.dtype="bfloat16" (parameters and momentum stay float32) follows float32's
  training loss: both fall by over a third in 150 steps, and their means over the last 50 steps
  differ by under 0.2 nats (seen: 0.78 float32, 0.87 bfloat16, from ~1.6)."""
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config.get_config("learnable")
    config.data.cache_dir = cache_dir
    config.model.dtype = dtype
    train.train_and_evaluate(config, tmp_path / dtype)
    rows = metrics.read_jsonl(tmp_path / dtype / "metrics.jsonl")
    losses[dtype] = [r["train_loss"] for r in rows if "train_loss" in r]
  for dtype, loss in losses.items():
    assert len(loss) == 6 and np.mean(loss[-2:]) < 0.65 * loss[0], (dtype, loss)
  gap = abs(np.mean(losses["bfloat16"][-2:]) - np.mean(losses["float32"][-2:]))
  assert gap < 0.2, losses


@pytest.mark.slow
def test_a_run_lists_and_checks_each_split_once(tmp_path, cache_dir, monkeypatch):
  """Two evaluations, the final 10-crop one and on_corrupt="skip": each split is walked once
  and its files decoded once to find bad ones, not again at every evaluation."""
  from alexnet_jax.data import sources
  listed, checked = [], []
  list_folder, find_unreadable = sources.list_folder, sources.find_unreadable
  monkeypatch.setattr(sources, "list_folder",
                      lambda root, split: listed.append(split) or list_folder(root, split))
  monkeypatch.setattr(sources, "find_unreadable",
                      lambda paths, threads=0: checked.append(len(paths)) or
                      find_unreadable(paths, threads))
  config = _config(cache_dir)
  config.data.on_corrupt = "skip"
  summary = train.train_and_evaluate(config, tmp_path)
  assert summary["steps"] == 6 and summary["val_top1_error_10crop"] is not None
  assert sorted(listed) == ["train", "val"]
  assert sorted(checked) == [30, 80]  # The generated set's 30 validation, 80 training images.
  listed.clear()
  sources.open_split(config, "val")   # Outside a run, a listing is fresh.
  assert listed == ["val"]


@pytest.mark.parametrize("in_flight", [1, 3])
def test_the_host_waits_for_the_step_in_flight_limit_before(tmp_path, cache_dir, monkeypatch,
                                                             in_flight):
  """Before dispatching step t the loop has waited for step t - steps_in_flight, and for no
  later one: the order of dispatches and waits, not a timing."""
  events, step_of = [], {}
  make_train_step = steps.make_train_step

  def counted_step(config, mesh):
    step_fn = make_train_step(config, mesh)

    def step(state, *args):
      events.append(("dispatch", int(state.step)))
      state, step_metrics = step_fn(state, *args)
      step_of[id(step_metrics["loss"])] = len(step_of)
      return state, step_metrics
    return step

  wait = train.wait_for_step
  monkeypatch.setattr(steps, "make_train_step", counted_step)
  monkeypatch.setattr(train, "wait_for_step",
                      lambda loss: (events.append(("wait", step_of[id(loss)])), wait(loss)))
  config = _config(cache_dir)
  config.train.steps_in_flight = in_flight
  config.eval.every_epochs = 100
  config.eval.ten_crop = False
  train.train_and_evaluate(config, tmp_path)
  dispatched = [s for kind, s in events if kind == "dispatch"]
  assert dispatched == list(range(6))
  for t in dispatched:
    waited = [s for kind, s in events[:events.index(("dispatch", t))] if kind == "wait"]
    assert max(waited, default=-1) == t - in_flight if t >= in_flight else not waited
