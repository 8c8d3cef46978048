"""A thin wrapper over orbax's `CheckpointManager`: the train state, a JSON `extra`, metrics.

Each step directory holds two items, `state` (a pytree of possibly sharded jax Arrays, written
with `StandardSave`) and `extra` (a small JSON dict: the plateau schedule's state, the config's
model fingerprint), orbax's `metrics`, and `file_sizes.json`, the size of every file of the
step once it was committed. Why it survives a SIGKILL: orbax writes a step into
`<step>.orbax-checkpoint-tmp` and renames it to `<step>` only once every file is on disk; a
killed save leaves that tmp folder, which `latest_step` ignores and `manager` deletes at the
next start (`cleanup_tmp_directories`), so the previous checkpoints stay intact.

What can still go wrong, and what this module does about it:
- A step damaged after its commit (a file truncated or deleted by a failing disk, an
  interrupted copy of the workdir): `restore_for_run` names the step, says what failed in one
  line and lists the older steps that look intact; `restore_step` lets the run go back to one
  of them, moving the unreadable newer steps aside (nothing is deleted). Telling which steps
  look intact costs a `stat` per file (against `file_sizes.json`) and reading the two small
  metadata files; only a full read proves a step, and that is what the restore does.
- A save that cannot be written (disk full, quota, permissions, read-only filesystem): with
  asynchronous saves the error surfaces at the next `save` or at `wait`/`close`; it becomes a
  `CheckpointWriteError` naming the directory, the bytes a checkpoint needs and the intact
  steps. Orbax never renames the failed step, so the earlier ones stay restorable.

Several processes: every process calls `manager`, `save`, `wait`, `close` and the restores
with the same arguments; orbax writes each process's shards and lets process 0 write the
metadata (and `file_sizes.json`), on a filesystem all hosts share (tests/test_distributed.py
saves and resumes with two processes).

Usage:

    mgr = checkpoint.manager(workdir)
    restored = checkpoint.restore_for_run(mgr, abstract_state, fp, config.checkpoint.restore_step)
    ...
    checkpoint.save(mgr, step, state, {"fingerprint": fp, ...}, {"val_top1_error": 0.41})
    checkpoint.close(mgr)  # waits for the last asynchronous save; raises if it failed
"""
import errno
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

BEST_METRIC = "val_top1_error"
SIZES_FILE = "file_sizes.json"
SET_ASIDE_DIR = "unreadable_checkpoints"  # Next to checkpoints/: outside orbax's view.
_MAX_LISTED = 20
# errno values that mean "this filesystem will not take the checkpoint", not a bug.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                 errno.EFBIG, errno.EIO)
# Errors of a read that failed on the files (tensorstore raises ValueError), as opposed to a
# device running out of memory (a RuntimeError), which says nothing about the checkpoint.
_READ_ERRORS = (OSError, ValueError, KeyError)


class IncompatibleCheckpointError(ValueError):
  """A checkpoint whose tree, shapes, dtypes or model config differ from this run's."""


class DamagedCheckpointError(RuntimeError):
  """A checkpoint that cannot be read: a file truncated, missing or garbled after its commit."""


class CheckpointWriteError(OSError):
  """A save the filesystem refused (no space, quota, permissions, read-only)."""


