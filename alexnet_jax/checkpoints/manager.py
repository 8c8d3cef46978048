"""orbax's CheckpointManager for a run (`create`, `save`, `wait`, `close`, `restore`,
`restore_for_run`, `resolve_step`): docs/design.md, "Checkpoints"."""
import contextlib
import json
import logging
import math

import jax
import orbax.checkpoint as ocp

from alexnet_jax import errors
from alexnet_jax import paths
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import integrity

BEST_METRIC = "val_top1_error"
SIZES_FILE = integrity.SIZES_FILE
DamagedCheckpointError = integrity.DamagedCheckpointError
CheckpointWriteError = integrity.CheckpointWriteError


def create(workdir, *, max_to_keep=3, keep_best=True, async_save=True, read_only=False):
  """`read_only`, for readers of another run, writes nothing and leaves its saves alone."""
  policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
  best_fn = None
  if keep_best:
    # A step saved between evaluations carries empty metrics (see `save`): it ranks last.
    best_fn = lambda metrics: metrics.get(BEST_METRIC, math.inf)
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=best_fn, reverse=True, n=1,  # reverse: lowest error kept (min).
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn, best_mode="min",  # best_fn: orbax writes `metrics`, answers best_step().
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=async_save,
      create=not read_only, read_only=read_only,
      save_interval_steps=0 if read_only else 1)  # 0: orbax warns when a reader sets more.
  mgr = ocp.CheckpointManager(
      paths.checkpoints(workdir), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "extra": ocp.JsonCheckpointHandler()})
  mgr.best_metric = BEST_METRIC if keep_best else None
  mgr.pending_step = None   # The step an asynchronous save is still writing.
  mgr.state_bytes = 0       # The arrays' size, for the message when a save fails.
  mgr.async_save = async_save
  return mgr


def save(mgr, step, state, extra, metrics=None):
  """False when `step` is saved already; a refused write (this or the last save's) raises."""
  step = int(step)
  if not isinstance(extra, dict):
    raise TypeError(f"manager.save: `extra` must be a dict, got {type(extra).__name__}.")
  try:
    json.dumps(extra)
  except (TypeError, ValueError) as e:
    raise TypeError(f"manager.save: `extra` must be JSON-serialisable (plain floats, ints, "
                    f"strings, lists, dicts; convert jax/numpy scalars): {e}") from e
  if metrics is not None:
    metrics = {k: float(v) for k, v in metrics.items()}
    if mgr.best_metric is not None and mgr.best_metric not in metrics:
      raise ValueError(f"manager.save: metrics {sorted(metrics)} lack '{mgr.best_metric}', "
                       "the metric that picks the best checkpoint; pass it or metrics=None.")
  elif mgr.best_metric is not None:
    metrics = {}  # Not None: orbax warns on every save without metrics while it tracks one.
  wait(mgr)  # Orbax waits for the previous save here anyway; its errors are ours to word.
  if step in mgr.all_steps():
    logging.info("manager.save: step %d is already saved; skipped.", step)
    return False
  mgr.state_bytes = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
  try:
    started = mgr.save(step, metrics=metrics, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)))
  except Exception as e:
    integrity.raise_write_error(mgr, step, e)
  mgr.pending_step = step
  if not mgr.async_save:  # Committed already: record its sizes now.
    wait(mgr)
  return started


def wait(mgr):
  """Waits for the save in flight (CheckpointWriteError if refused), then records its sizes."""
  step, mgr.pending_step = mgr.pending_step, None
  try:
    mgr.wait_until_finished()
    mgr.check_for_errors()
  except Exception as e:
    integrity.raise_write_error(mgr, step, e)
  if step is not None and step in mgr.all_steps():
    integrity.record_sizes(integrity.step_dir(mgr, step))


def close(mgr):
  """`wait`, then closes the manager (its threads); call it once the run is done."""
  try:
    wait(mgr)
  except BaseException:
    with contextlib.suppress(Exception):  # Orbax may raise again the refusal `wait` told.
      mgr.close()
    raise
  try:
    mgr.close()
  except Exception as e:  # A refusal orbax still held (an OSError naming no file): worded.
    integrity.raise_write_error(mgr, None, e)


