"""A gs:// workdir, offline: a short run, its resume and eval-only write and read every file at
the URL (tests/bucket.py stands a local folder in for the bucket at each door to storage), and
nothing lands in a local folder named `gs:`."""
import json
import os

import pytest

from alexnet_jax import metrics
from alexnet_jax import train
from alexnet_jax.checkpoints import integrity
from tests import bucket
from tests import tiny_config

URL = "gs://alexnet-test-bucket/runs/tiny"


def _config(cache_dir, num_steps):
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  config.train.num_steps = num_steps
  return config


def _files(folder):
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def stood_in(tmp_path, monkeypatch):
  """The bucket's stand-in folder; the test runs in an empty folder of its own."""
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  with bucket.stand_in(tmp_path / "bucket"):
    yield tmp_path / "bucket" / "alexnet-test-bucket" / "runs" / "tiny"
  assert _files(tmp_path / "cwd") == []  # Not a file in a local `gs:` folder.


@pytest.mark.slow
def test_a_run_its_resume_and_eval_only_write_to_the_bucket(stood_in, cache_dir, caplog,
                                                             capsys):
  first = train.train_and_evaluate(_config(cache_dir, 4), URL)
  assert first["status"] == "finished" and first["steps"] == 4
  assert "not a local folder: flock cannot lock it" in caplog.text
  names = _files(stood_in)
  for name in ("config.json", "metrics.jsonl", "summary.json", "classes.json",
               "preprocess_constants.npz", "per_class_step4.csv", "confusion_step4.png",
               "checkpoints/4/file_sizes.json"):
    assert name in names, f"{name} is not in the bucket: {names}"
  assert any(n.startswith("tensorboard/events.out.tfevents") for n in names)
  assert not any("orbax-checkpoint-tmp" in n for n in names)  # Each save was committed.

  resumed = train.train_and_evaluate(_config(cache_dir, 6), URL)
  assert resumed["steps"] == 6
  assert f"Resumed from {URL}/checkpoints at step 4." in capsys.readouterr().out
  rows = metrics.read_jsonl(stood_in / "metrics.jsonl")
  assert [r["step"] for r in rows if "train_loss" in r] == [2, 4, 6]
  assert json.loads((stood_in / "summary.json").read_text())["steps"] == 6

  config = _config(cache_dir, 6)
  config.eval_only = True
  result = train.train_and_evaluate(config, URL)
  assert result["count"] == 30 and result["step"] == 6
  assert result["val_top1_error_10crop"] == pytest.approx(resumed["val_top1_error_10crop"])


@pytest.mark.slow
def test_a_damaged_step_in_the_bucket_is_found_and_set_aside(stood_in, cache_dir, capsys):
  train.train_and_evaluate(_config(cache_dir, 6), URL)  # Keeps steps 4, 5 and 6.
  state = stood_in / "checkpoints" / "6" / "state"
  victim = max((p for p in state.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  os.truncate(victim, victim.stat().st_size // 2)
  config = _config(cache_dir, 8)
  with pytest.raises(integrity.DamagedCheckpointError, match=f"{URL}/checkpoints/6"):
    train.train_and_evaluate(config, URL)
  config.checkpoint.restore_step = 4
  assert train.train_and_evaluate(config, URL)["steps"] == 8
  assert "at step 5." in capsys.readouterr().out
  assert (stood_in / "unreadable_checkpoints" / "6" / "state").is_dir()  # Set aside, kept.