def manager(workdir, *, max_to_keep=3, keep_best=True, best_metric=BEST_METRIC,
            async_save=True):
  """A `CheckpointManager` on `<workdir>/checkpoints`.

  It keeps the last `max_to_keep` steps and, if `keep_best`, also the step with the lowest
  `metrics[best_metric]` (`mgr.best_step()`). Every `save` call writes: the caller decides
  the cadence. With `async_save` the device-to-host copy happens inside `save`, the writing
  in a background thread (so donated buffers may be reused at once); call `close(mgr)`
  (or `wait(mgr)`) before exiting.
  """
  if max_to_keep < 1:
    raise ValueError(f"checkpoint.manager: max_to_keep={max_to_keep}; it must be >= 1.")
  policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
  best_fn = None
  if keep_best:
    # A step saved between evaluations carries empty metrics (see `save`): it ranks last.
    best_fn = lambda metrics: metrics.get(best_metric, math.inf)  # noqa: E731
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=best_fn, reverse=True, n=1,  # reverse: lowest error kept (min).
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn,  # Makes orbax write `metrics` and answer `best_step()`.
      best_mode="min",
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save,
      create=True)
  directory = Path(workdir).expanduser().resolve() / "checkpoints"
  mgr = ocp.CheckpointManager(
      directory, options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "extra": ocp.JsonCheckpointHandler()})
  mgr.best_metric = best_metric if keep_best else None
  mgr.pending_step = None   # The step an asynchronous save is still writing.
  mgr.state_bytes = 0       # The arrays' size, for the message when a save fails.
  mgr.async_save = async_save
  return mgr


def save(mgr, step, state, extra, metrics=None):
  """Saves `state` (jax Arrays, sharded or not) and the JSON dict `extra` at `step`.

  `metrics` (e.g. {"val_top1_error": 0.41}) ranks the step for keep-best. Returns False,
  writing nothing, when `step` is already saved (a resumed run reaching its restored step).
  Raises `CheckpointWriteError` when this save, or the previous asynchronous one, could not
  be written.
  """
  step = int(step)
  _check_json("extra", extra)
  best_metric = getattr(mgr, "best_metric", None)
  if metrics is not None:
    metrics = {k: float(v) for k, v in metrics.items()}
    if best_metric is not None and best_metric not in metrics:
      raise ValueError(f"checkpoint.save: metrics {sorted(metrics)} lack '{best_metric}', the "
                       "metric that picks the best checkpoint; pass it or metrics=None.")
  elif best_metric is not None:
    metrics = {}  # Not None: orbax warns on every save without metrics while it tracks one.
  wait(mgr)  # Orbax waits for the previous save here anyway; its errors are ours to word.
  if step in mgr.all_steps():
    logging.info("checkpoint.save: step %d is already saved; skipped.", step)
    return False
  mgr.state_bytes = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
  try:
    started = mgr.save(step, metrics=metrics, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)))
  except Exception as e:  # pylint: disable=broad-exception-caught
    _raise_write_error(mgr, step, e)
  mgr.pending_step = step
  if not mgr.async_save:  # Committed already: record its sizes now.
    wait(mgr)
  return started


def wait(mgr):
  """Waits for the asynchronous save in flight, then records its files' sizes.

  Raises `CheckpointWriteError` (the original error as its cause) when it could not be written.
  """
  step, mgr.pending_step = getattr(mgr, "pending_step", None), None
  try:
    mgr.wait_until_finished()
    mgr.check_for_errors()
  except Exception as e:  # pylint: disable=broad-exception-caught
    _raise_write_error(mgr, step, e)
  if step is not None and step in mgr.all_steps():
    _record_sizes(_step_dir(mgr, step))


def close(mgr):
  """`wait`, then closes the manager (its threads); call it once the run is done."""
  try:
    wait(mgr)
  finally:
    mgr.close()


def restore(mgr, step, abstract_state, *, fingerprint=None):
  """Returns (state, extra) of `step`, the arrays placed with `abstract_state`'s shardings.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` (from
  `jax.eval_shape` and the run's shardings). Raises `IncompatibleCheckpointError`, listing
  what differs, when the checkpoint's tree, shapes or dtypes are not the model's, or when
  `fingerprint` is given and differs from the `extra["fingerprint"]` stored with the step;
  nothing is restored then. A step that cannot be read raises what orbax raised.
  """
  wait(mgr)
  step = int(step)
  if step not in mgr.all_steps():
    raise FileNotFoundError(f"checkpoint.restore: no step {step} in {mgr.directory}; "
                            f"saved steps: {list(mgr.all_steps())}.")
  extra = mgr.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]
  stored = mgr.item_metadata(step)["state"]
  if not jax.tree.leaves(stored):  # Orbax answers an empty tree when state/_METADATA is gone.
    raise FileNotFoundError(f"{mgr.directory / str(step)}: the state's metadata is missing")
  check_compatible(abstract_state, stored, extra, fingerprint,
                   where=f"{mgr.directory / str(step)}")
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"], extra


