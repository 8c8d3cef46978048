"""The network of section 3: sizes, parameter count, LRN, initialisation and ablation switches.

These run the model on one device without a mesh (model_axis=data_axis=None, both towers local);
tests/test_parallel.py checks that the sharded versions compute the same numbers.
"""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alexnet_jax import nets
from alexnet_jax.configs import paper
from alexnet_jax.nets import alexnet
from alexnet_jax.nets import layers
from tests import tiny_config
from tests.trees import assert_trees_close


tiny_model_config = tiny_config.model_config  # Width 0.25, 10 classes, 67x67: 1x1 after pool5.


def run(cfg, x_BHWC, train=False, rng=None, params=None, impl=None):
  """Logits and the recorded per-layer maps of the one-device network (computed as `impl`, a
  dict of config.impl's fields, says)."""
  alexnet.check_config(cfg)
  frozen = ml_collections.FrozenConfigDict(cfg)
  params = base_params() if params is None else params  # The switches leave the shapes alone.
  logits, state = forward(frozen, train, layers.impl_config(impl))(
      params, x_BHWC, rng if rng is not None else jax.random.key(1))
  maps = state["intermediates"]["maps"][0]
  return logits, {k: np.asarray(v, np.float32) for k, v in maps.items()}


@functools.cache
def base_params():
  return alexnet.init_params(tiny_model_config(), jax.random.key(0))


@functools.cache
def forward(frozen_cfg, train, impl=None):
  net = alexnet.AlexNet(frozen_cfg, impl, model_axis=None, data_axis=None)
  return jax.jit(lambda p, x, r: net.apply({"params": p}, x, train=train, rng=r,
                                           mutable=["intermediates"]))


@functools.cache
def images(size=67, batch=4):
  """Pixels minus the mean: a standard deviation of 60, as section 4.1 feeds them."""
  return 60 * jax.random.normal(jax.random.key(42), (batch, size, size, 3), jnp.float32)


def test_the_test_network_sees_its_input():
  """The logits of tests/tiny_config.py's network move with the image: their spread across
  examples is a sizeable part of their scale (measured: 0.032 against a largest logit of 0.66).
  With section 5's N(0, 0.01) and biases of 1 at this width the signal dies before fc8
  (measured: a spread of 1.3e-6 against 0.21), which would leave every test below that compares
  logits comparing the biases."""
  def spread(cfg):
    logits, _ = run(cfg, images(), params=alexnet.init_params(cfg, jax.random.key(0)))
    logits = np.asarray(logits)
    return float(logits.std(axis=0).mean()), float(np.abs(logits).max())
  spread_he, largest_he = spread(tiny_model_config())
  assert spread_he > 0.02 * largest_he, (spread_he, largest_he)
  spread_paper, largest_paper = spread(tiny_model_config(init="paper", input_scale=1.0,
                                                         bias_init=1.0))
  assert spread_paper < 1e-4 * largest_paper, (spread_paper, largest_paper)


def test_parameter_count_is_the_papers():
  shapes = jax.eval_shape(functools.partial(alexnet.init_params, paper.get_config().model),
                          jax.random.key(0))
  assert nets.count_params(shapes) == 60_965_224
  assert shapes["conv1"]["kernel"].shape == (2, 11, 11, 3, 48)
  assert shapes["conv2"]["kernel"].shape == (2, 5, 5, 48, 128)     # Own tower only.
  assert shapes["conv3"]["kernel"].shape == (2, 3, 3, 256, 192)    # Both towers.
  assert shapes["fc6"]["kernel"].shape == (2, 6 * 6 * 256, 2048)
  assert shapes["fc8"]["kernel"].shape == (2, 4096, 500)
  assert jax.tree.leaves(shapes)[0].dtype == jnp.float32


