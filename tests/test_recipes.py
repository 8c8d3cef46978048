"""The three recipes by name (configs/recipes.py), the per-layer weight scales and the
biases' rate and decay multipliers they set, and the line a run stuck at chance prints."""
import contextlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import cadence
from alexnet_jax import optimizers
from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax import nets
from alexnet_jax.configs import paper
from alexnet_jax.configs import recipes
from alexnet_jax.configs import tiny_imagenet
from alexnet_jax.nets import alexnet
from tests import tiny_config


def test_no_argument_is_the_paper_recipe():
  assert paper.get_config().to_dict() == paper.get_config("paper").to_dict()
  config = paper.get_config()
  assert config.recipe == "paper" and config.train.bias_lr_mult == 1.0
  assert config.train.bias_decay_mult == 0.0
  assert set(config.model.layer_weight_std.values()) == {0.0}


def test_cuda_convnet_is_the_authors_layer_files():
  c = paper.get_config("cuda_convnet")
  assert c.model.layer_weight_std.to_dict() == dict(conv1=0.0, conv2=0.0, conv3=0.03,
                                                    conv4=0.03, conv5=0.03, fc6=0.0, fc7=0.0,
                                                    fc8=0.0)
  assert (c.model.weight_std, c.model.bias_init) == (0.01, 1.0)
  assert (c.model.lrn_convention, c.model.lrn_k, c.model.dropout_scaling) == (
      "caffe", 2.0, "inverted")
  assert (c.train.learning_rate, c.train.bias_lr_mult, c.train.bias_decay_mult) == (
      0.02, 2.0, 0.0)
  assert c.train.schedule == "step" and c.train.step_epochs == (22.5, 45.0, 67.5)
  assert c.train.lr_drop_factor == pytest.approx(250 ** (1 / 3))  # 0.02 -> 0.02/250 at 3/4.
  assert c.model.image_size == 224 and c.train.batch_size == 128


def test_caffe_is_bvlc_alexnet():
  c = paper.get_config("caffe")
  assert c.model.layer_weight_std.fc6 == 0.005 and c.model.layer_weight_std.fc7 == 0.005
  assert c.model.layer_weight_std.fc8 == 0.0 and c.model.weight_std == 0.01
  assert (c.model.bias_init, c.model.image_size, c.model.dropout_scaling) == (0.1, 227,
                                                                               "inverted")
  assert (c.model.lrn_convention, c.model.lrn_k) == ("caffe", 1.0)
  assert c.data.pca_noise_std == 0.0
  assert (c.train.bias_lr_mult, c.train.bias_decay_mult, c.train.batch_size) == (2.0, 0.0, 256)
  # 100,000 iterations of 256 are 19.98 ImageNet epochs; 450,000 are 90.
  assert c.train.schedule == "step" and c.train.step_epochs == (19.98, 39.96, 59.95, 79.93)
  assert c.train.num_epochs == 90 and c.train.lr_drop_factor == 10.0


def test_recipes_combine_with_smoke_and_other_configs():
  c = paper.get_config("caffe,smoke")
  assert c.recipe == "caffe" and c.model.width == 0.25 and c.data.source == "generated"
  t = tiny_imagenet.get_config("cuda_convnet")
  assert t.recipe == "cuda_convnet" and t.model.num_classes == 200
  assert t.train.learning_rate == 0.02
  with pytest.raises(ValueError, match="'cafe' is neither a recipe"):
    paper.get_config("cafe")
  assert recipes.NAMES == ("paper", "cuda_convnet", "caffe", "owt")


def test_the_2014_recipe_is_torchvisions_training_of_the_one_column_network():
  c = paper.get_config("owt")
  assert (c.recipe, c.model.name, c.model.norm, c.mesh.model) == ("owt", "owt", "none", 1)
  assert nets.count_params(nets.abstract_params(c.model)) == 61_100_840
  t = c.train
  assert (t.batch_size, t.learning_rate, t.momentum, t.weight_decay) == (256, 0.01, 0.9, 1e-4)
  assert (t.schedule, t.step_epochs, t.num_epochs, t.bias_decay_mult) == ("step", (30, 60), 90,
                                                                          1.0)


def test_per_layer_weight_scales_are_drawn():
  # Half width: 17,424 conv1 weights, the fewest, put a draw's std within 1% of the scale.
  cfg = tiny_config.model_config(width=0.5, image_size=227, num_classes=200, init="paper")
  cfg.layer_weight_std.update(conv3=0.03, fc6=0.005)
  params = alexnet.init_params(cfg, jax.random.key(0))
  stds = {layer: float(np.std(params[layer]["kernel"])) for layer in alexnet.LAYERS}
  for layer, want in dict(conv1=0.01, conv2=0.01, conv3=0.03, conv4=0.01, conv5=0.01,
                          fc6=0.005, fc7=0.01, fc8=0.01).items():
    assert stds[layer] == pytest.approx(want, rel=0.02), layer
  with pytest.raises(ValueError, match="layer_weight_std.conv2=-1"):
    cfg.layer_weight_std.conv2 = -1.0
    alexnet.check_config(cfg)


def test_unset_per_layer_scales_draw_the_same_weights_as_before():
  cfg = tiny_config.model_config()
  a = alexnet.init_params(cfg, jax.random.key(1))
  cfg.layer_weight_std.conv3 = cfg.weight_std  # The same value, given per layer.
  b = alexnet.init_params(cfg, jax.random.key(1))
  for layer in alexnet.LAYERS:
    np.testing.assert_array_equal(a[layer]["kernel"], b[layer]["kernel"])


