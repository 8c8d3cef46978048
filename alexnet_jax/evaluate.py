"""Top-1 and top-5 error with the paper's test-time procedure (section 4.1), counted exactly.

Centre crop: logits [b, K]. Ten crops (the four corners and the centre, and their mirror
images): logits [b, 10, K]; the prediction averages the SOFTMAX over the crops, as the paper
does ("averaging the predictions made by the network's softmax layer on the ten patches").
Every example counts exactly once: batches carry a mask and padded rows are left out, so the
last, partial batch is neither dropped nor double-counted.

Ties: an example is top-k correct when fewer than k classes rank above its label, where a
class ranks above the label if its score is higher, or equal with a lower class index (the
order of a stable descending sort and of `lax.top_k`). With K <= 5 classes every label is
within the top 5, so top-5 error is 0: top-k means top-min(k, K).
"""
import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np

# A confusion matrix is counted (and drawn) below this many classes: at ImageNet's 1,000 it
# would be a million cells, unreadable as a picture.
CONFUSION_MAX_CLASSES = 100
# Batches dispatched before the host waits for the oldest (train.steps_in_flight's reason).
STEPS_IN_FLIGHT = 2


def topk_correct(scores_BK, labels_B, k):
  """1 where the label is within the top k scores (ties as above), else 0; int32 [b]."""
  labels_B = labels_B.astype(jnp.int32)
  safe_B = jnp.clip(labels_B, 0, scores_BK.shape[-1] - 1)  # Padded rows may hold any label.
  true_B1 = jnp.take_along_axis(scores_BK, safe_B[:, None], axis=-1)
  index_K = jnp.arange(scores_BK.shape[-1], dtype=jnp.int32)
  above_BK = (scores_BK > true_B1) | ((scores_BK == true_B1) & (index_K[None, :] < safe_B[:, None]))
  rank_B = jnp.sum(above_BK, axis=-1, dtype=jnp.int32)
  return (rank_B < k).astype(jnp.int32)


def crop_scores(logits):
  """Scores to rank: the logits for [b, K]; the softmax averaged over crops for [b, n, K]."""
  if logits.ndim == 2:
    return logits
  if logits.ndim == 3:
    return jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=1)
  raise ValueError(f"evaluate: logits must be [b, K] or [b, crops, K]; got shape {logits.shape}.")


@jax.jit
def counts(logits, labels_B, mask_B):
  """{"top1_correct", "top5_correct", "count"} as int32 sums over the unmasked rows.

  Jit-able and sum-reducing, so a batch sharded over devices gives the global counts.
  """
  scores_BK = crop_scores(logits)
  keep_B = (mask_B > 0).astype(jnp.int32)
  return {
      "top1_correct": jnp.sum(topk_correct(scores_BK, labels_B, 1) * keep_B),
      "top5_correct": jnp.sum(topk_correct(scores_BK, labels_B, 5) * keep_B),
      "count": jnp.sum(keep_B),
  }


@functools.partial(jax.jit, static_argnames="confusion")
def class_counts(logits, labels_B, mask_B, confusion=False):
  """Per true class, over the unmasked rows: "count", "top1_correct", "top5_correct" (int32
  [K]) and, with `confusion`, "confusion" int32 [K, K]: row the true class, column the top-1
  prediction (ties to the lower class index, as topk_correct ranks them)."""
  scores_BK = crop_scores(logits)
  num_classes = scores_BK.shape[-1]
  true_BK = jax.nn.one_hot(labels_B, num_classes, dtype=jnp.int32) * (mask_B > 0)[:, None]
  result = {
      "count": jnp.sum(true_BK, axis=0),
      "top1_correct": jnp.sum(true_BK * topk_correct(scores_BK, labels_B, 1)[:, None], axis=0),
      "top5_correct": jnp.sum(true_BK * topk_correct(scores_BK, labels_B, 5)[:, None], axis=0),
  }
  if confusion:
    predicted_BK = jax.nn.one_hot(jnp.argmax(scores_BK, axis=-1), num_classes, dtype=jnp.int32)
    # A sum over the batch rather than true.T @ predicted: a contraction over an axis sharded
    # in the mesh's types would need its output sharding spelt out. K < 100 keeps it small.
    result["confusion"] = jnp.sum(true_BK[:, :, None] * predicted_BK[:, None, :], axis=0)
  return result


