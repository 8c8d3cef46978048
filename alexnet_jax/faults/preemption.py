"""Stopping on SIGTERM or SIGINT at a step every process agrees on, so that it is saved: `install`,
`should_stop(step)` after every step, `stop_line`; docs/design.md, "Preemption"."""
import logging
import os
import signal

import jax

# EX_TEMPFAIL, "the user is invited to retry": not 143, which says SIGTERM killed the process.
EXIT_STATUS = 75


class Preempted(Exception):
  """Preempted(step): the step a signal came in is saved; main exits with EXIT_STATUS."""


_received = []    # The signals that arrived since install(), by name.
_previous = {}    # signal -> the handler install() replaced.


def install():
  """Call after jax.distributed.initialize, on the main thread, before the first step."""
  _received.clear()
  if not jax.distributed.is_initialized():
    for signum in (signal.SIGTERM, signal.SIGINT):
      _previous[signum] = signal.signal(signum, _note)
  elif jax.config.jax_enable_preemption_service:
    # JAX's preemption service listens for SIGTERM only: a SIGINT is passed on as one.
    _previous[signal.SIGINT] = signal.signal(signal.SIGINT, _note)
  else:
    logging.warning("jax_enable_preemption_service is off: a SIGTERM will kill this process "
                    "without saving (the processes could not agree on a step to save).")


def uninstall():
  """Puts back the handlers `install` replaced (after the loop; in tests)."""
  for signum, handler in _previous.items():
    signal.signal(signum, handler)
  _previous.clear()


def should_stop(step):
  """True, on every process alike, when the loop must save `step` and stop: call it each step."""
  if jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service:
    from jax.experimental import multihost_utils
    return bool(multihost_utils.reached_preemption_sync_point(int(step)))
  return bool(_received)


def stop_line(step, checkpoint_dir):
  """The line the loop prints once `step` is saved."""
  what = _received[0] if _received else "a preemption notice"
  return (f"Stopped on {what} after step {step}, saved in {checkpoint_dir}; the same command "
          f"resumes from there (exit status {EXIT_STATUS}).")


def _note(signum, frame):
  del frame
  name = signal.Signals(signum).name
  if name in _received:  # The second one: stop now, as without a handler.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  _received.append(name)
  if jax.distributed.is_initialized():
    logging.warning("SIGINT received: passed on to JAX's preemption service; the processes "
                    "save a checkpoint at a step they all reach and stop (again to stop at once).")
    os.kill(os.getpid(), signal.SIGTERM)
  else:
    logging.warning("%s received: the run saves a checkpoint after this step and stops (send it "
                    "again to stop at once).", name)
