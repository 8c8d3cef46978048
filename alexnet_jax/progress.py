"""How far a long loop has got: `Progress` (a tqdm bar in a terminal, else a line every 30 s),
`skip` to a resumed position, and `time_left`, the training log's estimate
(docs/progress_and_profile.md)."""
import contextlib
import math
import sys
import time


def format_duration(seconds):
  """12s, 3m10s, 2h05m; "?" for an unknown (nan or infinite) time."""
  if seconds is None or not math.isfinite(seconds):
    return "?"
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def time_left(done, total_steps, eval_every, step_time, eval_s, ten_crop):
  """(seconds to the run's end, to its next evaluation): the steps left at `step_time`, the
  evaluations left at `eval_s` (0 before one is timed), the final 10-crop one as ten."""
  next_eval = min(total_steps, -(-done // eval_every) * eval_every)
  evals = (total_steps - 1) // eval_every - (done - 1) // eval_every + 1
  evaluation = (evals + (10 if ten_crop else 0)) * (eval_s or 0.0)
  return (total_steps - done) * step_time + evaluation, (next_eval - done) * step_time


class Progress(contextlib.AbstractContextManager):
  """Counts `unit`s of `total` (None: unknown) on stderr, nothing when not `active`."""

  def __init__(self, total, what, *, unit="images", every_s=30.0, stream=None, active=True,
               clock=time.monotonic):
    self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
    self.stream = sys.stderr if stream is None else stream
    self.active, self.clock = active, clock
    self.done, self.start = 0, clock()
    self.last_line, self.lines = self.start, 0
    self.bar = None
    if active and _isatty(self.stream):
      from tqdm import tqdm
      self.bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream, leave=False,
                      dynamic_ncols=True, mininterval=0.5)

  def __exit__(self, *exc):
    self.close()

  def update(self, n=1):
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
    elif self.active and (now := self.clock()) - self.last_line >= self.every_s:
      self._line(now)

  def update_to(self, done):
    self.update(done - self.done)

  def close(self):
    if self.bar is not None:
      self.bar.close()
      self.bar = None
    elif self.active and self.lines:  # A loop long enough to report once gets a last line.
      self._line(self.clock(), final=True)
    self.active = False

  def _line(self, now, final=False):
    """done/total, percent, rate and time left (or taken, at the end)."""
    elapsed = max(now - self.start, 1e-9)
    rate = self.done / elapsed
    count = f"{self.done:,}" if self.total is None else f"{self.done:,}/{self.total:,}"
    line = f"{self.what}: {count} {self.unit}"
    if self.total:
      line += f" ({100 * self.done / self.total:.1f}%)"
    line += f", {rate:,.1f} {self.unit}/s"
    if final:
      line += f", {format_duration(elapsed)} in all"
    elif self.total:
      left = (self.total - self.done) / rate if rate > 0 else float("inf")
      line += f", {format_duration(left)} left"
    print(line, file=self.stream, flush=True)
    self.last_line, self.lines = now, self.lines + 1


def _isatty(stream):
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


def skip(ds, n, what="skipping to the resumed position", every=1024, active=True):
  """`ds.skip(n)` with a progress bar (a TFDS stream reads every record before the resumed
  position: minutes on ImageNet); the same elements as plain `skip`."""
  import tensorflow as tf  # Only the input needs it.
  if n < every:
    return ds.skip(n)
  bar = Progress(n, what, unit="records", active=active)

  def report(i):
    bar.update_to(min(int(i), n))
    if int(i) >= n:
      bar.close()
    return 0

  def tick(i, element):
    due = tf.logical_or(tf.logical_and(tf.equal(i % every, 0), tf.less(i, n)), tf.equal(i, n))
    done = tf.cond(due, lambda: tf.py_function(report, [i], tf.int32),
                   lambda: tf.constant(0, tf.int32))
    with tf.control_dependencies([done]):
      return tf.nest.map_structure(tf.identity, element)

  return ds.enumerate().map(tick).skip(n)
