"""Where a run's numbers go: `Writer` (TensorBoard through clu, `metrics.jsonl`, the console;
process 0 alone writes), the `means` of the step metrics and the `Clock` of speed and time."""
import json
import math
import os
import time

import jax

from alexnet_jax import paths
from alexnet_jax.faults import write_errors


class Writer:
  """Writes scalars for a step to TensorBoard, a JSON-lines file and a console line."""

  def __init__(self, workdir, config=None):
    self.workdir = paths.root(workdir)
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    # Here: clu loads TensorFlow (~700 MB), which readers of metrics.jsonl do not need.
    from clu import metric_writers
    self._tb = metric_writers.create_default_writer(
        str(paths.file(workdir, paths.TENSORBOARD)), just_logging=False, asynchronous=False)
    self._jsonl = paths.file(workdir, paths.METRICS).open("a", encoding="utf-8")
    if config is not None:
      with write_errors.naming(self.workdir / paths.CONFIG):
        (self.workdir / paths.CONFIG).write_text(config.to_json_best_effort(indent=2) + "\n")

  def write(self, step, scalars, console=None):
    """Records `scalars` at `step`; prints `console` (a format of the scalars) if given."""
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    with write_errors.naming(self.workdir / paths.TENSORBOARD):
      self._tb.write_scalars(step, scalars)
    with write_errors.naming(self.workdir / paths.METRICS):
      self._jsonl.write(_json({"step": int(step), "time": time.time(), **scalars}) + "\n")
      self._jsonl.flush()
    if console:
      print(console.format(step=step, **scalars), flush=True)

  def print(self, text):
    if self.active:
      print(text, flush=True)

  def write_summary(self, summary):
    if self.active:
      with write_errors.naming(self.workdir / paths.SUMMARY):
        (self.workdir / paths.SUMMARY).write_text(_json(summary, indent=2) + "\n")

  def close(self):
    if self.active:
      self._tb.flush()
      self._tb.close()
      self._jsonl.close()


def _json(row, **kwargs):
  """JSON has no NaN or infinity: they are written as strings a reader can still parse."""
  return json.dumps({k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
                     for k, v in row.items()}, **kwargs)


def read_jsonl(path):
  """The rows of a `metrics.jsonl`, in order (for sweeps, plots and tests)."""
  with paths.root(path).open(encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def elapsed_at(path, step):
  """The time a run resumed at `step` had spent: the last elapsed_s logged by then (or 0)."""
  if not paths.root(path).exists():
    return 0.0
  return max((float(r["elapsed_s"]) for r in read_jsonl(path)
              if r.get("step", 0) <= step and "elapsed_s" in r), default=0.0)


def means(rows):
  """Each metric's mean over `rows`, the fetched metrics of a window's steps."""
  return {k: sum(float(r[k]) for r in rows) / len(rows) for k in rows[0]} if rows else {}


def cpu_seconds():
  """CPU time this process has used, every thread's, user and system."""
  t = os.times()
  return t.user + t.system


def cores():
  """The cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Clock:
  """Wall time (from `elapsed_before`), and per lap images/s, input wait and the cores' share;
  the first step (it compiles) and evaluations are left out of the laps."""

  def __init__(self, batch_size, elapsed_before=0.0):
    self.batch_size, self.start = batch_size, time.perf_counter() - elapsed_before
    self.mark, self.steps, self.wait_s = None, 0, 0.0  # The lap's; no lap before the first step.
    self.timed_s, self.timed_steps, self.timed_cpu_s = 0.0, 0, 0.0
    self.eval_s = None  # The last periodic evaluation's duration, for the time left.

  def waited(self, seconds):
    """Time the loop spent blocked on the input pipeline (counted from the first lap on)."""
    if self.mark is not None:
      self.wait_s += seconds

  def tick(self):
    if self.mark is None:
      self._new_lap()
    else:
      self.steps += 1

  def lap(self):
    """(images/s, seconds/step, input wait, cores' share) since the last lap or restart."""
    if self.mark is None or not self.steps:
      return float("nan"), float("nan"), float("nan"), float("nan")
    seconds, used = time.perf_counter() - self.mark, cpu_seconds() - self.cpu_mark
    steps, wait = self.steps, self.wait_s
    self.timed_s, self.timed_steps = self.timed_s + seconds, self.timed_steps + steps
    self.timed_cpu_s += used
    self._new_lap()
    return (steps * self.batch_size / seconds, seconds / steps, min(1.0, wait / seconds),
            used / (seconds * cores()))

  def restart(self):
    if self.mark is not None:
      self._new_lap()

  def _new_lap(self):
    self.mark, self.cpu_mark, self.steps, self.wait_s = time.perf_counter(), cpu_seconds(), 0, 0.0

  def mean_cores_share(self):
    """The share of the cores used over the timed steps; None when no step was timed."""
    return self.timed_cpu_s / (self.timed_s * cores()) if self.timed_s else None

  def mean_images_per_s(self):
    """None when this start timed no step (resumed at its last step, it only evaluates)."""
    return self.timed_steps * self.batch_size / self.timed_s if self.timed_s else None

  def elapsed(self):
    return time.perf_counter() - self.start
