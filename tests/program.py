"""The program as a user runs it, in this process: `main.main` with its flags parsed, the exit
status Python gives its `sys.exit`, the console (stderr) and the log file. A subprocess starts
TensorFlow and JAX again for each case (tens of seconds on 2 cores); the tests that need a real
process (a signal, a flag that fails to parse) start one."""
import contextlib
import io
import logging
import sys
import types

from absl import flags
from absl import logging as absl_logging

from alexnet_jax import main


def run(workdir, config=None, overrides=(), config_file="tests/tiny_config.py"):
  """Runs `python -m alexnet_jax.main --config=<config_file> --workdir=<workdir> <overrides>`;
  with `config`, that ConfigDict replaces the parsed one (a case the flags cannot spell, such as
  a folder made by the test). Returns status, stdout, stderr (what the console shows) and log
  (the log file's text, "" when there is none)."""
  argv = ["alexnet_jax.main", f"--config={config_file}", f"--workdir={workdir}", *overrides]
  root = logging.getLogger()
  # absl's logger level itself, not its verbosity: set_verbosity(get_verbosity()) turns an unset
  # level (every record passes to the root) into WARNING, and later tests lose orbax's INFO lines.
  saved = (list(root.handlers), root.level, sys.excepthook, sys.unraisablehook,
           absl_logging.get_absl_logger().level, sys.argv)
  out, err = io.StringIO(), io.StringIO()
  try:
    sys.argv = argv  # config_flags reads the --config.x overrides from sys.argv.
    flags.FLAGS(argv)
    if config is not None:
      flags.FLAGS["config"].value = config
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        main.main(argv[:1])
        code = None
      except SystemExit as e:
        code = e.code
      if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # What Python prints for sys.exit("text"), with status 1.
  finally:
    flags.FLAGS.unparse_flags()
    # config_flags defines a flag for each --config.x override it parses; another run in this
    # process that overrides x again would meet it as a duplicate.
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
      delattr(flags.FLAGS, name)
    for handler in root.handlers:
      if handler not in saved[0]:
        handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    sys.excepthook, sys.unraisablehook = saved[2], saved[3]
    absl_logging.get_absl_logger().setLevel(saved[4])
    sys.argv = saved[5]
    logging.captureWarnings(False)
  status = 0 if code is None else code if isinstance(code, int) else 1
  log = workdir / "log.txt"
  return types.SimpleNamespace(status=status, stdout=out.getvalue(), stderr=err.getvalue(),
                               log=log.read_text() if log.is_file() else "")


def assert_one_line_error(result, words, workdir, listed=False):
  """The promise of docs/faults.md: exit status 1, the error in one line on the console naming
  `words`, the line after it pointing at the log file, which holds the traceback. `listed`: an
  error that lists files, one indented line each (and what to do) between the two."""
  assert result.status == 1, (result.status, result.stderr[-2000:])
  lines = result.stderr.splitlines()
  errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  pointer = f"(The traceback is in {workdir / 'log.txt'}.)"
  assert lines[-1] == pointer, lines
  message = lines[errors[0]:-1]
  if listed:
    assert all(line.startswith("  ") for line in message[1:-1]), message
  else:
    assert len(message) == 1, message
  assert words in "\n".join(message) and len(message[0]) < 600, message
  assert "Traceback (most recent call last)" not in result.stderr
  assert "Traceback (most recent call last)" in result.log and words in result.log