def test_one_sgd_step_with_the_biases_multipliers_by_hand():
  w = {"fc6": {"kernel": jnp.array([2.0]), "bias": jnp.array([1.0])}}
  v = {"fc6": {"kernel": jnp.array([0.5]), "bias": jnp.array([0.5])}}
  g = {"fc6": {"kernel": jnp.array([3.0]), "bias": jnp.array([3.0])}}
  eps, mu, decay = 0.1, 0.9, 5e-4
  w1, v1 = optimizers.sgd_momentum(w, v, g, eps, mu=mu, decay=decay, bias_lr_mult=2.0,
                              bias_decay_mult=0.5)
  kernel_v = 0.9 * 0.5 - 5e-4 * 0.1 * 2.0 - 0.1 * 3.0        # -0.2501
  bias_v = 0.9 * 0.5 - 0.5 * 5e-4 * 0.2 * 1.0 - 0.2 * 3.0    # rate 0.2, decay 2.5e-4: -0.15005
  np.testing.assert_allclose(v1["fc6"]["kernel"], [kernel_v], rtol=1e-6)
  np.testing.assert_allclose(v1["fc6"]["bias"], [bias_v], rtol=1e-6)
  np.testing.assert_allclose(w1["fc6"]["bias"], [1.0 + bias_v], rtol=1e-6)
  # Caffe's and cuda-convnet's biases: twice the rate, no decay.
  _, v2 = optimizers.sgd_momentum(w, v, g, eps, mu=mu, decay=decay, bias_lr_mult=2.0)
  np.testing.assert_allclose(v2["fc6"]["bias"], [0.45 - 0.6], rtol=1e-6)


@pytest.mark.slow
def test_the_train_step_reads_the_multipliers():
  """One step of the tiny net from zero momentum: with bias_lr_mult=2 every bias's velocity
  (-rate x gradient, no decay on biases) is twice that with 1, and the kernels' the same."""
  moved = {}
  for mult in (1.0, 2.0):
    config = tiny_config.get_config("towers")
    config.train.bias_lr_mult = mult
    config.model.dropout_rate = 0.0
    mesh = parallel.make_mesh(config)
    state = steps.create_train_state(config, mesh)
    step = steps.make_train_step(config, mesh)
    from alexnet_jax import preprocess
    consts = parallel.place_replicated(mesh, preprocess.constants(config))
    rng = np.random.default_rng(0)
    size = config.data.resize_size
    batch = {"image": rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8),
             "label": np.arange(4, dtype=np.int32) % config.model.num_classes}
    state, _ = step(state, parallel.to_global(mesh, batch), np.float32(0.01), consts)
    moved[mult] = jax.device_get(state.momentum)
  for layer in alexnet.LAYERS:
    np.testing.assert_allclose(moved[2.0][layer]["bias"], 2 * moved[1.0][layer]["bias"],
                               rtol=1e-5, atol=1e-9, err_msg=layer)
    np.testing.assert_array_equal(moved[2.0][layer]["kernel"], moved[1.0][layer]["kernel"])


def test_the_watch_tells_once_after_a_whole_window_at_chance():
  chance = math.log(200)
  watch = cadence.StuckLoss(200, window_steps=3, learning_rate=0.01)
  assert watch.add(1, chance * 1.02) is None       # Outside the 1% band.
  assert watch.add(2, chance * 1.005) is None      # In it: the window starts at step 2.
  assert watch.add(3, chance) is None
  assert watch.add(4, chance * 0.995) is not None  # Steps 2-4: three steps.
  assert watch.add(5, chance) is None              # Once.
  fresh = cadence.StuckLoss(200, window_steps=3, learning_rate=0.01)
  for step, loss in enumerate([chance, chance, chance * 0.9, chance, chance], 1):
    assert fresh.add(step, loss) is None           # A step out of the band restarts it.
  assert cadence.StuckLoss(200, 0, 0.01).add(1, chance) is None  # 0 turns it off.


@pytest.mark.slow
def test_a_run_made_to_be_stuck_says_so_and_goes_on(tmp_path, cache_dir):
  """A rate of 0 keeps the initial weights; drawn with a standard deviation of 1e-4 their
  logits are all about 0, so the loss is ln(num_classes) at every step."""
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  config.model.weight_std = 1e-4
  config.train.update(learning_rate=0.0, num_steps=8, stuck_window_steps=5, log_every_steps=4)
  config.eval.ten_crop = False
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    summary = train.train_and_evaluate(config, tmp_path / "stuck")
  assert summary["steps"] == 8  # Told, not stopped.
  lines = [line for line in out.getvalue().splitlines() if "stayed at chance" in line]
  assert len(lines) == 1, out.getvalue()
  assert "since step 1:" in lines[0] and "at step 5," in lines[0]
  assert f"ln(num_classes) = {math.log(10):.4f}" in lines[0]
  assert "configs/paper.py:caffe" in lines[0] and "learning_rate=0" in lines[0]


@pytest.mark.slow
def test_a_learning_run_does_not_say_it(tmp_path, cache_dir):
  config = tiny_config.get_config("learnable")
  config.data.cache_dir = cache_dir
  config.train.update(num_steps=60, stuck_window_steps=20)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train_and_evaluate(config, tmp_path / "learning")
  assert "stayed at chance" not in out.getvalue()
