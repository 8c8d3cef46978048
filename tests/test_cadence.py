"""The training log line and its scalars: the share of the cores a run used since the last
line, and the CPU time it counts."""
import threading

from alexnet_jax import cadence
from alexnet_jax import metrics


class _Writer:
  def __init__(self):
    self.rows, self.lines = [], []

  def write(self, step, scalars, console=None):
    self.rows.append(scalars)
    self.lines.append(console.format(step=step, **scalars))


def test_the_log_line_ends_with_the_share_of_the_cores_used_since_the_last(monkeypatch):
  """3 s of wall time in which the process used 4.5 CPU-seconds of 2 cores: 75%; the summary
  carries the share over every timed step."""
  now, cpu = [100.0], [10.0]
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
  monkeypatch.setattr(metrics, "cpu_seconds", lambda: cpu[0])
  monkeypatch.setattr(metrics, "cores", lambda: 2)
  clock = metrics.Clock(batch_size=8)
  clock.tick()  # The first step: marks the start of the laps.
  for _ in range(3):
    clock.tick()
  now[0], cpu[0] = 103.0, 14.5
  writer, periods = _Writer(), cadence.Cadence(total=10, log=3, epoch=10, evaluation=10,
                                               checkpoint=10)
  cadence.log_train(writer, periods, 3, {"loss": 1.0, "top1_error": 0.5, "top5_error": 0.1},
                    0.01, clock, ten_crop=False)
  assert writer.rows[0]["cores_share"] == 0.75
  assert "input-bound: 0%, cores: 75%;" in writer.lines[0]
  for _ in range(2):
    clock.tick()
  now[0], cpu[0] = 105.0, 15.5  # A crowded machine: 1 CPU-second in 2 s.
  cadence.log_train(writer, periods, 5, {"loss": 1.0, "top1_error": 0.5, "top5_error": 0.1},
                    0.01, clock, ten_crop=False)
  assert "cores: 25%;" in writer.lines[1]
  assert clock.mean_cores_share() == (4.5 + 1.0) / (5.0 * 2)


def test_the_cpu_time_counts_every_thread():
  start = metrics.cpu_seconds()
  spin = lambda: sum(i * i for i in range(2_000_000))
  threads = [threading.Thread(target=spin) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert metrics.cpu_seconds() - start > 0.05 and metrics.cores() >= 1
