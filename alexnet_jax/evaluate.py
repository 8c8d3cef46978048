"""Top-1 and top-5 error, each example counted once (masked padding): `evaluate`, `counts`,
`class_counts`; ten crops [b, 10, K] average their softmax, as section 4.1 does."""
import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import errors

# A confusion matrix below this many classes: at 1,000 a million cells are no picture.
CONFUSION_MAX_CLASSES = 100
# Batches dispatched before the host waits for the oldest (train.steps_in_flight's reason).
STEPS_IN_FLIGHT = 2


def topk_correct(scores_BK, labels_B, k):
  """int32 [b], 1 where fewer than k classes score above the label, or as high with a lower
  index (lax.top_k's order); with K <= 5 classes top-5 error is 0."""
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


@functools.partial(jax.jit, static_argnames="confusion")
def class_counts(logits, labels_B, mask_B, confusion=False):
  """counts per true class [K] and, with `confusion`, [K, K]: the true class by the top-1."""
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
    # A sum, not true.T @ predicted, whose sharded contraction needs its sharding spelt out.
    result["confusion"] = jnp.sum(true_BK[:, :, None] * predicted_BK[:, None, :], axis=0)
  return result


@jax.jit
def counts(logits, labels_B, mask_B):
  """{"top1_correct", "top5_correct", "count"}, int32 sums over the unmasked rows."""
  return jax.tree.map(jnp.sum, class_counts(logits, labels_B, mask_B))


def evaluate(apply_fn, params, batches, *, put_batch=lambda x: x, per_class=False):
  """{"top1_error", "top5_error", "count"} of `batches` ({"image", "label", "mask"?}), fetched
  at the end; `per_class` adds "per_class" (nan: no examples) and "confusion"."""
  total, in_flight = None, collections.deque()
  for batch in batches:
    if len(in_flight) >= STEPS_IN_FLIGHT:  # As the training loop: no queue of collectives.
      jax.block_until_ready(in_flight.popleft())
    labels = np.asarray(batch["label"]).astype(np.int32)
    mask = np.asarray(batch["mask"]).astype(np.int32) if "mask" in batch else np.ones_like(labels)
    logits = apply_fn(params, put_batch(np.asarray(batch["image"])))
    _check_labels(labels, mask, logits.shape[-1])
    batch_counts = class_counts(logits, put_batch(labels), put_batch(mask),
                                confusion=per_class and logits.shape[-1] < CONFUSION_MAX_CLASSES)
    total = batch_counts if total is None else jax.tree.map(jnp.add, total, batch_counts)
    in_flight.append(total)
  total = jax.device_get(total)
  count = 0 if total is None else int(np.sum(total["count"]))
  if count == 0:
    raise ValueError("evaluate: no examples counted; the batches were empty or fully masked.")
  result = {f"top{k}_error": 1.0 - int(np.sum(total[f"top{k}_correct"])) / count for k in (1, 5)}
  result["count"] = count
  if per_class:
    with np.errstate(invalid="ignore", divide="ignore"):
      result["per_class"] = {"count": total["count"], **{
          f"top{k}_error": 1.0 - total[f"top{k}_correct"] / total["count"] for k in (1, 5)}}
    if "confusion" in total:
      result["confusion"] = total["confusion"]
  return result


def _check_labels(labels, mask, num_classes):
  bad = labels[(mask > 0) & ((labels < 0) | (labels >= num_classes))]
  if bad.size:
    raise errors.ConfigError(f"evaluate: labels {sorted(set(bad.tolist()))[:10]} are outside [0, "
                             f"{num_classes}), the model's classes; check the dataset's and "
                             "config.model.num_classes.")