def evaluate(apply_fn, params, batches, *, put_batch=None, per_class=False):
  """Top-1/top-5 error over every unmasked example of `batches`.

  `batches` yields {"image": [b, ...], "label": [b], "mask": [b]} NumPy arrays ("mask"
  optional: all rows count). `apply_fn(params, images) -> logits`, [b, K] for one view of each
  example or [b, crops, K] for several (the ten crops, cut on the device). `put_batch(array) ->
  array` places each of image, label and mask on the devices (e.g. sharded over `data`);
  identity by default. Returns {"top1_error", "top5_error", "count"}; with `per_class` also
  "per_class" ({"count", "top1_error", "top5_error"}, NumPy [K]; a class without examples has
  error nan) and, below CONFUSION_MAX_CLASSES classes, "confusion" [K, K] (class_counts). The
  counts add up on the devices and are fetched once, at the end.
  """
  put_batch = put_batch or (lambda x: x)
  total, in_flight = None, collections.deque()
  for batch in batches:
    if len(in_flight) >= STEPS_IN_FLIGHT:  # As the training loop: no queue of collectives.
      jax.block_until_ready(in_flight.popleft())
    images, labels, mask = _unpack(batch)
    logits = apply_fn(params, put_batch(images))
    _check_labels(labels, mask, logits.shape[-1])
    args = (logits, put_batch(labels), put_batch(mask))
    batch_counts = (class_counts(*args, confusion=logits.shape[-1] < CONFUSION_MAX_CLASSES)
                    if per_class else counts(*args))
    total = batch_counts if total is None else jax.tree.map(jnp.add, total, batch_counts)
    in_flight.append(total)
  total = jax.tree.map(np.asarray, jax.device_get(total)) if total is not None else None
  count = 0 if total is None else int(np.sum(total["count"]))
  if count == 0:
    raise ValueError("evaluate: no examples counted; the batches were empty or fully masked.")
  top1, top5 = int(np.sum(total["top1_correct"])), int(np.sum(total["top5_correct"]))
  result = {"top1_error": 1.0 - top1 / count, "top5_error": 1.0 - top5 / count, "count": count}
  if per_class:
    with np.errstate(invalid="ignore", divide="ignore"):
      result["per_class"] = {"count": total["count"],
                             "top1_error": 1.0 - total["top1_correct"] / total["count"],
                             "top5_error": 1.0 - total["top5_correct"] / total["count"]}
    if "confusion" in total:
      result["confusion"] = total["confusion"]
  return result


def _unpack(batch):
  images = np.asarray(batch["image"])
  labels = np.asarray(batch["label"]).astype(np.int32)
  if images.shape[:1] != labels.shape:
    raise ValueError(f"evaluate: batch image {images.shape} and label {labels.shape} must both "
                     "have the batch size first.")
  mask = np.asarray(batch["mask"]) if "mask" in batch else np.ones(labels.shape, np.int32)
  if mask.shape != labels.shape:
    raise ValueError(f"evaluate: batch mask {mask.shape} must match label {labels.shape}.")
  return images, labels, mask.astype(np.int32)


def _check_labels(labels, mask, num_classes):
  bad = labels[(mask > 0) & ((labels < 0) | (labels >= num_classes))]
  if bad.size:
    raise ValueError(f"evaluate: labels {sorted(set(bad.tolist()))[:10]} are outside [0, "
                     f"{num_classes}), the model's classes; check the dataset's and "
                     "config.model.num_classes.")
