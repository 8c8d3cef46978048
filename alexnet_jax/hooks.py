"""What the training loop does every so many steps besides the step: when (`Cadence`, computed
once from the steps `num_steps` counts), the training and epoch log lines (`log_train`,
`log_epoch`, through the one metrics.Writer), the line said once when the loss sits at chance
(`StuckLoss`) and a profile of a few steps (`make_profile`). The loop calls each hook once where
it is due.

StuckLoss says, once, when a run's training loss sits at chance: within 1% of ln(num_classes)
for config.train.stuck_window_steps steps in a row. Such a run looks alive (its steps go on, its
rate is not dropped) but its output does not depend on the image. It is told, not stopped:
some recipes leave chance late (Caffe's users saw the loss fall after 2,000 iterations).

The profile (config.profile_steps): a jax.profiler trace of a few training steps, and its top
ops. The trace goes to <workdir>/tensorboard/plugins/profile/<time>/ (TensorBoard's profile
plugin reads it there; docs/progress_and_profile.md) with a Chrome-trace `*.trace.json.gz`
beside it, from which `top_ops` sums the time of each op. Written here rather than with clu's
periodic Profile action, which starts the trace with jax's default options and refuses others:
those trace every Python call (665,000 events for two steps of the tests' tiny network), which
slows the traced steps and buries the device ops.
"""
import collections
import dataclasses
import gzip
import json
import math
import pathlib

import jax

from alexnet_jax import paths
from alexnet_jax import progress


def num_steps(config, info):
  """Steps per epoch and in all, from the training split's size and the global batch."""
  per_epoch = info["num_train"] // config.train.batch_size
  if per_epoch < 1:
    raise ValueError(
        f"config.train.batch_size={config.train.batch_size} exceeds the training split's "
        f"{info['num_train']} examples: lower the batch size or use more data.")
  total = config.train.num_steps or int(round(config.train.num_epochs * per_epoch))
  return per_epoch, max(1, total)


@dataclasses.dataclass(frozen=True)
class Cadence:
  """The loop's periods in steps, computed once from the config and the epoch's length."""
  total: int
  log: int
  epoch: int
  evaluation: int
  checkpoint: int

  @classmethod
  def of(cls, config, steps_per_epoch, total_steps):
    evaluation = max(1, int(round(config.eval.every_epochs * steps_per_epoch)))
    return cls(total=total_steps, log=config.train.log_every_steps, epoch=steps_per_epoch,
               evaluation=evaluation, checkpoint=config.checkpoint.every_steps)

  def logs(self, done):
    return done % self.log == 0 or done == self.total

  def ends_epoch(self, done):
    return done % self.epoch == 0

  def evaluates(self, done):
    return done % self.evaluation == 0 or done == self.total

  def saves(self, done):
    return done % self.checkpoint == 0

  def due(self, done):
    """Whether step `done` logs, ends an epoch, evaluates or checkpoints."""
    return (self.logs(done) or self.ends_epoch(done) or self.evaluates(done) or
            self.saves(done))


def log_train(writer, cadence, done, means, lr, clock, *, ten_crop):
  """The training log line and its scalars: the window's mean loss and errors, the speed, the
  share of time spent waiting for input, and the time left."""
  images_per_s, step_time, input_fraction, cores_share = clock.lap()
  left, next_eval = progress.time_left(done, cadence.total, cadence.evaluation, step_time,
                                       clock.eval_s, ten_crop)
  scalars = {"epoch": done / cadence.epoch, "train_loss": means["loss"],
             "train_top1_error": means["top1_error"], "train_top5_error": means["top5_error"],
             "learning_rate": lr, "images_per_s": images_per_s, "step_time_s": step_time,
             "input_wait_fraction": input_fraction, "cores_share": cores_share,
             "elapsed_s": clock.elapsed(), "time_left_s": left, "next_eval_in_s": next_eval}
  # The share of the cores says on a CPU whether the machine is crowded (low) or the run is
  # host-bound; on an accelerator it measures only the host.
  cores_part = ", cores: {cores_share:.0%}" if jax.default_backend() == "cpu" else ""
  writer.write(done, scalars, console=(
      f"step {{step}}/{cadence.total} epoch {{epoch:.2f}}: loss {{train_loss:.4f}}, top-1 error "
      "{train_top1_error:.3f}, lr {learning_rate:g}, {images_per_s:.1f} images/s, "
      f"input-bound: {{input_wait_fraction:.0%}}{cores_part}; {progress.format_duration(left)} "
      f"left, next evaluation in {progress.format_duration(next_eval)}"))


def log_epoch(writer, config, done, steps_per_epoch, means, clock):
  """Logs an epoch's mean training error; True when it reached train.stop_at_train_error."""
  writer.write(done, {"epoch": done / steps_per_epoch,
                      "epoch_train_top1_error": means["top1_error"],
                      "epoch_train_top5_error": means["top5_error"],
                      "elapsed_s": clock.elapsed()})
  target = config.train.stop_at_train_error
  if target > 0 and means["top1_error"] <= target:
    writer.print(f"Epoch {done // steps_per_epoch}: training top-1 error "
                 f"{means['top1_error']:.4f} reached train.stop_at_train_error={target:g}; "
                 "the run stops here.")
    return True
  return False