def restore_latest(mgr, abstract_state, *, fingerprint=None):
  """(state, extra) of the latest complete step, or None when there is none."""
  wait(mgr)
  mgr.reload()
  step = mgr.latest_step()
  if step is None:
    return None
  return restore(mgr, step, abstract_state, fingerprint=fingerprint)


def restore_for_run(mgr, abstract_state, fingerprint, restore_step=0):
  """(state, extra) to start a run from, or None when `mgr` holds no checkpoint.

  `restore_step` 0 restores the latest step; if it cannot be read this raises
  `DamagedCheckpointError` (one line: the step's directory, what failed, the older steps that
  look intact), the read error as its cause. `restore_step` N > 0 restores the newest step
  >= N that reads fine, so the same command restarts the run later; the unreadable newer
  steps are moved to `<workdir>/unreadable_checkpoints/`, never deleted. An incompatible
  checkpoint raises `IncompatibleCheckpointError` at once.
  """
  if restore_step < 0:
    raise ValueError(f"config.checkpoint.restore_step={restore_step}: 0 (the latest step) or "
                     "a saved step.")
  wait(mgr)
  mgr.reload()
  steps = sorted(mgr.all_steps(), reverse=True)
  if not steps and not restore_step:
    return None
  candidates = [s for s in steps if s >= restore_step] if restore_step else steps[:1]
  unreadable, cause = [], None
  for step in candidates:
    problem, restored = None, None
    try:
      restored = restore(mgr, step, abstract_state, fingerprint=fingerprint)
    except _READ_ERRORS as e:
      if isinstance(e, IncompatibleCheckpointError):
        raise
      # The recorded sizes name the damaged file where orbax's error names a symptom.
      problem, cause = step_problem(mgr, step) or _one_line(e), e
    if not _everywhere(problem is None):
      unreadable.append((step, problem or "another process cannot read it"))
      continue
    _set_aside(mgr, unreadable)
    if restore_step and restore_step != step:
      logging.warning("config.checkpoint.restore_step=%d: restored step %d, the newest step "
                      "that reads fine.", restore_step, step)
    return restored
  raise _damaged_error(mgr, steps, unreadable, restore_step) from cause


def step_problem(mgr, step):
  """None if `step` looks intact, else what is wrong with it, in a few words.

  Cheap: a `stat` per file against the sizes recorded when the step was committed (steps
  written without `file_sizes.json` skip that part), and the two metadata files read.
  """
  directory = _step_dir(mgr, step)
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
      if path.stat().st_size != size:
        return f"{name} has {path.stat().st_size} bytes, {size} when saved"
  try:
    mgr.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    if not jax.tree.leaves(mgr.item_metadata(step)["state"]):
      return "the state's metadata (state/_METADATA) is missing"
  except _READ_ERRORS as e:
    return _one_line(e)
  return None


