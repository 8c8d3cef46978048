"""paths.py names every file of a workdir; a local workdir is the pathlib.Path it always was,
a URL stays a URL."""
import os
import pathlib

from alexnet_jax import paths
from alexnet_jax.faults import workdir_lock
from tests import bucket


def test_a_local_workdir_is_the_pathlib_path_it_was(tmp_path):
  assert paths.root("~/runs/a") == pathlib.Path(os.path.expanduser("~/runs/a"))
  assert isinstance(paths.root(tmp_path), pathlib.Path)
  assert paths.file(tmp_path, paths.METRICS) == tmp_path / "metrics.jsonl"
  assert paths.per_class_csv(tmp_path, 7) == tmp_path / "per_class_step7.csv"
  assert paths.confusion_png(tmp_path, 7) == tmp_path / "confusion_step7.png"
  assert paths.checkpoints("relative/run") == pathlib.Path.cwd() / "relative/run/checkpoints"
  names = [paths.CONFIG, paths.METRICS, paths.SUMMARY, paths.TENSORBOARD, paths.CHECKPOINTS,
           paths.UNREADABLE, paths.CLASSES, paths.CONSTANTS, paths.LOCK, paths.LOG]
  assert names == ["config.json", "metrics.jsonl", "summary.json", "tensorboard", "checkpoints",
                   "unreadable_checkpoints", "classes.json", "preprocess_constants.npz",
                   "run.lock", "log.txt"]


def test_a_bucket_stays_a_url():
  assert not paths.is_local("gs://bucket/run")
  assert str(paths.file("gs://bucket/run", paths.SUMMARY)) == "gs://bucket/run/summary.json"
  assert str(paths.checkpoints("gs://bucket/run")) == "gs://bucket/run/checkpoints"


def test_flock_cannot_lock_a_bucket_and_says_so(caplog, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdir_lock.acquire("gs://bucket/run") is None
  assert "not a local folder: flock cannot lock it" in caplog.text
  assert not (tmp_path / "gs:").exists()  # No local stand-in was made.


def test_files_and_sizes_read_alike_in_a_folder_and_a_bucket(tmp_path):
  run = tmp_path / "b" / "run"
  (run / "checkpoints" / "4" / "state").mkdir(parents=True)
  (run / "checkpoints" / "4" / "state" / "d").write_bytes(b"x" * 7)
  (run / "checkpoints" / "4" / "meta").write_bytes(b"yz")
  local = paths.root(run / "checkpoints" / "4")
  assert paths.files_under(local) == ["meta", "state/d"]
  assert [paths.size(local / n) for n in paths.files_under(local)] == [2, 7]
  with bucket.stand_in(tmp_path):
    remote = paths.root("gs://b/run/checkpoints/4")
    assert not isinstance(remote, pathlib.Path)
    assert paths.files_under(remote) == ["meta", "state/d"]
    assert [paths.size(remote / n) for n in paths.files_under(remote)] == [2, 7]
