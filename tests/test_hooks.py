"""config.profile_steps: the shared tiny run traced 2 steps after its warm-up; the trace is
where TensorBoard looks and its top ops were printed."""
import threading

from alexnet_jax import hooks
from alexnet_jax import metrics


def test_a_two_step_trace_is_written_and_summarised(tiny_run):
  logdir = tiny_run.workdir / "tensorboard"
  runs = list((logdir / "plugins" / "profile").iterdir())
  assert len(runs) == 1
  assert list(runs[0].glob("*.xplane.pb")) and list(runs[0].glob("*.trace.json.gz"))
  assert "Profiling steps 6-7 into" in tiny_run.stdout
  ops, total = hooks.top_ops(hooks.latest_trace(logdir))
  assert ops and total > 0 and all(name.startswith("jit_") for name, _, _ in ops)
  assert any(name.startswith("jit_train_step/") for name, _, _ in ops)
  assert sum(seconds for _, seconds, _ in ops) <= total
  assert "the XLA ops that took longest" in tiny_run.stdout


def test_no_trace_when_the_run_is_too_short(tmp_path):
  said = []
  assert hooks.make_profile(2, tmp_path, start=8, total_steps=10, log=said.append) is None
  assert "leave no room" in said[0]
  assert hooks.make_profile(0, tmp_path, start=0, total_steps=10) is None


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
  writer, cadence = _Writer(), hooks.Cadence(total=10, log=3, epoch=10, evaluation=10,
                                             checkpoint=10)
  hooks.log_train(writer, cadence, 3, {"loss": 1.0, "top1_error": 0.5, "top5_error": 0.1}, 0.01,
                  clock, ten_crop=False)
  assert writer.rows[0]["cores_share"] == 0.75
  assert "input-bound: 0%, cores: 75%;" in writer.lines[0]
  for _ in range(2):
    clock.tick()
  now[0], cpu[0] = 105.0, 15.5  # A crowded machine: 1 CPU-second in 2 s.
  hooks.log_train(writer, cadence, 5, {"loss": 1.0, "top1_error": 0.5, "top5_error": 0.1}, 0.01,
                  clock, ten_crop=False)
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
