"""What the commands reading a trained run share: their flags (--workdir or --weights, the
config's overrides) and the batches of a split's images or of image files, decoded as
evaluation decodes them."""
import numpy as np
import tensorflow as tf
from absl import flags
from ml_collections import config_flags

from alexnet_jax import progress
from alexnet_jax import runtime
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.configs import paper
from alexnet_jax.data import decoding
from alexnet_jax.data import sources


def define_flags():
  flags.DEFINE_string("workdir", None, "A training run's folder (config.json, checkpoints/).")
  flags.DEFINE_string("weights", None, "Or a weights .npz (tools.weights, tools.caffe, "
                      "tools.torchvision): the network, its class names and mean image.")
  flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)
  config_flags.DEFINE_config_dict(
      "config", paper.get_config(),
      "Overrides of the run's config.json, e.g. --config.eval.checkpoint=best (or latest, or a "
      "step), --config.eval.ten_crop=False, --config.mesh.model=1 on a single device.")
  # The default only gives the overrides their types; printed whole, it fills --help.
  flags.FLAGS["config"].default_as_str = None


def source():
  """--workdir or --weights, whichever was given."""
  return flags.FLAGS.workdir or flags.FLAGS.weights


def config_from_flags():
  """The run's config with the command line's overrides, JAX set up for it and TensorFlow kept
  off the accelerator, which is JAX's."""
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  config = trained_run.read_config(source(), overrides)
  runtime.configure_jax(config.mesh.num_cpu_devices)
  tf.config.set_visible_devices([], "GPU")
  return config


def readable(paths):
  """(paths that decode, [(path, one-line error)] of those that do not)."""
  bad = dict(sources.find_unreadable(paths)) if paths else {}
  return [p for p in paths if p not in bad], list(bad.items())


def image_batches(config, split, *, batch_size, start=0, stop=None):
  """{"image" uint8 [b, R, R, 3], "label", "index", "mask"} of examples start..stop of `split`
  (a sources.Split) in stored order, decoded as evaluation decodes; the last batch padded."""
  stop = split.num_examples if stop is None else min(stop, split.num_examples)
  if split.paths is not None:
    ds = sources.records(config, split, indices=tf.data.Dataset.range(start, stop))
  else:
    ds = progress.skip(sources.records(config, split), start).take(stop - start)
  size = config.data.resize_size
  ds = tf.data.Dataset.zip(ds, tf.data.Dataset.range(start, stop)).map(
      lambda record, index: {"image": decoding.decode_and_centre_crop(
          record[0], size, decoding.resize_of(config)),
                             "label": record[1], "index": index, "mask": tf.constant(True)},
      num_parallel_calls=config.data.threads or tf.data.AUTOTUNE)
  padding = {"image": tf.zeros([size, size, 3], tf.uint8), "label": tf.constant(0, tf.int32),
             "index": tf.constant(-1, tf.int64), "mask": tf.constant(False)}
  pad = -(stop - start) % batch_size
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(pad))
  return ds.batch(batch_size).prefetch(2).as_numpy_iterator()


def files_split(paths):
  """Image files as a split (labels 0) that image_batches reads, in the order given."""
  return sources.Split("files", len(paths), [], np.asarray(paths, str),
                       np.zeros(len(paths), np.int32))


def file_names(split):
  if split.paths is not None:
    return [str(p) for p in split.paths]
  return [f"{split.name}[{i}]" for i in range(split.num_examples)]