@pytest.mark.parametrize("size", [224, 227])
def test_feature_map_sizes_at_224_and_227(size):
  cfg = paper.get_config().model
  cfg.image_size = size
  net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg), model_axis=None, data_axis=None)
  params = jax.eval_shape(functools.partial(alexnet.init_params, cfg), jax.random.key(0))
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  logits, state = jax.eval_shape(
      lambda p, x: net.apply({"params": p}, x, mutable=["intermediates"]), params, x)
  got = {k: v.shape[1:] for k, v in state["intermediates"]["maps"][0].items()}
  assert got == {"conv1": (55, 55, 96), "norm1": (55, 55, 96), "pool1": (27, 27, 96),
                 "conv2": (27, 27, 256), "norm2": (27, 27, 256), "pool2": (13, 13, 256),
                 "conv3": (13, 13, 384), "conv4": (13, 13, 384), "conv5": (13, 13, 256),
                 "pool5": (6, 6, 256), "fc6": (4096,), "fc7": (4096,)}
  assert logits.shape == (1, 1000)
  assert alexnet.feature_map_sizes(cfg)["pool5"] == 6
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == 60_965_224


def test_conv1_overhang_is_cuda_convnets():
  """1 + ceil((size - 11) / 4) outputs, the last filters reading zeros past the image."""
  assert {s: alexnet.conv1_overhang(s) for s in (224, 225, 226, 227, 67)} == {
      224: 3, 225: 2, 226: 1, 227: 0, 67: 0}
  cfg = paper.get_config().model
  cfg.image_size = 10
  with pytest.raises(ValueError, match="image_size=10"):
    alexnet.feature_map_sizes(cfg)


def test_224_input_equals_227_input_with_3_zero_rows_and_columns():
  cfg = tiny_model_config(dropout_rate=0.0)
  cfg.image_size = 224
  params = alexnet.init_params(cfg, jax.random.key(0))
  x224 = jax.random.normal(jax.random.key(1), (2, 224, 224, 3)) * 50
  x227 = jnp.pad(x224, ((0, 0), (0, 3), (0, 3), (0, 0)))
  out = {}
  for size, x in ((224, x224), (227, x227)):
    cfg.image_size = size
    net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg), model_axis=None, data_axis=None)
    out[size] = net.apply({"params": params}, x, train=False)
  np.testing.assert_array_equal(np.asarray(out[224]), np.asarray(out[227]))
  assert float(jnp.std(out[224])) > 0


def test_odd_num_classes_is_refused():
  with pytest.raises(ValueError, match="num_classes=11 must be even"):
    alexnet.init_params(tiny_model_config(num_classes=11), jax.random.key(0))


def numpy_lrn(a, k, n, alpha, beta, convention):
  """Section 3.3 transcribed: a sum over the clipped window of n neighbouring channels."""
  channels = a.shape[-1]
  scale = alpha / n if convention == "caffe" else alpha
  b = np.empty_like(a)
  for i in range(channels):
    lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
    b[..., i] = a[..., i] / (k + scale * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)) ** beta
  return b


@pytest.mark.parametrize("convention,k", [("paper", 2.0), ("caffe", 1.0)])
def test_lrn_matches_the_formula(convention, k):
  a = np.random.default_rng(0).normal(0, 30, (2, 3, 3, 7)).astype(np.float32)
  got = layers.lrn(jnp.asarray(a), k=k, n=5, alpha=1e-3, beta=0.75, convention=convention)
  np.testing.assert_allclose(got, numpy_lrn(a, k, 5, 1e-3, 0.75, convention), rtol=1e-5)


def test_lrn_conventions_differ_by_alpha_over_n():
  a = jnp.full((1, 1, 1, 9), 10.0)
  paper_b = layers.lrn(a, k=2.0, n=5, alpha=1e-2, beta=0.75, convention="paper")
  caffe_b = layers.lrn(a, k=2.0, n=5, alpha=5e-2, beta=0.75, convention="caffe")
  np.testing.assert_allclose(paper_b, caffe_b, rtol=1e-6)
  with pytest.raises(ValueError, match="lrn_convention"):
    layers.lrn(a, k=2.0, n=5, alpha=1e-2, beta=0.75, convention="pytorch")


def test_initialisation_is_section_5():
  params = alexnet.init_params(tiny_model_config(init="paper", bias_init=0.5), jax.random.key(0))
  for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
    expected = 0.5 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
    np.testing.assert_array_equal(params[layer]["bias"], expected, err_msg=layer)
  kernel = np.asarray(params["fc6"]["kernel"])  # 2 x 64 x 512 draws.
  assert abs(kernel.std() - 0.01) < 3e-4 and abs(kernel.mean()) < 3e-4
  assert not np.allclose(kernel[0], kernel[1])  # The towers are initialised independently.