def _damaged_error(mgr, steps, unreadable, restore_step):
  if not unreadable:
    return DamagedCheckpointError(
        f"config.checkpoint.restore_step={restore_step}, but {mgr.directory} holds no step >= "
        f"{restore_step} (saved steps: {', '.join(map(str, steps)) or 'none'}).")
  first, problem = unreadable[0]
  tried = {s for s, _ in unreadable}
  intact = [s for s in steps if s not in tried and s < first and step_problem(mgr, s) is None]
  what = f"Checkpoint {_step_dir(mgr, first)} cannot be read: {problem}."
  if len(unreadable) > 1:
    what += " Neither can steps " + ", ".join(f"{s} ({p})" for s, p in unreadable[1:]) + "."
  if not intact:
    return DamagedCheckpointError(
        f"{what} No older step looks intact; move {mgr.directory} away to train afresh.")
  return DamagedCheckpointError(
      f"{what} Older steps that look intact: {', '.join(map(str, intact))}. Resume from one "
      f"with --config.checkpoint.restore_step={intact[0]} (the unreadable steps are then moved "
      f"to {_root(mgr).parent / SET_ASIDE_DIR}; nothing is deleted).")


def _set_aside(mgr, unreadable):
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
      _step_dir(mgr, step).rename(dest)
      logging.warning("Checkpoint step %d cannot be read (%s); moved to %s.", step, problem,
                      dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("alexnet_jax checkpoint set aside")
  mgr.reload()


def _root(mgr):
  return Path(str(mgr.directory))  # pathlib: etils' Path refuses recursive globs.


def _step_dir(mgr, step):
  return _root(mgr) / str(step)


def _everywhere(ok):
  """True when `ok` holds on every process (all read the same files, but each its shards)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _one_line(error):
  """An error in one line: tensorstore's spec (a kilobyte of JSON) dropped, and of a long
  message its status and its end, where the file and the failure are named."""
  text = " ".join(str(error).split()).split(" [tensorstore_spec=")[0].rstrip(".")
  if len(text) <= 300:
    return text or type(error).__name__
  status = text.split(":")[0] + ": ..." if text.split(":")[0].isupper() else "..."
  return status + text[-240:]


def _record_sizes(directory):
  """Writes `file_sizes.json` into a committed step (process 0; the others' files are there)."""
  if jax.process_index() != 0 or not directory.is_dir():
    return
  sizes = {str(p.relative_to(directory)): p.stat().st_size
           for p in sorted(directory.rglob("*")) if p.is_file() and p.name != SIZES_FILE}
  tmp = directory / (SIZES_FILE + ".tmp")
  try:
    tmp.write_text(json.dumps(sizes))
    tmp.replace(directory / SIZES_FILE)
  except OSError as e:  # The step itself is committed; only the cheap check loses it.
    logging.warning("Could not record the file sizes of %s: %s", directory, e)


def _raise_write_error(mgr, step, error):
  """Raises a `CheckpointWriteError` for a filesystem's refusal, else `error` as it is."""
  code = _errno(error)
  if code is None:
    raise error
  steps = [s for s in mgr.all_steps() if s != step]
  need, how = mgr.state_bytes, "the arrays' size"
  if steps and (_step_dir(mgr, steps[-1]) / SIZES_FILE).exists():
    sizes = json.loads((_step_dir(mgr, steps[-1]) / SIZES_FILE).read_text())
    need, how = sum(sizes.values()), f"step {steps[-1]} on disk"
  try:
    free = f", {_megabytes(shutil.disk_usage(mgr.directory).free)} free there"
  except OSError:
    free = ""
  fix = ("once there is room" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
         else "once it is writable")
  kept = (f"The steps already saved ({', '.join(map(str, steps))}) are intact; start the same "
          f"command again {fix} to resume from step {steps[-1]}" if steps
          else f"No step was saved yet; start again {fix}")
  what = f"step {step}" if step is not None else "a checkpoint"
  raise CheckpointWriteError(
      f"Could not write {what} into {mgr.directory}: {os.strerror(code)}. A checkpoint needs "
      f"{_megabytes(need)} ({how}){free}. {kept}, or choose another --workdir.") from error


def _errno(error):
  """The errno of a filesystem refusal in `error` or its causes (tensorstore puts it in the
  message as os_error_code), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    code = getattr(error, "errno", None)
    if code is None:
      found = re.search(r"os_error_code='?(\d+)", str(error))
      code = int(found.group(1)) if found else None
    if code in _WRITE_ERRNOS:
      return code
    error = error.__cause__ or error.__context__
  return None


def _megabytes(n):
  return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"


def model_fingerprint(config):
  """The config fields that fix the parameters' tree and shapes, as a flat JSON dict.

  Every `config.model` field except `dtype` (the compute dtype; parameters stay float32),
  plus the requested tower count. Store it in `extra["fingerprint"]`.
  """
  fp = {f"model.{k}": v for k, v in config.model.to_dict().items() if k != "dtype"}
  if "mesh" in config:
    fp["mesh.model"] = config.mesh.model
  return json.loads(json.dumps(fp))


def check_compatible(abstract_state, stored_tree, extra=None, fingerprint=None, *,
                     where="checkpoint"):
  """Raises `IncompatibleCheckpointError` naming every leaf and config field that differs."""
  problems = _tree_differences(abstract_state, stored_tree)
  stored_fp = (extra or {}).get("fingerprint")
  fields = []
  if fingerprint is not None and stored_fp is not None:
    fields = _dict_differences(stored_fp, json.loads(json.dumps(fingerprint)))
  if not problems and not fields:
    return
  lines = [f"Checkpoint {where} does not fit this run and was not restored."]
  if fields:
    lines.append("Config fields that differ (checkpoint vs this run):")
    lines += [f"  {line}" for line in fields]
  if problems:
    lines.append("Arrays that differ (checkpoint vs model):")
    lines += [f"  {line}" for line in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
      lines.append(f"  ... and {len(problems) - _MAX_LISTED} more.")
  lines.append("Use the config the checkpoint was written with, or a fresh --workdir.")
  raise IncompatibleCheckpointError("\n".join(lines))


def _tree_differences(abstract_state, stored_tree):
  model = _flat(abstract_state)
  stored = _flat(stored_tree)
  problems = [f"{p}: in the checkpoint, not in the model" for p in stored if p not in model]
  problems += [f"{p}: in the model, not in the checkpoint" for p in model if p not in stored]
  for path in (p for p in model if p in stored):
    (m_shape, m_dtype), (s_shape, s_dtype) = model[path], stored[path]
    if m_shape != s_shape:
      problems.append(f"{path}: checkpoint {s_shape} vs model {m_shape}")
    elif None not in (m_dtype, s_dtype) and m_dtype != s_dtype:  # None: a Python scalar.
      problems.append(f"{path}: checkpoint dtype {s_dtype} vs model {m_dtype}")
  return problems


def _flat(tree):
  """{"params/conv1/kernel": (shape, dtype name)}; orbax's metadata tree and the abstract
  state name the same leaf alike (dict keys, attribute names, sequence indices)."""
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))[0]
  flat = {}
  for path, leaf in leaves:
    name = "/".join(_key_name(k) for k in path)
    shape = tuple(getattr(leaf, "shape", ()) or ())
    dtype = getattr(leaf, "dtype", None)
    flat[name] = (shape, None if dtype is None else jax.numpy.dtype(dtype).name)
  return flat


def _key_name(key):
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _dict_differences(stored, now):
  lines = []
  for k in sorted(set(stored) | set(now)):
    if stored.get(k, "<absent>") != now.get(k, "<absent>"):
      lines.append(f"{k}: {stored.get(k, '<absent>')!r} vs {now.get(k, '<absent>')!r}")
  return lines


def _check_json(name, value):
  if not isinstance(value, dict):
    raise TypeError(f"checkpoint.save: `{name}` must be a dict, got {type(value).__name__}.")
  try:
    json.dumps(value)
  except (TypeError, ValueError) as e:
    raise TypeError(f"checkpoint.save: `{name}` must be JSON-serialisable (plain floats, "
                    f"ints, strings, lists, dicts; convert jax/numpy scalars): {e}") from e
