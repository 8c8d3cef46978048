"""config.mesh.layout="hybrid" (alexnet_jax/parallel/hybrid.py) computes the network of one
device.

On 2 devices (conftest's) in this process, on 4 and 8 in a subprocess each (the device count is
fixed when JAX starts). Tolerance, float32: the layouts sum the same products in other orders
(the conv gradients as N partial sums all-reduced, fc8's logits as N partial sums reduced, the
batch mean of the loss over N blocks). float32 keeps 24 bits (6e-8 relative per rounding); a
reordered sum of k terms moves by a few roundings of its largest terms. Measured on 8 devices:
loss within 1.0e-7 of its value, logits within 6.5e-7 and every gradient within 7.0e-7 of its
array's largest entry (conv4's kernel the worst); the tests allow 1e-5 of that scale, room for
other XLA versions' summation orders, and still a thousand times below what a wrong row, unit or
mask would move (a dropped-out unit changes the logits by more than 1e-3 of theirs).
"""
import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import nets, parallel, steps
from alexnet_jax.parallel import hybrid
from tests import tiny_config
from tests.trees import assert_trees_close

ROOT = pathlib.Path(__file__).resolve().parents[1]


def hybrid_config(batch=8, norm="lrn"):
  """The towers' tiny network (width 1/4, 67x67, 10 classes), He-initialised so that the
  images reach the logits, dropout on."""
  config = tiny_config.get_config("towers")
  config.model.update(init="he", input_scale=1 / 60, bias_init=0.0, norm=norm)
  config.train.batch_size = batch
  return config


def loss_logits_grads(config, mesh, params, images_BHWC, labels_B, train):
  apply = steps.make_apply(config, mesh)
  rng = jax.random.key(5)

  def loss(p):
    logits_BK = apply(p, images_BHWC, rng, train)
    return steps.cross_entropy(logits_BK, labels_B), logits_BK

  (value, logits_BK), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return jax.device_get({"loss": value, "logits": logits_BK, "grads": grads})


@functools.cache
def _inputs(batch):
  config = hybrid_config(batch)
  images = jax.random.normal(jax.random.key(3), (batch, 67, 67, 3), jnp.float32) * 60.0
  labels = jax.random.randint(jax.random.key(4), (batch,), 0, config.model.num_classes)
  params = jax.device_get(nets.init_params(config.model, jax.random.key(0)))
  return config, images, labels, params


