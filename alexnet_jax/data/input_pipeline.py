"""The host's input (sections 2, 4.1) as tf.data pipelines of uint8 NumPy batches:
`train_iterator` (batch t a function of (seed, t)), `eval_iterator` (each example once, the
last batch padded and masked), `dataset_info`, `class_names`."""
import functools
import math

import numpy as np
import tensorflow as tf

from alexnet_jax import errors
from alexnet_jax import progress
from alexnet_jax.data import decoded_cache
from alexnet_jax.data import decoding
from alexnet_jax.data import sources


def dataset_info(config):
  train = sources.open_split(config, config.data.train_split)
  eval_split = sources.eval_split_name(config)
  evaluation = sources.open_split(config, eval_split)
  if list(evaluation.class_names) != list(train.class_names):
    only_eval = sorted(set(evaluation.class_names) - set(train.class_names))
    only_train = sorted(set(train.class_names) - set(evaluation.class_names))
    raise errors.ConfigError(
        f"Split {eval_split!r} has other classes than split {config.data.train_split!r} (only "
        f"in {eval_split!r}: {only_eval[:5] or 'none'}; only in {config.data.train_split!r}: "
        f"{only_train[:5] or 'none'}): labels would not match. Give both the same class "
        "folders.")
  return dict(num_classes=len(train.class_names), num_train=train.num_examples,
              num_eval=evaluation.num_examples, eval_split=eval_split)


def class_names(config):
  """The training split's class names, in label order."""
  return list(sources.open_split(config, config.data.train_split).class_names)


def train_iterator(config, *, batch_size, slice_index=0, slice_count=1, start_step=0):
  """Endless {"image": uint8 [b, R, R, 3], "label"}: this data slice's rows (b = batch_size /
  slice_count) of each global batch from `start_step` on; docs/design.md, "The host's input"."""
  b, d = _share(batch_size, slice_count), config.data
  decoded_cache.mode_of(config)
  split = sources.open_checked_split(config, d.train_split)
  cached, threads = _cached_images(config, split, slice_index), d.threads or tf.data.AUTOTUNE
  if cached is not None:
    ds = _indexed_train_indices(config, split, slice_index, slice_count, start_step, batch_size)
    ds = ds.batch(b, drop_remainder=True).map(_gatherer(cached, split.labels),
                                             num_parallel_calls=threads)
  else:
    records = (_train_records(config, split, slice_index, slice_count, start_step * b)
               if split.builder is not None else
               sources.records(config, split, indices=_indexed_train_indices(
                   config, split, slice_index, slice_count, start_step, batch_size)))
    ds = records.map(_decoder(config), num_parallel_calls=threads).batch(b, drop_remainder=True)
  return _numpy_batches(config, ds, split, d.prefetch)


def eval_iterator(config, split, *, batch_size, slice_index=0, slice_count=1):
  """{"image", "label", "mask"} batches: each example in one data slice with mask True, every
  slice as many batches, padded with mask False."""
  b, d = _share(batch_size, slice_count), config.data
  decoded_cache.mode_of(config)
  split = sources.open_checked_split(config, split)
  counts = sources.slice_sizes(config, split, slice_count)
  cached = _cached_images(config, split, slice_index)
  if cached is not None:
    lo = int(sources.slice_bounds(split.num_examples, slice_count)[slice_index])
    hi = lo + counts[slice_index]
    batches = ({"image": cached[s:min(s + b, hi)], "label": split.labels[s:min(s + b, hi)]}
               for s in range(lo, hi, b))
  else:
    ds = sources.records(config, split, slice_index=slice_index, slice_count=slice_count)
    ds = ds.map(_decoder(config), num_parallel_calls=d.threads or tf.data.AUTOTUNE)
    batches = _numpy_batches(config, ds.batch(b), split, d.prefetch)
  return _padded(batches, b, math.ceil(max(counts) / b), d.resize_size)


