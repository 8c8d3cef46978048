"""A run resumed on another mesh computes what it would have computed without stopping: the
parameters are global arrays and data order, augmentation and dropout follow the seed and the
step alone. Only the order of floating-point sums changes (the towers' products on one device
or two, the batch's gradient summed over one data row or two), so the parameters agree to
float32 rounding, not bit for bit. A change that alters the computation is refused."""
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager
from tests import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
STOP = 4   # The step the first run is cut at.
TOTAL = 8
# Summation order perturbs each update by a few float32 ulps of its terms: the weights (std
# 0.01, biases 1) take updates of ~1e-5, whose rounding is ~1e-12, and a bias of 1 rounds at
# 6e-8 (half an ulp of 1.0), so after 4 steps the parameters agree to well under 1e-7. 1e-7
# still fails on any real difference: another batch, crop or dropout mask changes an update by
# ~1e-5, and the resumed steps themselves move the weights by over 1e-5 (asserted below).
ATOL = 1e-7


def _config(cache_dir, **mesh):
  config = tiny_config.get_config()
  config.data.cache_dir = cache_dir
  config.train.num_steps = TOTAL
  config.checkpoint.update(every_steps=2, max_to_keep=10)
  config.eval.ten_crop = False
  config.mesh.update(mesh)
  return config


def _params(workdir, config, step=None):
  mesh = parallel.make_mesh(config.mesh.model)
  mgr = manager.create(workdir)
  try:
    state, _ = manager.restore(mgr, step or mgr.latest_step(),
                               steps.abstract_state(config, mesh))
  finally:
    mgr.close()
  return int(state.step), jax.tree.map(np.asarray, state.params)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir):
  workdir = tmp_path_factory.mktemp("elastic") / "whole"
  config = _config(cache_dir, model=2)
  train.train_and_evaluate(config, workdir)
  return workdir, config


def _cut_at(workdir, dest):
  """A copy of `workdir` as a run killed right after saving step STOP would have left it."""
  shutil.copytree(workdir, dest)
  for step in (s for s in range(STOP + 1, TOTAL + 1)):
    shutil.rmtree(dest / "checkpoints" / str(step), ignore_errors=True)
  (dest / "summary.json").unlink()
  return dest


def _max_difference(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                           jax.tree.leaves(b)))


@pytest.mark.slow
@pytest.mark.parametrize("mesh_model", [1, 2])
def test_a_resume_on_another_mesh_ends_where_the_whole_run_did(uninterrupted, tmp_path,
                                                               cache_dir, mesh_model):
  """model=2 (data=1) cut at step 4, resumed with model=1 (both towers on each device, data=2:
  another number of data rows for the same global batch) or again model=2."""
  workdir, config = uninterrupted
  cut = _cut_at(workdir, tmp_path / "cut")
  summary = train.train_and_evaluate(_config(cache_dir, model=mesh_model), cut)
  assert summary["steps"] == TOTAL
  step, resumed = _params(cut, config)
  _, whole = _params(workdir, config)
  assert step == TOTAL
  diff = _max_difference(resumed, whole)
  print(f"mesh.model=2 -> {mesh_model}: largest parameter difference {diff:.3g}")
  if mesh_model == 2:
    assert diff == 0.0  # The same mesh: bit-equal.
  else:
    assert diff <= ATOL
    _, at_stop = _params(workdir, config, STOP)
    assert _max_difference(resumed, at_stop) > 100 * ATOL  # It did train after the resume.


@pytest.mark.slow
def test_a_resume_on_one_device_in_another_process(uninterrupted, tmp_path, cache_dir):
  workdir, config = uninterrupted
  cut = _cut_at(workdir, tmp_path / "cut")
  out = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.main", "--config=tests/tiny_config.py",
       f"--workdir={cut}", f"--config.data.cache_dir={cache_dir}",
       f"--config.train.num_steps={TOTAL}", "--config.checkpoint.every_steps=2",
       "--config.checkpoint.max_to_keep=10", "--config.eval.ten_crop=False",
       "--config.mesh.num_cpu_devices=1", "--config.mesh.model=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  assert f"Resumed from {cut / 'checkpoints'} at step {STOP}." in out.stdout
  assert "data=1 x model=1 over 1 cpu device(s)" in out.stdout
  _, resumed = _params(cut, config)
  _, whole = _params(workdir, config)
  assert _max_difference(resumed, whole) <= ATOL


@pytest.mark.parametrize("field, value", [("model.width", 0.25), ("model.num_classes", 12),
                                          ("train.batch_size", 16), ("model.dtype", "bfloat16")])
def test_a_change_of_the_computation_is_refused_naming_the_field(tiny_run, tmp_path, field,
                                                                  value):
  """The shared trained run, resumed for more steps with one field of its computation changed."""
  workdir = shutil.copytree(tiny_run.workdir, tmp_path / "run")
  config = tiny_run.config.copy_and_resolve_references()
  config.train.num_steps += 10
  section, name = field.split(".")
  config[section][name] = value
  if field == "model.num_classes":
    config.data.generated.num_classes = value
  with pytest.raises(compatibility.IncompatibleCheckpointError, match=field.replace(".", r"\.")):
    train.train_and_evaluate(config, workdir)


def test_a_checkpoint_resumes_under_another_implementation_of_the_same_network(tiny_run,
                                                                               tmp_path):
  """The implementation switches compute the same function: a run resumes under others."""
  workdir = shutil.copytree(tiny_run.workdir, tmp_path / "run")
  config = tiny_run.config.copy_and_resolve_references()
  config.train.num_steps += 2
  config.eval.ten_crop = False
  config.profile_steps = 0
  config.impl.update(pool_grad="reduce_window", model1_gathers=False, tower_conv="grouped")
  summary = train.train_and_evaluate(config, workdir)
  assert summary["steps"] == tiny_run.config.train.num_steps + 2
  assert "pool_grad" not in str(compatibility.model_fingerprint(config))
