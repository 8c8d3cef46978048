"""The CIFAR-10 nets of cuda-convnet (alexnet_jax/nets/cifar.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import nets
from alexnet_jax.configs import cifar10_fig1
from alexnet_jax.configs import common
from alexnet_jax.nets import cifar
from alexnet_jax.nets import layers


def model_cfg(layout="18pct", activation="relu", lrn=False):
  return common.cifar_model_config(activation, layout=layout, lrn=lrn)


def shapes(cfg):
  return jax.eval_shape(functools.partial(cifar.init_params, cfg), jax.random.key(0))


def init(cfg, seed):
  return cifar.init_params(cfg, jax.random.key(seed))


def test_param_count_18pct_matches_layers_file():
  # layers-18pct.cfg: conv1 5x5x3->32, conv2 5x5x32->32, conv3 5x5x32->64 (shared biases),
  # fc10 from the 4x4x64 map after three 3/2 pools of 32x32 (32 -> 16 -> 8 -> 4).
  expected = (5 * 5 * 3 * 32 + 32) + (5 * 5 * 32 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (
      4 * 4 * 64 * 10 + 10)
  params = shapes(model_cfg())
  assert nets.count_params(params) == expected == 89_578
  assert params["fc10"]["kernel"].shape == (1024, 10)


def test_param_count_conv_local_matches_layers_file():
  # layers-conv-local-11pct.cfg on 24x24 crops: 24 -> 12 -> 6 after the pools; local layers
  # have a filter bank and a bias per output position.
  expected = ((5 * 5 * 3 * 64 + 64) + (5 * 5 * 64 * 64 + 64) +
              (6 * 6 * 3 * 3 * 64 * 32 + 6 * 6 * 32)
              + (6 * 6 * 3 * 3 * 32 * 32 + 6 * 6 * 32) + (6 * 6 * 32 * 10 + 10))
  params = shapes(model_cfg("conv_local", lrn=True))
  assert nets.count_params(params) == expected == 1_116_490
  assert params["local3"]["kernel"].shape == (6, 6, 576, 32)


def test_init_stds_follow_layers_file():
  params = init(model_cfg(), 1)
  assert float(jnp.std(params["conv1"]["kernel"])) == pytest.approx(1e-4, rel=0.1)
  assert float(jnp.std(params["conv2"]["kernel"])) == pytest.approx(0.01, rel=0.05)
  assert float(jnp.abs(params["conv3"]["bias"]).max()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("layout", cifar.LAYOUTS)
def test_logits_shape_and_switches_change_outputs(layout):
  size = cifar.INPUT_SIZE[layout]
  images = jax.random.normal(jax.random.key(2), (2, size, size, 3)) * 50.0
  params = init(model_cfg(layout), 3)
  # Larger weights so every layer's activation and normalisation matter.
  params = jax.tree.map(lambda p: p * 30.0 + 0.01, params)
  out = {}
  for activation, lrn in (("relu", False), ("tanh", False), ("relu", True)):
    logits = cifar.logits(model_cfg(layout, activation, lrn), params, images)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    out[activation, lrn] = np.asarray(logits)
  assert not np.allclose(out["relu", False], out["tanh", False], rtol=1e-3)
  assert not np.allclose(out["relu", False], out["relu", True], rtol=1e-3)


def test_pool_sizes_follow_cuda_convnet():
  x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
  assert [cifar.pooled_size(s) for s in (32, 16, 8, 24, 12)] == [16, 8, 4, 12, 6]
  # 5 -> 2 windows: rows/cols {0,1,2} and {2,3,4} (no overhang here).
  np.testing.assert_allclose(cifar.pool(x, "max")[0, :, :, 0], [[12, 14], [22, 24]])
  # 4 -> 2 windows: {0,1,2} and {2,3} (the second hangs over; averaged over pixels inside).
  y = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)
  avg = cifar.pool(y, "avg")[0, :, :, 0]
  np.testing.assert_allclose(avg[1, 1], np.mean([10, 11, 14, 15]))
  np.testing.assert_allclose(avg[0, 0], np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10]))


def test_lrn_is_the_model_lrn():
  cfg = model_cfg("18pct", lrn=True)
  x = jnp.linspace(-40.0, 40.0, 2 * 4 * 4 * 8).reshape(2, 4, 4, 8)
  net = cifar.CifarNet(cfg)
  expected = layers.lrn(x, k=1.0, n=5, alpha=0.001, beta=0.75, convention="caffe")
  np.testing.assert_allclose(net.apply({}, x, method=lambda m, v: m._norm(v)), expected)


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="layout"):
    cifar.check_config(_with(model_cfg(), layout="vgg"))
  with pytest.raises(ValueError, match="image_size"):
    cifar.check_config(_with(model_cfg(), image_size=24))
  with pytest.raises(ValueError, match="dropout_rate"):
    cifar.check_config(_with(model_cfg(), dropout_rate=0.5))


def _with(cfg, **kw):
  cfg = cfg.copy_and_resolve_references()
  cfg.update(kw)
  return cfg


def test_figure1_stops_at_25_percent_and_the_lrn_runs_do_not():
  from alexnet_jax.configs import cifar10_lrn
  for activation in ("relu", "tanh"):
    fig1 = cifar10_fig1.get_config(activation)
    assert fig1.train.stop_at_train_error == 0.25 and fig1.train.weight_decay == 0.0
    assert not (fig1.data.random_crop or fig1.data.flip or fig1.model.norm != "none")
    assert fig1.train.learning_rate == cifar10_fig1.LEARNING_RATES[activation]
  for arg, lrn in (("lrn", True), ("nolrn", False)):
    config = cifar10_lrn.get_config(arg)
    assert config.train.stop_at_train_error == 0.0
    assert config.model.norm == ("lrn" if lrn else "none")
    assert config.data.random_crop and config.data.flip and config.model.layout == "conv_local"


@pytest.mark.parametrize("k,p", [(3, 1), (5, 2), (3, 0)])
def test_patches_match_lax_patches(k, p):
  x = jax.random.normal(jax.random.key(4), (2, 6, 7, 5))
  expected = jax.lax.conv_general_dilated_patches(
      x, (k, k), (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_array_equal(cifar.patches(x, k, p), expected)
