"""Tests of the 4.1 input pipeline: sources, ops (eager and in tf.data), statistics,
determinism, resumption and the multi-host split."""
import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax import input_pipeline
from alexnet_jax import preprocess
from alexnet_jax.configs import paper
from alexnet_jax.data import decoding
from alexnet_jax.data import generated
from alexnet_jax.data import prepare
from alexnet_jax.data import sources
from alexnet_jax.data import stats
from tests import imagenet_archive

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLES = DATA / "imagenet_samples"
GREY = ("n02096051_Airedale", "n02815834_beaker", "n03417042_garbage_truck",
        "n03908714_pencil_sharpener")
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent")
needs_cifar = pytest.mark.skipif(not (DATA / "cifar10-jpeg.tar.gz").exists(),
                                 reason=f"{DATA / 'cifar10-jpeg.tar.gz'} is absent")


def small_config(cache_dir, **data):
  """Generated set of 4 classes at 64x64, 56x56 crops: every test here runs in seconds."""
  config = paper.get_config()
  config.model.image_size = 56
  config.data.source = "generated"
  config.data.cache_dir = str(cache_dir)
  config.data.resize_size = 64
  config.data.threads = 2
  g = config.data.generated
  g.num_classes, g.image_size, g.train_per_class, g.val_per_class = 4, 64, 10, 5
  config.data.update(data)
  return config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def digest(image):
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


# Sources.

def test_generated_set_counts_classes_and_determinism(cache, tmp_path):
  config = small_config(cache)
  info = input_pipeline.dataset_info(config)
  assert info == dict(num_classes=4, num_train=40, num_eval=20, eval_split="val")
  split = sources.open_split(config, "train")
  assert split.class_names == generated.class_names(4)
  np.testing.assert_array_equal(np.bincount(split.labels), [10] * 4)
  again = small_config(tmp_path)
  again.data.generated.train_per_class = again.data.generated.val_per_class = 1
  root = Path(generated.ensure_generated(again))
  a = (root / "train" / split.class_names[3] / "00000.jpg").read_bytes()
  b = (Path(split.paths[30])).read_bytes()
  assert a == b, "The generated set must be a pure function of its settings and seed."


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


@needs_samples
def test_greyscale_jpeg_and_png_come_out_rgb(tmp_path):
  for name in GREY:
    image = decoding.decode_and_centre_crop(tf.io.read_file(str(SAMPLES / f"{name}.JPEG")), 256)
    assert image.shape == (256, 256, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
  grey = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30) % 251
  Image.fromarray(grey).save(tmp_path / "g.png")
  image = decoding.decode_and_centre_crop(tf.io.read_file(str(tmp_path / "g.png")), 30).numpy()
  np.testing.assert_array_equal(image, np.repeat(grey[5:35, :, None], 3, axis=2))


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


def test_missing_statistics_name_the_command(tmp_path):
  config = small_config(tmp_path, source="folder", root=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="python -m alexnet_jax.data.stats"):
    preprocess.constants(config)


# Ops: eagerly and in tf.data, against NumPy.

def _in_tf_data(fn, *args):
  ds = tf.data.Dataset.from_tensors(tuple(args)).map(fn)
  return next(iter(ds.as_numpy_iterator()))


@needs_samples
def test_ops_equal_eagerly_and_in_tf_data():
  data = tf.constant((SAMPLES / "n01440764_tench.JPEG").read_bytes())
  big = tf.constant(sorted(SAMPLES.glob("*.JPEG"), key=os.path.getsize)[-1].read_bytes())
  ops = [
      (lambda d: decoding.decode_and_centre_crop(d, 256), (data,)),
      (lambda d: decoding.decode_and_centre_crop(d, 96), (big,)),  # DCT-scaled decode.
  ]
  for fn, args in ops:
    np.testing.assert_array_equal(fn(*args).numpy(), _in_tf_data(fn, *args))


@needs_samples
def test_reduced_size_decode_is_close_to_full_decode():
  photo = sorted(SAMPLES.glob("*.JPEG"), key=os.path.getsize)[-1]
  rgb = Image.open(photo).convert("RGB")
  side = min(rgb.size)
  assert side >= 2 * 256, "Pick a photo large enough to take the fast DCT-scaled path."
  box = ((rgb.width - side) // 2, (rgb.height - side) // 2)
  square = rgb.crop((*box, box[0] + side, box[1] + side))
  full, lanczos = [np.asarray(square.resize((256, 256), f), np.float32)
                   for f in (Image.BILINEAR, Image.LANCZOS)]
  ours = decoding.decode_and_centre_crop(tf.constant(photo.read_bytes()), 256, "fast").numpy()
  # DCT scaling + bilinear departs from a full decode + PIL's bilinear by less than PIL's own
  # Lanczos filter does (3.7 vs 4.1 grey levels on this photo): a choice of filter, no more.
  assert np.abs(ours.astype(np.float32) - full).mean() < np.abs(lanczos - full).mean()


def _pil_256(photo):
  """PIL's answer: the centre square of the full decode, bilinear (antialiased) to 256."""
  rgb = Image.open(photo).convert("RGB")
  side = min(rgb.size)
  box = ((rgb.width - side) // 2, (rgb.height - side) // 2)
  square = rgb.crop((*box, box[0] + side, box[1] + side))
  return np.asarray(square.resize((256, 256), Image.BILINEAR), np.float32)


@needs_samples
def test_antialiased_resize_is_pils_and_the_fast_one_is_not():
  """Every sample photo: the default departs from PIL's bilinear by under 2 grey levels on
  average; the fast resize departs by more, most where thin stripes alias."""
  diffs = {"antialias": [], "fast": []}
  for photo in sorted(SAMPLES.glob("*.JPEG")):
    pil = _pil_256(photo)
    for resize, out in diffs.items():
      ours = decoding.decode_and_centre_crop(tf.constant(photo.read_bytes()), 256, resize)
      out.append(float(np.abs(ours.numpy().astype(np.float32) - pil).mean()))
  antialias, fast = np.array(diffs["antialias"]), np.array(diffs["fast"])
  assert antialias.max() < 2.0, (antialias.max(), antialias.mean())
  assert fast.mean() > 1.5 * antialias.mean() and fast.max() > 5.0, (fast.mean(), fast.max())


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


# Determinism, resumption, hosts.

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


# The decoded cache (config.data.decoded_cache).

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