def _decoder(config):
  """(encoded image, label) -> {"image": uint8 [R, R, 3], "label"}: section 2's fixed size."""
  size, resize = config.data.resize_size, decoding.resize_of(config)
  return lambda data, label: {"image": decoding.decode_and_centre_crop(data, size, resize),
                              "label": label}


def _cached_images(config, split, slice_index):
  """The decoded split under config.data.decoded_cache (decoded here, once), else None."""
  def decode_batches():
    ds = sources.records(config, split).map(
        lambda data, label: _decoder(config)(data, label)["image"],
        num_parallel_calls=config.data.threads or tf.data.AUTOTUNE)
    return _numpy_batches(config, ds.batch(256), split, 2)

  return decoded_cache.images(config, split, decode_batches, active=slice_index == 0)


def _gatherer(images, labels):
  """int64 [b] example indices -> the batch {"image", "label"}, copied from the decoded split."""
  def batch(i):
    image, label = tf.numpy_function(lambda i: (images[i], labels[i]), [i],
                                     [tf.uint8, tf.int32], stateful=False)
    return {"image": tf.ensure_shape(image, [None, *images.shape[1:]]),
            "label": tf.ensure_shape(label, [None])}

  return batch


def _padded(batches, b, num_batches, size):
  """`num_batches` batches of `b` rows: `batches` (the last may be short), then zeros, masked."""
  for _ in range(num_batches):
    batch = next(batches, None)
    n = 0 if batch is None else len(batch["label"])
    padded = {"image": np.zeros((b, size, size, 3), np.uint8), "label": np.zeros(b, np.int32),
              "mask": np.arange(b) < n}
    if n:
      padded["image"][:n], padded["label"][:n] = batch["image"], batch["label"]
    yield padded


def _share(batch_size, slice_count):
  if batch_size % slice_count:
    raise errors.ConfigError(
        f"Batch size {batch_size} does not split into {slice_count} data slices.")
  return batch_size // slice_count


def _indexed_train_indices(config, split, slice_index, slice_count, start_step, batch_size):
  """Indices of this slice's rows of the one-process batches, so slices together train on them."""
  n, b, seed = split.num_examples, batch_size // slice_count, config.seed
  start_epoch, offset = divmod(start_step * batch_size, n)

  def epoch_order(epoch):
    return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch])))

  lo, hi = slice_index * b, (slice_index + 1) * b
  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_order).skip(offset)
  return ds.batch(batch_size, drop_remainder=True).map(lambda i: i[lo:hi]).unbatch()


def _train_records(config, split, slice_index, slice_count, start):
  """A TFDS split's records from `start` on: a buffer alone would only mix neighbours."""
  per_epoch = min(sources.slice_sizes(config, split, slice_count))
  if per_epoch == 0:
    raise errors.ConfigError(f"Split {split.name!r} has fewer examples than data slices.")
  start_epoch, offset = divmod(start, per_epoch)

  def epoch_records(epoch):
    seed = config.seed * 1_000_003 + epoch
    stored = sources.records(config, split, slice_index=slice_index, slice_count=slice_count,
                             file_seed=seed)
    return stored.take(per_epoch).shuffle(config.data.shuffle_buffer, seed=seed)

  t = config.train
  total = t.num_steps * t.batch_size / slice_count / per_epoch if t.num_steps else t.num_epochs
  # A dataset per epoch (the seed is a Python value), for the epochs the run can reach and one
  # more (a partial last one).
  epochs = range(start_epoch, max(start_epoch, math.ceil(total)) + 1)
  ds = functools.reduce(lambda a, b: a.concatenate(b), map(epoch_records, epochs))
  # Reaching a resumed position reads every record before it (minutes on ImageNet): shown.
  return progress.skip(ds.repeat(), offset, active=slice_index == 0)


def _numpy_batches(config, ds, split, prefetch):
  """NumPy batches in a fixed order; a file that fails to decode stops the run with its path."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  if config.data.threads:
    options.threading.private_threadpool_size = config.data.threads
  ds = ds.prefetch(prefetch).with_options(options)
  return sources.as_numpy(ds, split.name, split.paths, " to leave them out")
