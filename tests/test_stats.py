"""data/stats.py: statistics equal NumPy's; missing ones name the command that computes them;
the command prints a user's error as one line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax import preprocess
from alexnet_jax.data import decoding
from alexnet_jax.data import sources
from alexnet_jax.data import stats
from tests.small_data import small_config
from tests.test_prepare import ENV
from tests.test_prepare import ROOT
from tests.test_prepare import assert_one_line_error


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def test_missing_statistics_name_the_command(tmp_path):
  config = small_config(tmp_path, source="folder", root=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="python -m alexnet_jax.data.stats"):
    preprocess.constants(config)


def test_statistics_equal_numpy(cache):
  config = small_config(cache)
  split = sources.open_split(config, "train")
  images = np.stack([decoding.decode_and_centre_crop(tf.io.read_file(p), 64).numpy()
                     for p in split.paths]).astype(np.float64)
  got = stats.compute_stats(config)
  assert got["num_images"] == 40
  np.testing.assert_allclose(got["mean_image"], images.mean(0), rtol=1e-5, atol=1e-3)
  eigval, eigvec = np.linalg.eigh(np.cov(images.reshape(-1, 3).T, bias=True))
  np.testing.assert_allclose(got["eigval"], eigval[::-1], rtol=1e-4)
  np.testing.assert_allclose(np.abs(got["eigvec"]), np.abs(eigvec[:, ::-1]), atol=1e-4)
  loaded = stats.load_stats(config)  # The generated set's statistics are made on first use.
  np.testing.assert_allclose(loaded["mean_image"], got["mean_image"])
  assert Path(stats.stats_path(config)).exists()


def test_the_command_prints_a_users_error_as_one_line(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.data.stats", "--config=configs/paper.py",
       "--config.data.source=folder", f"--config.data.root={tmp_path / 'nothing'}",
       f"--config.data.cache_dir={tmp_path / 'cache'}"],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert_one_line_error(done, f"No split folder '{tmp_path / 'nothing' / 'train'}'")
  assert not (tmp_path / "cache").exists()
