"""preemption.py: real signals to this process, to a child, and to one of two jax.distributed
processes, which must then stop at the same step."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from alexnet_jax.faults import preemption

pytestmark = pytest.mark.slow  # Real processes: see setup.cfg's markers.

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")  # Run from ROOT: `tests` imports from there.

# A stand-in for the training loop: a step every 50 ms (process 1 slower, so that the two
# processes are at different steps when the signal comes), a line per step.
LOOP = """
import sys, time
import jax
from alexnet_jax.faults import preemption

if len(sys.argv) > 1:
  jax.distributed.initialize("127.0.0.1:" + sys.argv[1], 2, int(sys.argv[2]),
                             initialization_timeout=60)
preemption.install()
for step in range(1, 2000):
  time.sleep(0.05 * (1 + jax.process_index()))
  print("step", step, flush=True)
  if preemption.should_stop(step):
    print(preemption.stop_line(step, "ckpt"), flush=True)
    sys.exit(preemption.EXIT_STATUS)
"""


def start(*args):
  return subprocess.Popen([sys.executable, "-c", LOOP, *map(str, args)], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, step):
  """The child's output up to its line for `step`, which the later communicate() no longer
  returns: a busy child can stop right after that step, printing no other step line."""
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.strip() == f"step {step}":
      return "".join(seen)
  raise AssertionError(f"the child ended before step {step}: {proc.stderr.read()[-3000:]}")


def finish(proc, timeout=120):
  try:
    out, err = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return out, err


@pytest.fixture
def handlers():
  preemption.install()
  yield
  preemption.uninstall()


def test_a_signal_to_this_process_is_noted_not_fatal(handlers):
  assert not preemption.should_stop(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert preemption.should_stop(2)
  assert preemption.stop_line(2, "/w/checkpoints") == (
      "Stopped on SIGTERM after step 2, saved in /w/checkpoints; the same command resumes "
      "from there (exit status 75).")


def test_uninstall_puts_the_handlers_back():
  before = signal.getsignal(signal.SIGINT)
  preemption.install()
  assert signal.getsignal(signal.SIGINT) is not before
  preemption.uninstall()
  assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_process_stops_after_the_step_in_flight(signum):
  child = start()
  seen = ""
  try:
    seen = wait_for_step(child, 5)
    child.send_signal(signum)
  finally:
    out, err = finish(child)
  out = seen + out
  assert child.returncode == preemption.EXIT_STATUS, err[-3000:]
  stops = [line for line in out.splitlines() if line.startswith("Stopped")]
  steps = [int(line.split()[1]) for line in out.splitlines() if line.startswith("step")]
  assert stops == [f"Stopped on {signal.Signals(signum).name} after step {steps[-1]}, saved in "
                   "ckpt; the same command resumes from there (exit status 75)."]
  # Soon after step 5: the step in flight when the signal came (the parent may read the pipe
  # a few steps late on a busy machine).
  assert 5 <= steps[-1] <= 25
  assert f"{signal.Signals(signum).name} received" in err


def test_a_second_signal_stops_at_once():
  child = start()
  try:
    wait_for_step(child, 3)
    child.send_signal(signal.SIGINT)
    for line in child.stderr:  # Sent at once, the two would merge into one pending signal.
      if "SIGINT received" in line:
        break
    child.send_signal(signal.SIGINT)
  finally:
    out, _ = finish(child)
  assert child.returncode == -signal.SIGINT and "Stopped" not in out


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("signum, target", [(signal.SIGTERM, 1), (signal.SIGINT, 0)])
def test_two_processes_stop_at_the_same_step(signum, target):
  """The signal reaches one process; both stop, after the same step, neither hangs."""
  port = _free_port()
  procs = [start(port, 0), start(port, 1)]
  try:
    seen = wait_for_step(procs[1], 5)  # Process 1 is the slower: process 0 is further on.
    time.sleep(0.2)
    procs[target].send_signal(signum)
    results = [finish(p) for p in procs]
    results[1] = (seen + results[1][0], results[1][1])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  last = []
  for p, (out, err) in zip(procs, results):
    assert p.returncode == preemption.EXIT_STATUS, err[-3000:]
    steps = [int(line.split()[1]) for line in out.splitlines() if line.startswith("step ")]
    assert out.splitlines()[-1].startswith("Stopped on ") and out.count("Stopped") == 1
    last.append(steps[-1])
  assert last[0] == last[1] >= 5