def layouts_agree(batch=8, **model):
  """Hybrid on every device against the towers layout on one device (model=1), dropout off and
  on; returns the largest differences seen."""
  config, images, labels, params = _inputs(batch)
  config = config.copy_and_resolve_references()
  config.model.update(model)
  one = parallel.make_mesh(1, jax.devices()[:1])
  config.mesh.layout = "hybrid"
  mesh = parallel.make_mesh(config)
  placed = jax.device_put(params, steps.param_shardings(config, mesh))
  for leaf, spec in zip(jax.tree.leaves(placed), jax.tree.leaves(
      hybrid.param_specs(params), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
    assert leaf.sharding.spec == spec
  seen = {}
  for train in (False, True):
    config.mesh.layout = "towers"
    want = loss_logits_grads(config, one, params, images, labels, train)
    config.mesh.layout = "hybrid"
    got = loss_logits_grads(config, mesh, placed, images, labels, train)
    assert_trees_close({"loss": got["loss"], "logits": got["logits"]},
                       {"loss": want["loss"], "logits": want["logits"]}, rtol=1e-5, scale=1e-5,
                       what=f"{len(jax.devices())} devices, train={train}:")
    assert_trees_close(got["grads"], want["grads"], rtol=1e-5, scale=1e-5,
                       what=f"{len(jax.devices())} devices, train={train}, gradient of")
    # Not vacuous: the conv layers learn and dropout changes the logits.
    assert np.abs(want["grads"]["conv1"]["kernel"]).max() > 1e-6
    seen[train] = want["logits"]
    seen[f"diff_{train}"] = float(np.abs(got["logits"] - want["logits"]).max())
  assert np.abs(seen[True] - seen[False]).max() > 1e-3
  return {"devices": len(jax.devices()), "mesh": dict(mesh.shape),
          "logits_diff": max(seen["diff_False"], seen["diff_True"])}


def test_hybrid_equals_one_device_on_two_devices():
  assert layouts_agree()["mesh"] == {"data": 1, "model": 2}


@pytest.mark.slow
def test_hybrid_lrn_across_towers_equals_one_device():
  """Caffe's LRN over both towers' channels (config.model.lrn_across_towers): the hybrid holds
  both towers on each device and normalises them as one stack, as one device does. alpha 0.5:
  strong enough that a window reaching into the other tower moves the logits."""
  lrn = {"lrn_across_towers": True, "lrn_alpha": 0.5}
  assert layouts_agree(**lrn)["mesh"] == {"data": 1, "model": 2}
  config, images, labels, params = _inputs(8)
  one = parallel.make_mesh(1, jax.devices()[:1])
  logits = {}
  for across in (True, False):
    config = config.copy_and_resolve_references()
    config.model.update({**lrn, "lrn_across_towers": across})
    logits[across] = loss_logits_grads(config, one, params, images, labels, False)["logits"]
  assert np.abs(logits[True] - logits[False]).max() > 1e-4 * np.abs(logits[False]).max()


@pytest.mark.slow
@pytest.mark.parametrize("devices", [4, 8])
def test_hybrid_equals_one_device_on_more_devices(devices):
  code = ("import jax; from alexnet_jax import runtime; "
          f"runtime.configure_jax(num_cpu_devices={devices}); "
          "jax.config.update('jax_platforms', 'cpu'); "
          "jax.config.update('jax_numpy_rank_promotion', 'raise'); "
          "from tests import test_hybrid; print('AGREE', test_hybrid.layouts_agree())")
  env = dict(os.environ, XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert f"'data': {devices // 2}, 'model': 2" in out.stdout, out.stdout


def test_hybrid_refuses_meshes_it_cannot_fill():
  config = hybrid_config()
  config.mesh.layout = "hybrid"
  with pytest.raises(ValueError, match="config.mesh.model=2"):
    hybrid.check_mesh(parallel.make_mesh(1), config.model)
  config.mesh.layout = "rows"
  with pytest.raises(ValueError, match="config.mesh.layout='rows'"):
    hybrid.layout_name(config)


def _step_inputs(config, mesh, seed=0):
  size, rng = config.data.resize_size, np.random.default_rng(seed)
  batch = jax.device_put(
      {"image": rng.integers(0, 256, (8, size, size, 3)).astype(np.uint8),
       "label": rng.integers(0, config.model.num_classes, 8).astype(np.int32)},
      parallel.batch_sharding(mesh))
  consts = parallel.place_replicated(mesh, {"mean": np.full((size, size, 3), 120, np.float32),
                                            "pca": np.diag([60.0, 20.0, 10.0]).astype(np.float32)})
  return batch, consts


def _layout(name, norm="lrn"):
  config = hybrid_config(norm=norm)
  config.mesh.layout = name
  return config, parallel.make_mesh(config)


@pytest.mark.parametrize("norm", ["lrn", pytest.param("batch", marks=pytest.mark.slow)])
def test_a_checkpoint_resumes_in_the_other_layout_and_serves_the_tools(tmp_path, norm):
  """One step in each layout, saved, restored into the other layout (same values, that
  layout's shardings), one step more there equal to one more in the first; then evaluation
  (centre and ten crops), features and the weights export from the hybrid checkpoint. With
  batch normalisation the running averages the step wrote travel with the checkpoint."""
  from alexnet_jax.checkpoints import compatibility, manager, trained_run, weights_file
  from alexnet_jax.tools import features
  layouts = {name: _layout(name, norm) for name in ("towers", "hybrid")}
  for first, other in (("hybrid", "towers"), ("towers", "hybrid")):
    (config, mesh), (config2, mesh2) = layouts[first], layouts[other]
    batch, consts = _step_inputs(config, mesh)
    step = steps.make_train_step(config, mesh)
    state, _ = step(steps.create_train_state(config, mesh), batch, 0.01, consts)
    mgr = manager.create(tmp_path / first, async_save=False)
    manager.save(mgr, 1, state, {"fingerprint": compatibility.model_fingerprint(config)})
    resumed, _ = manager.restore(mgr, 1, steps.abstract_state(config2, mesh2),
                                 fingerprint=compatibility.model_fingerprint(config2))
    manager.close(mgr)
    want = steps.state_shardings(config2, mesh2)
    for leaf, sharding in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(want.params)):
      assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    np.testing.assert_array_equal(jax.device_get(resumed.params["fc8"]["kernel"]),
                                  jax.device_get(state.params["fc8"]["kernel"]))
    if norm == "batch":
      mean = jax.device_get(resumed.params["conv2"]["mean"])
      np.testing.assert_array_equal(mean, jax.device_get(state.params["conv2"]["mean"]))
      assert np.abs(mean).max() > 1e-3  # Moved from its initial 0 by the step.
    batch2, consts2 = _step_inputs(config2, mesh2, seed=1)
    there, _ = steps.make_train_step(config2, mesh2)(resumed, batch2, 0.01, consts2)
    batch1, _ = _step_inputs(config, mesh, seed=1)
    here, _ = step(state, batch1, 0.01, consts)
    assert int(there.step) == int(here.step) == 2
    assert_trees_close(jax.device_get(there.params), jax.device_get(here.params), rtol=1e-4,
                       scale=1e-4, what=f"{first} then {other}:")

  config, mesh = layouts["hybrid"]
  _, params, step_number = trained_run.load_run(tmp_path / "hybrid", "latest", config=config,
                                                mesh=mesh)
  assert step_number == 1
  towers_config, towers_mesh = layouts["towers"]
  batch, consts = _step_inputs(config, mesh)
  for ten_crop in (False, True):
    got = steps.make_eval_step(config, mesh)(params, batch["image"], consts, ten_crop)
    want = steps.make_eval_step(towers_config, towers_mesh)(params, batch["image"], consts,
                                                            ten_crop)
    assert got.shape == ((8, 10, 10) if ten_crop else (8, 10))
    assert_trees_close(jax.device_get(got), jax.device_get(want), what="eval logits")
  # Seven images do not divide over the devices: the evaluation pads them.
  seven = steps.make_eval_step(config, mesh)(params, batch["image"][:7], consts, False)
  centre = steps.make_eval_step(towers_config, towers_mesh)(params, batch["image"], consts, False)
  assert_trees_close(jax.device_get(seven), jax.device_get(centre)[:7], what="7 images")
  extract = features.make_extract(config, mesh, ["fc7"])
  assert extract(params, batch["image"], consts)["fc7"].shape == (8, 2 * 512)
  path = weights_file.save(tmp_path / "w.npz", params, config=config, class_names=[], step=1)
  assert np.load(path)["fc8/kernel"].shape == (2, 1024, 5)
  if norm == "batch":  # The file serves evaluation: the running averages go with it.
    np.testing.assert_array_equal(np.load(path)["conv5/var"], params["conv5"]["var"])


@pytest.mark.slow
def test_a_run_trains_in_the_hybrid_layout_and_resumes_in_the_towers(tmp_path, cache_dir):
  """train.py end to end: 4 steps of the hybrid layout with 2 micro-batches a step, LARS and the
  poly schedule, then the same workdir resumed to 6 steps in the towers layout."""
  import contextlib
  import io

  from alexnet_jax import train
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  config.mesh.layout = "hybrid"
  config.train.update(num_steps=4, accum_steps=2, optimizer="lars", schedule="poly",
                      warmup_epochs=0.1, lr_scaling="sqrt")
  with contextlib.redirect_stdout(io.StringIO()):
    first = train.train_and_evaluate(config, tmp_path / "run")
  assert first["status"] == "finished" and first["steps"] == 4
  assert np.isfinite(first["final_val_top1_error"])
  config.mesh.layout = "towers"
  config.train.num_steps = 6
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    second = train.train_and_evaluate(config, tmp_path / "run")
  assert second["steps"] == 6
  assert "step 6/6" in out.getvalue() and "step 2/6" not in out.getvalue(), out.getvalue()
