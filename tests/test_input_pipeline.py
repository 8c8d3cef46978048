"""The host iterators of input_pipeline.py: a corrupt file named or skipped, the same batches for
the same seed, resumption, and the split between hosts."""
import os

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from tests.small_data import digest, small_config, take


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def test_corrupt_file_named_or_skipped(tmp_path, capsys):
  for split in ("train", "val"):
    for c in ("a", "b"):
      os.makedirs(tmp_path / split / c)
      for k in range(3):
        image = Image.fromarray(np.full((40, 50, 3), 60 * k, np.uint8))
        image.save(tmp_path / split / c / f"{k}.jpg")
  good = (tmp_path / "train" / "a" / "0.jpg").read_bytes()
  (tmp_path / "train" / "b" / "1.jpg").write_bytes(good[:len(good) // 2])  # Truncated.
  (tmp_path / "train" / "a" / "2.jpg").write_bytes(b"not an image at all")
  config = small_config(tmp_path, source="folder", root=str(tmp_path), mean="none",
                        pca_noise_std=0.0, resize_size=32)
  config.model.image_size = 28
  with pytest.raises(ValueError) as error:
    take(input_pipeline.train_iterator(config, batch_size=2), 3)
  assert "2 file(s)" in str(error.value)
  for bad in ("train/b/1.jpg", "train/a/2.jpg"):
    assert str(tmp_path / bad) in str(error.value)
  config.data.on_corrupt = "skip"
  batches = take(input_pipeline.train_iterator(config, batch_size=2), 4)
  assert "Skipping 2 unreadable file(s) of 6" in capsys.readouterr().out
  assert sorted(np.concatenate([b["label"] for b in batches[:2]])) == [0, 0, 1, 1]


def test_same_seed_same_batches_other_seed_other_batches(cache):
  config = small_config(cache)
  a = take(input_pipeline.train_iterator(config, batch_size=8), 3)
  b = take(input_pipeline.train_iterator(config, batch_size=8), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  config.seed = 1
  c = take(input_pipeline.train_iterator(config, batch_size=8), 3)
  assert not np.array_equal(a[0]["image"], c[0]["image"])
  assert a[0]["image"].shape == (8, 64, 64, 3) and a[0]["label"].dtype == np.int32


def test_resume_at_start_step_equals_advancing(cache):
  config = small_config(cache)
  # 40 examples, 2 hosts of batch 3: epochs of 20 end inside steps 6 and 13.
  for slice_index in (0, 1):
    kwargs = dict(batch_size=6, slice_index=slice_index, slice_count=2)
    straight = take(input_pipeline.train_iterator(config, **kwargs), 16)
    resumed = take(input_pipeline.train_iterator(config, start_step=5, **kwargs), 11)
    for x, y in zip(straight[5:], resumed):
      np.testing.assert_array_equal(x["image"], y["image"])
      np.testing.assert_array_equal(x["label"], y["label"])
  epoch0 = np.concatenate([b["label"] for b in straight[:20 // 3]])
  assert not np.array_equal(epoch0, np.concatenate([b["label"] for b in straight[7:13]]))


def test_two_hosts_train_disjoint_and_covering_each_epoch(cache):
  config = small_config(cache)
  every = {digest(b["image"][k]) for b in input_pipeline.eval_iterator(
      config, "train", batch_size=40) for k in range(40)}
  assert len(every) == 40
  for epoch in (0, 1):
    seen = []
    for p in (0, 1):
      batches = take(input_pipeline.train_iterator(
          config, batch_size=10, slice_index=p, slice_count=2, start_step=4 * epoch), 4)
      seen.append({digest(x) for b in batches for x in b["image"]})
    assert len(seen[0]) == len(seen[1]) == 20 and not seen[0] & seen[1]
    assert seen[0] | seen[1] == every


def test_two_hosts_eval_each_example_once_same_batch_count(cache):
  config = small_config(cache)
  config.data.generated.val_per_class = 5  # 20 examples: hosts of 10, batches of 3 -> 4, pad 2.
  labels, images, lengths = [], [], []
  for p in (0, 1):
    batches = list(input_pipeline.eval_iterator(
        config, "val", batch_size=6, slice_index=p, slice_count=2))
    lengths.append(len(batches))
    for b in batches:
      assert b["image"].shape == (3, 64, 64, 3) and b["image"].dtype == np.uint8
      labels.append(b["label"][b["mask"]])
      images += [digest(x) for x in b["image"][b["mask"]]]
      assert not b["image"][~b["mask"]].any()
  assert lengths == [4, 4]
  np.testing.assert_array_equal(np.concatenate(labels), sources.open_split(config, "val").labels)
  assert len(set(images)) == 20


def test_two_hosts_together_feed_the_one_process_batch(cache):
  """Each process keeps contiguous rows of the one-process global batch (and the device draws
  each row's augmentation from its position in it), so data-parallel processes train on
  exactly the one-process batches."""
  config = small_config(cache)
  one = take(input_pipeline.train_iterator(config, batch_size=10, start_step=3), 2)
  parts = [take(input_pipeline.train_iterator(config, batch_size=10, slice_index=p,
                                              slice_count=2, start_step=3), 2) for p in (0, 1)]
  for t in range(2):
    for key in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([parts[0][t][key], parts[1][t][key]]), one[t][key])
