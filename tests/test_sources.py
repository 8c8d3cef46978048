"""data/sources.py: ImageNet through the real TFDS builder, CIFAR-10 as an image folder."""
from pathlib import Path
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from alexnet_jax.configs import paper
from alexnet_jax.data import decoding
from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from alexnet_jax.data import stats
from tests import imagenet_archive
from tests.small_data import DATA, GREY, SAMPLES, digest, needs_samples, take


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")

@pytest.mark.slow
@needs_samples
def test_imagenet2012_through_real_tfds_builder(tmp_path):
  photos = sorted(SAMPLES.glob("*.JPEG"))[:6] + [SAMPLES / f"{GREY[0]}.JPEG"]
  manual = tmp_path / "manual"
  manual.mkdir()
  config = paper.get_config()
  config.data.update(tfds_data_dir=str(tmp_path / "tfds"), manual_dir=str(manual),
                     cache_dir=str(tmp_path), mean="none", pca_noise_std=0.0, threads=2)
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.dataset_info(config)
  for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
    assert str(manual / name) in str(error.value)
  imagenet_archive.write(manual, photos, per_class=2, val_photos=photos[:5])

  info = input_pipeline.dataset_info(config)
  assert info == dict(num_classes=1000, num_train=14, num_eval=5, eval_split="validation")
  names = sources.open_split(config, "train").class_names
  wnids = [p.name.split("_")[0] for p in photos]
  batch = next(input_pipeline.train_iterator(config, batch_size=14))
  assert batch["image"].shape == (14, 256, 256, 3) and batch["image"].dtype == np.uint8
  assert sorted(batch["label"]) == sorted(names.index(w) for w in wnids for _ in range(2))
  val_labels = (Path(tf.__file__).parents[1] / "tensorflow_datasets" / "datasets" /
                "imagenet2012" / "validation_labels.txt").read_text().split()[:5]
  batches = list(input_pipeline.eval_iterator(config, "validation", batch_size=4))
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert sorted(labels) == sorted(names.index(w) for w in val_labels)
  # Images come through unchanged: each is one of the photos, decoded.
  expected = {digest(decoding.decode_and_centre_crop(tf.constant(p.read_bytes())).numpy())
              for p in photos[:5]}
  got = {digest(x) for b in batches for x in b["image"][b["mask"]]}
  assert got == expected
  # Streamed (TFDS) splits: two hosts share the examples, resume reproduces the batches.
  hosts = [list(input_pipeline.eval_iterator(config, "validation", batch_size=4,
                                              slice_index=p, slice_count=2)) for p in (0, 1)]
  assert [len(h) for h in hosts] == [2, 2]
  assert sorted(np.concatenate([b["label"][b["mask"]] for h in hosts for b in h])) == sorted(labels)
  for p in (0, 1):
    kwargs = dict(batch_size=4, slice_index=p, slice_count=2)
    straight = take(input_pipeline.train_iterator(config, **kwargs), 6)
    resumed = take(input_pipeline.train_iterator(config, start_step=4, **kwargs), 2)
    for x, y in zip(straight[4:], resumed):
      np.testing.assert_array_equal(x["image"], y["image"])
  # Record files in a seeded order: the same examples, the same order for the same seed.
  split = sources.open_split(config, "train")
  def labels_of(seed):
    return [int(label) for _, label in sources.records(config, split, file_seed=seed)]
  assert labels_of(3) == labels_of(3) and sorted(labels_of(3)) == sorted(labels_of(None))
  # The statistics of a seeded sample: another seed, another sample.
  sampled = [stats.compute_stats(config,
                                 max_images=6)]
  config.seed = 1
  sampled.append(stats.compute_stats(config, max_images=6))
  config.seed = 0
  assert [s["num_images"] for s in sampled] == [6, 6]
  assert not np.allclose(sampled[0]["mean_image"], sampled[1]["mean_image"])
  # 7 examples per host: epochs 0 and 1 differ in order.
  assert not np.array_equal(np.concatenate([b["label"] for b in straight[:3]])[:6],
                            np.concatenate([b["label"] for b in straight[3:]])[1:7])


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
  """The CIFAR-10 test split (stored first in the archive), extracted once."""
  if not (DATA / "cifar10-jpeg.tar.gz").exists():
    pytest.skip(f"{DATA / 'cifar10-jpeg.tar.gz'} is absent")
  root = tmp_path_factory.mktemp("cifar")
  with tarfile.open(DATA / "cifar10-jpeg.tar.gz") as archive:
    for member in archive:
      if member.name.startswith("cifar10/train"):
        break
      if member.isfile():
        archive.extract(member, root, filter="data")
  return root / "cifar10"


def test_cifar10_as_image_folder(cifar_root, cache):
  config = paper.get_config()
  config.model.image_size = 32
  config.data.update(source="folder", root=str(cifar_root), train_split="test",
                     eval_split="test", resize_size=32, mean="none", pca_noise_std=0.0,
                     cache_dir=str(cache), threads=2)
  assert input_pipeline.dataset_info(config) == dict(num_classes=10, num_train=5000,
                                                     num_eval=5000, eval_split="test")
  split = sources.open_split(config, "test")
  assert split.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                               "horse", "ship", "truck"]
  batches = list(input_pipeline.eval_iterator(config, "test", batch_size=1000))
  labels = np.concatenate([b["label"] for b in batches])
  assert len(batches) == 5 and all(b["mask"].all() for b in batches)
  np.testing.assert_array_equal(labels, split.labels)  # Eval keeps the stored order.
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  for k in (0, 1234, 4999):
    written = np.asarray(Image.open(split.paths[k]).convert("RGB"), np.float32)
    assert Path(split.paths[k]).parent.name == split.class_names[labels[k]]
    ours = batches[k // 1000]["image"][k % 1000]
    # No resampling on the way (bit-exact with a plain decode), and libjpeg-turbo's chroma
    # upsampling differs a little between TF and PIL, so PIL agrees to a grey level on average.
    np.testing.assert_array_equal(ours, tf.io.decode_jpeg(tf.io.read_file(split.paths[k]),
                                                          channels=3).numpy())
    assert np.abs(ours.astype(np.float32) - written).mean() < 1.5
