"""Whether the checkpoints on disk can be used, told in one line: a step damaged after its
commit (`step_problem`, `damaged_error`, `set_aside`), processes that see other steps
(`agree_on_steps`), a save the filesystem refused (`raise_write_error`). Deletes nothing."""
import json
import logging
import os

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from alexnet_jax import errors
from alexnet_jax import paths
from alexnet_jax.faults import write_errors

SIZES_FILE = "file_sizes.json"
# Errors of a read that failed on the files (tensorstore raises ValueError), as opposed to a
# device running out of memory (a RuntimeError), which says nothing about the checkpoint.
READ_ERRORS = (OSError, ValueError, KeyError)
MAX_STEPS_COMPARED = 64  # The newest steps each process lists, compared across processes.


class DamagedCheckpointError(errors.UserError, RuntimeError):
  """A checkpoint that cannot be read: a file truncated, missing or garbled after its commit."""


class CheckpointWriteError(errors.WriteRefusedError):
  """A save the filesystem refused (no space, quota, permissions, read-only)."""


class DisagreeingProcessesError(errors.UserError, RuntimeError):
  """The processes of one run see different checkpoints."""


def step_dir(mgr, step):
  return paths.root(str(mgr.directory)) / str(step)


def _aside(mgr):
  """Next to checkpoints/: outside orbax's view."""
  return paths.root(str(mgr.directory)).parent / paths.UNREADABLE


def step_problem(mgr, step):
  """None if `step` looks intact (its files' sizes, its metadata read), else what is wrong."""
  directory = step_dir(mgr, step)
  if (directory / SIZES_FILE).exists():
    try:
      sizes = json.loads((directory / SIZES_FILE).read_text())
    except ValueError:
      return f"{SIZES_FILE} is garbled"
    for name, size in sizes.items():
      if not (directory / name).exists():
        return f"{name} is missing"
      if paths.size(directory / name) != size:
        return f"{name} has {paths.size(directory / name)} bytes, {size} when saved"
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
      f"to {_aside(mgr)}; nothing is deleted).")


def set_aside(mgr, unreadable):
  """Moves unreadable steps out of orbax's directory, so that the run can save them anew."""
  if not unreadable:
    return
  target = _aside(mgr)
  if jax.process_index() == 0:
    target.mkdir(exist_ok=True)
    for step, problem in unreadable:
      dest, n = target / str(step), 1
      while dest.exists():
        dest, n = target / f"{step}.{n}", n + 1
      step_dir(mgr, step).rename(dest)
      logging.warning("Checkpoint step %d cannot be read (%s); moved to %s.", step, problem,
                      dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("alexnet_jax checkpoint set aside")
  mgr.reload()


def everywhere(ok):
  """True when `ok` holds on every process (all read the same files, but each its shards)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def agree_on_steps(mgr, steps):
  """Stops every process when they list other `steps` (newest first): a restore would hang."""
  if jax.process_count() == 1:
    return
  mine = np.full(MAX_STEPS_COMPARED, -1, np.int64)
  mine[:min(len(steps), MAX_STEPS_COMPARED)] = steps[:MAX_STEPS_COMPARED]
  seen = np.asarray(multihost_utils.process_allgather(mine))  # [processes, steps]
  if (seen == seen[0]).all():
    return
  listed = [[int(s) for s in row if s >= 0] for row in seen]
  views = "; ".join(f"process {p} sees " + (f"steps {s}" if s else "no checkpoint")
                    for p, s in enumerate(listed))
  raise DisagreeingProcessesError(
      f"The processes of this run see different checkpoints in {mgr.directory}: {views}. The "
      "workdir must be one filesystem every process shares (or a bucket); wait for a copy to "
      "finish, or point every process at the same --workdir.")


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
  free = write_errors.free_space(mgr.directory)
  raise CheckpointWriteError(
      f"Could not write {'a checkpoint' if step is None else f'step {step}'} into "
      f"{mgr.directory}: {os.strerror(code)}. A checkpoint needs {write_errors.megabytes(need)} "
      f"({how}){f', {free} free there' if free else ''}. " + write_errors.what_to_do(
          code, steps, f"The steps already saved ({', '.join(map(str, steps))})", "No step")
  ) from error
