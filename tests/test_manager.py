"""checkpoints/manager.py: sharded round trip, keep-last-and-best, interrupted saves, SIGKILL,
refusals."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager
from tests import trees


def mesh():
  return jax.make_mesh((1, 2), ("data", "model"))


def make_state(width=4, classes=5, seed=0):
  """A small train-state-like tree: tower-sharded params, momentum, a step counter."""
  m = mesh()
  towers = NamedSharding(m, P("model"))
  replicated = NamedSharding(m, P())
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {
      "conv1": {"kernel": jax.device_put(jax.random.normal(k1, (2, 3, 3, 3, width)), towers),
                "bias": jax.device_put(jnp.ones((2, width)), towers)},
      "fc8": {"kernel": jax.device_put(jax.random.normal(k2, (2 * width, classes)), replicated)},
  }
  opt_state = optax.sgd(0.01, momentum=0.9).init(params)
  return {"params": params, "opt_state": opt_state,
          "step": jax.device_put(jnp.int32(7), replicated)}


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


def assert_trees_equal(got, want):
  trees.assert_trees_equal(got, want, check_sharding=True)


def test_sharded_round_trip(tmp_path):
  state = make_state()
  state["opt_state"] = jax.tree.map(lambda x: x + 0.5, state["opt_state"])
  extra = {"lr": 0.001, "best_error": float("inf"), "bad_epochs": 2, "drops": 1,
           "fingerprint": {"model.width": 0.25}}
  mgr = manager.create(tmp_path)
  assert manager.restore_for_run(mgr, abstract(state)) is None
  assert manager.save(mgr, 10, state, extra, {"val_top1_error": 0.4})
  assert not manager.save(mgr, 10, state, extra)  # Already there: skipped.
  mgr.close()

  mgr = manager.create(tmp_path)  # A fresh start, as after a restart.
  got, got_extra = manager.restore_for_run(mgr, abstract(state),
                                             fingerprint={"model.width": 0.25})
  mgr.close()
  assert got_extra == extra
  assert_trees_equal(got, state)
  assert got["params"]["conv1"]["kernel"].sharding.spec == P("model")
  assert got["params"]["conv1"]["kernel"].addressable_shards[1].data.shape == (1, 3, 3, 3, 4)


def test_flax_train_state_round_trip(tmp_path):
  from flax.training import train_state
  state = train_state.TrainState.create(apply_fn=None, params=make_state()["params"],
                                        tx=optax.sgd(0.01, momentum=0.9))  # step: a Python 0.
  state = state.replace(step=5)
  target = jax.tree.map(lambda x: abstract(x) if hasattr(x, "shape") else x, state)
  mgr = manager.create(tmp_path)
  manager.save(mgr, 5, state, {})
  got, _ = manager.restore_for_run(mgr, target)
  mgr.close()
  assert isinstance(got, train_state.TrainState) and int(got.step) == 5
  assert_trees_equal(got.params, state.params)
  assert_trees_equal(got.opt_state, state.opt_state)


def test_keeps_last_few_and_the_best(tmp_path):
  state = make_state()
  errors = {1: 0.5, 2: 0.2, 3: 0.4, 4: 0.3, 5: 0.45, 6: 0.6}
  mgr = manager.create(tmp_path, max_to_keep=2)
  for step, error in errors.items():
    manager.save(mgr, step, state, {"step": step}, {"val_top1_error": error})
  mgr.wait_until_finished()
  assert list(mgr.all_steps()) == [2, 5, 6]  # The last two and the lowest error.
  assert mgr.best_step() == 2
  mgr.close()
  mgr = manager.create(tmp_path, max_to_keep=2)
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 5, 6]
  assert manager.restore(mgr, mgr.best_step(), abstract(state))[1] == {"step": 2}
  mgr.close()


def test_without_keep_best_only_the_last_few_stay(tmp_path):
  state = make_state()
  mgr = manager.create(tmp_path, max_to_keep=2, keep_best=False)
  for step, error in {1: 0.1, 2: 0.5, 3: 0.6}.items():
    manager.save(mgr, step, state, {}, {"val_top1_error": error})
  mgr.close()
  assert list(mgr.all_steps()) == [2, 3]


def test_metrics_without_the_best_metric_are_refused(tmp_path):
  mgr = manager.create(tmp_path)
  with pytest.raises(ValueError, match="lack 'val_top1_error'"):
    manager.save(mgr, 1, make_state(), {}, {"loss": 1.0})
  with pytest.raises(TypeError, match="JSON-serialisable"):
    manager.save(mgr, 1, make_state(), {"lr": object()})
  mgr.close()


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
  state = make_state()
  mgr = manager.create(tmp_path)
  manager.save(mgr, 1, state, {"step": 1})
  later = jax.tree.map(lambda x: x + 1, state)
  manager.save(mgr, 2, later, {"step": 2})
  mgr.close()
  # What a save killed half way leaves: a tmp folder with part of the files.
  root = tmp_path / "checkpoints"
  partial = root / "3.orbax-checkpoint-tmp"
  shutil.copytree(root / "2", partial)
  (partial / "commit_success.txt").unlink(missing_ok=True)
  shutil.rmtree(partial / "extra")

  mgr = manager.create(tmp_path)
  assert mgr.latest_step() == 2
  got, extra = manager.restore_for_run(mgr, abstract(state))
  assert extra == {"step": 2}
  assert_trees_equal(got, later)
  assert manager.save(mgr, 3, state, {"step": 3})  # And saving goes on.
  mgr.close()
  assert not list(root.glob("*orbax-checkpoint-tmp*"))  # Removed (by the manager's start).
  assert list(mgr.all_steps()) == [1, 2, 3]


def test_incompatible_checkpoint_is_refused_with_what_differs(tmp_path):
  wide = make_state(width=48)
  mgr = manager.create(tmp_path)
  fingerprint = {"model.width": 1.0, "model.num_classes": 5, "model.norm": "lrn"}
  manager.save(mgr, 1, wide, {"fingerprint": fingerprint})
  mgr.close()

  mgr = manager.create(tmp_path)
  narrow = abstract(make_state(width=24, classes=10))
  narrow["params"]["extra_layer"] = jax.ShapeDtypeStruct((3,), jnp.float32)
  del narrow["params"]["conv1"]["bias"]
  narrow["step"] = jax.ShapeDtypeStruct((), jnp.int64 if jax.config.x64_enabled else jnp.int16)
  with pytest.raises(compatibility.IncompatibleCheckpointError) as err:
    manager.restore_for_run(mgr, narrow, {"model.width": 0.5, "model.num_classes": 10,
                                             "model.norm": "lrn"})
  text = str(err.value)
  assert "params/conv1/kernel: checkpoint (2, 3, 3, 3, 48) vs model (2, 3, 3, 3, 24)" in text
  assert "params/fc8/kernel: checkpoint (96, 5) vs model (48, 10)" in text
  assert "opt_state/0/trace/conv1/kernel: checkpoint (2, 3, 3, 3, 48) vs model" in text
  assert "params/conv1/bias: in the checkpoint, not in the model" in text
  assert "params/extra_layer: in the model, not in the checkpoint" in text
  assert "step: checkpoint dtype int32 vs model int16" in text
  assert "model.width: 1.0 vs 0.5" in text and "model.num_classes: 5 vs 10" in text
  assert "model.norm" not in text  # Only the fields that differ.

  # Same shapes, another model config: refused on the fingerprint alone.
  with pytest.raises(compatibility.IncompatibleCheckpointError,
                     match="model.norm: 'lrn' vs 'none'"):
    manager.restore_for_run(mgr, abstract(wide), {**fingerprint, "model.norm": "none"})
  # Nothing was touched: the checkpoint still restores into the model it fits.
  got, _ = manager.restore_for_run(mgr, abstract(wide), fingerprint)
  assert_trees_equal(got, wide)
  mgr.close()


def test_model_fingerprint_names_what_changes_the_computation_not_the_mesh():
  import ml_collections
  config = ml_collections.ConfigDict({"model": {"width": 0.5, "num_classes": 10,
                                                "dtype": "bfloat16"},
                                      "mesh": {"model": 2}, "train": {"batch_size": 64}})
  assert compatibility.model_fingerprint(config) == {
      "model.width": 0.5, "model.num_classes": 10, "model.dtype": "bfloat16",
      "train.batch_size": 64}


def test_fingerprints_compare_the_fields_both_hold_but_the_layout():
  stored = {"model.width": 0.5, "mesh.model": 2, "model.dtype": "float32"}
  now = {"model.width": 0.5, "model.dtype": "bfloat16", "model.layer_weight_std": {}}
  assert compatibility._dict_differences(stored, now) == ["model.dtype: 'float32' vs 'bfloat16'"]
  assert compatibility._dict_differences(stored, now, ignore=compatibility.READING_FIELDS) == []


CHILD = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from alexnet_jax.checkpoints import manager
    mgr = manager.create(sys.argv[1], max_to_keep=2)
    step = 0
    while True:
      step += 1
      state = {"w": jnp.full((64, 64), step, jnp.float32), "b": jnp.full((5,), -step)}
      manager.save(mgr, step, state, {"step": step}, {"val_top1_error": 1.0 / step})
      print(step, flush=True)
""")


