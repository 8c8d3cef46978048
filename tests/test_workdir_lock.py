"""workdir_lock.py with real processes: a second run is refused with the first one's host and
pid; a run killed with SIGKILL leaves no lock behind; process 1 of a run does not lock."""
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from alexnet_jax.faults import workdir_lock

pytestmark = pytest.mark.slow  # Real processes: see setup.cfg's markers.

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from alexnet_jax.faults import workdir_lock
lock = workdir_lock.acquire(sys.argv[1], int(sys.argv[2]))
print("locked" if lock else "not locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold(workdir, process_index=0, seconds=120):
  return subprocess.Popen([sys.executable, "-c", HOLD, str(workdir), str(process_index),
                           str(seconds)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_run_is_refused_until_the_first_is_killed(tmp_path):
  first = hold(tmp_path)
  try:
    assert first.stdout.readline().strip() == "locked"
    second = hold(tmp_path, seconds=0)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert (f"WorkdirBusyError: --workdir={tmp_path} is in use by another run (host "
            f"{socket.gethostname()}, pid {first.pid}, since ") in err
    assert f"lock {tmp_path / 'run.lock'}). Stop that run" in err
    # Process 1 of a multi-host run shares the workdir with its process 0.
    peer = hold(tmp_path, process_index=1, seconds=0)
    assert peer.communicate(timeout=60)[0].strip() == "not locked" and peer.returncode == 0
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # Killed without a chance to clean up: the kernel dropped the lock; the file is stale.
  assert f"pid {first.pid}," in (tmp_path / "run.lock").read_text()
  third = hold(tmp_path, seconds=0)
  assert third.communicate(timeout=60)[0].strip() == "locked" and third.returncode == 0
  assert f"pid {third.pid}," in (tmp_path / "run.lock").read_text()


def test_release_lets_the_next_run_in(tmp_path):
  lock = workdir_lock.acquire(tmp_path / "new")
  assert lock is not None and (tmp_path / "new" / "run.lock").exists()
  try:
    other = hold(tmp_path / "new", seconds=0)
    err = other.communicate(timeout=60)[1]
    assert f"in use by another run (host {socket.gethostname()}, pid {os.getpid()}," in err
  finally:
    workdir_lock.release(lock)
  again = workdir_lock.acquire(tmp_path / "new")
  assert f"pid {os.getpid()}," in (tmp_path / "new" / "run.lock").read_text()
  workdir_lock.release(again)
