r"""Training-set statistics: the mean image (section 2) and the RGB covariance's eigenvectors and
eigenvalues (4.1's colour noise), 0-255; `load_stats` reads them (the generated set's are made
on first use). Once per dataset, into config.data.cache_dir or config.data.stats_file:

    python -m alexnet_jax.data.stats --config=configs/paper.py [--config.data.x=y ...]
"""
import hashlib
import os

import numpy as np
import tensorflow as tf

from alexnet_jax import errors
from alexnet_jax import progress
from alexnet_jax.data import decoding
from alexnet_jax.data import files
from alexnet_jax.data import generated
from alexnet_jax.data import sources


def stats_path(config):
  if config.data.stats_file:
    return os.path.expanduser(config.data.stats_file)
  return os.path.join(generated.cache_dir(config), "stats", dataset_key(config) + ".npz")


def source_key(config):
  """Names the dataset: TFDS's name, a folder's with a digest of its path, the generated set's."""
  d = config.data
  if d.source == "tfds":
    return f"tfds-{d.name}"
  if d.source not in ("folder", "tiny_imagenet", "imagenet"):
    return f"generated-{os.path.basename(generated.root_dir(config))}"
  root = os.path.abspath(os.path.expanduser(d.root))
  return (f"{d.source}-{os.path.basename(root.rstrip('/'))}-"
          f"{hashlib.sha1(root.encode()).hexdigest()[:8]}")


def dataset_key(config):
  """Names the training split and size described; stored, so others' statistics are refused."""
  d = config.data
  if d.source not in ("tfds", "folder", "tiny_imagenet", "imagenet"):
    return f"{source_key(config)}-{d.resize_size}"
  key = f"{source_key(config)}-{d.train_split}-{d.resize_size}"
  if d.max_train_per_class and d.source != "tfds":  # TFDS splits are not cut per class.
    key += f"-{d.max_train_per_class}per-class"
  return key


def _images(config, split, max_images):
  """The training split's decoded batches, or a config.seed sample of `max_images` of them."""
  if not 0 < max_images < split.num_examples:
    ds = sources.records(config, split)
  elif split.paths is None:
    ds = sources.records(config, split, file_seed=config.seed).shuffle(
        config.data.shuffle_buffer, seed=config.seed).take(max_images)
  else:
    chosen = np.random.default_rng(config.seed).permutation(split.num_examples)[:max_images]
    ds = sources.records(config, split, indices=tf.data.Dataset.from_tensor_slices(chosen))
  size, resize = config.data.resize_size, decoding.resize_of(config)
  ds = ds.map(lambda data, label: decoding.decode_and_centre_crop(data, size, resize),
              num_parallel_calls=config.data.threads or tf.data.AUTOTUNE)
  return ds.batch(64).prefetch(2).as_numpy_iterator()


def compute_stats(config, max_images=0):
  """dict(mean_image [S,S,3], channel_mean [3], eigval [3] descending, eigvec [3,3] columns,
  num_images), float32, from the training split."""
  size = config.data.resize_size
  image_sum, outer_sum, count = np.zeros((size, size, 3)), np.zeros((3, 3)), 0
  split = sources.open_split(config, config.data.train_split)
  total = min(split.num_examples, max_images) if max_images else split.num_examples
  with progress.Progress(total, "training-set statistics") as bar:
    for batch in _images(config, split, max_images):
      image_sum += batch.sum(axis=0, dtype=np.float64)
      pixels = batch.reshape(-1, 3).astype(np.float64)
      outer_sum += pixels.T @ pixels
      count += len(batch)
      bar.update(len(batch))
  mean_image = image_sum / count
  channel_mean = mean_image.mean(axis=(0, 1))
  covariance = outer_sum / (count * size * size) - np.outer(channel_mean, channel_mean)
  eigval, eigvec = np.linalg.eigh(covariance)
  order = np.argsort(eigval)[::-1]
  return dict(mean_image=mean_image.astype(np.float32),
              channel_mean=channel_mean.astype(np.float32),
              eigval=eigval[order].astype(np.float32), eigvec=eigvec[:, order].astype(np.float32),
              num_images=np.int64(count), dataset=np.str_(dataset_key(config)))


def save_stats(stats, path):
  with files.written(path) as f:
    np.savez(f, **stats)


def load_stats(config):
  path = stats_path(config)
  if not os.path.exists(path):
    if config.data.source != "generated":
      raise errors.MissingFileError(
          f"No training-set statistics at {path} (mean image and RGB PCA, sections 2 and 4.1). "
          "Compute them once with\n  python -m alexnet_jax.data.stats --config=<your config> "
          "[the same --config.data.* overrides]\nor run without them: "
          "--config.data.mean=none --config.data.pca_noise_std=0.")
    save_stats(compute_stats(config), path)
  with np.load(path) as f:
    stats = {k: f[k] for k in f.files}
  stored, wanted = str(stats.get("dataset", "")), dataset_key(config)
  if stored and stored != wanted:
    raise errors.ConfigError(
        f"The statistics at {path} are of {stored!r}, not of this run's training data "
        f"{wanted!r}: compute them for it (python -m alexnet_jax.data.stats with the same "
        "--config.data.* settings), or leave config.data.stats_file empty.")
  return stats


def main(argv):
  del argv
  from absl import flags
  config = flags.FLAGS.config
  path = stats_path(config)
  stats = compute_stats(config, flags.FLAGS.max_images)
  save_stats(stats, path)
  print(f"{stats['num_images']} images -> {path}\n  channel mean {stats['channel_mean']}\n"
        f"  eigenvalues {stats['eigval']} (standard deviations {np.sqrt(stats['eigval'])})\n"
        f"  eigenvectors (columns)\n{stats['eigvec']}")


if __name__ == "__main__":
  from absl import app
  from absl import flags
  from ml_collections import config_flags
  from alexnet_jax.faults import logs
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/paper.py.")
  flags.DEFINE_integer("max_images", 0, "Use a seeded sample of this many images (0: all).")
  tf.config.set_visible_devices([], "GPU")
  app.run(logs.one_line_errors(main, "data.stats"))