def numpy_max_pool(x_BHWC, window, stride):
  out = (x_BHWC.shape[1] - window) // stride + 1
  return np.stack([np.stack([x_BHWC[:, i * stride:i * stride + window, j * stride:j * stride
                                    + window].max(axis=(1, 2)) for j in range(out)], axis=1)
                   for i in range(out)], axis=1)


@pytest.mark.parametrize("window,stride", [(3, 2), (2, 2)])
def test_pooling_switch(window, stride):
  _, maps = run(tiny_model_config(pool_window=window, pool_stride=stride), images())
  np.testing.assert_allclose(maps["pool1"], numpy_max_pool(maps["norm1"], window, stride))
  np.testing.assert_allclose(maps["pool5"], numpy_max_pool(maps["conv5"], window, stride))


@pytest.mark.parametrize("size,window,stride", [(13, 3, 2), (32, 3, 2), (15, 2, 2), (12, 5, 2),
                                                  (11, 3, 3)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_gradient_is_reduce_windows(size, window, stride, ties):
  x = jax.random.normal(jax.random.key(size), (2, size, size + 1, 3))
  if ties:  # ReLU-like maps: many equal zeros and repeated integers in one window.
    x = jnp.maximum(jnp.round(2 * x), 0.0)

  def reference(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), "VALID")

  g = jax.random.normal(jax.random.key(1), reference(x).shape)
  np.testing.assert_array_equal(layers.max_pool(x, window, stride), reference(x))
  grad = jax.grad(lambda x: (layers.max_pool(x, window, stride) * g).sum())(x)
  expected = jax.grad(lambda x: (reference(x) * g).sum())(x)
  np.testing.assert_allclose(grad, expected, atol=1e-6)
  assert int((grad != 0).sum()) == int((expected != 0).sum())


@pytest.mark.parametrize("convention", ["paper", "caffe"])
def test_lrn_switch(convention):
  cfg = tiny_model_config(lrn_convention=convention)
  _, maps = run(cfg, images())
  # Each tower (12 channels at width 0.25) normalises its own maps.
  for tower in (slice(0, 12), slice(12, 24)):
    np.testing.assert_allclose(
        maps["norm1"][..., tower],
        numpy_lrn(maps["conv1"][..., tower], 2.0, 5, 1e-4, 0.75, convention), rtol=1e-5)
  _, off = run(tiny_model_config(norm="none"), images())
  assert "norm1" not in off and "norm2" not in off
  np.testing.assert_allclose(off["pool1"], numpy_max_pool(off["conv1"], 3, 2))


def test_activation_switch():
  _, relu = run(tiny_model_config(activation="relu"), images())
  _, tanh = run(tiny_model_config(activation="tanh"), images())
  _, abs_tanh = run(tiny_model_config(activation="abs_tanh"), images())
  assert tanh["conv1"].min() < 0 < tanh["conv1"].max() < 1
  # Same weights, same pre-activations: relu(z) = max(artanh(tanh(z)), 0), where tanh has not
  # saturated (artanh of a float32 near 1 loses the digits).
  unsaturated = np.abs(tanh["conv1"]) < 0.99
  assert unsaturated.mean() > 0.5
  np.testing.assert_allclose(relu["conv1"][unsaturated],
                             np.maximum(np.arctanh(tanh["conv1"][unsaturated]), 0), atol=1e-5)
  np.testing.assert_allclose(abs_tanh["conv1"], np.abs(tanh["conv1"]), atol=1e-6)
  with pytest.raises(ValueError, match="activation='swish'"):
    run(tiny_model_config(activation="swish"), images())


def test_dropout_switch():
  rate = 0.5
  cfg = tiny_model_config(dropout_rate=rate)
  logits_eval, clean = run(cfg, images(), train=False)
  _, dropped = run(cfg, images(), train=True, rng=jax.random.key(7))
  _, same = run(cfg, images(), train=True, rng=jax.random.key(7))
  _, other = run(cfg, images(), train=True, rng=jax.random.key(8))
  fc6, fc6_clean = dropped["fc6"], clean["fc6"]
  active = fc6_clean != 0
  kept = fc6[active] != 0
  assert abs(1 - kept.mean() - rate) < 0.05                 # 4 x 1024 units.
  # The paper's dropout keeps the kept units as they are (and halves all of them at test time,
  # after the maps are recorded).
  np.testing.assert_allclose(fc6[active][kept], fc6_clean[active][kept], rtol=1e-5)
  mask = fc6 != 0
  assert not np.array_equal(mask[:, :512], mask[:, 512:])   # Towers draw different masks,
  assert not np.array_equal(mask[0], mask[1])               # and so do examples;
  np.testing.assert_array_equal(same["fc6"], fc6)           # the seed fixes them.
  assert not np.array_equal(other["fc6"] != 0, mask)
  # Inverted dropout evaluates with the weights as they are: as if there were no dropout.
  logits_rate0, _ = run(tiny_model_config(dropout_rate=0.0), images(), train=True)
  inverted_eval, _ = run(tiny_model_config(dropout_rate=rate, dropout_scaling="inverted"),
                         images(), train=False)
  np.testing.assert_allclose(logits_rate0, inverted_eval, rtol=1e-6)
  assert not np.allclose(logits_eval, inverted_eval)  # The paper's halves fc6's and fc7's.


def test_bfloat16_compute_keeps_float32_params():
  cfg = tiny_model_config(dtype="bfloat16")
  net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg), model_axis=None, data_axis=None)
  params = alexnet.init_params(cfg, jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  _, state = jax.eval_shape(lambda p, x: net.apply({"params": p}, x, mutable=["intermediates"]),
                            params, images())
  assert state["intermediates"]["maps"][0]["conv3"].dtype == jnp.bfloat16
  logits16, _ = run(cfg, images(), params=params)
  logits32, _ = run(tiny_model_config(), images(), params=params)
  assert logits16.dtype == jnp.float32
  assert_bfloat16_close(logits16, logits32)


# bfloat16's logits of the test network differ from float32's by at most 0.8% of the largest
# logit (measured: 0.0051 of 0.66); twice that, still well under the logits' spread across
# examples (0.032), so a bfloat16 network that ignored its input would fail.
BFLOAT16_LOGITS_SCALE = 0.015


def assert_bfloat16_close(logits16, logits32):
  logits16, logits32 = np.asarray(logits16), np.asarray(logits32)
  tolerance = BFLOAT16_LOGITS_SCALE * np.abs(logits32).max()
  np.testing.assert_allclose(logits16, logits32, rtol=0, atol=tolerance)
  assert logits32.std(axis=0).mean() > 2 * tolerance


def test_lrn_gradient_matches_autodiff_of_the_formula():
  """layers.lrn has a hand-written backward pass; check it against jax.grad of the formula."""
  def plain(x, k, n, alpha, beta):
    padded = jnp.pad(jnp.square(x), ((0, 0), (0, 0), (0, 0), (n // 2, n // 2)))
    window = sum(padded[..., i:i + x.shape[-1]] for i in range(n))
    return x / (k + alpha * window) ** beta
  x = jnp.asarray(np.random.default_rng(1).normal(0, 30, (2, 3, 3, 7)), jnp.float32)
  cotangent = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)
  for beta in (0.75, 0.6):
    got = jax.grad(lambda x: jnp.sum(cotangent * layers.lrn(
        x, k=2.0, n=5, alpha=1e-3, beta=beta, convention="paper")))(x)
    want = jax.grad(lambda x: jnp.sum(cotangent * plain(x, 2.0, 5, 1e-3, beta)))(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=f"beta={beta}")


def test_he_initialisation_scales_each_layer_by_its_fan_in():
  params = alexnet.init_params(tiny_model_config(init="he"), jax.random.key(0))
  for layer, p in params.items():
    fan_in = int(np.prod(p["kernel"].shape[1:-1]))
    std = float(np.std(np.asarray(p["kernel"])))
    assert std == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1), layer
  with pytest.raises(ValueError, match="config.model.init"):
    alexnet.init_params(tiny_model_config(init="xavier"), jax.random.key(0))


def test_input_scale_multiplies_the_images():
  x = images()
  scaled, _ = run(tiny_model_config(input_scale=0.25), x)
  reference, _ = run(tiny_model_config(input_scale=1.0), x * 0.25)
  np.testing.assert_allclose(scaled, reference, rtol=1e-6, atol=1e-6)
  assert not np.allclose(scaled, run(tiny_model_config(input_scale=1.0), x)[0])


def test_init_params_is_the_only_initialisation():
  cfg = tiny_model_config()
  net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg), model_axis=None, data_axis=None)
  with pytest.raises(ValueError, match="alexnet.init_params"):
    net.init(jax.random.key(0), images())
  params = base_params()
  assert {k: (v["kernel"].shape, v["bias"].shape) for k, v in params.items()} == \
      alexnet.param_shapes(cfg)
  for layer in alexnet.LAYERS:
    np.testing.assert_array_equal(params[layer]["bias"], alexnet.bias_value(cfg, layer))


