"""Where log records go (`setup`): the console keeps the run's lines and one line per warning,
<workdir>/log.txt the rest; `one_line_errors` for the other commands (docs/design.md)."""
import logging
import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path

from absl import logging as absl_logging

from alexnet_jax import errors
from alexnet_jax import paths

_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"
_CONSOLE_CHARS = 300


def setup(workdir, distributed=None):
  """The log file's path (one per process); call it once, before anything logs."""
  try:
    path = _log_path(workdir, distributed)
    to_file = logging.FileHandler(path, encoding="utf-8")
  except OSError as e:  # A workdir this user cannot write, or a full disk.
    raise errors.WriteRefusedError(f"Cannot write the log file of --workdir={workdir}: {e}") from e
  root = logging.getLogger()
  for handler in list(root.handlers):  # absl's handler prints every record to stderr.
    if handler is absl_logging.get_absl_handler() or (
        isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, None)):
      root.removeHandler(handler)
  to_file.setFormatter(logging.Formatter(_FILE_FORMAT))
  console = logging.StreamHandler(sys.stderr)
  console.setLevel(logging.WARNING)
  console.setFormatter(_OneLine(path))
  console.addFilter(lambda record: not getattr(record, "file_only", False))
  root.addHandler(to_file)
  root.addHandler(console)
  root.setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.captureWarnings(True)
  log = logging.getLogger(__name__)
  sys.unraisablehook = lambda u: log.info("Ignored exception in %r", u.object, exc_info=(
      u.exc_type, u.exc_value, u.exc_traceback))
  excepthook = sys.excepthook

  def log_then_print(*exc_info):
    log.error("The program stopped:", extra={"file_only": True}, exc_info=exc_info)
    excepthook(*exc_info)

  sys.excepthook = log_then_print
  logging.info("Logging to %s (argv: %s)", path, " ".join(sys.argv))
  return path


def _log_path(workdir, distributed):
  name = paths.LOG
  if distributed is not None and distributed.mode != "off":
    name = (f"log.process{distributed.process_id}.txt" if distributed.process_id >= 0
            else f"log.{socket.gethostname()}.{os.getpid()}.txt")
  if not paths.is_local(workdir):  # A bucket: a FileHandler cannot append there.
    return Path(tempfile.gettempdir()) / f"alexnet_jax.{os.getpid()}.{name}"
  directory = paths.root(workdir)
  if directory.exists() and not directory.is_dir():
    raise errors.ConfigError(f"--workdir={workdir} is a file; give a directory (it is created "
                             "when missing).")
  directory.mkdir(parents=True, exist_ok=True)
  return directory / name


class _OneLine(logging.Formatter):
  """`WARNING (logger): first line of the message`, and where the rest went."""

  def __init__(self, path):
    super().__init__()
    self.path = path

  def format(self, record):
    first, *rest = record.getMessage().strip().splitlines() or [""]
    more = rest or len(first) > _CONSOLE_CHARS or record.exc_info
    text = first if len(first) <= _CONSOLE_CHARS else first[:_CONSOLE_CHARS] + "..."
    return f"{record.levelname} ({record.name}): {text}" + (
        f" [more in {self.path}]" if more else "")


def one_line_errors(main, command):
  """`main` for app.run: a UserError in one line, its traceback in $TMPDIR (no workdir's log)."""
  def run(argv):
    try:
      return main(argv)
    except errors.UserError as e:
      path = Path(tempfile.gettempdir()) / f"alexnet_jax.{command}.{os.getpid()}.txt"
      path.write_text(" ".join(sys.argv) + "\n" + "".join(traceback.format_exception(e)))
      sys.exit(f"Error: {e}\n(The traceback is in {path}.)")
  return run
