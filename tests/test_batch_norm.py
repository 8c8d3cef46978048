"""config.model.norm="batch": batch normalisation after every convolution, before its ReLU
(nets/layers.py batch_norm), in place of section 3.3's LRN.

Tolerance, float32: devices that split the batch sum each moment in blocks and average the
blocks (pmean), where one device sums it whole; the reordering moves a moment by a few
roundings (6e-8 relative each), and every later layer carries that on. Measured on 2 devices
(`run` below on data=2, and on the hybrid's convolutions over both devices): loss
within 2.5e-7, logits within 7.4e-7, batch moments within 1.3e-6 and gradients within 3.1e-6
of their array's largest entry; the towers on two devices (data=1) equal one device exactly.
The tests allow 3e-5 of that scale, ten times the worst, while the moments of half a batch,
which a device normalising only its own rows would use, differ from the whole batch's by 1.8
times the largest (conv1's means).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import nets, parallel, steps
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.nets import layers
from tests import tiny_config
from tests.trees import assert_trees_close


def bn_config(batch=8, **model):
  config = tiny_config.get_config("towers")  # Width 1/4, 67x67, He initialisation, dropout on.
  config.model.update({"norm": "batch", **model})
  config.train.batch_size = batch
  return config


def inputs(config, seed=3):
  batch = config.train.batch_size
  images = jax.random.normal(jax.random.key(seed), (batch, 67, 67, 3), jnp.float32) * 60.0
  labels = jax.random.randint(jax.random.key(4), (batch,), 0, config.model.num_classes)
  params = jax.device_get(nets.init_params(config.model, jax.random.key(0)))
  return images, labels, params


def run(config, mesh, params, images, labels, train=True):
  """(loss, logits, moments, grads) of one batch on `mesh`."""
  apply = steps.make_apply(config, mesh)
  placed = jax.device_put(params, steps.param_shardings(config, mesh))

  def loss(p):
    logits, moments = apply(p, images, jax.random.key(5), train, moments=True)
    return steps.cross_entropy(logits, labels), (logits, moments)

  (value, (logits, moments)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(placed)
  return jax.device_get({"loss": value, "logits": logits, "moments": moments, "grads": grads})


def test_the_network_has_scale_and_running_averages_that_are_no_parameters():
  config = bn_config()
  params = nets.init_params(config.model, jax.random.key(0))
  assert sorted(params["conv3"]) == ["bias", "kernel", "mean", "scale", "var"]
  assert sorted(params["fc6"]) == ["bias", "kernel"]
  np.testing.assert_array_equal(params["conv2"]["var"], np.ones((2, 32)))
  lrn = nets.init_params(bn_config(norm="lrn").model, jax.random.key(0))
  scales = sum(int(np.size(p["scale"])) for p in params.values() if "scale" in p)
  assert nets.count_params(params) == nets.count_params(lrn) + scales


# data=2 (model=1) is the fast tier's; the towers and the hybrid are slow-tier (30 s each).
@pytest.mark.parametrize("layout,model", [
    ("towers", 1), pytest.param("towers", 2, marks=pytest.mark.slow),
    pytest.param("hybrid", 2, marks=pytest.mark.slow)])
def test_two_devices_normalise_as_one_device_with_the_whole_batch(layout, model):
  """The moments average over the devices that split the batch: a data-parallel step (model=1:
  data=2), the towers on two devices, and the hybrid layout's convolutions over both devices
  compute the loss, logits, batch moments and gradients of one device, dropout on."""
  config = bn_config()
  images, labels, params = inputs(config)
  one = parallel.make_mesh(1, jax.devices()[:1])
  want = run(config, one, params, images, labels)
  config.mesh.update(layout=layout, model=model)
  mesh = parallel.make_mesh(config)
  assert mesh.size == 2
  got = run(config, mesh, params, images, labels)
  assert_trees_close(got, want, rtol=1e-5, scale=3e-5, what=f"{layout}, model={model}:")
  # Not vacuous: half the batch has other moments, so a device normalising its own rows would
  # move every later layer.
  half = run(config, one, params, images[:4], labels[:4])
  mean, half_mean = want["moments"]["conv1"][0], half["moments"]["conv1"][0]
  assert np.abs(mean - half_mean).max() > 1e-2 * np.abs(mean).max()
  assert np.abs(want["grads"]["conv1"]["scale"]).max() > 1e-6
  assert set(want["moments"]) == {"conv1", "conv2", "conv3", "conv4", "conv5"}


def test_evaluation_reads_the_running_averages():
  """With the running averages set to one batch's moments, the evaluation of that batch equals
  its training-mode logits (dropout off); with the initial 0 and 1 it does not."""
  config = bn_config(dropout_rate=0.0)
  images, labels, params = inputs(config)
  mesh = parallel.make_mesh(2)
  trained = run(config, mesh, params, images, labels, train=True)
  evaluate = jax.jit(lambda p: steps.make_apply(config, mesh)(p, images, None, train=False))
  for layer, (mean, var) in trained["moments"].items():
    params[layer] = dict(params[layer], mean=mean, var=var)
  assert_trees_close(jax.device_get(evaluate(params)), trained["logits"], rtol=1e-5,
                     scale=1e-5, what="eval with the batch's moments")
  fresh = inputs(config)[2]
  assert np.abs(jax.device_get(evaluate(fresh)) - trained["logits"]).max() > 1e-2


def test_the_step_moves_the_running_averages_and_not_by_the_update_rule():
  """One training step: each running average is 0.9 of the old plus 0.1 of the step's batch
  moment (the step's own crops and dropout masks); weight decay on every leaf and the bias rate
  do not touch them, and their velocity stays 0; the scales learn."""
  config = bn_config()
  config.train.update(bias_decay_mult=1.0, bias_lr_mult=2.0, weight_decay=0.1)
  mesh = parallel.make_mesh(2)
  size = config.data.resize_size
  rng = np.random.default_rng(0)
  batch = jax.device_put({"image": rng.integers(0, 256, (8, size, size, 3)).astype(np.uint8),
                          "label": rng.integers(0, 10, 8).astype(np.int32)},
                         parallel.batch_sharding(mesh))
  consts = parallel.place_replicated(mesh, {"mean": np.full((size, size, 3), 120, np.float32),
                                            "pca": np.diag([60.0, 20.0, 10.0]).astype(np.float32)})
  state = steps.create_train_state(config, mesh)
  before = jax.device_get(state.params)
  after, _ = steps.make_train_step(config, mesh)(state, batch, 0.01, consts)

  from alexnet_jax import preprocess
  root = steps.step_key(config)
  crops = preprocess.train_images(batch["image"], jax.random.fold_in(
      jax.random.fold_in(root, steps.AUGMENT_STREAM), 0), consts, config.data, 67)
  dropout = jax.random.fold_in(jax.random.fold_in(root, steps.DROPOUT_STREAM), 0)
  _, moments = jax.jit(lambda p: steps.make_apply(config, mesh)(
      p, crops, dropout, True, moments=True))(before)
  got = jax.device_get(after.params)
  for layer, (mean, var) in jax.device_get(moments).items():
    np.testing.assert_allclose(got[layer]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[layer]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    assert np.abs(mean).max() > 1e-3 and np.abs(var - 1).max() > 1e-3
    velocity = jax.device_get(after.momentum[layer])
    assert not velocity["mean"].any() and not velocity["var"].any()
    assert np.abs(got[layer]["scale"] - before[layer]["scale"]).max() > 1e-6


def test_norm_is_checked_and_an_older_runs_lrn_is_read_into_it():
  with pytest.raises(ValueError, match="config.model.norm='group'"):
    nets.check_config(bn_config(norm="group").model)
  cifar = tiny_config.get_config()
  from alexnet_jax.configs import common
  cifar.model = common.cifar_model_config("relu", layout="18pct", lrn=True)
  cifar.model.norm = "batch"
  with pytest.raises(ValueError, match="the CIFAR nets have 'lrn' or 'none'"):
    nets.check_config(cifar.model)
  old = bn_config().to_dict()
  del old["model"]["norm"]
  for lrn, norm in ((True, "lrn"), (False, "none")):
    import ml_collections
    config = ml_collections.ConfigDict(dict(old, model=dict(old["model"], lrn=lrn)))
    assert compatibility.upgrade(config).model.norm == norm and "lrn" not in config.model
  # A checkpoint fingerprinted before the field: its lrn=False is compared as norm="none".
  config = bn_config(norm="lrn")
  with pytest.raises(compatibility.IncompatibleCheckpointError,
                     match="model.norm: 'none' vs 'lrn'"):
    compatibility.check({}, {}, {"fingerprint": {"model.lrn": False}},
                        compatibility.model_fingerprint(config))


def test_micro_batches_are_refused_with_batch_normalisation():
  config = bn_config()
  config.train.accum_steps = 2
  with pytest.raises(ValueError, match="normalised by its own moments"):
    steps.make_train_step(config, parallel.make_mesh(2))


def test_layers_split_running_and_join_running_are_inverse():
  params = nets.init_params(bn_config().model, jax.random.key(0))
  trainable, running = layers.split_running(params)
  assert "mean" not in trainable["conv1"] and set(running) == {f"conv{i}" for i in range(1, 6)}
  assert jax.tree.structure(layers.join_running(trainable, running)) == jax.tree.structure(params)
