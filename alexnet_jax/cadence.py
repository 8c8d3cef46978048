"""When the training loop does what besides the step, and what it says then: `Cadence` (the
steps, log, epoch, evaluation, checkpoint), `log_train`, `log_epoch` and `StuckLoss`, the line
said once when the loss sits at chance."""
import dataclasses
import math

import jax

from alexnet_jax import errors
from alexnet_jax import progress


@dataclasses.dataclass(frozen=True)
class Cadence:
  """The loop's periods in steps, computed once from the config and the epoch's length."""
  total: int
  log: int
  epoch: int
  evaluation: int
  checkpoint: int

  @classmethod
  def of(cls, config, info):
    """The steps from the training split's size (`info`) and the global batch."""
    epoch = info["num_train"] // config.train.batch_size
    if epoch < 1:
      raise errors.ConfigError(
          f"config.train.batch_size={config.train.batch_size} exceeds the training split's "
          f"{info['num_train']} examples: lower the batch size or use more data.")
    total = config.train.num_steps or int(round(config.train.num_epochs * epoch))
    return cls(total=max(1, total), log=config.train.log_every_steps, epoch=epoch,
               evaluation=max(1, int(round(config.eval.every_epochs * epoch))),
               checkpoint=config.checkpoint.every_steps)

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
    return any(due(done) for due in (self.logs, self.ends_epoch, self.evaluates, self.saves))


def log_train(writer, cadence, done, means, lr, clock, *, ten_crop):
  """The training log line: mean loss and errors, speed, input wait, cores, time left."""
  images_per_s, step_time, input_fraction, cores_share = clock.lap()
  left, next_eval = progress.time_left(done, cadence.total, cadence.evaluation, step_time,
                                       clock.eval_s, ten_crop)
  scalars = {"epoch": done / cadence.epoch, "train_loss": means["loss"],
             "train_top1_error": means["top1_error"], "train_top5_error": means["top5_error"],
             "learning_rate": lr, "images_per_s": images_per_s, "step_time_s": step_time,
             "input_wait_fraction": input_fraction, "cores_share": cores_share,
             "elapsed_s": clock.elapsed(), "time_left_s": left, "next_eval_in_s": next_eval}
  # On a CPU the cores' share tells a crowded machine; on an accelerator it is only the host's.
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
  reached = target > 0 and means["top1_error"] <= target
  if reached:
    writer.print(f"Epoch {done // steps_per_epoch}: training top-1 error "
                 f"{means['top1_error']:.4f} reached train.stop_at_train_error={target:g}; "
                 "the run stops here.")
  return reached


BAND = 0.01  # Relative distance from ln(num_classes) that counts as chance.


class StuckLoss:
  """Says once that the loss stayed within BAND of ln(num_classes) for `window_steps` steps;
  told, not stopped (docs/design.md, "The loop's cadence")."""

  def __init__(self, num_classes, window_steps, learning_rate, log=print):
    self.window, self.learning_rate = window_steps, learning_rate
    self.chance = math.log(num_classes)
    self.log, self.since, self.told = log, None, False  # `since`: the window's first step.

  def add(self, step, loss):
    if self.told or self.window <= 0:
      return None
    if abs(loss - self.chance) > BAND * self.chance:
      self.since = None
    elif self.since is None:
      self.since = step
    if self.since is None or step - self.since + 1 < self.window:
      return None
    self.told = True
    return (
        f"The training loss has stayed at chance since step {self.since}: {loss:.4f} at step "
        f"{step}, within {BAND:.0%} of ln(num_classes) = {self.chance:.4f}, so the network's "
        "output does not depend on its input yet. Known causes: section 5's biases of 1, which "
        "make fc7's units alike so that fc8's step moves every logit together (Caffe's "
        "bvlc_alexnet needed 0.1), and a rate too high for the batch "
        f"(learning_rate={self.learning_rate:g}). Try a recipe by name "
        "(--config=configs/paper.py:caffe or :cuda_convnet) or a lower "
        "--config.train.learning_rate; the run goes on (config.train.stuck_window_steps=0 turns "
        "this line off).")

  def __call__(self, losses):
    """`losses`: (step, training loss) of each step fetched since the last call."""
    for line in filter(None, (self.add(step, loss) for step, loss in losses)):
      self.log(line)

