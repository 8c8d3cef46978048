"""data/prepare.py: the 256x256 copy of a split, its class folders; every check before the
first image is written, a copy that survives a kill, the manifest the folder source checks, and
a user's error in one line."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from alexnet_jax import errors
from alexnet_jax.configs import paper
from alexnet_jax.data import decoding
from alexnet_jax.data import files
from alexnet_jax.data import prepare
from alexnet_jax.data import sources
from tests import imagenet_copies as copies
from tests.small_data import SAMPLES, needs_samples

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@needs_samples
def test_prepare_writes_256_copies(tmp_path):
  photos = sorted(SAMPLES.glob("*.JPEG"))[:3]
  for k, photo in enumerate(photos):
    (tmp_path / "src" / "train" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / "train" / f"c{k % 2}" / photo.name).write_bytes(photo.read_bytes())
  config = paper.get_config()
  config.data.update(source="folder", root=str(tmp_path / "src"), threads=2)
  assert prepare.write_split(config, "train", str(tmp_path / "out")) == 3
  for k, photo in enumerate(photos):
    copy = tmp_path / "out" / "train" / f"c{k % 2}" / (photo.stem + ".jpg")
    ours = decoding.decode_and_centre_crop(tf.constant(photo.read_bytes())).numpy()
    written = np.asarray(Image.open(copy), np.float32)
    assert written.shape == (256, 256, 3)
    assert np.abs(written - ours).mean() < 3.0  # JPEG q95, 4:2:0 chroma, of the same pixels.
  assert prepare.class_folders(["b", "a"]) == ["0000_b", "0001_a"]


def _photo_folder(root, n=len(list(SAMPLES.glob("*.JPEG")))):
  """root/{train,val}/c<k % 4>/: the first `n` sample photos, every fifth one in val."""
  for k, photo in enumerate(sorted(SAMPLES.glob("*.JPEG"))[:n]):
    folder = root / ("val" if k % 5 == 0 else "train") / f"c{k % 4}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / photo.name).write_bytes(photo.read_bytes())
  return root


def _config(root, **data):
  config = paper.get_config()
  config.data.update(dict(dict(source="folder", root=str(root), resize_size=64, threads=2),
                          **data))
  return config


def _command(out, *flags):
  return [sys.executable, "-m", "alexnet_jax.data.prepare", "--config=configs/paper.py",
          f"--out={out}", "--config.data.resize_size=64", "--config.data.threads=2", *flags]


def _tree(folder):
  return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_one_line_error(done, says):
  """A command's user error: exit status 1, `Error: ...` alone on the console, its traceback in
  the log file named on the next line."""
  assert done.returncode == 1, done.stderr[-3000:]
  error, where = done.stderr.strip().splitlines()[-2:]
  assert error.startswith("Error: ") and says in error, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  log = pathlib.Path(where.removeprefix("(The traceback is in ").removesuffix(".)"))
  assert "Traceback" in log.read_text() and says in log.read_text()
  log.unlink()


@needs_samples
def test_the_folder_source_reads_a_prepared_copy_only_whole(tmp_path):
  config = _config(_photo_folder(tmp_path / "src", 12))
  out = tmp_path / "out"
  assert prepare.prepare(config, ["train", "val"], str(out)) == {"train": 9, "val": 3}
  manifest = json.loads((out / sources.MANIFEST).read_text())
  assert manifest["splits"] == {"train": {"c0": 2, "c1": 2, "c2": 2, "c3": 3},
                                "val": {"c0": 1, "c1": 1, "c2": 1}}
  assert manifest["settings"] == dict(source="folder", root=str(tmp_path / "src"), name="",
                                      resize_size=64, resize="antialias", quality=95)
  assert not (out / sources.PREPARING).exists()
  copy = _config(out)
  assert sources.open_split(copy, "train").num_examples == 9
  gone = sorted((out / "train" / "c1").iterdir())[0]
  data = gone.read_bytes()
  gone.unlink()
  with pytest.raises(errors.ConfigError) as e:
    sources.open_split(copy, "train")
  assert (f"{out / 'train' / 'c1'} holds 1 images, {out / sources.MANIFEST} counts 2" in
          str(e.value) and "rerun the data.prepare command" in str(e.value))
  gone.write_bytes(data)
  (out / sources.PREPARING).write_text("{}")
  with pytest.raises(errors.ConfigError, match="started and did not finish .* rerun the"):
    sources.open_split(copy, "val")
  (out / sources.PREPARING).unlink()
  (out / sources.MANIFEST).unlink()
  assert sources.open_split(copy, "train").num_examples == 9  # Any image folder, as before.


@needs_samples
def test_prepare_refuses_to_mix_two_copies(tmp_path):
  config = _config(_photo_folder(tmp_path / "src", 12))
  prepare.prepare(config, ["val"], str(tmp_path / "out"))
  with pytest.raises(errors.ConfigError, match="other settings \\(quality 95, now 90;"):
    prepare.prepare(config, ["val"], str(tmp_path / "out"), quality=90)
  (tmp_path / "other" / "train").mkdir(parents=True)
  with pytest.raises(errors.ConfigError, match="not written by data.prepare"):
    prepare.prepare(config, ["train"], str(tmp_path / "other"))
  (tmp_path / "stale" / "val" / "c9").mkdir(parents=True)  # A class of no split: counted.
  (tmp_path / "stale" / sources.PREPARING).write_text(json.dumps(
      {"settings": json.loads((tmp_path / "out" / sources.MANIFEST).read_text())["settings"],
       "splits": {}}))
  (tmp_path / "stale" / "val" / "c9" / "x.jpg").write_bytes(b"")
  with pytest.raises(errors.ConfigError, match="holds 4 images, split 'val' 3"):
    prepare.prepare(config, ["val"], str(tmp_path / "stale"))


class _Killed(BaseException):
  """A kill, arriving while an image is being written."""


class _HalfWritten:
  def __init__(self, f):
    self.f = f

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()

  def write(self, data):
    self.f.write(data[:len(data) // 2])
    raise _Killed


@needs_samples
def test_a_kill_while_an_image_is_written_leaves_no_image_cut_short(tmp_path, monkeypatch):
  config = _config(_photo_folder(tmp_path / "src", 12))
  prepare.prepare(config, ["train", "val"], str(tmp_path / "whole"))
  images = []

  def open_then_die(path, mode="r", *args, **kwargs):
    f = open(path, mode, *args, **kwargs)
    images.extend([path] if ".jpg" in str(path) else [])
    return _HalfWritten(f) if len(images) == 5 else f

  monkeypatch.setattr(files, "open", open_then_die, raising=False)
  with pytest.raises(_Killed):
    prepare.prepare(config, ["train", "val"], str(tmp_path / "out"))
  monkeypatch.undo()
  assert len(list((tmp_path / "out").glob("train/*/*.jpg"))) == 4
  prepare.prepare(config, ["train", "val"], str(tmp_path / "out"))
  assert _tree(tmp_path / "out") == _tree(tmp_path / "whole")


def test_a_users_error_is_one_line_and_nothing_is_written(tmp_path):
  root = copies.write_extracted(tmp_path / "imagenet", copies.class_photos(), "pairs")
  (root / "val" / copies.val_name(8)).write_bytes(b"")
  out = tmp_path / "imagenet256"
  done = subprocess.run(_command(out, "--config.data.source=imagenet",
                                 f"--config.data.root={root}"),
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert_one_line_error(done, f"have no label in {root / 'val_labels.txt'}")
  assert "train:" not in done.stdout and not out.exists()


@pytest.mark.slow
@needs_samples
def test_a_copy_killed_at_a_random_point_and_rerun_equals_an_uninterrupted_one(tmp_path):
  src = _photo_folder(tmp_path / "src")
  whole = tmp_path / "whole"
  counts = prepare.prepare(_config(src), ["train", "val"], str(whole))
  seed = random.randrange(1 << 32)
  kill_at = random.Random(seed).randrange(1, sum(counts.values()) * 3 // 4)  # Files written.
  out = tmp_path / "killed"
  command = _command(out, "--config.data.source=folder", f"--config.data.root={src}")
  child = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  while child.poll() is None and sum(1 for p in out.glob("*/*/*")) < kill_at:
    time.sleep(0.002)
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert (out / sources.PREPARING).exists(), f"seed {seed}: the kill came after the end"
  kept = {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.jpg")}
  with pytest.raises(errors.ConfigError, match="did not finish"):
    sources.open_split(_config(out), "train")
  done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, f"seed {seed}\n{done.stderr[-3000:]}"
  assert "images there already" in done.stdout or not kept
  assert {p: p.stat().st_mtime_ns for p in kept} == kept  # Kept, not written again.
  assert _tree(out) == _tree(whole), f"seed {seed}, killed after {kill_at} files"
