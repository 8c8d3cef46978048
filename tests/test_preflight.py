"""Every kind of bad input we could think of: each gets a clear error naming the setting or the
file (or, where the input is fine after all, a run that works), and nothing already in the
workdir is lost. docs/faults.md's table "What happens when ..." lists the same rows. Each runs
through the program as a user starts it (tests/program.py: main.main in this process, a
subprocess where the flags themselves are wrong): one line on the console, exit status 1, the
traceback in log.txt."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import errors
from alexnet_jax.data import stats
from tests import program
from tests import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_with(cache_dir, **fields):
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  config.train.update(num_steps=1)
  config.eval.update(ten_crop=False)
  for key, value in fields.items():
    *parents, name = key.split("__")
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def image_folder(root, val_classes=("a", "b"), extra=None):
  """root/{train,val}/<class>/k.jpg, 4 images a class; `extra(root)` adds the bad part."""
  for split, classes in (("train", ("a", "b")), ("val", val_classes)):
    for c in classes:
      folder = root / split / c
      folder.mkdir(parents=True, exist_ok=True)
      for k in range(4):
        pixels = np.random.default_rng(k).integers(0, 255, (90, 90, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.jpg")
  if extra:
    extra(root)
  return root


def folder_config(cache_dir, root):
  config = config_with(cache_dir)
  config.data.update(source="folder", root=str(root), mean="none", pca_noise_std=0.0)
  config.model.num_classes = 2
  config.train.batch_size = config.eval.batch_size = 4
  return config


def _png_named_jpeg(root):
  Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(root / "train" / "a" / "p.png")
  os.rename(root / "train" / "a" / "p.png", root / "train" / "a" / "p.JPEG")


def _other_stats(cache_dir, tmp_path):
  """Statistics of the right size, computed for another dataset."""
  other = config_with(cache_dir)
  other.data.generated.num_classes = 6
  path = tmp_path / "other_stats.npz"
  stats.save_stats(stats.compute_stats(other), str(path))
  return config_with(cache_dir, data__stats_file=str(path))


# (row, how to make the config (cache_dir, tmp_path), error type, words the message must hold);
# error None: the input is fine and the run trains.
ROWS = [
    ("batch size 0", lambda c, t: config_with(c, train__batch_size=0), errors.ConfigError,
     "config.train.batch_size=0 must be positive"),
    ("negative learning rate", lambda c, t: config_with(c, train__learning_rate=-0.01),
     errors.ConfigError, "config.train.learning_rate=-0.01 must not be negative"),
    ("unknown resize", lambda c, t: config_with(c, data__resize="lanczos"), errors.ConfigError,
     "config.data.resize='lanczos': use 'antialias'"),
    ("zero epochs", lambda c, t: config_with(c, train__num_steps=0, train__num_epochs=0),
     errors.ConfigError, "config.train.num_epochs=0 must be positive"),
    ("width 0", lambda c, t: config_with(c, model__width=0.0), errors.ConfigError,
     "config.model.width=0.0 must be positive"),
    ("mesh.model=3", lambda c, t: config_with(c, mesh__model=3), errors.ConfigError,
     "config.mesh.model=3"),
    ("crops larger than the images", lambda c, t: config_with(c, model__image_size=80),
     errors.ConfigError, "config.model.image_size=80 crops cannot come from images of "
     "config.data.resize_size=72"),
    ("a decoded cache of a streamed TFDS split",
     lambda c, t: config_with(c, data__source="tfds", data__decoded_cache="memory"),
     errors.ConfigError, "config.data.decoded_cache='memory' needs an indexed split"),
    ("an unknown implementation switch", lambda c, t: config_with(c, impl__pool_grad="avg"),
     errors.ConfigError, "config.impl.pool_grad='avg': use one of ('custom', 'reduce_window')"),
    ("a negative per-layer weight scale",
     lambda c, t: config_with(c, model__layer_weight_std__fc6=-0.1), errors.ConfigError,
     "config.model.layer_weight_std.fc6=-0.1"),
    ("a batch the devices do not divide", lambda c, t: config_with(c, train__batch_size=7),
     errors.ConfigError, "config.train.batch_size=7 does not split evenly over the 2 devices"),
    ("an empty image folder", lambda c, t: folder_config(c, _empty(t)), errors.MissingFileError,
     "No images"),
    ("a class folder with no images",
     lambda c, t: folder_config(c, image_folder(t / "d", extra=lambda r: (
         r / "train" / "c").mkdir())), errors.MissingFileError, "train/c holds no images"),
    ("evaluation classes other than the training classes",
     lambda c, t: folder_config(c, image_folder(t / "d", val_classes=("a", "z"))),
     errors.ConfigError, "only in 'val': ['z']"),
    ("a .txt file among the images",
     lambda c, t: folder_config(c, image_folder(t / "d", extra=lambda r: (
         r / "train" / "a" / "notes.txt").write_text("x"))), None, None),
    ("a zero-byte JPEG",
     lambda c, t: folder_config(c, image_folder(t / "d", extra=lambda r: (
         r / "train" / "a" / "z.jpg").write_bytes(b""))), errors.ConfigError,
     "train/a/z.jpg"),
    ("a PNG named .JPEG",
     lambda c, t: folder_config(c, image_folder(t / "d", extra=_png_named_jpeg)), None, None),
    ("a CMYK JPEG",
     lambda c, t: folder_config(c, image_folder(t / "d", extra=lambda r: Image.new(
         "CMYK", (80, 80), (10, 200, 30, 5)).save(r / "train" / "a" / "c.jpg"))), None, None),
    ("an image smaller than the crop",
     lambda c, t: folder_config(c, image_folder(t / "d", extra=lambda r: Image.fromarray(
         np.zeros((20, 20, 3), np.uint8)).save(r / "train" / "a" / "s.jpg"))), None, None),
    ("statistics of another dataset", _other_stats, errors.ConfigError,
     "not of this run's training data"),
]


def _empty(tmp_path):
  for split in ("train", "val"):
    (tmp_path / "empty" / split).mkdir(parents=True)
  return tmp_path / "empty"


# The rows a run trains through (no error) are whole training runs: slow.
@pytest.mark.parametrize("row, make, error, words", [
    pytest.param(*r, id=r[0], marks=[pytest.mark.slow] if r[2] is None else []) for r in ROWS])
def test_bad_input(tmp_path, cache_dir, row, make, error, words):
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("an earlier run's file")
  config = make(cache_dir, tmp_path)
  result = program.run(workdir, config=config)
  if error is None:
    assert result.status == 0, (row, result.stderr[-3000:])
    assert '"steps": 1,' in (workdir / "summary.json").read_text(), row
  else:
    # Undecodable files are listed, one line each (up to 20), under the error's line.
    program.assert_one_line_error(result, words, workdir, listed=row == "a zero-byte JPEG")
    assert f"{error.__module__}.{error.__name__}: " in result.log, (row, result.log[-2000:])
    assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())
  assert (workdir / "keep.txt").read_text() == "an earlier run's file"


def test_eval_only_on_an_empty_workdir_and_a_workdir_that_is_a_file(tmp_path, cache_dir):
  config = config_with(cache_dir)
  config.eval_only = True
  program.assert_one_line_error(program.run(tmp_path / "empty", config=config),
                                "holds none: train first", tmp_path / "empty")
  (tmp_path / "file").write_text("not a folder")
  result = program.run(tmp_path / "file", config=config_with(cache_dir))
  # No folder for a log file: the line alone.
  assert result.status == 1 and result.stderr.splitlines() == [
      f"Error: --workdir={tmp_path / 'file'} is a file; give a directory (it is created when "
      "missing)."], result.stderr
  assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.slow
def test_a_missing_imagenet_archive_names_the_paths_it_looked_at(tmp_path, cache_dir):
  """The README's paper run without ILSVRC2012_img_{train,val}.tar in the manual directory."""
  manual, workdir = tmp_path / "manual", tmp_path / "paper"
  manual.mkdir()
  result = program.run(workdir, config_file="configs/paper.py", overrides=[
      f"--config.data.manual_dir={manual}", f"--config.data.tfds_data_dir={tmp_path / 'tfds'}",
      f"--config.data.cache_dir={cache_dir}"])
  assert result.status == 1, result.stderr[-3000:]
  # TFDS's own warning about the unprepared folder may come first; then the error, the paths
  # each on a line of their own, what to do, and where the traceback is.
  assert "\nError: TFDS 'imagenet2012' is not prepared" in "\n" + result.stderr, result.stderr
  for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
    assert f"  {manual / name}\n" in result.stderr, result.stderr
  assert result.stderr.endswith(f"(The traceback is in {workdir / 'log.txt'}.)\n")
  assert "Traceback (most recent call last)" in result.log and "MissingFileError" in result.log
  assert not (workdir / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("override, words", [
    ("--config.model.widht=0.5", "Error: unknown config field 'widht'. Did you mean \"width\""),
    ("--config.train.batch_size=abc", "flag --config.train.batch_size=abc: invalid literal"),
])
def test_command_line_mistakes_are_one_line(tmp_path, override, words):
  done = subprocess.run([sys.executable, "-m", "alexnet_jax.main", "--config=tests/tiny_config.py",
                         f"--workdir={tmp_path}", override], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 1, done.stderr[-2000:]
  lines = [line for line in done.stderr.splitlines() if line.startswith(("Error", "FATAL"))]
  assert len(lines) == 1 and words in lines[0], done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "config.json").exists()
