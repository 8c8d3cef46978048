"""The program, `train_and_evaluate`: the set-up (`Run`), the loop, periodic evaluation,
checkpoints and the summary, running steps.py's jitted computations."""
import collections
import contextlib
import dataclasses
import itertools
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from alexnet_jax import cadence as cadence_lib
from alexnet_jax import errors
from alexnet_jax import evaluate
from alexnet_jax import metrics
from alexnet_jax import parallel
from alexnet_jax import paths
from alexnet_jax import per_class
from alexnet_jax import preflight
from alexnet_jax import preprocess
from alexnet_jax import profiling
from alexnet_jax import progress
from alexnet_jax import report
from alexnet_jax import schedule as schedule_lib
from alexnet_jax import steps
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager
from alexnet_jax.checkpoints import weights_file
from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from alexnet_jax.faults import preemption
from alexnet_jax.faults import workdir_lock
from alexnet_jax.faults import write_errors

# Batches copied to the devices ahead of the step that needs them.
DEVICE_PREFETCH = 2
# Evaluation's speed counts from this batch on: the first (compiled) has finished by then,
# since evaluate keeps two batches in flight.
TIMED_FROM_BATCH = 3


@dataclasses.dataclass(frozen=True)
class Run:
  """What stays fixed for the whole run: its config, data, mesh, cadence and writers."""
  config: Any
  workdir: Any                # paths.root: a pathlib.Path, or an epath.Path for a URL.
  info: dict                  # dataset_info: classes, example counts and the eval split.
  mesh: Mesh
  slice_index: int            # The rows of each global batch this process feeds (data_slice),
  slice_count: int            # not its process index: towers on two hosts feed the same rows.
  cadence: cadence_lib.Cadence  # The steps per epoch and in all; when the loop logs, evaluates.
  writer: metrics.Writer
  mgr: Any                    # orbax CheckpointManager (manager.create).
  fingerprint: dict           # The model fields a checkpoint must match.
  eval_step: Callable         # steps.make_eval_step's, on eval_mesh.
  consts: Any                 # preprocess.constants, on every device.
  eval_mesh: Mesh             # steps.eval_mesh.
  eval_consts: Any
  eval_shardings: Any         # The parameters' shardings on eval_mesh.