@pytest.mark.slow
def test_sigkill_during_saves_then_the_latest_complete_step_restores(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    for line in child.stdout:  # Step n printed: n is being written, n - 1 is complete.
      if int(line) >= 4:
        break
    child.send_signal(signal.SIGKILL)
  finally:
    child.kill()
    child.wait(timeout=60)
  assert child.returncode == -signal.SIGKILL

  replicated = NamedSharding(mesh(), P())  # Restored onto 2 devices, saved from 1.
  want = {"w": jax.ShapeDtypeStruct((64, 64), jnp.float32, sharding=replicated),
          "b": jax.ShapeDtypeStruct((5,), jnp.int32, sharding=replicated)}
  mgr = manager.create(tmp_path, max_to_keep=2)
  state, extra = manager.restore_for_run(mgr, want)
  step = extra["step"]
  assert step >= 3 and step == mgr.latest_step()
  np.testing.assert_array_equal(np.asarray(state["w"]), np.full((64, 64), step))
  np.testing.assert_array_equal(np.asarray(state["b"]), np.full((5,), -step))
  assert manager.save(mgr, step + 1, state, {"step": step + 1}, {"val_top1_error": 0.0})
  mgr.close()
  assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))


def test_interim_saves_keep_the_best_and_raise_no_warning(tmp_path, caplog):
  """Saves between evaluations carry no metrics: orbax must not warn about each, and they
  must not displace the best evaluated step."""
  state = make_state()
  mgr = manager.create(tmp_path, max_to_keep=2)
  with caplog.at_level("INFO"):
    for step, metrics in [(1, None), (2, {"val_top1_error": 0.3}), (3, None), (4, None),
                          (5, {"val_top1_error": 0.5}), (6, None)]:
      manager.save(mgr, step, state, {"step": step}, metrics)
    manager.close(mgr)
  assert "Saving checkpoint at step 6" in caplog.text  # Orbax's log is captured here...
  assert "tracked_metric" not in caplog.text           # ...and its warning is gone.
  assert list(mgr.all_steps()) == [2, 5, 6] and mgr.best_step() == 2