@pytest.mark.slow
def test_paper_and_inverted_dropout_differ_only_by_the_next_layers_scale():
  """Section 4.2's dropout ("paper": x 0.5 at test time) and inverted dropout compute the same
  function when fc7's and fc8's kernels (the layers after dropped-out ones) are 1 / (1 - rate)
  times larger under "paper"; the training gradient of fc7's kernel is then (1 - rate) times the
  inverted one, for the same masks."""
  rate = 0.5
  inverted = tiny_model_config(dropout_rate=rate, dropout_scaling="inverted")
  paper_cfg = tiny_model_config(dropout_rate=rate, dropout_scaling="paper")
  params = base_params()
  scaled = {k: dict(v) for k, v in params.items()}
  for layer in ("fc7", "fc8"):
    scaled[layer]["kernel"] = params[layer]["kernel"] / (1.0 - rate)
  for train in (False, True):
    want, _ = run(inverted, images(), train=train, rng=jax.random.key(3), params=params)
    got, _ = run(paper_cfg, images(), train=train, rng=jax.random.key(3), params=scaled)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def fc7_grad(cfg, p):
    net = alexnet.AlexNet(ml_collections.FrozenConfigDict(cfg), model_axis=None, data_axis=None)
    loss = lambda p: jnp.sum(jnp.square(net.apply({"params": p}, images(), train=True,
                                                  rng=jax.random.key(3))))
    return jax.jit(jax.grad(loss))(p)["fc7"]["kernel"]

  inverted_grad = fc7_grad(inverted, params)
  np.testing.assert_allclose(fc7_grad(paper_cfg, scaled), (1.0 - rate) * inverted_grad,
                             rtol=1e-4, atol=1e-7)
  assert float(jnp.abs(inverted_grad).max()) > 0


