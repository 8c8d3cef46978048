"""config.model.lrn_across_towers: LRN over both towers' channels as one stack (Caffe's
one-device AlexNet), on one device and with one tower per device, where the neighbouring
tower's edge channels come across the model axis."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alexnet_jax import nets
from alexnet_jax import parallel
from alexnet_jax.nets import alexnet
from tests import tiny_config


def numpy_lrn(a, k, n, alpha, beta):
  """Caffe's LRN (alpha / n) over the last axis, the window clipped at the ends."""
  c = a.shape[-1]
  out = np.empty_like(a)
  for i in range(c):
    lo, hi = max(0, i - n // 2), min(c - 1, i + n // 2)
    out[..., i] = a[..., i] / (k + alpha / n * np.sum(a[..., lo:hi + 1] ** 2, -1)) ** beta
  return out


def config(across):
  # He's scaling, so that the signal reaches fc8, and an alpha large enough that the
  # neighbours' squares move the result well beyond rounding.
  return tiny_config.model_config(lrn_convention="caffe", lrn_k=1.0, lrn_alpha=0.05, init="he",
                                  lrn_across_towers=across, dropout_rate=0.0)


def images():
  return jax.random.normal(jax.random.key(42), (4, 67, 67, 3), jnp.float32) * 20


@functools.cache
def params():
  return alexnet.init_params(config(False), jax.random.key(0))


def one_device_maps(across):
  net = alexnet.AlexNet(ml_collections.FrozenConfigDict(config(across)), model_axis=None,
                        data_axis=None)
  logits, state = net.apply({"params": params()}, images(), mutable=["intermediates"])
  return logits, {k: np.asarray(v) for k, v in state["intermediates"]["maps"][0].items()}


def test_one_device_normalises_across_the_towers_boundary():
  _, maps = one_device_maps(True)
  np.testing.assert_allclose(maps["norm1"], numpy_lrn(maps["conv1"], 1.0, 5, 0.05, 0.75),
                             rtol=1e-5)
  _, per_tower = one_device_maps(False)
  # 12 channels a tower: only the two on each side of the boundary (10, 11 | 12, 13) see the
  # other tower; the others agree with the paper's per-tower normalisation.
  differ = np.abs(maps["norm1"] - per_tower["norm1"]).max(axis=(0, 1, 2)) > 1e-4
  assert list(np.flatnonzero(differ)) == [10, 11, 12, 13]


@pytest.mark.slow
def test_model2_brings_the_edge_channels_across_devices():
  """Logits and gradients with one tower per device equal those of both towers on one."""
  out = {}
  for model in (1, 2):
    mesh = parallel.make_mesh(model)
    apply = parallel.shard_net(nets.make_module(config(True), model), mesh)
    p = jax.device_put(params(), parallel.param_shardings(mesh, params()))
    x = jax.device_put(images(), parallel.batch_sharding(mesh))
    loss = lambda p, x: (lambda y: (jnp.sum(jnp.square(y)), y))(apply(p, x, None, train=False))
    out[model] = jax.device_get(jax.jit(jax.grad(loss, has_aux=True))(p, x))
  one, _ = one_device_maps(True)
  np.testing.assert_allclose(out[2][1], one, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[2][1], out[1][1], rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(out[2][0]), jax.tree.leaves(out[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
  per_tower, _ = one_device_maps(False)
  assert np.abs(np.asarray(per_tower) - one).max() > 1e-3 * np.abs(one).max()
