"""config.profile_steps: the shared tiny run traced 2 steps after its warm-up; the trace is
where TensorBoard looks and its top ops were printed."""
from alexnet_jax import profiling


def test_a_two_step_trace_is_written_and_summarised(tiny_run):
  logdir = tiny_run.workdir / "tensorboard"
  runs = list((logdir / "plugins" / "profile").iterdir())
  assert len(runs) == 1
  assert list(runs[0].glob("*.xplane.pb")) and list(runs[0].glob("*.trace.json.gz"))
  assert "Profiling steps 6-7 into" in tiny_run.stdout
  ops, total = profiling.top_ops(profiling.latest_trace(logdir))
  assert ops and total > 0 and all(name.startswith("jit_") for name, _, _ in ops)
  assert any(name.startswith("jit_train_step/") for name, _, _ in ops)
  assert sum(seconds for _, seconds, _ in ops) <= total
  assert "the XLA ops that took longest" in tiny_run.stdout


def test_no_trace_when_the_run_is_too_short(tmp_path):
  said = []
  assert profiling.make_profile(2, tmp_path, start=8, total_steps=10, log=said.append) is None
  assert "leave no room" in said[0]
  assert profiling.make_profile(0, tmp_path, start=0, total_steps=10) is None
