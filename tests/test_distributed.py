"""Two processes on this machine through jax.distributed (gloo CPU collectives, one CPU device
each): the towers in different processes give the single-process numbers; data parallelism
over processes saves and resumes; and the errors for an absent coordinator or a device count
that does not fit the mesh. Every process is killed in a `finally` if the test fails."""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from alexnet_jax import metrics
from alexnet_jax import parallel
from alexnet_jax import runtime
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.checkpoints import manager
from tests import tiny_config
from tests import trees

pytestmark = pytest.mark.slow  # Real processes: see setup.cfg's markers.

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 420  # A whole multi-process run: ~30-60 s on 2 idle cores, far more when busy.
# Three steps and a centre-crop evaluation at step 3 (the end); no 10-crop pass (its compile
# would cost each process ~10 s more; its batches go through the same _to_global).
SHORT = ("--config.train.num_steps=3", "--config.checkpoint.every_steps=100",
         "--config.eval.ten_crop=False")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The single-process, two-device run (towers on two devices), which also writes the
  generated data and its statistics into the cache before several processes read them."""
  cache_dir = tmp_path_factory.mktemp("cache")
  workdir = tmp_path_factory.mktemp("reference")
  config = _config(cache_dir)
  config.train.num_steps = 3
  config.checkpoint.every_steps = 100
  config.eval.ten_crop = False
  config.mesh.model = 2
  train.train_and_evaluate(config, workdir)
  return cache_dir, workdir


def _config(cache_dir):
  config = tiny_config.get_config()
  config.data.cache_dir = str(cache_dir)
  return config


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, cache_dir, *overrides, num_processes=2, devices=(1, 1), port=None,
            timeout_s=TIMEOUT_S, while_running=None):
  """Runs `python -m alexnet_jax.main` as `num_processes` processes of one job (`workdir`, or
  a list of one per process); returns [(returncode, output)] per process. Processes still
  running at the end are killed."""
  port = port or _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  workdirs = list(workdir) if isinstance(workdir, (list, tuple)) else [workdir] * num_processes
  procs, logs = [], []
  try:
    for i in range(num_processes):
      workdir = workdirs[i]
      argv = [sys.executable, "-m", "alexnet_jax.main", "--config=tests/tiny_config.py",
              f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
              f"--config.mesh.num_cpu_devices={devices[i]}", "--config.distributed.mode=manual",
              f"--config.distributed.coordinator_address=127.0.0.1:{port}",
              f"--config.distributed.num_processes={num_processes}",
              f"--config.distributed.process_id={i}", *overrides]
      logs.append(pathlib.Path(f"{workdir}.process{i}.log"))
      with open(logs[-1], "w", encoding="utf-8") as log:
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    if while_running is not None:
      while_running(procs, logs)
    deadline = time.monotonic() + timeout_s
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(p.returncode, log.read_text(encoding="utf-8")) for p, log in zip(procs, logs)]


def _check_ok(results):
  for i, (code, out) in enumerate(results):
    assert code == 0, f"process {i} exited with {code}:\n{out[-4000:]}"


def _restore(workdir, config):
  """(step, params as NumPy) of the latest checkpoint, restored on this process's 2 devices."""
  mesh = parallel.make_mesh(config.mesh.model)
  mgr = manager.create(workdir)
  try:
    restored, _ = manager.restore_for_run(mgr, steps.abstract_state(config, mesh))
  finally:
    mgr.close()
  return int(restored.step), jax.tree.map(np.asarray, restored.params)


def _numbers(workdir):
  """The logged losses and errors, without the timings."""
  keep = ("step", "train_loss", "train_top1_error", "val_top1_error", "val_top5_error",
          "val_top1_error_10crop", "val_top5_error_10crop")
  return [{k: r[k] for k in keep if k in r} for r in metrics.read_jsonl(workdir / "metrics.jsonl")]


