"""Whether the checkpoints on disk can be used, told in one line: a step damaged after its
commit (`step_problem`, `damaged_error`, `set_aside`), processes that see other steps
(`agree_on_steps`), a save the filesystem refused (`raise_write_error`). Deletes nothing."""
import json
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from alexnet_jax import errors
from alexnet_jax import paths
from alexnet_jax.faults import write_errors

SIZES_FILE = "file_sizes.json"
SET_ASIDE_DIR = paths.UNREADABLE  # Next to checkpoints/: outside orbax's view.
# Errors of a read that failed on the files (tensorstore raises ValueError), as opposed to a
# device running out of memory (a RuntimeError), which says nothing about the checkpoint.
READ_ERRORS = (OSError, ValueError, KeyError)


class DamagedCheckpointError(errors.UserError, RuntimeError):
  """A checkpoint that cannot be read: a file truncated, missing or garbled after its commit."""


class CheckpointWriteError(errors.WriteRefusedError):
  """A save the filesystem refused (no space, quota, permissions, read-only)."""


def step_problem(mgr, step):
  """None if `step` looks intact (its files' sizes, its metadata read), else what is wrong."""
  directory = step_dir(mgr, step)
  sizes_file = directory / SIZES_FILE
  if sizes_file.exists():
    try:
      sizes = json.loads(sizes_file.read_text())
    except ValueError:
      return f"{SIZES_FILE} is garbled"
    for name, size in sizes.items():
      path = directory / name
      if not path.exists():
        return f"{name} is missing"
      if paths.size(path) != size:
        return f"{name} has {paths.size(path)} bytes, {size} when saved"
  try:
    mgr.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    if not jax.tree.leaves(mgr.item_metadata(step)["state"]):
      return "the state's metadata (state/_METADATA) is missing"
  except READ_ERRORS as e:
    return one_line(e)
  return None


def damaged_error(mgr, steps, unreadable, restore_step):
  """The one-line `DamagedCheckpointError` for [(step, problem)] that could not be read."""
  if not unreadable:
    return DamagedCheckpointError(
        f"config.checkpoint.restore_step={restore_step}, but {mgr.directory} holds no step >= "
        f"{restore_step} (saved steps: {', '.join(map(str, steps)) or 'none'}).")
  first, problem = unreadable[0]
  tried = {s for s, _ in unreadable}
  intact = [s for s in steps if s not in tried and s < first and step_problem(mgr, s) is None]
  what = f"Checkpoint {step_dir(mgr, first)} cannot be read: {problem}."
  if len(unreadable) > 1:
    what += " Neither can steps " + ", ".join(f"{s} ({p})" for s, p in unreadable[1:]) + "."
  if not intact:
    return DamagedCheckpointError(
        f"{what} No older step looks intact; move {mgr.directory} away to train afresh.")
  return DamagedCheckpointError(
      f"{what} Older steps that look intact: {', '.join(map(str, intact))}. Resume from one "
      f"with --config.checkpoint.restore_step={intact[0]} (the unreadable steps are then moved "
      f"to {_root(mgr).parent / SET_ASIDE_DIR}; nothing is deleted).")


def set_aside(mgr, unreadable):
  """Moves unreadable steps out of orbax's directory, so that the run can save them anew."""
  if not unreadable:
    return
  target = _root(mgr).parent / SET_ASIDE_DIR
  if jax.process_index() == 0:
    target.mkdir(exist_ok=True)
    for step, problem in unreadable:
      dest = target / str(step)
      n = 1
      while dest.exists():
        dest, n = target / f"{step}.{n}", n + 1
      step_dir(mgr, step).rename(dest)
      logging.warning("Checkpoint step %d cannot be read (%s); moved to %s.", step, problem,
                      dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("alexnet_jax checkpoint set aside")
  mgr.reload()


def _root(mgr):
  return paths.root(str(mgr.directory))


def step_dir(mgr, step):
  return _root(mgr) / str(step)


def everywhere(ok):
  """True when `ok` holds on every process (all read the same files, but each its shards)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


class DisagreeingProcessesError(errors.UserError, RuntimeError):
  """The processes of one run see different checkpoints."""


MAX_STEPS_COMPARED = 64  # The newest steps each process lists, compared across processes.


def agree_on_steps(mgr, steps):
  """Raises DisagreeingProcessesError on every process when the processes list other
  `steps` (this process's, newest first) in `mgr.directory`."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  mine = np.full(MAX_STEPS_COMPARED, -1, np.int64)
  mine[:min(len(steps), MAX_STEPS_COMPARED)] = steps[:MAX_STEPS_COMPARED]
  seen = np.asarray(multihost_utils.process_allgather(mine))  # [processes, steps]
  if (seen == seen[0]).all():
    return
  views = "; ".join(f"process {p} sees {_listed(row)}" for p, row in enumerate(seen))
  raise DisagreeingProcessesError(
      f"The processes of this run see different checkpoints in {mgr.directory}: {views}. The "
      "workdir must be one filesystem every process shares (or a bucket); wait for a copy to "
      "finish, or point every process at the same --workdir.")


def _listed(row):
  steps = [int(s) for s in row if s >= 0]
  return f"steps {steps}" if steps else "no checkpoint"


def one_line(error):
  """An error in one line: without tensorstore's spec, a long one cut to its status and end."""
  text = " ".join(str(error).split()).split(" [tensorstore_spec=")[0].rstrip(".")
  if len(text) <= 300:
    return text or type(error).__name__
  status = text.split(":")[0] + ": ..." if text.split(":")[0].isupper() else "..."
  return status + text[-240:]


def record_sizes(directory):
  """Writes `file_sizes.json` into a committed step (process 0; the others' files are there)."""
  if jax.process_index() != 0 or not directory.is_dir():
    return
  sizes = {name: paths.size(directory / name) for name in paths.files_under(directory)
           if name != SIZES_FILE}
  tmp = directory / (SIZES_FILE + ".tmp")
  try:
    tmp.write_text(json.dumps(sizes))
    tmp.replace(directory / SIZES_FILE)
  except OSError as e:  # The step itself is committed; only the cheap check loses it.
    logging.warning("Could not record the file sizes of %s: %s", directory, e)


def raise_write_error(mgr, step, error):
  """Raises a `CheckpointWriteError` for a filesystem's refusal, else `error` as it is."""
  code = write_errors.errno_of(error)
  if code is None:
    raise error
  steps = sorted(s for s in mgr.all_steps() if s != step)
  need, how = mgr.state_bytes, "the arrays' size"
  if steps and (step_dir(mgr, steps[-1]) / SIZES_FILE).exists():
    sizes = json.loads((step_dir(mgr, steps[-1]) / SIZES_FILE).read_text())
    need, how = sum(sizes.values()), f"step {steps[-1]} on disk"
  free, fix = write_errors.free_space(mgr.directory), write_errors.when_writable(code)
  free = f", {free} free there" if free else ""
  kept = (f"The steps already saved ({', '.join(map(str, steps))}) are intact; start the same "
          f"command again {fix} to resume from step {steps[-1]}" if steps
          else f"No step was saved yet; start again {fix}")
  what = f"step {step}" if step is not None else "a checkpoint"
  raise CheckpointWriteError(
      f"Could not write {what} into {mgr.directory}: {os.strerror(code)}. A checkpoint needs "
      f"{write_errors.megabytes(need)} ({how}){free}. {kept}, or choose another --workdir."
  ) from error