def save_three(workdir):
  """Steps 1, 2, 3 whose arrays hold their step; closed, so each has its file sizes."""
  mgr = manager.create(workdir, max_to_keep=3)
  for step in (1, 2, 3):
    state = jax.tree.map(lambda x, s=step: x + s, make_state())
    manager.save(mgr, step, state, {"step": step})
  manager.close(mgr)
  return jax.tree.map(lambda x: x + 2, make_state())  # Step 2's state.


def truncate_largest_array_file(step_dir):
  data = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"
              and p.parent.parent.name == "state"), key=lambda p: p.stat().st_size)
  size = data.stat().st_size
  with open(data, "r+b") as f:
    f.truncate(100)
  return f"{data.relative_to(step_dir)} has 100 bytes, {size} when saved"


@pytest.mark.parametrize("damage", ["truncated array file", "state/_METADATA", "extra/metadata"])
def test_a_damaged_latest_step_is_named_with_the_intact_ones(tmp_path, damage):
  step2 = save_three(tmp_path)
  root = tmp_path / "checkpoints"
  if damage == "truncated array file":
    reason = truncate_largest_array_file(root / "3")
  else:
    (root / "3" / damage).unlink()
    reason = f"{damage} is missing"
  files_before = sorted(p for p in root.rglob("*"))

  mgr = manager.create(tmp_path)
  with pytest.raises(manager.DamagedCheckpointError) as err:
    manager.restore_for_run(mgr, abstract(step2), None)
  text = str(err.value)
  print(text)
  assert "\n" not in text
  assert text.startswith(f"Checkpoint {root / '3'} cannot be read: {reason}.")
  assert "Older steps that look intact: 2, 1." in text
  assert "--config.checkpoint.restore_step=2" in text
  assert isinstance(err.value.__cause__, (OSError, ValueError))  # Orbax's error, chained.
  assert sorted(p for p in root.rglob("*")) == files_before  # Nothing moved or deleted.

  # The step the message names: the damaged one is moved aside, not deleted.
  got, extra = manager.restore_for_run(mgr, abstract(step2), None, restore_step=2)
  assert extra == {"step": 2}
  assert_trees_equal(got, step2)
  assert list(mgr.all_steps()) == [1, 2]
  assert (tmp_path / "unreadable_checkpoints" / "3" / "_CHECKPOINT_METADATA").exists()
  # The run goes on and saves step 3 afresh; the same command started again restores it.
  manager.save(mgr, 3, jax.tree.map(lambda x: x + 1, got), {"step": 3})
  manager.close(mgr)
  mgr = manager.create(tmp_path)
  assert manager.restore_for_run(mgr, abstract(step2), None, restore_step=2)[1] == {"step": 3}
  manager.close(mgr)


