"""Stopping on SIGTERM or SIGINT at a step every process agrees on, so that it is saved:
`install`, `should_stop(step)` after every step, `stop_line`, `EXIT_STATUS`; docs/design.md,
"Preemption"."""
import logging
import os
import signal

import jax

# EX_TEMPFAIL, "the user is invited to retry": not 143, which says SIGTERM killed the process.
EXIT_STATUS = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)

class Preempted(Exception):
  """The run saved the step a SIGTERM or SIGINT arrived in and stopped; main.py exits with
  EXIT_STATUS."""

  def __init__(self, step):
    super().__init__(f"preempted after step {step}")
    self.step = step


_received = []    # The signals that arrived since install(), by name.
_previous = {}    # signal -> the handler install() replaced.


def install():
  """Starts listening for SIGTERM and SIGINT (call after jax.distributed.initialize, on the
  main thread, before the first step)."""
  _received.clear()
  if _several_processes():
    if not jax.config.jax_enable_preemption_service:
      logging.warning("jax_enable_preemption_service is off: a SIGTERM will kill this process "
                      "without saving (the processes could not agree on a step to save).")
      return
    _previous[signal.SIGINT] = signal.signal(signal.SIGINT, _pass_on_as_sigterm)
    return
  for signum in SIGNALS:
    _previous[signum] = signal.signal(signum, _note)


def uninstall():
  """Puts back the handlers `install` replaced (after the loop; in tests)."""
  for signum, handler in _previous.items():
    signal.signal(signum, handler)
  _previous.clear()


def should_stop(step):
  """True when the loop must save `step` (steps done) and stop, on every process alike; call it
  after every step on every process."""
  if _several_processes() and jax.config.jax_enable_preemption_service:
    from jax.experimental import multihost_utils
    return bool(multihost_utils.reached_preemption_sync_point(int(step)))
  return bool(_received)


def stop_line(step, checkpoint_dir):
  """The line the loop prints once `step` is saved."""
  what = _received[0] if _received else "a preemption notice"
  return (f"Stopped on {what} after step {step}, saved in {checkpoint_dir}; the same command "
          f"resumes from there (exit status {EXIT_STATUS}).")


def _several_processes():
  return jax.distributed.is_initialized()


def _note(signum, frame):
  del frame
  name = signal.Signals(signum).name
  if name in _received:  # The second one: stop now, as without a handler.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  _received.append(name)
  logging.warning("%s received: the run saves a checkpoint after this step and stops (send it "
                  "again to stop at once).", name)


def _pass_on_as_sigterm(signum, frame):
  """Several processes: JAX's preemption service listens for SIGTERM only."""
  del frame
  if signal.Signals(signum).name in _received:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  _received.append(signal.Signals(signum).name)
  logging.warning("SIGINT received: passed on to JAX's preemption service; the processes save "
                  "a checkpoint at a step they all reach and stop (again to stop at once).")
  os.kill(os.getpid(), signal.SIGTERM)
