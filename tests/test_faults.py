"""What the program does when a cluster interrupts it or its workdir is damaged or taken, on the
tiny config (tests/tiny_config.py), through train_and_evaluate and the command line."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.checkpoints import manager
from alexnet_jax.faults import preemption
from alexnet_jax.faults import workdir_lock
from alexnet_jax.faults import write_errors
from tests import program
from tests import tiny_config
from tests import trees

pytestmark = pytest.mark.slow  # Real processes: see setup.cfg's markers.


ROOT = pathlib.Path(__file__).resolve().parents[1]
LONG = ("--config.train.num_steps=40", "--config.checkpoint.every_steps=1000",
        "--config.eval.every_epochs=100", "--config.eval.ten_crop=False")


def _config(cache_dir, **train_fields):
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  config.train.update(train_fields)
  return config


def _cli(workdir, cache_dir, *overrides):
  return [sys.executable, "-m", "alexnet_jax.main", "--config=tests/tiny_config.py",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}", *overrides]


def _final(workdir, config):
  mgr = manager.create(workdir)
  restored, _ = manager.restore_for_run(
      mgr, steps.abstract_state(config, parallel.make_mesh(config.mesh.model)))
  manager.close(mgr)
  return int(restored.step), jax.tree.map(np.asarray, restored.params)


def test_sigterm_saves_the_step_and_the_rerun_ends_as_if_never_stopped(tmp_path, cache_dir):
  """A real SIGTERM from outside, as a scheduler sends it, while the run is training."""
  straight = subprocess.run(_cli(tmp_path / "straight", cache_dir, *LONG), cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
  assert straight.returncode == 0, straight.stderr[-3000:]
  run = subprocess.Popen(_cli(tmp_path / "stopped", cache_dir, *LONG), cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    for line in run.stdout:
      if line.startswith("step 2/40"):
        run.send_signal(signal.SIGTERM)
        break
    out, err = run.communicate(timeout=300)
  finally:
    run.kill()
  assert run.returncode == preemption.EXIT_STATUS, err[-3000:]
  (stop,) = [line for line in out.splitlines() if line.startswith("Stopped on SIGTERM")]
  stopped_at = int(stop.split("after step ")[1].split(",")[0])
  assert 2 <= stopped_at < 40, stop
  config = _config(cache_dir, num_steps=40)
  assert _final(tmp_path / "stopped", config)[0] == stopped_at  # Saved and committed.
  again = subprocess.run(_cli(tmp_path / "stopped", cache_dir, *LONG), cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"at step {stopped_at}." in again.stdout
  (step_a, params_a), (step_b, params_b) = (_final(tmp_path / w, config)
                                            for w in ("straight", "stopped"))
  assert step_a == step_b == 40
  trees.assert_trees_equal(params_a, params_b)


def test_sigterm_during_the_final_evaluation_stops_and_the_rerun_evaluates(tmp_path, cache_dir):
  """A SIGTERM once the last step's centre-crop result is printed lands in the final 10-crop
  evaluation (100 validation images, 13 batches of 10 crops): the run stops before its next
  batch with exit 75, its last step saved and no summary; the same command resumes at that step
  and evaluates (centre crop and 10 crops) without training."""
  cli = _cli(tmp_path / "run", cache_dir, "--config.data.generated.val_per_class=10")
  run = subprocess.Popen(cli, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    for line in run.stdout:
      if line.startswith("step 6: validation top-1 error"):  # The loop's last line.
        run.send_signal(signal.SIGTERM)
        break
    out, err = run.communicate(timeout=300)
  finally:
    run.kill()
  assert run.returncode == preemption.EXIT_STATUS, (out[-2000:], err[-3000:])
  assert [line for line in out.splitlines() if line.startswith("Stopped on SIGTERM")] == [
      f"Stopped on SIGTERM after step 6, saved in {tmp_path / 'run' / 'checkpoints'}; the same "
      f"command resumes from there (exit status {preemption.EXIT_STATUS})."], out
  assert not (tmp_path / "run" / "summary.json").exists()
  assert _final(tmp_path / "run", _config(cache_dir))[0] == 6
  again = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "at step 6." in again.stdout and "step 1/6" not in again.stdout
  assert "no step timed in this start." in again.stdout  # Not "nan training images/s".
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["steps"] == 6 and summary["images_per_s"] is None
  for key in ("final_val_top1_error", "val_top1_error_10crop", "val_top5_error_10crop"):
    assert 0 <= summary[key] <= 1, (key, summary)


def _largest_file(folder):
  files = [p for p in pathlib.Path(folder).rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncated array file", "deleted metadata file"])
def test_a_damaged_checkpoint_is_named_and_an_older_one_restores(tmp_path, cache_dir, damage):
  config = _config(cache_dir)
  train.train_and_evaluate(config, tmp_path)  # Keeps steps 4, 5 (an evaluation) and 6.
  step6 = tmp_path / "checkpoints" / "6"
  if damage == "truncated array file":
    victim = _largest_file(step6 / "state")
    os.truncate(victim, victim.stat().st_size // 2)
  else:
    (step6 / "state" / "_METADATA").unlink()
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  result = program.run(tmp_path, config=config)  # As a user starts it: main.
  program.assert_one_line_error(result, str(step6), tmp_path)
  assert "Older steps that look intact: 5, 4." in result.stderr, result.stderr
  assert "DamagedCheckpointError" in result.log
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # Nothing lost.
  config.checkpoint.restore_step = 4  # The newest step >= 4 that reads: 5.
  summary = train.train_and_evaluate(config, tmp_path)
  assert summary["steps"] == 6 and _final(tmp_path, config)[0] == 6
  assert (tmp_path / "unreadable_checkpoints").is_dir()  # Set aside, never deleted.


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path, cache_dir):
  held = workdir_lock.acquire(tmp_path)  # The first run, as far as the lock can tell.
  try:
    result = program.run(tmp_path, config=_config(cache_dir))
    program.assert_one_line_error(result, f"pid {os.getpid()}", tmp_path)
    assert "WorkdirBusyError" in result.log
    assert not (tmp_path / "config.json").exists()  # Refused before anything was written.
  finally:
    workdir_lock.release(held)
  assert train.train_and_evaluate(_config(cache_dir), tmp_path)["steps"] == 6


@pytest.mark.parametrize("fill_at", ["metrics", "per_class"])
def test_a_disk_that_fills_beyond_the_checkpoints_stops_in_one_line(tmp_path, cache_dir,
                                                                     monkeypatch, fill_at):
  """The workdir on a tmpfs of its own, filled to the last byte once step 4's checkpoint is
  saved: the next metrics line (or, at the end, the per-class file) meets a real ENOSPC. The
  run stops with one line naming the file and the intact steps, which then resume."""
  from alexnet_jax import metrics
  from alexnet_jax import per_class
  from tests.test_manager import mount_tmpfs
  disk = tmp_path / "disk"
  mount_tmpfs(disk, "16m")
  try:
    config = _config(cache_dir, num_steps=6)
    config.checkpoint.update(every_steps=2, max_to_keep=5)
    config.eval.update(every_epochs=100, ten_crop=False)
    workdir = disk / "run"

    def fill():
      """Once step 4 is saved and no save is in flight (a checkpoint's own refusal is another
      test's), the rest of the disk."""
      import time
      deadline = time.monotonic() + 120
      while (list((workdir / "checkpoints").glob("*orbax-checkpoint-tmp*"))
             and time.monotonic() < deadline):
        time.sleep(0.05)
      if (workdir / "checkpoints" / "4").is_dir() and not (disk / "filler").exists():
        with open(disk / "filler", "wb") as f:
          try:
            while True:
              f.write(b"\0" * (1 << 16))
          except OSError:
            pass
    write, report = metrics.Writer.write, per_class.write
    if fill_at == "metrics":
      monkeypatch.setattr(metrics.Writer, "write",
                          lambda self, step, *a, **k: (step < 6 or fill(), write(self, step, *a,
                                                                                 **k))[1])
    else:
      monkeypatch.setattr(per_class, "write", lambda *a, **k: (fill(), report(*a, **k))[1])
    with pytest.raises(write_errors.RunFileWriteError) as err:
      train.train_and_evaluate(config, workdir)
    text = str(err.value)
    print(text)
    assert "\n" not in text
    # The first write the full disk refuses: a metrics line, the summary or the per-class file
    # (a small write may still fit into a page the file already has).
    named = re.match(rf"Could not write {re.escape(str(workdir))}/(\S+): No space left on "
                     r"device \(", text)
    assert named and named.group(1) in ("metrics.jsonl", "summary.json", "per_class_step6.csv",
                                        "confusion_step6.png", "tensorboard"), text
    assert "The checkpoints already saved (steps 2, 4, 6) are intact" in text or \
        "The checkpoints already saved (steps 2, 4) are intact" in text
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    os.remove(disk / "filler")
    monkeypatch.undo()
    mgr = manager.create(workdir)
    state, _ = manager.restore_for_run(
        mgr, steps.abstract_state(config, parallel.make_mesh(config.mesh.model)))
    manager.close(mgr)
    assert int(state.step) == saved[-1]
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)