def set_up(config, workdir) -> Run:
  preflight.check_settings(config)
  info = input_pipeline.dataset_info(config)
  preflight.check_run(config, info)
  mesh = parallel.make_mesh(config)
  slice_index, slice_count = parallel.data_slice(mesh)
  cadence = cadence_lib.Cadence.of(config, info)
  workdir = paths.root(workdir)
  consts = preprocess.constants(config)
  evaluating = steps.eval_mesh(config, mesh)
  return Run(
      config=config, workdir=workdir, info=info, mesh=mesh, slice_index=slice_index,
      slice_count=slice_count, cadence=cadence,
      # An eval-only run leaves the training run's config.json as it is.
      writer=metrics.Writer(workdir, None if config.eval_only else config),
      mgr=manager.create(workdir, max_to_keep=config.checkpoint.max_to_keep),
      fingerprint=compatibility.model_fingerprint(config),
      eval_step=steps.make_eval_step(config, evaluating),
      consts=parallel.place_replicated(mesh, consts), eval_mesh=evaluating,
      eval_consts=parallel.place_replicated(evaluating, consts),
      eval_shardings=steps.param_shardings(config, evaluating))


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` from its latest checkpoint; the summary (eval_only: the
  evaluation). preemption.Preempted once a signal's step is saved."""
  preflight.check_workdir(workdir)
  lock = workdir_lock.acquire(workdir, jax.process_index())  # Before anything is written.
  try:
    with sources.listed_once():
      run = set_up(config, workdir)
      try:
        result = _execute(run)
      except BaseException:
        with contextlib.suppress(OSError):  # The error in flight is the one to tell.
          _close(run)
        raise
      _close(run)
      return result
  except OSError as e:  # A full disk or a lost permission beyond the checkpoints: one line.
    if not write_errors.is_write_refusal(e):
      raise
    raise write_errors.run_file_error(e, workdir) from e
  finally:
    workdir_lock.release(lock)


def _close(run: Run):
  manager.close(run.mgr)
  with write_errors.naming(run.workdir / paths.METRICS):  # The last lines flushed.
    run.writer.close()


def _execute(run: Run):
  config, cadence = run.config, run.cadence
  state = steps.create_train_state(config, run.mesh)
  schedule = schedule_lib.create(config.train, cadence.epoch, cadence.total)
  restored = _restore(run)
  if restored is not None:
    state, extra = restored
    schedule = schedule_lib.from_dict(schedule, extra["schedule"], log=run.writer.print)
    run.writer.print(f"Resumed from {run.mgr.directory} at step {int(state.step)}.")
  elif config.init_from and not config.eval_only:  # Fine-tuning: a fresh run only.
    state = state.replace(params=weights_file.initial_params(config, state.params, run.mesh,
                                                             log=run.writer.print))
  if not config.eval_only and run.writer.active:
    report.write_run_files(run.workdir, input_pipeline.class_names(config),
                           jax.device_get(run.consts))
  run.writer.print(report.describe(config, run.mesh, run.info, cadence.epoch, cadence.total,
                                   state.params))
  if config.eval_only:
    return evaluate_only(run, state)
  preemption.install()
  try:
    return train(run, state, schedule)
  finally:
    preemption.uninstall()


def _restore(run: Run):
  """(state, extra) of the latest step (eval_only: config.eval.checkpoint's); None if fresh."""
  abstract = steps.abstract_state(run.config, run.mesh)
  if not run.config.eval_only:
    return manager.restore_for_run(run.mgr, abstract, run.fingerprint,
                                   run.config.checkpoint.restore_step)
  step = manager.resolve_step(run.mgr, run.config.eval.checkpoint)
  return manager.restore(run.mgr, step, abstract, fingerprint=run.fingerprint,
                         ignore=compatibility.READING_FIELDS)


def train(run: Run, state, schedule):
  """The loop from `state.step` to the end (or the target error), then the summary; step t is
  dispatched once step t - steps_in_flight is done (docs/design.md, "The training loop")."""
  config, start = run.config, int(state.step)
  finished = _finished_summary(run, start)
  if finished is not None:
    return finished
  step_fn = steps.make_train_step(config, run.mesh)
  clock = metrics.Clock(config.train.batch_size,
                        metrics.elapsed_at(run.workdir / paths.METRICS, start))
  batches = parallel.prefetch_to_device(input_pipeline.train_iterator(
      config, batch_size=config.train.batch_size, slice_index=run.slice_index,
      slice_count=run.slice_count, start_step=start), run.mesh, run.slice_count, DEVICE_PREFETCH,
      on_wait=clock.waited)
  tally = _Tally(cadence_lib.StuckLoss(config.model.num_classes, config.train.stuck_window_steps,
                                       config.train.learning_rate, log=run.writer.print))
  profile = profiling.make_profile(config.profile_steps, run.workdir, start, run.cadence.total,
                                   run.writer.print)
  in_flight = collections.deque()
  for step in range(start, run.cadence.total):
    if profile:
      profile(state, step)
    lr = schedule.rate(step)
    if len(in_flight) >= config.train.steps_in_flight:
      wait_for_step(in_flight.popleft())
    state, step_metrics = step_fn(state, next(batches), np.float32(lr), run.consts)
    in_flight.append(step_metrics["loss"])
    clock.tick()
    tally.pending.append(step_metrics)
    done = step + 1
    stop = preemption.should_stop(done)  # Every process, every step: JAX's sync point.
    if stop or run.cadence.due(done):
      tally.fetch(done, run.mgr)
      reached = _periodic(run, state, schedule, done, lr, clock, tally)
      if stop:
        _preempted(run, state, schedule, done)
      if reached:
        break
  if profile:
    profile(state, int(state.step))  # A trace that ends with the run.
  return _finish(run, state, schedule, tally.last_eval, tally.epoch_train, clock)


def wait_for_step(loss):
  """Blocks until the step that returned `loss` has finished."""
  jax.block_until_ready(loss)


@dataclasses.dataclass
class _Tally:
  """The steps' metrics: pending (not yet fetched), this epoch's, this log window's; results."""
  stuck: cadence_lib.StuckLoss
  pending: list = dataclasses.field(default_factory=list)
  epoch: list = dataclasses.field(default_factory=list)
  window: list = dataclasses.field(default_factory=list)
  epoch_train: dict = dataclasses.field(default_factory=dict)
  last_eval: Any = None

  def fetch(self, done, mgr):
    """One transfer of the pending steps' metrics, the last step `done`'s; a NaN stops the run."""
    fetched, first = jax.device_get(self.pending), done - len(self.pending) + 1
    losses = [(at, float(m["loss"])) for at, m in enumerate(fetched, first)]
    for at, loss in losses:
      _check_finite(loss, at, mgr)
    self.pending, self.epoch, self.window = [], self.epoch + fetched, self.window + fetched
    self.stuck(losses)


def _periodic(run: Run, state, schedule, done, lr, clock, tally):
  """What is due at step `done` besides the step; True once train.stop_at_train_error is met."""
  config, cadence = run.config, run.cadence
  if cadence.logs(done):
    cadence_lib.log_train(run.writer, cadence, done, metrics.means(tally.window), lr, clock,
                          ten_crop=config.eval.ten_crop)
    tally.window = []
  reached = False
  if cadence.ends_epoch(done):
    tally.epoch_train = metrics.means(tally.epoch)
    reached = cadence_lib.log_epoch(run.writer, config, done, cadence.epoch, tally.epoch_train,
                                    clock)
    tally.epoch = []
  if cadence.evaluates(done) or reached:
    tally.last_eval = _periodic_eval(run, state, schedule, done, clock)
    clock.restart()
  elif cadence.saves(done):
    _save(run, state, schedule, done)
  return reached


def _finished_summary(run: Run, start):
  """The stored summary when the run at `start` is already finished, else None."""
  path = run.workdir / paths.SUMMARY
  summary = json.loads(path.read_text()) if path.exists() else None
  if summary and (start >= run.cadence.total or
                  report.stopped_at_target(summary, run.config, start)):
    run.writer.print(f"Already trained to step {start}; its summary ({path}):")
    run.writer.print(report.summary_text(summary, run.workdir))
    return summary
  return None


def _periodic_eval(run: Run, state, schedule, done, clock):
  """Centre-crop validation error: logged, drives the plateau schedule, ranks checkpoints."""
  started = time.perf_counter()
  result = _evaluate(run, state, ten_crop=False)
  clock.eval_s = time.perf_counter() - started
  epoch = done / run.cadence.epoch
  dropped = {}
  if schedule.update(result["top1_error"]):  # The paper's three drops: when each came.
    run.writer.print(f"Validation error stopped improving: at epoch {epoch:.2f} (step {done}) "
                     f"the learning rate is divided to {schedule.rate(done):g}, drop "
                     f"{schedule.drops} of at most {schedule.max_drops}.")
    dropped = {"lr_drop_epoch": epoch}
  run.writer.write(done, {"epoch": epoch, **_errors(result), "elapsed_s": clock.elapsed(),
                          "val_crops_per_s": result["crops_per_s"], **dropped},
                   console=("step {step}: validation top-1 error {val_top1_error:.4f}, top-5 "
                            "{val_top5_error:.4f} (centre crop, {val_crops_per_s:.0f} images/s)"))
  _save(run, state, schedule, done, {"val_top1_error": result["top1_error"]})
  return result


def _errors(result, suffix=""):
  """An evaluation's errors as metrics.jsonl and summary.json name them."""
  return {f"val_top{k}_error{suffix}": result[f"top{k}_error"] for k in (1, 5)}


def _finish(run: Run, state, schedule, last_eval, epoch_train, clock):
  """The final evaluations (a signal stops them before the next batch), summary.json and its
  text; a run resumed at its last step computes its centre-crop result too."""
  done = int(state.step)
  stop = _final_stop(run, state, schedule, done)
  if last_eval is None and done > 0:
    last_eval = _evaluate(run, state, ten_crop=False, stop=stop)
  ten = _evaluate(run, state, ten_crop=True, stop=stop) if run.config.eval.ten_crop else None
  stop()  # A signal in the last batch, or with no 10-crop evaluation: nothing written yet.
  final = _errors(last_eval) if last_eval else {}
  if ten is not None:
    final.update(_errors(ten, "_10crop"))
    run.writer.write(done, {"epoch": done / run.cadence.epoch, **final,
                            "val_crops_per_s_10crop": ten["crops_per_s"],
                            "elapsed_s": clock.elapsed()},
                     console="step {step}: 10-crop evaluation at {val_crops_per_s_10crop:.0f} "
                             "crops/s")
  summary = report.summary(run.config, run.workdir, steps=done, steps_per_epoch=run.cadence.epoch,
                           total_steps=run.cadence.total, clock=clock, epoch_train=epoch_train,
                           final=final, learning_rate=schedule.rate(done),
                           write_metrics=run.writer.active)
  summary["best_step"] = run.mgr.best_step()  # What config.eval.checkpoint=best reads.
  run.writer.write_summary(summary)
  run.writer.print(report.summary_text(summary, run.workdir))
  per_class.report_run(run.writer, run.workdir, run.config, done, {"": last_eval, "_10crop": ten})
  return summary


def _final_stop(run: Run, state, schedule, done):
  """stop(), before each evaluation batch: once a signal came, `done` saved, Preempted; each
  call is one more step of JAX's sync point, past the loop's last."""
  calls = itertools.count(done + 1)

  def stop():
    if preemption.should_stop(next(calls)):
      _preempted(run, state, schedule, done)
  return stop


def _preempted(run: Run, state, schedule, done):
  _save(run, state, schedule, done)  # Nothing to do when the boundary saved it already.
  manager.wait(run.mgr)
  run.writer.print(preemption.stop_line(done, run.mgr.directory))
  raise preemption.Preempted(done)


def evaluate_only(run: Run, state):
  """Centre-crop and 10-crop errors of config.eval.checkpoint's step, with the step."""
  step = int(state.step)
  views = {suffix: _evaluate(run, state, ten_crop=bool(suffix)) for suffix in ("", "_10crop")}
  result = {"step": step}
  for suffix, view in views.items():
    result.update(_errors(view, suffix), count=view["count"])
  run.writer.print(
      f"Checkpoint step {step}, split {run.info['eval_split']} ({result['count']} images): "
      f"top-1 error {result['val_top1_error']:.4f} centre crop, "
      f"{result['val_top1_error_10crop']:.4f} 10 crops; top-5 "
      f"{result['val_top5_error']:.4f} / {result['val_top5_error_10crop']:.4f}.")
  per_class.report_run(run.writer, run.workdir, run.config, step, views)
  return result


def _evaluate(run: Run, state, ten_crop, stop=None):
  """evaluate.evaluate's result, per class too, with its speed; `stop()` before each batch."""
  batches = input_pipeline.eval_iterator(
      run.config, run.info["eval_split"], batch_size=run.config.eval.batch_size,
      slice_index=run.slice_index, slice_count=run.slice_count)
  timed = []  # (time, images counted before) at batch TIMED_FROM_BATCH.
  what = f"evaluation, {'10 crops' if ten_crop else 'centre crop'}"
  with progress.Progress(run.info["num_eval"], what, active=run.writer.active) as bar:
    result = evaluate.evaluate(
        lambda params, images: run.eval_step(params, images, run.eval_consts, ten_crop),
        jax.device_put(state.params, run.eval_shardings),
        _counted(batches, bar, run.slice_count, stop, timed), per_class=True,
        put_batch=lambda x: parallel.to_global(run.eval_mesh, x, run.slice_count))
  seconds = time.perf_counter() - timed[0][0] if timed else 0
  result["crops_per_s"] = ((bar.done - timed[0][1]) * (10 if ten_crop else 1) / seconds
                           if seconds else float("nan"))
  return result


def _counted(batches, bar, slice_count, stop, timed):
  for i, batch in enumerate(batches, 1):
    if stop:
      stop()
    if i == TIMED_FROM_BATCH:
      timed.append((time.perf_counter(), bar.done))
    bar.update(int(np.sum(batch["mask"])) * slice_count)
    yield batch


def _save(run: Run, state, schedule, done, val_metrics=None):
  if not _all_finite(state.params):
    raise errors.DivergedError(
        f"The parameters are no longer finite after step {done}; not saved. The last good "
        f"checkpoint (step {run.mgr.latest_step()}) in {run.mgr.directory} is intact.")
  extra = {"fingerprint": run.fingerprint, "schedule": schedule_lib.to_dict(schedule)}
  manager.save(run.mgr, done, state, extra, val_metrics)


def _check_finite(loss, done, mgr):
  if not np.isfinite(loss):
    manager.wait(mgr)
    kept = (f"The last good checkpoint (step {mgr.latest_step()}) in {mgr.directory} is intact"
            if mgr.latest_step() is not None else "No checkpoint had been saved yet")
    raise errors.DivergedError(
        f"The training loss became {loss} at step {done}; the run stopped. {kept}. Lower "
        "config.train.learning_rate or check the input, then start again.")


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))
