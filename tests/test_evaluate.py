"""evaluate.py against NumPy references: ties, masks, 10-crop softmax averaging, exact counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax import evaluate


def np_topk_correct(scores, labels, k):
  """Reference: the label is among the first k of a stable descending sort."""
  order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
  return (order == labels[:, None]).any(axis=1).astype(np.int64)


def np_softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def tied_logits(rng, b, k):
  """Small integer logits: many ties, including ties with the label's own logit."""
  return rng.integers(0, 4, size=(b, k)).astype(np.float32)


@pytest.mark.parametrize("num_classes", [3, 5, 7, 20])
def test_counts_match_numpy_with_ties(num_classes):
  rng = np.random.default_rng(num_classes)
  logits = tied_logits(rng, 64, num_classes)
  labels = rng.integers(0, num_classes, size=64)
  mask = np.ones(64, np.int32)
  got = jax.device_get(evaluate.counts(logits, labels, mask))
  assert int(got["count"]) == 64
  assert int(got["top1_correct"]) == np_topk_correct(logits, labels, 1).sum()
  assert int(got["top5_correct"]) == np_topk_correct(logits, labels, 5).sum()
  if num_classes <= 5:
    assert int(got["top5_correct"]) == 64  # Top-5 of <= 5 classes holds every label.
  assert got["top1_correct"].dtype == np.int32


def test_ties_break_towards_lower_class_index():
  logits = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], np.float32)
  got = evaluate.topk_correct(jnp.asarray(logits), jnp.array([0, 1]), 1)
  np.testing.assert_array_equal(got, [1, 0])  # Class 0 wins the tie; label 1 is not top-1.
  got = evaluate.topk_correct(jnp.asarray(logits), jnp.array([2, 2]), 2)
  np.testing.assert_array_equal(got, [0, 0])  # Both tied classes rank above class 2.


def test_mask_drops_padded_rows():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(10, 8)).astype(np.float32)
  labels = logits.argmax(axis=1)  # Every row top-1 correct ...
  labels[6:] = (labels[6:] + 1) % 8  # ... except the last four, which are padding.
  labels[9] = -1  # Padding may carry any label.
  mask = np.array([1] * 6 + [0] * 4)
  got = evaluate.counts(logits, labels, mask)
  assert (int(got["count"]), int(got["top1_correct"])) == (6, 6)


def test_ten_crop_averages_softmax_not_logits():
  # One crop is very sure of class 0, nine mildly prefer class 1: the mean logit picks class
  # 0 (30 / 10 > 9 * 2 / 10), the mean softmax picks class 1 (the paper's choice).
  crops = np.array([[[30.0, 0.0, 0.0]] + [[0.0, 2.0, 0.0]] * 9], np.float32)
  mean_logits = crops.mean(axis=1)
  mean_softmax = np_softmax(crops).mean(axis=1)
  assert mean_logits.argmax() != mean_softmax.argmax()  # The case that tells them apart.
  got = evaluate.counts(crops, np.array([mean_softmax.argmax()]), np.ones(1))
  assert int(got["top1_correct"]) == 1
  got = evaluate.counts(crops, np.array([mean_logits.argmax()]), np.ones(1))
  assert int(got["top1_correct"]) == 0


def test_ten_crop_counts_match_numpy():
  rng = np.random.default_rng(2)
  logits = rng.normal(scale=3.0, size=(32, 10, 12)).astype(np.float32)
  labels = rng.integers(0, 12, size=32)
  mask = (rng.random(32) < 0.8).astype(np.int32)
  scores = np_softmax(logits.astype(np.float64)).mean(axis=1)
  got = evaluate.counts(logits, labels, mask)
  assert int(got["count"]) == mask.sum()
  assert int(got["top1_correct"]) == (np_topk_correct(scores, labels, 1) * mask).sum()
  assert int(got["top5_correct"]) == (np_topk_correct(scores, labels, 5) * mask).sum()


def linear_apply(params, images):
  """A stand-in network: a linear map of the mean colour, K = params.shape[1]; [b, K] for
  [b, H, W, 3] images and [b, crops, K] for [b, crops, H, W, 3]."""
  return jnp.mean(images, axis=(-3, -2)) @ params


def batches_of(images, labels, batch_size, pad):
  """Batches as the input pipeline gives them: the last one padded (pad) or short."""
  for start in range(0, len(labels), batch_size):
    image, label = images[start:start + batch_size], labels[start:start + batch_size]
    mask = np.ones(len(label), np.int32)
    if pad and len(label) < batch_size:
      extra = batch_size - len(label)
      image = np.concatenate([image, np.zeros((extra,) + image.shape[1:], image.dtype)])
      label = np.concatenate([label, np.zeros(extra, label.dtype)])
      mask = np.concatenate([mask, np.zeros(extra, np.int32)])
    yield {"image": image, "label": label, "mask": mask}


