"""A run's own files that the filesystem refused (no space, a quota, permissions, read-only),
told in one line: `naming`, `run_file_error`, `is_write_refusal`; checkpoints/integrity.py too."""
import contextlib
import errno
import os
import re
import shutil

from alexnet_jax import errors
from alexnet_jax import paths

# errno values that mean "this filesystem will not take the file", not a bug.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.EFBIG, errno.EIO)


class RunFileWriteError(errors.WriteRefusedError):
  """A run's file beside its checkpoints (metrics, summary, ...) the filesystem refused."""


@contextlib.contextmanager
def naming(path):
  """An OSError raised inside names `path`: a write's or flush's error carries no file name. A
  full disk or a lost permission is the user's to fix (a RunFileWriteError); any other is a bug."""
  try:
    yield
  except OSError as e:
    if isinstance(e, errors.UserError) or e.errno is None:
      raise
    if errno_of(e) is not None:
      raise RunFileWriteError(e.errno, e.strerror, e.filename or str(path)) from e
    if e.filename is None:
      raise OSError(e.errno, e.strerror, str(path)) from e
    raise


def run_file_error(error, workdir):
  """A one-line RunFileWriteError: the file, why, the space free and the intact steps."""
  code = errno_of(error)
  folder = paths.checkpoints(workdir)
  steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() \
      else []
  free = free_space(workdir)
  return RunFileWriteError(
      f"Could not write {getattr(error, 'filename', None) or workdir}: {os.strerror(code)}"
      f"{f' ({free} free there)' if free else ''}. " + what_to_do(
          code, steps, f"The checkpoints already saved (steps {', '.join(map(str, steps))})",
          "No checkpoint"))


def what_to_do(code, steps, saved, nothing):
  """The end of a refusal's message: resume from the last of `steps` once `code` is fixed."""
  fix = ("once there is room" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
         else "once it is writable")
  if steps:
    return (f"{saved} are intact; start the same command again {fix} to resume from step "
            f"{steps[-1]}, or choose another --workdir.")
  return f"{nothing} was saved yet; start again {fix}, or choose another --workdir."


def free_space(directory):
  """The space free at `directory`, in words; None where it cannot be asked (a bucket)."""
  if paths.is_local(directory):
    with contextlib.suppress(OSError):
      return megabytes(shutil.disk_usage(directory).free)
  return None


def is_write_refusal(error):
  """A refusal no message explains yet, or a run file's, which `run_file_error` completes."""
  return errno_of(error) is not None and (
      not isinstance(error, errors.UserError) or type(error) is RunFileWriteError)


def errno_of(error):
  """The errno of a filesystem refusal in `error` or its causes (tensorstore's os_error_code)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    found = re.search(r"os_error_code='?(\d+)", str(error))
    code = getattr(error, "errno", None) or (int(found.group(1)) if found else None)
    if code in WRITE_ERRNOS:
      return code
    error = error.__cause__ or error.__context__
  return None


def megabytes(n):
  return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"
