"""data/decoded_cache.py: the same batches from memory or a mapped file, written once, refused
where it cannot hold."""
from pathlib import Path

import numpy as np
import pytest

from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from tests.small_data import take


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def _tiny(cache_dir, decoded_cache=""):
  from tests import tiny_config
  config = tiny_config.get_config()
  config.data.update(cache_dir=str(cache_dir), decoded_cache=decoded_cache)
  return config


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for key in x:
      assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, key
      np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("mode", ["memory", "mmap"])
def test_decoded_cache_gives_the_same_batches(cache, mode):
  """80 training images, batches of 8: epoch 1 starts at step 10, inside both runs below; a
  resumed start and two data slices gather the rows the decoding pipeline reads."""
  plain, cached = _tiny(cache), _tiny(cache, mode)
  for kwargs in (dict(batch_size=8), dict(batch_size=8, start_step=7),
                 dict(batch_size=8, start_step=9, slice_index=1, slice_count=2)):
    _assert_same_batches(take(input_pipeline.train_iterator(plain, **kwargs), 5),
                         take(input_pipeline.train_iterator(cached, **kwargs), 5))
  for kwargs in (dict(batch_size=8), dict(batch_size=8, slice_index=1, slice_count=2)):
    a = list(input_pipeline.eval_iterator(plain, "val", **kwargs))
    _assert_same_batches(a, list(input_pipeline.eval_iterator(cached, "val", **kwargs)))
    assert not a[-1]["mask"].all()  # 30 images: the padding is compared too.


def test_decoded_cache_file_is_written_once_and_reused(cache):
  from alexnet_jax.data import decoded_cache
  config = _tiny(cache, "mmap")
  split = sources.open_split(config, "val")
  path = Path(decoded_cache.cache_path(config, split))
  path.unlink(missing_ok=True)
  decoded_cache._LOADED.clear()  # What this process's earlier tests loaded.
  batches = list(input_pipeline.eval_iterator(_tiny(cache), "val", batch_size=30))
  input_pipeline.eval_iterator(config, "val", batch_size=30)  # Writes the file.
  stored = np.load(path)
  np.testing.assert_array_equal(stored, batches[0]["image"])
  assert stored.dtype == np.uint8 and stored.shape == (30, 72, 72, 3)
  assert not list(path.parent.glob("*.tmp*"))
  decoded_cache._LOADED.clear()  # As a new process finds it: the file, not a decode.
  got = decoded_cache.images(config, split, lambda: pytest.fail("decoded again"))
  assert isinstance(got, np.memmap)
  np.testing.assert_array_equal(got, stored)


def test_decoded_cache_refused_for_streamed_splits_and_unknown_values(cache):
  config = _tiny(cache, "memory")
  config.data.source = "tfds"
  with pytest.raises(ValueError, match=r"config.data.decoded_cache='memory' needs an indexed"):
    input_pipeline.train_iterator(config, batch_size=8)
  with pytest.raises(ValueError, match=r"config.data.decoded_cache='disk': use"):
    input_pipeline.eval_iterator(_tiny(cache, "disk"), "val", batch_size=8)
