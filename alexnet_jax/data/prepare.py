r"""Writes a dataset once at the paper's fixed 256x256 resolution (section 2) as an image folder.

Decoding full-size photos is most of the input pipeline's cost; decoding 256x256 JPEGs is
several times cheaper. For ImageNet:

    python -m alexnet_jax.data.prepare --config=configs/paper.py --out=/data/imagenet256
    python -m alexnet_jax.main --config=configs/paper.py --workdir=workdirs/paper \
        --config.data.source=folder --config.data.root=/data/imagenet256 \
        --config.data.eval_split=validation

ImageNet as it ships (the ILSVRC2012 tars with the devkit, the Kaggle download, or extracted
folders with a flat val/ and a labels file; data/imagenet_layouts.py) is read the same way with
`--config.data.source=imagenet --config.data.root=DIR`: its copy's splits are train and val,
its class folders the wnids.

Each image is rescaled so its shorter side is 256 and centre-cropped to 256x256, then stored as
JPEG (quality --quality): out/<split>/<class>/<name>.jpg. Class folders keep the source's
class order (prefixed with the class id where the names would not sort into it).
"""
import os

import tensorflow as tf

from alexnet_jax import progress
from alexnet_jax.data import decoding
from alexnet_jax.data import sources


def class_folders(names):
  if sorted(names) == list(names) and len(set(names)) == len(names):
    return list(names)
  return [f"{k:04d}_{n}" for k, n in enumerate(names)]


def _named_records(config, split):
  """(data, label, file name stem): the source file's stem, or the TFDS example's number."""
  ds = sources.records(config, split).enumerate()
  if split.builder is not None:
    return ds.map(lambda k, ex: (*ex, tf.strings.as_string(k, width=8, fill="0")))
  stems = tf.constant([os.path.splitext(os.path.basename(p))[0] for p in split.paths])
  return ds.map(lambda k, ex: (*ex, tf.gather(stems, k)))


def write_split(config, split_name, out, quality=95):
  """Writes one split under out/<split_name>; returns the number of images written."""
  split = sources.open_checked_split(config, split_name)
  # Class folders are made as their first image comes: the folder source refuses an empty one.
  folders = class_folders(split.class_names)
  size = config.data.resize_size

  def encode(data, label, stem):
    image = decoding.decode_and_centre_crop(data, size, decoding.resize_of(config))
    return tf.io.encode_jpeg(image, quality=quality), label, stem

  ds = _named_records(config, split).map(
      encode, num_parallel_calls=config.data.threads or tf.data.AUTOTUNE).prefetch(64)
  count = 0
  with progress.Progress(split.num_examples, f"writing {split_name}") as bar:
    for data, label, stem in ds.as_numpy_iterator():
      path = os.path.join(out, split_name, folders[label], stem.decode() + ".jpg")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(data)
      count += 1
      bar.update()
  return count


def main(argv):
  del argv
  from absl import flags
  config = flags.FLAGS.config
  splits = flags.FLAGS.splits or [config.data.train_split, sources.eval_split_name(config)]
  for split in splits:
    n = write_split(config, split, flags.FLAGS.out, flags.FLAGS.quality)
    print(f"{split}: {n} images -> {os.path.join(flags.FLAGS.out, split)}", flush=True)


if __name__ == "__main__":
  from absl import app
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/paper.py.")
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  flags.DEFINE_list("splits", [], "Splits to write (default: the train and eval splits).")
  flags.DEFINE_integer("quality", 95, "JPEG quality.")
  tf.config.set_visible_devices([], "GPU")
  app.run(main)