def test_steps_written_without_file_sizes_are_still_judged_by_reading(tmp_path):
  """A step whose sizes were never recorded (a manager closed with mgr.close()): the
  damage is reported from orbax's error, in one line, without tensorstore's spec."""
  step2 = save_three(tmp_path)
  step_dir = tmp_path / "checkpoints" / "3"
  truncate_largest_array_file(step_dir)
  (step_dir / manager.SIZES_FILE).unlink()
  mgr = manager.create(tmp_path)
  with pytest.raises(manager.DamagedCheckpointError) as err:
    manager.restore_for_run(mgr, abstract(step2), None)
  text = str(err.value)
  print(text)
  assert "\n" not in text and "tensorstore_spec" not in text and len(text) < 800
  assert "OUT_OF_RANGE" in text and "is not valid for value of size 100" in text
  assert "Older steps that look intact: 2, 1." in text
  manager.close(mgr)


def test_restore_step_picks_the_newest_readable_step_at_or_after_it(tmp_path):
  step2 = save_three(tmp_path)
  truncate_largest_array_file(tmp_path / "checkpoints" / "3")
  mgr = manager.create(tmp_path)
  # Step 2 reads fine, so restore_step=1 gives it (never less progress than possible).
  assert manager.restore_for_run(mgr, abstract(step2), None, restore_step=1)[1] == {"step": 2}
  with pytest.raises(manager.DamagedCheckpointError, match=r"holds no step >= 7 \(saved"):
    manager.restore_for_run(mgr, abstract(step2), None, restore_step=7)
  with pytest.raises(ValueError, match="restore_step=-1"):
    manager.restore_for_run(mgr, abstract(step2), None, restore_step=-1)
  manager.close(mgr)
  empty = manager.create(tmp_path / "empty")
  assert manager.restore_for_run(empty, abstract(step2), None) is None
  assert manager.restore_for_run(empty, abstract(step2), None, restore_step=5) is None
  manager.close(empty)


def test_older_damaged_steps_are_not_offered_and_are_moved_aside_together(tmp_path):
  save_three(tmp_path)
  root = tmp_path / "checkpoints"
  truncate_largest_array_file(root / "3")
  (root / "2" / "extra" / "metadata").unlink()  # Found by the cheap check: no full read.
  step1 = jax.tree.map(lambda x: x + 1, make_state())
  mgr = manager.create(tmp_path)
  with pytest.raises(manager.DamagedCheckpointError, match=(
      r"Older steps that look intact: 1\. Resume from one with "
      r"--config.checkpoint.restore_step=1 ")):
    manager.restore_for_run(mgr, abstract(step1), None)
  got, extra = manager.restore_for_run(mgr, abstract(step1), None, restore_step=1)
  assert extra == {"step": 1}
  assert_trees_equal(got, step1)
  assert sorted(p.name for p in (tmp_path / "unreadable_checkpoints").iterdir()) == ["2", "3"]
  manager.close(mgr)