# ---------------------------------------------------------------------------------------------
# Other ways to compute the same network (config.impl's pool_grad, lrn_dtype, tower_conv,
# conv1_channels, model1_gathers; timed by benchmarks/accelerator.py --parts variants): each
# computes the default's network.


@functools.cache
def variant_grads(frozen_cfg, impl):
  """The gradient of a training loss (dropout on, the same masks) on one device."""
  net = alexnet.AlexNet(frozen_cfg, impl, model_axis=None, data_axis=None)
  weights = jax.random.normal(jax.random.key(8), (4, frozen_cfg.num_classes))
  loss = lambda p: jnp.sum(weights * net.apply({"params": p}, images(), train=True,
                                               rng=jax.random.key(1)))
  return jax.jit(jax.grad(loss))(base_params())


# The pooling variants are exact in their values (test_max_pool_gradient_is_reduce_windows), but
# XLA fuses the LRN before the pooling into it differently, and at the tests' LLVM optimisation
# level (tests/conftest.py) the two fusions round norm1 differently (measured: 1.4e-7 of its
# largest value, one float32 rounding, and at most 3.7e-7 further on); compiled at XLA's default
# level they are bit-equal.
@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"pool_grad": "reduce_window"}, {"tower_conv": "grouped"}, {"conv1_channels": 4},
    {"conv1_channels": 8}])
