"""A training run read back: its config.json, the parameters of the checkpoint that
config.eval.checkpoint names, its class names and preprocessing constants. The one loader of
the commands that use a trained network (predict, figures, features, weights) and of
fine-tuning from another run.

    config = trained_run.read_config("workdirs/demo", {"eval.checkpoint": "best"})
    config, params, step = trained_run.load_run("workdirs/demo", config=config)

The commands take `--workdir` and any `--config.x=y` override of the run's saved config
(`define_flags`, `config_from_flags`); the network's own fields (config.model, except dtype)
cannot be overridden: they must be the ones the checkpoint was trained with.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import nets
from alexnet_jax import parallel
from alexnet_jax import paths
from alexnet_jax import preprocess
from alexnet_jax import report
from alexnet_jax import steps
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager


def read_config(workdir, overrides=None):
  """The run's config.json as a ConfigDict, with the fields added since it was written at
  their defaults (configs/paper.py) and `overrides` ({"eval.checkpoint": "best"}) applied."""
  path = paths.file(workdir, paths.CONFIG)
  if not path.exists():
    raise FileNotFoundError(f"No {path}: --workdir must be a training run's folder (the one "
                            "given to alexnet_jax.main), which holds config.json and checkpoints/.")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  compatibility.upgrade(config)
  for name, value in (overrides or {}).items():
    if name.startswith("model.") and name != "model.dtype":
      raise ValueError(f"--config.{name}: the network's fields come from {path}, the config the "
                       "checkpoint was trained with; only config.model.dtype may change.")
    _set(config, name, value)
  return config


def load_run(workdir, which=None, *, config=None, mesh=None):
  """(config, params, step): the run's config (read_config's unless given), and the global
  parameters of the step `which` names ("latest", "best" or a step; config.eval.checkpoint
  by default), placed on `mesh` (steps.make_mesh(config) by default) as training places them."""
  workdir = paths.root(workdir)
  config = read_config(workdir) if config is None else config
  mesh = steps.make_mesh(config) if mesh is None else mesh
  which = config.eval.checkpoint if which is None else which
  mgr = manager.create(workdir, read_only=True)
  try:
    step = manager.resolve_step(mgr, which)
    params = abstract_params(config, mesh)
    state = {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=parallel.replicated(mesh)),
             "params": params, "momentum": params}  # The train state's tree, as saved.
    restored, _ = manager.restore(mgr, step, state)
  finally:
    mgr.close()
  return config, restored["params"], step


def load_step_dir(path, mesh=None):
  """(config, params, step) of `<workdir>/checkpoints/<step>`, or of a workdir's latest step."""
  path = paths.root(path)
  if path.parent.name == "checkpoints" and path.name.isdigit():
    return load_run(path.parent.parent, path.name, mesh=mesh)
  return load_run(path, "latest", mesh=mesh)


def abstract_params(config, mesh):
  """The global parameters' shapes, dtypes and shardings on `mesh`."""
  shapes = nets.abstract_params(config.model)
  shardings = parallel.param_shardings(mesh, shapes, nets.towers(config.model) > 1)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      shapes, shardings)


def class_names(workdir, config):
  return report.read_class_names(workdir, config.model.num_classes)


def constants(workdir, config):
  """The mean image and PCA basis the run used: stored in the workdir since it was trained
  (report.write_run_files), else computed from the dataset's statistics as training does."""
  stored = report.read_constants(workdir)
  return stored if stored is not None else preprocess.constants(config)


def _set(config, dotted, value):
  *parents, leaf = dotted.split(".")
  for name in parents:
    config = config[name]
  config[leaf] = value
