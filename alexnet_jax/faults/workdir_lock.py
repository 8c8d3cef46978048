"""One training run per workdir: `acquire` takes a flock on <workdir>/run.lock (process 0), which
the kernel drops however its holder dies; a second run is refused (docs/design.md)."""
import errno
import fcntl
import logging
import os
import socket
import time

from alexnet_jax import errors
from alexnet_jax import paths


class WorkdirBusyError(errors.UserError, RuntimeError):
  """Another run holds the workdir."""


def acquire(workdir, process_index=0):
  """The lock to keep for the run's life (None but on process 0); call before writing."""
  if process_index != 0:
    return None
  if not paths.is_local(workdir):
    logging.warning("--workdir=%s is not a local folder: flock cannot lock it, so nothing "
                    "stops a second run from using it at the same time.", workdir)
    return None
  path = paths.file(workdir, paths.LOCK)
  path.parent.mkdir(parents=True, exist_ok=True)
  lock = open(path, "a+", encoding="utf-8")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.seek(0)
    holder = lock.read().strip() or "its host and pid not yet written"
    lock.close()
    raise WorkdirBusyError(
        f"--workdir={workdir} is in use by another run ({holder}; lock {path}). Stop that run "
        "or let it finish, or choose another --workdir.") from None
  except OSError as e:
    lock.close()
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      raise
    logging.warning("Cannot lock %s (%s): nothing stops a second run from using this workdir "
                    "at the same time.", path, e)
    return None
  lock.truncate(0)  # Opened to append: the write goes to the start of the emptied file.
  lock.write(f"host {socket.gethostname()}, pid {os.getpid()}, since "
             f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
  lock.flush()
  return lock


def release(lock):
  """Gives the lock back (exiting does too)."""
  if lock is not None and not lock.closed:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
