"""Says, once, when a run's training loss sits at chance: within 1% of ln(num_classes) for
config.train.stuck_window_steps steps in a row. Such a run looks alive (its steps go on, its
rate is not dropped) but its output does not depend on the image. It is told, not stopped:
some recipes leave chance late (Caffe's users saw the loss fall after 2,000 iterations)."""
import math

BAND = 0.01  # Relative distance from ln(num_classes) that counts as chance.


class Watch:
  """Takes each step's training loss; `add` returns the line to print once the window is full."""

  def __init__(self, num_classes, window_steps, learning_rate):
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
