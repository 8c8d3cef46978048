"""Large global batches (alexnet_jax/large_batch.py): the rate rules, LARS against optax and
against its formula, and k accumulated micro-batches equal to one step of the whole batch."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import large_batch, schedule, steps
from alexnet_jax.configs import paper
from tests import test_hybrid
from tests.trees import assert_trees_close


def test_rate_rules_scale_from_the_base_batch():
  train = paper.get_config().train
  train.update(batch_size=8192, learning_rate=0.01)
  assert large_batch.scaled_rate(train) == 0.01  # "none": section 5's rate as given.
  train.lr_scaling = "sqrt"
  assert large_batch.scaled_rate(train) == pytest.approx(0.08)  # x sqrt(64)
  train.lr_scaling = "linear"
  assert large_batch.scaled_rate(train) == pytest.approx(0.64)  # x 64
  train.update(schedule="poly", warmup_epochs=2.0, poly_power=2.0)
  poly = schedule.create(train, steps_per_epoch=10, total_steps=120)
  assert [poly.rate(s) for s in (0, 10, 20)] == pytest.approx([0.01, 0.325, 0.64])
  assert poly.rate(70) == pytest.approx(0.64 * 0.5**2)  # Half-way through the decay.
  assert poly.rate(120) == 0.0
  # A resumed run goes on with its own poly schedule.
  assert schedule.from_dict(poly, schedule.to_dict(poly)) is poly


def _tree():
  keys = jax.random.split(jax.random.key(0), 6)
  params = {"fc6": {"kernel": jax.random.normal(keys[0], (2, 6, 4)),
                    "bias": jax.random.normal(keys[1], (2, 4))},
            "conv1": {"kernel": 0.1 * jax.random.normal(keys[2], (2, 3, 3, 3, 2)),
                      "bias": jnp.ones((2, 2))}}
  grads = jax.tree.map(lambda x, k: jax.random.normal(k, x.shape), params,
                       jax.tree.unflatten(jax.tree.structure(params), list(keys[2:])))
  return params, grads


def test_lars_equals_optax_without_decay():
  """optax.lars divides by ||g + decay w||, You et al. by ||g|| + decay ||w||: without decay
  they are one rule. Biases: no trust ratio in either."""
  params, grads = _tree()
  kernels = jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key == "kernel", params)
  opt = optax.lars(0.1, weight_decay=0.0, trust_coefficient=1e-3, momentum=0.9,
                   trust_ratio_mask=kernels, weight_decay_mask=kernels)
  opt_state = opt.init(params)
  mine, velocity = params, jax.tree.map(jnp.zeros_like, params)
  theirs = params
  for _ in range(2):  # Twice: the momentum is carried the same way.
    mine, velocity = large_batch.lars(mine, velocity, grads, 0.1, mu=0.9, decay=0.0, trust=1e-3)
    updates, opt_state = opt.update(grads, opt_state, theirs)
    theirs = optax.apply_updates(theirs, updates)
  assert_trees_close(mine, theirs, rtol=1e-6, scale=1e-6, what="lars vs optax.lars")
  assert not np.allclose(mine["fc6"]["kernel"], params["fc6"]["kernel"])


def test_lars_with_decay_follows_you_et_al():
  params, grads = _tree()
  zeros = jax.tree.map(jnp.zeros_like, params)
  new, v = large_batch.lars(params, zeros, grads, 2.0, mu=0.9, decay=5e-4, trust=1e-3)
  w, g = np.asarray(params["conv1"]["kernel"]), np.asarray(grads["conv1"]["kernel"])
  local = 1e-3 * np.linalg.norm(w) / (np.linalg.norm(g) + 5e-4 * np.linalg.norm(w))
  np.testing.assert_allclose(v["conv1"]["kernel"], -2.0 * local * (g + 5e-4 * w), rtol=1e-5)
  # Biases: section 5's rule at the global rate, no decay.
  np.testing.assert_allclose(v["conv1"]["bias"], -2.0 * np.asarray(grads["conv1"]["bias"]),
                             rtol=1e-6)
  np.testing.assert_allclose(new["fc6"]["bias"], params["fc6"]["bias"] + v["fc6"]["bias"])


def test_split_and_merge():
  x = jnp.arange(24)
  micro = large_batch.split(x, blocks=2, count=3)
  # Micro-batch i holds the i-th third of each half: rows the same devices hold.
  np.testing.assert_array_equal(micro[1], [4, 5, 6, 7, 16, 17, 18, 19])
  np.testing.assert_array_equal(large_batch.merge(micro, blocks=2), x)


def _one_step(config, accum, optimizer="sgd"):
  config.train.update(accum_steps=accum, optimizer=optimizer)
  mesh = steps.make_mesh(config)
  batch, consts = test_hybrid._step_inputs(config, mesh)
  state, metrics = steps.make_train_step(config, mesh)(
      steps.create_train_state(config, mesh), batch, 0.05, consts)
  return jax.device_get((state.params, metrics))


@pytest.mark.parametrize("layout,model", [("towers", 1), ("hybrid", 2)])
def test_accumulated_micro_batches_equal_the_big_batch(layout, model):
  """One step of 8 against 2 x 4 on the same devices (the towers layout split over data, the
  hybrid over both axes), dropout and augmentation on: the same masks and crops, the same
  update. The biases start at 0 here, so after one step they are the rate times the gradient.
  Measured: every parameter within 4.3e-7 of its array's largest entry (the conv1 and conv2
  biases the worst), the loss within 1.1e-7; allowed 1e-5, as tests/test_hybrid.py's."""
  config = test_hybrid.hybrid_config()
  config.mesh.update(layout=layout, model=model)
  (big, big_metrics), (acc, acc_metrics) = _one_step(config, 1), _one_step(config, 2)
  assert_trees_close(acc, big, rtol=1e-5, scale=1e-5, what=f"{layout} accum 2 vs 1:")
  np.testing.assert_allclose(acc_metrics["loss"], big_metrics["loss"], rtol=1e-5)
  assert acc_metrics["top1_error"] == big_metrics["top1_error"]
  # Not vacuous: the dropout masks matter (without dropout the step differs).
  config.model.dropout_rate = 0.0
  other, _ = _one_step(config, 2)
  assert np.abs(other["fc8"]["kernel"] - big["fc8"]["kernel"]).max() > 1e-6
