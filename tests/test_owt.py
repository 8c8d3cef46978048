"""config.model.name="owt": the one-column network of Krizhevsky 2014 (torchvision's alexnet),
through the same forward pass as the 2012 network: its parameter count, its layers against a
direct lax reference, the hybrid layout against one device, training in both layouts and a
resume from one into the other."""
import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from alexnet_jax import nets, parallel, steps, train
from alexnet_jax.configs import paper
from alexnet_jax.nets import alexnet
from tests import test_hybrid
from tests import tiny_config
from tests.trees import assert_trees_close


def owt_config(**model):
  config = tiny_config.get_config("towers")
  config.model.update(name="owt", norm="none", init="he", input_scale=1 / 60, bias_init=0.0,
                      dropout_scaling="inverted", **model)
  config.mesh.model = 1
  return config


def test_the_2014_network_has_torchvisions_shapes_and_61_100_840_parameters():
  model = paper.get_config().model
  model.update(name="owt", norm="none")
  params = nets.abstract_params(model)
  assert nets.count_params(params) == 61_100_840
  shapes = {layer: (p["kernel"].shape, p["bias"].shape) for layer, p in params.items()}
  assert shapes["conv1"] == ((1, 11, 11, 3, 64), (1, 64))
  assert shapes["conv2"][0] == (1, 5, 5, 64, 192) and shapes["conv5"][0] == (1, 3, 3, 256, 256)
  assert shapes["fc6"][0] == (1, 6 * 6 * 256, 4096) and shapes["fc8"] == ((1, 4096, 1000),
                                                                          (1, 1000))
  assert alexnet.feature_map_sizes(model)["conv1"] == 55  # (224 + 4 - 11) // 4 + 1.


def _reference(params, x, input_scale):
  """torchvision's forward written with lax, NHWC, at test time."""
  conv = lambda x, p, stride, pad: jax.nn.relu(lax.conv_general_dilated(
      x, p["kernel"][0], (stride, stride), ((pad, pad), (pad, pad)),
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"][0][None, None, None])
  pool = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  x = pool(conv(x * input_scale, params["conv1"], 4, 2))
  x = pool(conv(x, params["conv2"], 1, 2))
  x = conv(conv(conv(x, params["conv3"], 1, 1), params["conv4"], 1, 1), params["conv5"], 1, 1)
  x = pool(x)
  assert x.shape[1:3] == (6, 6)  # The average pool to 6x6 is the identity at 224.
  x = x.reshape(x.shape[0], -1)
  for layer in ("fc6", "fc7"):
    x = jax.nn.relu(x @ params[layer]["kernel"][0] + params[layer]["bias"][0][None])
  return x @ params["fc8"]["kernel"][0] + params["fc8"]["bias"][0][None]


def test_the_forward_pass_equals_a_direct_reference_at_224():
  model = paper.get_config().model
  model.update(name="owt", norm="none", width=0.125, num_classes=10, init="he",
               input_scale=1 / 60, bias_init=0.0, dropout_scaling="inverted")
  params = nets.init_params(model, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (2, 224, 224, 3)) * 60.0
  net = nets.make_module(model, 1, model_axis=None, data_axis=None)
  got = net.apply({"params": params}, x)
  want = _reference(params, x, 1 / 60)
  np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.abs(want).max()))
  assert float(jnp.abs(got[0] - got[1]).max()) > 1e-3  # The logits see the image.


def test_the_average_pool_matches_torchs_cells():
  x = jnp.arange(2 * 13 * 13 * 1, dtype=jnp.float32).reshape(2, 13, 13, 1)
  y = alexnet.adaptive_average_pool(x, 6)
  # torch.nn.AdaptiveAvgPool2d(6) on 13: cell i covers rows floor(13 i / 6)..ceil(13 (i+1) / 6).
  assert y.shape == (2, 6, 6, 1)
  np.testing.assert_allclose(y[0, 1, 2, 0], x[0, 2:5, 4:7, 0].mean())


def test_the_hybrid_layout_equals_one_device():
  """Convolutions data-parallel, fc layers split over both devices (the 2014 paper's own
  combination) against the whole network on one device, dropout off and on."""
  config = owt_config()
  batch = 8
  images = jax.random.normal(jax.random.key(3), (batch, 67, 67, 3), jnp.float32) * 60.0
  labels = jax.random.randint(jax.random.key(4), (batch,), 0, config.model.num_classes)
  params = jax.device_get(nets.init_params(config.model, jax.random.key(0)))
  one = parallel.make_mesh(1, jax.devices()[:1])
  seen = {}
  for train_mode in (False, True):
    config.mesh.layout = "towers"
    want = test_hybrid.loss_logits_grads(config, one, params, images, labels, train_mode)
    config.mesh.layout, config.mesh.model = "hybrid", 2
    mesh = parallel.make_mesh(config)
    placed = jax.device_put(params, steps.param_shardings(config, mesh))
    assert placed["fc6"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        None, None, ("model", "data"))
    got = test_hybrid.loss_logits_grads(config, mesh, placed, images, labels, train_mode)
    config.mesh.model = 1
    assert_trees_close({"loss": got["loss"], "logits": got["logits"]},
                       {"loss": want["loss"], "logits": want["logits"]}, rtol=1e-5, scale=1e-5,
                       what=f"train={train_mode}:")
    assert_trees_close(got["grads"], want["grads"], rtol=1e-5, scale=1e-5,
                       what=f"train={train_mode}, gradient of")
    seen[train_mode] = want["logits"]
  assert np.abs(seen[True] - seen[False]).max() > 1e-3  # Dropout is on when training.


def test_two_towers_of_a_one_column_network_are_refused():
  config = owt_config()
  config.mesh.model = 2
  with pytest.raises(ValueError, match="model axis must divide"):
    steps.make_apply(config, parallel.make_mesh(2))


@pytest.mark.slow
def test_it_trains_in_both_layouts_and_resumes_across_them(tmp_path, cache_dir):
  config = owt_config()
  config.data.cache_dir = cache_dir
  config.train.update(num_steps=4, batch_size=8)
  config.eval.ten_crop = False
  config.mesh.layout = "hybrid"
  with contextlib.redirect_stdout(io.StringIO()):
    first = train.train_and_evaluate(config, tmp_path / "run")
  assert first["steps"] == 4 and np.isfinite(first["final_val_top1_error"])
  config.mesh.layout = "towers"  # Data parallel over the two devices.
  config.train.num_steps = 6
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    second = train.train_and_evaluate(config, tmp_path / "run")
  assert second["steps"] == 6 and "Resumed from" in out.getvalue()
  assert "AlexNet of 2014" in out.getvalue()
