"""logs.py: library chatter goes to <workdir>/log.txt, the console keeps the run's lines and
one line per warning or error; the other commands print a user's error as one line."""
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

from alexnet_jax import errors
from alexnet_jax.faults import logs
from tests.test_train import _run_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")  # Run from ROOT: `tests` imports from there.

CHILD = """
import logging, sys, warnings
from absl import logging as absl_logging
from alexnet_jax.faults import logs
from ml_collections import ConfigDict
distributed = ConfigDict({"mode": sys.argv[2], "process_id": int(sys.argv[3])})
print(logs.setup(sys.argv[1], distributed), flush=True)
absl_logging.info("orbax-like chatter")
logging.getLogger("jax._src.xla_bridge").warning("A GPU is present but unusable.\\nDetails.")
warnings.warn("a deprecated thing")
try:
  1 / 0
except ZeroDivisionError:
  logging.getLogger("orbax").exception("A save failed")
raise RuntimeError("the run stops here")
"""


def run_child(workdir, mode="off", process_id=-1):
  return subprocess.run([sys.executable, "-c", CHILD, str(workdir), mode, str(process_id)],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_chatter_goes_to_the_file_warnings_and_errors_to_the_console(tmp_path):
  done = run_child(tmp_path / "new" / "workdir")  # Created when missing.
  log = tmp_path / "new" / "workdir" / "log.txt"
  assert done.stdout.strip() == str(log)
  console = done.stderr.splitlines()
  print(done.stderr)
  assert "orbax-like chatter" not in done.stderr
  assert (f"WARNING (jax._src.xla_bridge): A GPU is present but unusable. [more in {log}]"
          in console)
  assert any(line.startswith("WARNING (py.warnings): ") and "a deprecated thing" in line
             for line in console)
  assert f"ERROR (orbax): A save failed [more in {log}]" in console
  assert "ZeroDivisionError" not in done.stderr  # Its traceback is in the file only...
  assert console[-1] == "RuntimeError: the run stops here"  # ...but the program's own error
  assert done.returncode == 1                                # is printed as Python does.
  text = log.read_text()
  for line in ("orbax-like chatter", "Details.", "a deprecated thing", "ZeroDivisionError",
               "The program stopped:", "RuntimeError: the run stops here"):
    assert line in text, line


@pytest.mark.slow
@pytest.mark.parametrize("mode, process_id, name", [
    ("manual", 1, "log.process1.txt"), ("auto", -1, "log.")])
def test_each_process_of_a_multi_process_run_has_its_file(tmp_path, mode, process_id, name):
  done = run_child(tmp_path, mode, process_id)
  path = pathlib.Path(done.stdout.strip())
  assert path.parent == tmp_path and path.name.startswith(name) and path.name != "log.txt"
  assert "orbax-like chatter" in path.read_text()


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "file").write_text("")
  done = run_child(tmp_path / "file")
  assert f"--workdir={tmp_path / 'file'} is a file; give a directory" in done.stderr


@pytest.mark.slow
def test_a_short_run_prints_its_own_lines_and_logs_orbax_to_the_file(tmp_path):
  """Saves at every step (interim ones without metrics, which made orbax warn), a
  validation at the end: the console shows the run's lines, log.txt orbax's."""
  workdir = tmp_path / "run"
  done = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.main", "--config=tests/tiny_config.py",
       f"--workdir={workdir}", f"--config.data.cache_dir={tmp_path / 'cache'}",
       "--config.train.num_steps=3", "--config.checkpoint.every_steps=1",
       "--config.eval.ten_crop=False"],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Finished 3 steps" in done.stdout and "step 3: validation top-1 error" in done.stdout
  console = done.stdout + done.stderr
  for chatter in ("Saving checkpoint", "checkpoint_manager.py", "tracked_metric", "orbax",
                  "INFO", "jax_array_handlers"):
    assert chatter not in console, chatter
  text = (workdir / "log.txt").read_text()
  assert "[process=0] Saving checkpoint at step 1" in text  # Orbax's INFO line.
  assert "tracked_metric" not in text  # Fixed at its source, not just moved.


def test_a_commands_user_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

  def wrong(argv):
    raise errors.MissingFileError("No folder /data/imagenet (config.data.root): ...")

  with pytest.raises(SystemExit) as e:
    logs.one_line_errors(wrong, "data.stats")(["stats"])
  log = tmp_path / f"alexnet_jax.data.stats.{os.getpid()}.txt"
  assert e.value.code == ("Error: No folder /data/imagenet (config.data.root): ...\n"
                          f"(The traceback is in {log}.)")
  assert "Traceback" in log.read_text() and "in wrong" in log.read_text()

  def bug(argv):
    raise KeyError("a bug")

  with pytest.raises(KeyError):
    logs.one_line_errors(bug, "data.stats")(["stats"])


# A bug deep in the run: a ValueError that no user's input caused.
PLANTED_BUG = """
from alexnet_jax import schedule
def _bug(*args, **kwargs):
  raise ValueError("a planted bug")
schedule.create = _bug
"""


@pytest.mark.slow
def test_a_bug_in_the_run_shows_its_traceback_a_users_error_one_line(tmp_path):
  """Only errors.UserError is printed as one line: a ValueError is not the user's unless the
  code says so."""
  bug = _run_cli(tmp_path / "bug", tmp_path / "cache", prelude=PLANTED_BUG)
  lines = bug.stderr.splitlines()
  assert bug.returncode == 1, bug.stderr[-3000:]
  assert "Traceback (most recent call last):" in lines and "ValueError: a planted bug" in lines
  assert 'in _bug' in bug.stderr and not any(line.startswith("Error: ") for line in lines)
  assert "The program stopped:" in (tmp_path / "bug" / "log.txt").read_text()

  user = _run_cli(tmp_path / "user", tmp_path / "cache", "--config.train.batch_size=0")
  assert user.returncode == 1, user.stderr[-3000:]
  assert user.stderr.splitlines()[-2:] == [
      "Error: config.train.batch_size=0 must be positive.",
      f"(The traceback is in {tmp_path / 'user' / 'log.txt'}.)"], user.stderr[-3000:]
  assert "Traceback" not in user.stderr
  assert "Traceback" in (tmp_path / "user" / "log.txt").read_text()