def test_restore_step_with_a_readable_latest_step_says_it_changes_nothing(tmp_path, caplog):
  step2 = save_three(tmp_path)
  mgr = manager.create(tmp_path)
  with caplog.at_level("WARNING"):
    assert manager.restore_for_run(mgr, abstract(step2), None, restore_step=2)[1] == {
        "step": 3}
  assert "restore_step=2 changes nothing: the latest step 3 reads fine" in caplog.text
  assert list(mgr.all_steps()) == [1, 2, 3]
  manager.close(mgr)


def mount_tmpfs(path, size):
  """A small filesystem of its own at `path`; skips the test where mounting is not allowed."""
  path.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a {size} tmpfs to fill (needs root with CAP_SYS_ADMIN): "
                f"{done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
  disk = tmp_path / "disk"
  mount_tmpfs(disk, "1500k")
  yield disk
  subprocess.run(["umount", "-l", str(disk)], check=False)


def big_state(step):
  return {"w": jax.random.normal(jax.random.key(step), (100, 1000)),  # 400 kB, incompressible.
          "step": jnp.int32(step)}


@pytest.mark.slow
def test_a_full_disk_stops_the_run_and_keeps_the_saved_steps(small_disk):
  mgr = manager.create(small_disk, max_to_keep=5)
  saved = []
  with pytest.raises(manager.CheckpointWriteError) as err:
    for step in range(1, 10):
      manager.save(mgr, step, big_state(step), {"step": step})
      saved.append(step)
    manager.wait(mgr)
  text = str(err.value)
  print(text)
  intact = list(mgr.all_steps())
  assert len(intact) >= 2 and intact == saved[:len(intact)]
  failed = intact[-1] + 1  # Saved asynchronously: reported at the next save or the wait.
  assert "\n" not in text
  assert text.startswith(f"Could not write step {failed} into {small_disk / 'checkpoints'}: "
                         "No space left on device. A checkpoint needs 0.4 MB (step")
  assert f"The steps already saved ({', '.join(map(str, intact))}) are intact" in text
  assert "OUT_OF_RANGE" not in text and err.value.__cause__ is not None
  mgr.close()

  assert list((small_disk / "checkpoints").glob("*tmp*"))  # The failed step's partial files.
  mgr = manager.create(small_disk)  # A restart: they are cleared away (in the background).
  state, extra = manager.restore_for_run(mgr, abstract(jax.device_put(big_state(0))))
  assert extra == {"step": intact[-1]}
  np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(big_state(intact[-1])["w"]))
  manager.close(mgr)
  assert not list((small_disk / "checkpoints").glob("*tmp*"))


@pytest.mark.slow
def test_a_directory_that_turned_read_only_stops_the_save(tmp_path):
  """Root ignores permissions, so as root the filesystem is remounted read-only."""
  disk = tmp_path / "disk"
  if os.geteuid() == 0:
    mount_tmpfs(disk, "2m")
  else:
    disk.mkdir()
  try:
    mgr = manager.create(disk, async_save=False)
    manager.save(mgr, 1, big_state(1), {"step": 1})
    if os.geteuid() == 0:
      subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    else:
      (disk / "checkpoints").chmod(0o500)
    with pytest.raises(manager.CheckpointWriteError) as err:
      manager.save(mgr, 2, big_state(2), {"step": 2})
    print(err.value)
    assert str(err.value).startswith(f"Could not write step 2 into {disk / 'checkpoints'}: ")
    assert ("Read-only file system" in str(err.value) or "Permission denied" in str(err.value))
    assert "The steps already saved (1) are intact; start the same command again once it is "\
        "writable to resume from step 1" in str(err.value)
    assert list(mgr.all_steps()) == [1]
    mgr.close()
  finally:
    if os.geteuid() == 0:
      subprocess.run(["umount", "-l", str(disk)], check=False)
    elif (disk / "checkpoints").exists():
      (disk / "checkpoints").chmod(0o700)
