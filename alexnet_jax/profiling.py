"""A jax.profiler trace of a few training steps (config.profile_steps) and its slowest XLA ops:
`make_profile`, `latest_trace`, `top_ops`, `format_top_ops` (docs/progress_and_profile.md)."""
import collections
import gzip
import json
import pathlib

import jax

from alexnet_jax import paths


# The trace starts after this many steps of the run (compilation, first allocations).
WARMUP_STEPS = 5


def make_profile(num_steps, workdir, start, total_steps, log=print):
  """profile(state, done), called before each step: traces `num_steps` steps after
  WARMUP_STEPS, then prints the top ops; None when off or the run has no room for it."""
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
  """([(op, seconds, calls)] of the `n` slowest XLA ops, summed over devices; all ops' seconds)."""
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
