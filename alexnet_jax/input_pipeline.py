"""The input of paper section 4.1 as tf.data pipelines yielding NumPy batches.

  train_iterator: endless, augmented (random crop, mirror, PCA colour noise, mean subtracted);
    batch t depends only on (config.seed, t), so a resumed run sees the same batches.
  eval_iterator: each example once, centre crop or the 10 crops, last batch padded + masked.
  dataset_info: class and example counts.

Sources, ops and statistics live in alexnet_jax/data/.
"""
import math

import tensorflow as tf

from alexnet_jax.data import augment
from alexnet_jax.data import sources
from alexnet_jax.data import stats as stats_lib

MEAN_MODES = ("image", "channel", "none")


def dataset_info(config):
  train = sources.open_split(config, config.data.train_split)
  eval_split = sources.eval_split_name(config)
  num_eval = sources.open_split(config, eval_split).num_examples
  return dict(num_classes=len(train.class_names), num_train=train.num_examples,
              num_eval=num_eval, eval_split=eval_split)


def train_iterator(config, *, batch_size, slice_index=0, slice_count=1, start_step=0):
  """Endless {"image": f32 [b, S, S, 3], "label": i32 [b]}, b = batch_size // slice_count.

  Each epoch is a permutation keyed by (seed, epoch); each example's crop, mirror and colour
  noise are keyed by (seed, epoch, position). The batch is cut into `slice_count` data slices
  (parallel.data_slice: processes holding the same rows of the batch feed the same slice);
  slices read disjoint shares of the epoch.
  """
  b = _share(batch_size, slice_count)
  split = sources.open_checked_split(config, config.data.train_split)
  if split.builder is None:
    records = _indexed_train_records(config, split, slice_index, slice_count, start_step,
                                     batch_size)
  else:
    records = _train_records(config, split, slice_index, slice_count, start_step * b)
  mean, pca = _mean_and_pca(config)
  d, crop_size = config.data, _crop_size(config)

  def example(data, label, epoch, index):
    seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(tf.constant([config.seed, 0], tf.int64), epoch),
        index)
    crop_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = augment.subtract_mean(augment.decode_and_centre_crop(data, d.resize_size), mean)
    image = augment.random_crop_flip(image, crop_seed, crop_size, crop=d.random_crop, flip=d.flip)
    if d.pca_noise_std > 0:
      image = augment.pca_noise(image, noise_seed, pca["eigval"], pca["eigvec"],
                                d.pca_noise_std, d.pca_scale)
    return {"image": image, "label": label}

  ds = records.map(example, num_parallel_calls=d.threads or tf.data.AUTOTUNE)
  ds = ds.batch(b, drop_remainder=True).prefetch(d.prefetch).with_options(_options(config))
  return _numpy_batches(ds, split)


def eval_iterator(config, split, *, batch_size, ten_crop, slice_index=0, slice_count=1):
  """{"image": f32 [b, S, S, 3] or [b, 10, S, S, 3], "label": i32 [b], "mask": bool [b]}.

  Every example of `split` appears in exactly one data slice's batches with mask True; every
  slice yields the same number of batches, padded with mask False.
  """
  b = _share(batch_size, slice_count)
  split = sources.open_checked_split(config, split)
  counts = sources.slice_sizes(config, split, slice_count)
  num_batches = math.ceil(max(counts) / b)
  records = sources.records(config, split, slice_index=slice_index, slice_count=slice_count)
  mean, _ = _mean_and_pca(config)
  d, crop_size = config.data, _crop_size(config)

  def example(data, label):
    image = augment.subtract_mean(augment.decode_and_centre_crop(data, d.resize_size), mean)
    crops = augment.ten_crops(image, crop_size) if ten_crop else augment.centre_crop(image,
                                                                                     crop_size)
    return {"image": crops, "label": label, "mask": tf.constant(True)}

  ds = records.map(example, num_parallel_calls=d.threads or tf.data.AUTOTUNE)
  shape = [10, crop_size, crop_size, 3] if ten_crop else [crop_size, crop_size, 3]
  padding = {"image": tf.zeros(shape), "label": tf.constant(0, tf.int32),
             "mask": tf.constant(False)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(
      num_batches * b - counts[slice_index]))
  ds = ds.batch(b).prefetch(d.prefetch).with_options(_options(config))
  return _numpy_batches(ds, split)