def test_towers_in_two_processes_equal_the_two_device_run(tmp_path, reference):
  """model=2 over 2 processes x 1 device: the data axis has size 1, so both processes feed the
  same full batch (parallel.data_slice gives (0, 1) to each) and tower i lives in process i."""
  cache_dir, ref_dir = reference
  workdir = tmp_path / "two_processes"
  results = _launch(workdir, cache_dir, "--config.mesh.model=2", *SHORT)
  _check_ok(results)
  assert "Mesh: data=1 x model=2 over 2 cpu device(s), 2 process(es)." in results[0][1]
  assert "Mesh:" not in results[1][1]  # Only process 0 prints and writes metrics.
  ref_rows, rows = _numbers(ref_dir), _numbers(workdir)
  assert [r["step"] for r in rows] == [2, 3, 3] and len(rows) == len(ref_rows)
  assert "val_top1_error" in rows[-1]
  assert rows == ref_rows  # Exactly: the same ops on the same data, only the links differ.
  config = _config(cache_dir)
  config.mesh.model = 2
  (ref_step, ref_params), (step, params) = _restore(ref_dir, config), _restore(workdir, config)
  assert step == ref_step == 3
  trees.assert_trees_equal(ref_params, params)


def test_data_parallel_processes_save_and_resume(tmp_path, reference):
  """model=1 over 2 processes: each feeds half of every batch; one step and a checkpoint,
  then a second launch resumes from it and takes the second step.

  Dropout on: each process feeds contiguous rows of the one-process global batch
  (input_pipeline), and masks follow the global row, so the result equals the single-process
  run up to the order of the gradient summation."""
  cache_dir, _ = reference
  workdir = tmp_path / "data_parallel"
  common = ("--config.mesh.model=1", "--config.eval.ten_crop=False",
            "--config.checkpoint.every_steps=1", "--config.eval.every_epochs=100")
  first = _launch(workdir, cache_dir, *common, "--config.train.num_steps=1")
  _check_ok(first)
  assert "Mesh: data=2 x model=1 over 2 cpu device(s), 2 process(es)." in first[0][1]
  second = _launch(workdir, cache_dir, *common, "--config.train.num_steps=2")
  _check_ok(second)
  assert "Resumed from" in second[0][1] and "at step 1." in second[0][1]
  config = _config(cache_dir)
  config.mesh.model = 1
  step, params = _restore(workdir, config)
  assert step == 2 and all(np.isfinite(p).all() for p in jax.tree.leaves(params))
  # The same two steps in one process on two devices: each process fed its own half.
  single = _config(cache_dir)
  single.mesh.model = 1
  single.train.num_steps = 2
  single.eval.ten_crop = False
  single.eval.every_epochs = 100
  train.train_and_evaluate(single, tmp_path / "single")
  _, single_params = _restore(tmp_path / "single", config)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               single_params, params)


def _alone(tmp_path, process_id):
  """Process `process_id` of 2 started alone, with a 3 s timeout: (port, finished process)."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  argv = [sys.executable, "-m", "alexnet_jax.main", "--config=tests/tiny_config.py",
          f"--workdir={tmp_path}", "--config.mesh.num_cpu_devices=1",
          "--config.distributed.mode=manual",
          f"--config.distributed.coordinator_address=127.0.0.1:{port}",
          "--config.distributed.num_processes=2", f"--config.distributed.process_id={process_id}",
          "--config.distributed.initialization_timeout_s=3"]
  return port, subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=60)


def test_an_unreachable_coordinator_stops_with_its_address(tmp_path):
  """Process 1 alone, pointed at a port nobody listens on."""
  port, done = _alone(tmp_path, 1)
  assert done.returncode == 1, done.stderr[-3000:]
  assert f"Cannot reach the JAX coordinator at 127.0.0.1:{port} within 3 s" in done.stderr


def test_process_0_without_its_peer_stops_with_a_python_error(tmp_path):
  """Process 0 alone: JAX's client would abort inside XLA (DEADLINE_EXCEEDED, exit 134)."""
  port, done = _alone(tmp_path, 0)
  assert done.returncode == 1, done.stderr[-3000:]
  assert (f"Error: Process 0 stops: process(es) 1 of config.distributed."
          f"num_processes=2 did not reach 127.0.0.1:{port} within 3 s") in done.stderr
  assert "Check failure" not in done.stderr and "DEADLINE_EXCEEDED" not in done.stderr