def test_variant_switches_compute_the_default_network(overrides):
  """The same maps and logits and the same gradient up to float rounding."""
  cfg = tiny_model_config()
  logits, maps = run(cfg, images(), train=True, impl=overrides)
  want_logits, want_maps = run(cfg, images(), train=True)
  assert set(maps) == set(want_maps)
  for name in maps:
    np.testing.assert_allclose(maps[name], want_maps[name], rtol=1e-5,
                               atol=1e-5 * np.abs(want_maps[name]).max(), err_msg=name)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-6)
  frozen = ml_collections.FrozenConfigDict(cfg)
  got = variant_grads(frozen, layers.impl_config(overrides))
  want = variant_grads(frozen, layers.impl_config())
  assert_trees_close(got, want, rtol=1e-4, scale=1e-5, what=str(overrides))
  assert float(jnp.abs(want["conv1"]["kernel"]).max()) > 0


@pytest.mark.slow
def test_lrn_dtype_compute_normalises_in_the_compute_dtype():
  """lrn_dtype="compute" leaves LRN in bfloat16 (no float32 op in it) within bfloat16's rounding
  of the formula; in float32 it is the default exactly."""
  x = jnp.asarray(np.random.default_rng(3).uniform(0, 60, (2, 5, 5, 12)), jnp.bfloat16)
  lrn = functools.partial(layers.lrn, k=2.0, n=5, alpha=1e-4, beta=0.75)
  assert "f32" in str(jax.make_jaxpr(lrn)(x))
  assert "f32" not in str(jax.make_jaxpr(functools.partial(lrn, in_float32=False))(x))
  want = numpy_lrn(np.asarray(x, np.float32), 2.0, 5, 1e-4, 0.75, "paper")
  got = np.asarray(lrn(x, in_float32=False), np.float32)
  np.testing.assert_allclose(got, want, rtol=2e-2, atol=1e-2)
  x32 = x.astype(jnp.float32)
  np.testing.assert_array_equal(lrn(x32, in_float32=False), lrn(x32))
  logits16, _ = run(tiny_model_config(dtype="bfloat16"), images(), impl={"lrn_dtype": "compute"})
  logits32, _ = run(tiny_model_config(), images())
  assert_bfloat16_close(logits16, logits32)


def test_variant_switches_refuse_unknown_values():
  for field, value in [("pool_grad", "avg"), ("lrn_dtype", "float16"), ("tower_conv", "fused"),
                       ("conv1_channels", 5), ("lrn_grad", "custom")]:
    with pytest.raises(ValueError, match=f"config.impl.{field}"):
      layers.impl_config({field: value})


@pytest.mark.slow
def test_model1_gathers_off_drops_the_collectives_over_one_device():
  """At model=1 the maps' all_gathers run over a model axis of one device: five all-gathers and
  their four reduce-scatter transposes in the compiled gradient. model1_gathers=False leaves
  one all-reduce over that device (the logits' psum) and the same gradient, bit for bit."""
  from alexnet_jax import parallel
  mesh = parallel.make_mesh(1)
  x = jax.device_put(images(), parallel.batch_sharding(mesh))
  params = jax.device_put(base_params(), parallel.param_shardings(mesh, base_params()))
  out = {}
  for gathers in (True, False):
    net = nets.make_module(tiny_model_config(), 1, impl={"model1_gathers": gathers})
    apply = parallel.shard_net(net, mesh)
    loss = lambda p: jnp.sum(jnp.square(apply(p, x, jax.random.key(1), train=True)))
    grad = jax.jit(jax.grad(loss))
    hlo = grad.lower(params).compile().as_text()
    ops = [kind for kind in ("all-gather", "reduce-scatter", "all-reduce")
           for line in hlo.splitlines()
           if f" {kind}(" in line and "replica_groups={{0},{1}}" in line]
    out[gathers] = ops, grad(params)
  assert sorted(out[True][0]) == ["all-gather"] * 5 + ["reduce-scatter"] * 4
  assert out[False][0] == ["all-reduce"]
  for a, b in zip(jax.tree.leaves(out[False][1]), jax.tree.leaves(out[True][1])):
    np.testing.assert_array_equal(a, b)
