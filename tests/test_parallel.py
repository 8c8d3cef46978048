"""Section 3.2 on 2 CPU devices: the mesh, the shards, and model=2 computing what model=1 does.

How the dropout masks agree across meshes: alexnet.AlexNet draws tower g's mask for layer l from
fold_in(fold_in(rng, l), g) over the GLOBAL batch, and each data shard keeps its own rows. With
model=2 a device holds tower g = its model index and the whole batch; with model=1 it holds both
towers and half the batch; on one device without a mesh it holds everything. All three therefore
drop the same units of the same examples.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alexnet_jax import nets, parallel
from alexnet_jax.nets import alexnet
from tests import tiny_config
from tests.trees import assert_trees_close


tiny_model_config = tiny_config.model_config  # Width 0.25, 10 classes, dropout 0.5, 67x67.


def loss_and_grads(apply_fn, train):
  """Logits and d(sum of squared logits)/d(params): every logit weighs on the gradient."""
  def loss(params, x_BHWC, rng):
    logits_BK = apply_fn(params, x_BHWC, rng, train)
    return jnp.sum(jnp.square(logits_BK)), logits_BK
  return jax.grad(loss, has_aux=True)


@functools.cache
def results(model_axis, dtype="float32"):
  """(logits, grads) with dropout off and on, for model_axis 1, 2, or None (no mesh)."""
  cfg = tiny_model_config()
  cfg.dtype = dtype
  x_BHWC = 60 * jax.random.normal(jax.random.key(3), (4, 67, 67, 3), jnp.float32)  # Pixels.
  rng = jax.random.key(11)
  if model_axis is None:
    net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg), model_axis=None, data_axis=None)
    apply_fn = lambda p, x, r, train: net.apply({"params": p}, x, train=train, rng=r)
    params = alexnet.init_params(cfg, jax.random.key(0))
  else:
    mesh = parallel.make_mesh(model_axis)
    apply_fn = parallel.shard_net(nets.make_module(cfg, model_axis), mesh)
    params = parallel.create_sharded_params(functools.partial(alexnet.init_params, cfg), mesh,
                                            jax.random.key(0))
    x_BHWC = jax.device_put(x_BHWC, parallel.batch_sharding(mesh))
  both = jax.jit(lambda p, x, r: {train: loss_and_grads(apply_fn, train)(p, x, r)[::-1]
                                  for train in (False, True)})
  return jax.device_get(both(params, x_BHWC, rng))


# Without dropout in the slow tier: the fast tier's dropout_on case runs the same path and more.
@pytest.mark.parametrize("train", [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=["dropout_off", "dropout_on"])
def test_model2_equals_model1_and_one_device(train):
  one_device, model1, model2 = results(None)[train], results(1)[train], results(2)[train]
  for other, name in ((model1, "model=1"), (one_device, "one device")):
    assert_trees_close({"logits": model2[0]}, {"logits": other[0]}, what=f"model=2 vs {name}:")
    assert_trees_close(model2[1], other[1], what=f"model=2 vs {name} gradient of")
  # Guard against a vacuous comparison: dropout changed the logits.
  if train:
    assert np.abs(model2[0] - results(2)[False][0]).max() > 1e-3


@pytest.mark.slow
def test_bfloat16_model2_equals_model1():
  """In bfloat16 the towers compute the same operations on either mesh; what differs is where
  XLA rounds and in which order it sums (the batch split over `data` with model=1). Measured on
  2 CPU devices: the logits bit-equal, each gradient within 0.66% of its largest entry (the sums
  of thousands of bfloat16 terms: conv1's bias, 4 x 15 x 15 per unit). Held to one bfloat16
  rounding (2^-8) for the logits and about twice the measured error for the gradients; bfloat16
  is itself 0.6-0.9% of the logits' scale away from float32, more than the logits' bound."""
  for train in (False, True):
    model1, model2 = results(1, "bfloat16")[train], results(2, "bfloat16")[train]
    assert_trees_close(model2[0], model1[0], rtol=0, scale=2 ** -8, what="logits")
    assert_trees_close(model2[1], model1[1], rtol=0, scale=1.5e-2, what="gradient of")
    # Not vacuous: bfloat16 is not float32, and the logits move with the image.
    float32 = results(1)[train][0]
    assert np.abs(model1[0] - float32).max() > 2 ** -8 * np.abs(float32).max()
    assert float32.std(axis=0).mean() > 0.02 * np.abs(float32).max()


def test_make_mesh():
  devices = jax.devices()
  assert len(devices) == 2, "tests/conftest.py should give 2 CPU devices"
  assert dict(parallel.make_mesh().shape) == {"data": 1, "model": 2}
  assert dict(parallel.make_mesh(1).shape) == {"data": 2, "model": 1}
  assert dict(parallel.make_mesh(0, devices[:1]).shape) == {"data": 1, "model": 1}
  with pytest.raises(ValueError, match="does not divide the 1 devices"):
    parallel.make_mesh(2, devices[:1])
  with pytest.raises(ValueError, match="config.mesh.model=3"):
    parallel.make_mesh(3)


def test_each_tower_lives_on_its_own_device():
  cfg = tiny_model_config()
  mesh = parallel.make_mesh(2)
  params = parallel.create_sharded_params(functools.partial(alexnet.init_params, cfg), mesh,
                                          jax.random.key(0))
  reference = alexnet.init_params(cfg, jax.random.key(0))
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    assert leaf.sharding.spec == P("model"), jax.tree_util.keystr(path)
    want = functools.reduce(lambda t, k: t[k.key], path, reference)
    for shard in leaf.addressable_shards:
      tower = mesh.devices[0].tolist().index(shard.device)
      assert shard.data.shape == (1,) + leaf.shape[1:]
      # Equal up to float rounding: XLA fuses the sharded normal draw differently.
      np.testing.assert_allclose(shard.data[0], want[tower], rtol=1e-6, atol=1e-9)
  counts = {d: sum(s.data.size for leaf in jax.tree.leaves(params) for s in leaf.addressable_shards
                   if s.device == d) for d in mesh.devices.flat}
  assert set(counts.values()) == {nets.count_params(params) // 2}


def test_batch_must_divide_over_data():
  cfg = tiny_model_config()
  mesh = parallel.make_mesh(1)
  params = jax.eval_shape(functools.partial(alexnet.init_params, cfg), jax.random.key(0))
  x = jax.ShapeDtypeStruct((3, 67, 67, 3), jnp.float32)
  with pytest.raises(ValueError, match="global batch \\(3\\) must divide over the 2 devices"):
    jax.eval_shape(lambda p, x: parallel.shard_net(nets.make_module(cfg), mesh)(p, x, None,
                                                                                  False),
                   params, x)
