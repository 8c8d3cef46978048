"""progress.py: plain periodic lines off a terminal and a bar on one, the time left that the
training log prints, the skip to a resumed position that reports itself; and the log lines of
the shared tiny run."""
import io
import re

import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax import metrics
from alexnet_jax import progress


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"),
                                           (3600 * 2 + 5 * 60 + 10, "2h05m"),
                                           (float("nan"), "?"), (float("inf"), "?")])
def test_format_duration(seconds, text):
  assert progress.format_duration(seconds) == text


def test_off_a_terminal_a_line_every_period_and_a_last_one():
  clock, stream = FakeClock(), io.StringIO()
  with progress.Progress(1000, "evaluation", every_s=30, stream=stream, clock=clock) as bar:
    for _ in range(10):
      clock.now += 10
      bar.update(100)
  lines = stream.getvalue().splitlines()
  assert lines == ["evaluation: 300/1,000 images (30.0%), 10.0 images/s, 1m10s left",
                   "evaluation: 600/1,000 images (60.0%), 10.0 images/s, 40s left",
                   "evaluation: 900/1,000 images (90.0%), 10.0 images/s, 10s left",
                   "evaluation: 1,000/1,000 images (100.0%), 10.0 images/s, 1m40s in all"]


def test_a_short_loop_off_a_terminal_prints_nothing_and_inactive_never():
  clock, stream = FakeClock(), io.StringIO()
  with progress.Progress(10, "evaluation", stream=stream, clock=clock) as bar:
    bar.update(10)
  with progress.Progress(10, "evaluation", stream=stream, clock=clock, every_s=0,
                         active=False) as bar:
    bar.update(10)
  assert stream.getvalue() == ""


def test_on_a_terminal_a_bar():
  stream = Terminal()
  with progress.Progress(50, "features of val", unit="images", stream=stream) as bar:
    assert type(bar.bar).__name__ == "tqdm"
    for _ in range(5):
      bar.update(10)
    assert bar.bar.n == 50
  assert stream.getvalue().startswith("\rfeatures of val:   0%|")  # Redrawn in place.
  assert "\n" not in stream.getvalue()  # And cleared at the end: no line left behind.


def test_time_left_counts_the_steps_and_evaluations_left():
  # Step 25 of 100, 0.5 s a step, an evaluation every 20 steps taking 4 s, then 10 crops.
  left, next_eval = progress.time_left(25, 100, 20, 0.5, 4.0, ten_crop=True)
  assert next_eval == pytest.approx(15 * 0.5)
  assert left == pytest.approx(75 * 0.5 + 4 * 4.0 + 10 * 4.0)  # Evaluations at 40, 60, 80, 100.
  left, next_eval = progress.time_left(40, 100, 20, 0.5, 4.0, ten_crop=False)
  assert (left, next_eval) == (60 * 0.5 + 4 * 4.0, 0.0)  # Its own evaluation is still to run.
  left, next_eval = progress.time_left(90, 95, 20, 1.0, None, ten_crop=False)
  assert (left, next_eval) == (5.0, 5.0)  # The last step evaluates; none timed yet.
  assert np.isnan(progress.time_left(1, 10, 5, float("nan"), None, False)[0])


def test_skip_reports_its_progress_and_skips_as_skip_does(monkeypatch):
  seen = []
  monkeypatch.setattr(progress.Progress, "update_to",
                      lambda self, done: (seen.append(done), setattr(self, "done", done)))
  ds = tf.data.Dataset.range(10_000).map(lambda i: (tf.strings.as_string(i), i))
  skipped = progress.skip(ds, 5_500, every=1_000)
  assert [int(i) for _, i in skipped.take(3)] == [5_500, 5_501, 5_502]
  assert seen == [0, 1_000, 2_000, 3_000, 4_000, 5_000, 5_500]
  assert [int(i) for _, i in progress.skip(ds, 10, every=1_000).take(1)] == [10]


def test_the_training_log_says_the_time_left_and_to_the_next_evaluation(tiny_run):
  lines = [line for line in tiny_run.stdout.splitlines() if line.startswith("step 12/30")]
  assert len(lines) == 1
  assert re.search(r"; (\d+m)?\d+s left, next evaluation in (\d+m)?\d+s$", lines[0]), lines[0]
  rows = [r for r in metrics.read_jsonl(tiny_run.workdir / "metrics.jsonl")
          if "time_left_s" in r]
  assert [r["step"] for r in rows] == list(range(1, 31))
  row = next(r for r in rows if r["step"] == 12)  # Evaluations every 5 steps: next at 15.
  assert row["next_eval_in_s"] == pytest.approx(3 * row["step_time_s"])
  assert row["time_left_s"] > 18 * row["step_time_s"]  # Plus four evaluations and 10 crops.
  assert rows[-1]["next_eval_in_s"] == 0