@pytest.mark.parametrize("ten_crop", [False, True])
@pytest.mark.parametrize("pad", [False, True])
def test_evaluate_counts_every_example_once(ten_crop, pad):
  rng = np.random.default_rng(3)
  n, k = 37, 6  # 37 = 4 batches of 8 and an odd last batch of 5.
  shape = (n, 10, 4, 4, 3) if ten_crop else (n, 4, 4, 3)
  images = rng.normal(size=shape).astype(np.float32)
  labels = rng.integers(0, k, size=n)
  params = rng.normal(size=(3, k)).astype(np.float32)
  logits = np.asarray(linear_apply(params, images.reshape((-1, 4, 4, 3))))
  scores = np_softmax(logits.reshape(n, 10, k)).mean(axis=1) if ten_crop else logits
  want_top1 = 1 - np_topk_correct(scores, labels, 1).mean()
  want_top5 = 1 - np_topk_correct(scores, labels, 5).mean()
  got = evaluate.evaluate(linear_apply, params, batches_of(images, labels, 8, pad))
  assert got["count"] == n
  np.testing.assert_allclose(got["top1_error"], want_top1, atol=1e-12)
  np.testing.assert_allclose(got["top5_error"], want_top5, atol=1e-12)


def test_evaluate_with_batches_sharded_over_two_devices():
  mesh = jax.make_mesh((2,), ("data",))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  apply = jax.jit(linear_apply)
  rng = np.random.default_rng(4)
  images = rng.normal(size=(21, 10, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 9, size=21)
  params = rng.normal(size=(3, 9)).astype(np.float32)
  want = evaluate.evaluate(apply, params, batches_of(images, labels, 8, pad=True))
  got = evaluate.evaluate(apply, params, batches_of(images, labels, 8, pad=True), put_batch=put)
  assert got == want and got["count"] == 21


def test_bad_labels_and_empty_input_are_refused():
  params = np.zeros((3, 4), np.float32)
  batch = {"image": np.zeros((2, 4, 4, 3), np.float32), "label": np.array([0, 4]),
           "mask": np.array([1, 1])}
  with pytest.raises(ValueError, match=r"labels \[4\] are outside \[0, 4\)"):
    evaluate.evaluate(linear_apply, params, [batch])
  batch["mask"] = np.array([1, 0])  # The bad label is padding: fine.
  assert evaluate.evaluate(linear_apply, params, [batch])["count"] == 1
  batch["mask"] = np.array([0, 0])
  with pytest.raises(ValueError, match="no examples counted"):
    evaluate.evaluate(linear_apply, params, [batch])


@pytest.mark.parametrize("ten_crop", [False, True])
def test_per_class_counts_and_confusion_match_numpy(ten_crop):
  """Each class's top-1/top-5 error and the confusion matrix (row: label, column: top-1, ties
  to the lower index) over padded, sharded batches, against NumPy per example."""
  mesh = jax.make_mesh((2,), ("data",))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  rng = np.random.default_rng(5)
  n, k = 45, 7
  shape = (n, 10, 4, 4, 3) if ten_crop else (n, 4, 4, 3)
  images = rng.integers(0, 3, size=shape).astype(np.float32)  # Integers: ties happen.
  labels = rng.integers(0, k, size=n)
  params = rng.integers(-1, 2, size=(3, k)).astype(np.float32)
  got = evaluate.evaluate(jax.jit(linear_apply), params, batches_of(images, labels, 8, pad=True),
                          put_batch=put, per_class=True)
  logits = np.asarray(linear_apply(params, images))
  scores = np_softmax(logits.astype(np.float64)).mean(axis=1) if ten_crop else logits
  top1, top5 = np_topk_correct(scores, labels, 1), np_topk_correct(scores, labels, 5)
  predicted = np.argsort(-scores, axis=1, kind="stable")[:, 0]
  per = got["per_class"]
  for c in range(k):
    rows = labels == c
    assert per["count"][c] == rows.sum()
    np.testing.assert_allclose(per["top1_error"][c], 1 - top1[rows].mean())
    np.testing.assert_allclose(per["top5_error"][c], 1 - top5[rows].mean())
  want = np.zeros((k, k), np.int64)
  np.add.at(want, (labels, predicted), 1)
  np.testing.assert_array_equal(got["confusion"], want)
  assert np.trace(got["confusion"]) == top1.sum() and got["count"] == n
  np.testing.assert_allclose(got["top1_error"], 1 - top1.mean(), atol=1e-12)


def test_per_class_error_of_a_class_without_examples_is_nan_and_no_confusion_at_100():
  logits = np.eye(100, dtype=np.float32)[:4]
  got = evaluate.evaluate(lambda p, x: x, None, [{"image": logits, "label": np.arange(4)}],
                          per_class=True)
  assert "confusion" not in got and got["top1_error"] == 0.0
  assert np.isnan(got["per_class"]["top1_error"][50]) and got["per_class"]["count"][3] == 1