JOIN = """
import sys
import jax
from alexnet_jax import runtime
from tests import tiny_config

cfg = tiny_config.get_config().distributed
cfg.update(mode="manual", coordinator_address="127.0.0.1:" + sys.argv[1],
           num_processes=int(sys.argv[2]), process_id=int(sys.argv[3]),
           initialization_timeout_s=int(sys.argv[4]))
runtime.initialize(cfg)
print("process", jax.process_index(), "of", jax.process_count(), flush=True)
"""


def _join(num_processes, ids, timeout_s):
  """Processes `ids` of `num_processes` calling runtime.initialize; [(returncode, output)]."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", JOIN, str(port), str(num_processes), str(i),
                             str(timeout_s)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in ids]
  try:
    return [(p.returncode, out) for p in procs for out, _ in [p.communicate(timeout=120)]], port
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def test_processes_meet_before_jax_starts():
  results, _ = _join(2, [1, 0], 60)  # The peer first: it waits for process 0's port.
  assert [r[0] for r in results] == [0, 0], results
  assert "process 1 of 2" in results[0][1] and "process 0 of 2" in results[1][1]


def test_a_missing_process_stops_every_other_one_with_its_number():
  """Process 2 of 3 never starts: process 0 says so, and tells process 1 why it stops."""
  (zero, one), port = _join(3, [0, 1], 4)
  assert zero[0] == 1 and one[0] == 1, (zero, one)
  missing = (f"process(es) 2 of config.distributed.num_processes=3 did not reach "
             f"127.0.0.1:{port} within 4 s")
  assert f"MissingProcessesError: Process 0 stops: {missing}" in zero[1]
  assert f"MissingProcessesError: Process 1 stops: process 0 at 127.0.0.1:{port} says " \
      f"{missing}" in one[1]
  assert "Check failure" not in zero[1] + one[1]


def test_two_processes_with_one_id_are_refused_by_process_0():
  results, port = _join(3, [0, 1, 1], 30)
  assert [r[0] for r in results] == [1, 1, 1], results
  assert "Process 0 stops: two processes have config.distributed.process_id=1." in results[0][1]
  for _, out in results[1:]:
    assert (f"Process 1 stops: process 0 at 127.0.0.1:{port} says two processes have "
            "config.distributed.process_id=1.") in out


def test_devices_that_do_not_fit_the_mesh_are_refused(tmp_path, reference):
  """2 processes x 3 devices with model=2: a model group would straddle the hosts while the
  others do not, so no process could feed whole rows of the batch."""
  cache_dir, _ = reference
  results = _launch(tmp_path / "misfit", cache_dir, "--config.mesh.model=2",
                    "--config.train.batch_size=12", "--config.eval.batch_size=12",
                    devices=(3, 3))
  for code, out in results:
    assert code == 1, out[-3000:]
    assert "do not fit a mesh with config.mesh.model=2" in out, out[-3000:]
    assert "process 0: 3, process 1: 3" in out, out[-3000:]


@pytest.mark.parametrize("grid, model, expected", [
    ([[0, 1]], 2, [(0, 1), (0, 1)]),                 # Towers on two hosts: both feed all.
    ([[0], [1]], 1, [(0, 2), (1, 2)]),               # Data parallel: halves.
    ([[0, 1], [2, 3]], 2, [(0, 2), (0, 2), (1, 2), (1, 2)]),
    ([[0, 0], [0, 0], [1, 1], [1, 1]], 2, [(0, 2), (1, 2)]),  # Towers inside each host.
])
def test_data_slices_of_process_layouts(grid, model, expected):
  blocks, owner = parallel._data_blocks(np.array(grid), model)  # pylint: disable=protected-access
  assert [(blocks.index(owner[p]), len(blocks)) for p in sorted(owner)] == expected


@pytest.mark.parametrize("grid", [[[0, 0], [0, 1], [1, 1]],   # 3 devices per host, model 2.
                                  [[0], [1], [1]]])            # Unequal hosts.
def test_layouts_without_whole_rows_per_process_are_refused(grid):
  with pytest.raises(ValueError, match="do not fit a mesh"):
    parallel._data_blocks(np.array(grid), 2)  # pylint: disable=protected-access


def test_the_single_process_mesh_is_unchanged():
  mesh = parallel.make_mesh(0)
  assert dict(mesh.shape) == {"data": 1, "model": 2}
  assert list(mesh.devices.flat) == jax.devices()
  assert parallel.data_slice(mesh) == (0, 1)


def _distributed(**fields):
  cfg = tiny_config.get_config().distributed
  cfg.update(fields)
  return cfg


@pytest.mark.parametrize("fields, message", [
    ({"mode": "off", "process_id": 1}, "mode='off'"),
    ({"mode": "manual", "coordinator_address": "h:1", "num_processes": 2},
     "needs config.distributed.process_id"),
    ({"mode": "manual", "coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
     r"process_id=2 is not in \[0, num_processes=2\)"),
    ({"mode": "auto", "local_device_ids": "0;1"}, "comma-separated"),
    ({"mode": "everywhere"}, "choose one of"),
])
def test_bad_distributed_settings_are_named(fields, message, monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  with pytest.raises(ValueError, match=message):
    runtime.initialize(_distributed(**fields))


def test_processes_that_see_different_checkpoints_all_stop_saying_so(reference, tmp_path):
  """Process 0's workdir holds the reference run's step 3, process 1's none (a workdir that
  is not one shared filesystem): both stop with one line naming what each saw."""
  cache_dir, ref = reference
  seen_by_0, seen_by_1 = tmp_path / "zero", tmp_path / "one"
  shutil.copytree(ref, seen_by_0)
  seen_by_1.mkdir()
  results = _launch([seen_by_0, seen_by_1], cache_dir, "--config.mesh.model=1", *SHORT)
  for i, (code, out) in enumerate(results):
    assert code == 1, f"process {i}: {code}\n{out[-3000:]}"
    assert "Error: The processes of this run see different checkpoints in " in out, out[-3000:]
    assert "process 0 sees steps [3]; process 1 sees no checkpoint." in out, out[-3000:]


# Long enough for the notice to cross to process 0 (JAX's coordination service) before the end.
PAIR_STEPS = 200


def test_a_pair_preempted_through_one_process_stops_together_and_resumes_bit_equal(
    reference, tmp_path):
  """SIGTERM reaches process 1 alone (its VM preempted): JAX's preemption service makes both
  stop after the same step, the step is committed once, both exit 75; the restarted pair
  resumes there and ends with an uninterrupted pair's parameters."""
  cache_dir, _ = reference
  common = ("--config.mesh.model=1", "--config.eval.ten_crop=False",
            "--config.eval.every_epochs=100", f"--config.train.num_steps={PAIR_STEPS}",
            "--config.checkpoint.every_steps=100", "--config.train.log_every_steps=1")
  whole, cut = tmp_path / "whole", tmp_path / "cut"
  _check_ok(_launch(whole, cache_dir, *common))

  def terminate_process_1(procs, logs):
    deadline = time.monotonic() + TIMEOUT_S
    while f"step 3/{PAIR_STEPS}" not in logs[0].read_text(encoding="utf-8"):
      assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)

  stopped = _launch(cut, cache_dir, *common, while_running=terminate_process_1)
  assert [code for code, _ in stopped] == [75, 75], [out[-2000:] for _, out in stopped]
  # Only process 0 prints; both stopped after one step, or the collective save of it would
  # not have been committed.
  at = re.search(r"Stopped on (?:SIGTERM|a preemption notice) after step (\d+)", stopped[0][1])
  assert at, stopped[0][1][-2000:]
  step = int(at.group(1))
  assert 3 <= step < PAIR_STEPS
  saved = sorted(int(p.name) for p in (cut / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [step] and not list((cut / "checkpoints").glob("*tmp*"))
  again = _launch(cut, cache_dir, *common)
  _check_ok(again)
  assert f"at step {step}." in again[0][1]
  config = _config(cache_dir)
  config.mesh.model = 1
  (step_a, a), (step_b, b) = _restore(whole, config), _restore(cut, config)
  assert step_a == step_b == PAIR_STEPS
  trees.assert_trees_equal(a, b)