def _crop_size(config):
  crop, size = config.model.image_size, config.data.resize_size
  if crop > size:
    raise ValueError(f"config.model.image_size={crop} crops cannot come from images of "
                     f"config.data.resize_size={size}: make resize_size at least image_size.")
  return crop


def _share(batch_size, slice_count):
  if batch_size % slice_count:
    raise ValueError(f"Batch size {batch_size} does not split into {slice_count} data slices.")
  return batch_size // slice_count


def _options(config):
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  if config.data.threads:
    options.threading.private_threadpool_size = config.data.threads
  return options


def _indexed_train_records(config, split, slice_index, slice_count, start_step, batch_size):
  """(data, label, epoch, index) of this data slice's rows of every global batch from
  `start_step` on, for splits with a file list. Epoch e is a (seed, e)-keyed permutation.

  Every slice walks the one-process stream of (example, epoch, position) -- integers, cheap --
  cuts it into global batches and keeps its own contiguous rows [k*b, (k+1)*b), so the global
  batch, and each row's augmentation and dropout mask, equal a one-process run's."""
  n, b, seed = split.num_examples, batch_size // slice_count, config.seed
  start_epoch, offset = divmod(start_step * batch_size, n)

  def epoch_records(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch]))
    return tf.data.Dataset.from_tensor_slices(order).enumerate().map(
        lambda pos, i: (i, epoch, pos))

  lo, hi = slice_index * b, (slice_index + 1) * b
  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_records).skip(offset)
  ds = ds.batch(batch_size, drop_remainder=True).map(
      lambda i, epoch, pos: (i[lo:hi], epoch[lo:hi], pos[lo:hi])).unbatch()
  return sources.records(config, split, indices=ds)


def _train_records(config, split, slice_index, slice_count, start):
  """(data, label, epoch, index) of a TFDS split from this data slice's position `start` on:
  epoch e is a (seed, e)-seeded shuffle buffer over this slice's share (tfds.even_splits)."""
  per_epoch = min(sources.slice_sizes(config, split, slice_count))
  if per_epoch == 0:
    raise ValueError(f"Split {split.name!r} has fewer examples than data slices.")
  start_epoch, offset = divmod(start, per_epoch)
  seed = config.seed
  stored = sources.records(config, split, slice_index=slice_index, slice_count=slice_count)
  stored = stored.take(per_epoch)

  def epoch_records(epoch):
    shuffled = stored.shuffle(config.data.shuffle_buffer, seed=seed * 1_000_003 + epoch)
    return shuffled.enumerate().map(lambda pos, ex: (ex, epoch, pos))

  def load(ex, epoch, pos):
    return ex[0], ex[1], epoch, pos * slice_count + slice_index

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_records).skip(offset)
  return ds.map(load)


def _mean_and_pca(config):
  """The mean to subtract and the PCA basis, from the training statistics when needed."""
  d = config.data
  if d.mean not in MEAN_MODES:
    raise ValueError(f"config.data.mean={d.mean!r}: choose one of {MEAN_MODES}.")
  if d.mean == "none" and d.pca_noise_std <= 0:
    return None, None
  stats = stats_lib.load_stats(config)
  mean = {"image": stats["mean_image"], "channel": stats["channel_mean"], "none": None}[d.mean]
  return mean, {"eigval": stats["eigval"], "eigvec": stats["eigvec"]}


def _numpy_batches(ds, split):
  """NumPy batches; a file that fails to decode stops the run with its path."""
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      if split.paths is None:
        raise
      bad = sources.find_unreadable(split.paths)
      if not bad:
        raise
      raise ValueError(
          f"{len(bad)} file(s) of split {split.name!r} cannot be decoded:\n" +
          "".join(f"  {p}: {m}\n" for p, m in bad[:20]) +
          "Delete or replace them, or set --config.data.on_corrupt=skip to leave them out.") from e
    yield batch