BAND = 0.01  # Relative distance from ln(num_classes) that counts as chance.


class StuckLoss:
  """Takes each step's training loss; `add` returns the line to print once the window is full,
  and a call with the losses fetched since the last one prints it."""

  def __init__(self, num_classes, window_steps, learning_rate, log=print):
    self.log = log
    self.chance = math.log(num_classes)
    self.window, self.learning_rate = window_steps, learning_rate
    self.since, self.told = None, False

  def add(self, step, loss):
    if self.told or self.window <= 0:
      return None
    if abs(loss - self.chance) > BAND * self.chance:
      self.since = None
      return None
    self.since = step if self.since is None else self.since
    if step - self.since + 1 < self.window:
      return None
    self.told = True
    return message(loss, self.chance, self.since, step, self.learning_rate)

  def __call__(self, losses):
    """`losses`: (step, training loss) of each step fetched since the last call."""
    for step, loss in losses:
      line = self.add(step, loss)
      if line:
        self.log(line)


def message(loss, chance, since, step, learning_rate):
  return (
      f"The training loss has stayed at chance since step {since}: {loss:.4f} at step {step}, "
      f"within {BAND:.0%} of ln(num_classes) = {chance:.4f}, so the network's output does not "
      "depend on its input yet. Known causes: section 5's biases of 1, which make fc7's units "
      "alike so that fc8's step moves every logit together (Caffe's bvlc_alexnet needed 0.1), "
      f"and a rate too high for the batch (learning_rate={learning_rate:g}). Try a recipe by "
      "name (--config=configs/paper.py:caffe or :cuda_convnet) or a lower "
      "--config.train.learning_rate; the run goes on (config.train.stuck_window_steps=0 turns "
      "this line off).")


# The trace starts after this many steps of the run (compilation, first allocations).
WARMUP_STEPS = 5


def make_profile(num_steps, workdir, start, total_steps, log=print):
  """profile(state, done), to call before each step with the steps done so far: traces steps
  first+1..first+num_steps, first = start + WARMUP_STEPS (fewer in a short run), then prints
  the top ops; None when num_steps <= 0 or the run has no room for it."""
  if num_steps <= 0:
    return None
  warmup = min(WARMUP_STEPS, total_steps - start - num_steps)
  if warmup < 1:
    log(f"config.profile_steps={num_steps}: the {total_steps - start} steps left leave no room "
        "for a warm-up step and the trace; not profiled.")
    return None
  first, logdir = start + warmup, paths.file(workdir, paths.TENSORBOARD)
  log(f"Profiling steps {first + 1}-{first + num_steps} into {logdir}/plugins/profile.")

  def profile(state, done):
    if done not in (first, first + num_steps):
      return
    jax.block_until_ready(state)  # The trace holds the steps' work, not only their dispatch.
    if done == first:
      options = jax.profiler.ProfileOptions()
      options.python_tracer_level = 0
      jax.profiler.start_trace(str(logdir), profiler_options=options)
      return
    jax.profiler.stop_trace()
    trace = latest_trace(logdir)
    log(f"Profile of steps {first + 1}-{first + num_steps} in {trace.parent}; the XLA ops "
        "that took longest (summed over devices):\n" + format_top_ops(top_ops(trace), num_steps))

  return profile


def latest_trace(logdir):
  """The newest `*.trace.json.gz` under <logdir>/plugins/profile (None if there is none)."""
  traces = sorted(pathlib.Path(logdir).glob("plugins/profile/*/*.trace.json.gz"))
  return traces[-1] if traces else None


def top_ops(trace_path, n=10):
  """([(op, total seconds, calls)] of the `n` XLA ops (trace events that name an "hlo_op")
  that took the most time, summed over devices and threads; the total seconds of all ops)."""
  with gzip.open(trace_path, "rt", encoding="utf-8") as f:
    events = json.load(f)["traceEvents"]
  total, calls = collections.Counter(), collections.Counter()
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") == "X" and "hlo_op" in args:
      name = f"{args.get('hlo_module', '?')}/{args['hlo_op']}"
      total[name] += e.get("dur", 0) * 1e-6
      calls[name] += 1
  return ([(name, seconds, calls[name]) for name, seconds in total.most_common(n)],
          sum(total.values()))


def format_top_ops(ops, num_steps):
  """Lines of the top ops: time per traced step, share of all ops' time, calls per step."""
  ops, everything = ops
  if not ops:
    return "  (no XLA op events in the trace)"
  width = max(len(name) for name, _, _ in ops)
  return "\n".join(f"  {name:<{width}} {1e3 * seconds / num_steps:9.2f} ms/step "
                   f"{100 * seconds / everything:5.1f}%  {calls / num_steps:g} calls/step"
                   for name, seconds, calls in ops)