def restore(mgr, step, abstract_state, *, fingerprint=None, ignore=()):
  """(state, extra) of `step` with `abstract_state`'s shardings; IncompatibleCheckpointError
  before reading its arrays when they or `fingerprint` (but the fields in `ignore`) differ."""
  wait(mgr)
  step = int(step)  # A step of mgr.all_steps(): the callers' resolve_step or restore_for_run.
  extra = mgr.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]
  stored = mgr.item_metadata(step)["state"]
  where = f"{mgr.directory / str(step)}"
  if not jax.tree.leaves(stored):  # Orbax answers an empty tree when state/_METADATA is gone.
    raise errors.MissingFileError(f"{where}: the state's metadata is missing")
  compatibility.check(abstract_state, stored, extra, fingerprint, where=where, ignore=ignore)
  return mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))["state"], extra


def restore_for_run(mgr, abstract_state, fingerprint=None, restore_step=0):
  """(state, extra) of the latest step, or the newest readable >= `restore_step` with the
  unreadable newer ones moved aside (docs/faults.md); None without a checkpoint."""
  if restore_step < 0:
    raise errors.ConfigError(
        f"config.checkpoint.restore_step={restore_step}: 0 (the latest step) or a saved step.")
  wait(mgr)
  mgr.reload()
  steps = sorted(mgr.all_steps(), reverse=True)
  integrity.agree_on_steps(mgr, steps)
  if not steps:
    if restore_step:  # Kept in a job's command for later restarts, or a mistyped --workdir.
      logging.warning("config.checkpoint.restore_step=%d, but %s holds no checkpoint: the run "
                      "starts afresh.", restore_step, mgr.directory)
    return None
  unreadable, cause = [], None
  for step in [s for s in steps if s >= restore_step] if restore_step else steps[:1]:
    try:
      restored, problem = restore(mgr, step, abstract_state, fingerprint=fingerprint), None
    except compatibility.IncompatibleCheckpointError:
      raise
    except Exception as e:
      # The sizes name the damaged file where orbax names a symptom; with neither, no damage.
      problem = integrity.step_problem(mgr, step)
      if problem is None and not isinstance(e, integrity.READ_ERRORS):
        raise
      problem, cause = problem or integrity.one_line(e), e
    if not integrity.everywhere(problem is None):
      unreadable.append((step, problem or "another process cannot read it"))
      continue
    integrity.set_aside(mgr, unreadable)  # Warns for each step it moves.
    if restore_step and not unreadable and step != restore_step:
      logging.warning("config.checkpoint.restore_step=%d changes nothing: the latest step %d "
                      "reads fine and was restored (restore_step only chooses where to go back "
                      "to when newer steps cannot be read).", restore_step, step)
    return restored
  raise integrity.damaged_error(mgr, steps, unreadable, restore_step) from cause


def resolve_step(mgr, which):
  """The step "latest", "best" (lowest `mgr.best_metric` kept) or a step number names."""
  mgr.reload()
  steps = list(mgr.all_steps())
  where = f"{mgr.directory} (steps {steps})" if steps else f"{mgr.directory}, which holds none"
  which = str(which).strip().lower()
  if not steps:
    raise errors.MissingFileError(f"No checkpoint in {where}: train first, or point --workdir "
                                  "at a run that has one.")
  if which == "latest":
    return mgr.latest_step()
  if which == "best":
    best = mgr.best_step()
    if best is None:
      raise errors.MissingFileError(
          f"config.eval.checkpoint=best: no checkpoint in {where} was saved with a validation "
          "error; use latest or a step number.")
    return best
  if which.isdigit() and int(which) in steps:
    return int(which)
  raise errors.ConfigError(
      f"config.eval.checkpoint={which!r}: use latest, best or one of the steps in {where}.")
