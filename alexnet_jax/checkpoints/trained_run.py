"""A trained network read back from a workdir or a weights .npz, the one loader of the tools and
of fine-tuning: `read_config` (config.model, but dtype, cannot be overridden), `load_run`,
`class_names`, `constants`."""
import json

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from alexnet_jax import errors
from alexnet_jax import parallel
from alexnet_jax import paths
from alexnet_jax import preprocess
from alexnet_jax import report
from alexnet_jax import steps
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager
from alexnet_jax.checkpoints import weights_file


def read_config(source, overrides=None):
  """The run's config.json (a weights file's network and decoding, the rest the paper's), the
  fields added since at their defaults, `overrides` ({"eval.checkpoint": "best"}) applied."""
  if weights_file.is_weights_file(source):
    path = source
    meta, mean = weights_file.load_meta(source)
    data = meta.get("data") or {"resize": "antialias"}  # Files from before "data": the default.
    if "resize_size" not in data and mean is not None:
      data["resize_size"] = int(mean.shape[0])
    config = ml_collections.ConfigDict({"model": meta["model"], "data": data})
  else:
    path = paths.file(source, paths.CONFIG)
    if not path.exists():
      raise errors.MissingFileError(f"No {path}: --workdir must be a training run's folder (the "
                                    "one given to alexnet_jax.main), which holds config.json and "
                                    "checkpoints/.")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
  compatibility.upgrade(config)
  for name in overrides or {}:
    if name.startswith("model.") and name != "model.dtype":
      raise errors.ConfigError(
          f"--config.{name}: the network's fields come from {path}, the config the "
          "checkpoint was trained with; only config.model.dtype may change.")
  config.update_from_flattened_dict(overrides or {})
  return config


def load_run(workdir, which=None, *, config=None, mesh=None):
  """(config, params, step) of the step `which` names ("latest", "best", a step; by default
  config.eval.checkpoint; a weights file holds one), placed on `mesh` as training places them."""
  config = read_config(workdir) if config is None else config
  mesh = parallel.make_mesh(config) if mesh is None else mesh
  abstract = steps.abstract_state(config, mesh)  # Shapes, dtypes and shardings on `mesh`.
  if weights_file.is_weights_file(workdir):
    params, meta = weights_file.load(workdir)
    _check_shapes(workdir, abstract.params, params)
    return config, jax.tree.map(lambda a, x: weights_file.place(x, a.sharding), abstract.params,
                                params), meta["step"]
  workdir = paths.root(workdir)
  which = config.eval.checkpoint if which is None else which
  mgr = manager.create(workdir, read_only=True)
  try:
    step = manager.resolve_step(mgr, which)
    restored, _ = manager.restore(mgr, step, abstract)
  finally:
    mgr.close()
  return config, restored.params, step


def _check_shapes(path, abstract, params):
  """Names the first array of the file that the network its meta describes has not."""
  have = {k: v.shape for k, v in weights_file.flatten(params).items()}
  want = {k: v.shape for k, v in traverse_util.flatten_dict(abstract, sep="/").items()}
  for name in sorted(want.keys() | have.keys()):
    if have.get(name) != want.get(name):
      raise errors.ConfigError(f"{path}: {name} has shape {have.get(name)} there, but "
                               f"{want.get(name)} in the network its meta describes.")


def class_names(source, config):
  if weights_file.is_weights_file(source):
    names = weights_file.load_meta(source)[0]["class_names"]
    return names or [f"class {k}" for k in range(config.model.num_classes)]
  return report.read_class_names(source, config.model.num_classes)


def constants(source, config):
  """The mean image and PCA basis the run used: the workdir's or the weights file's (its mean;
  no colour noise at test time), else computed from the dataset's statistics as training does."""
  if weights_file.is_weights_file(source):
    mean = weights_file.load_meta(source)[1]
    size = config.data.resize_size
    return {"mean": np.zeros((size, size, 3), np.float32) if mean is None else mean,
            "pca": np.zeros((3, 3), np.float32)}
  stored = report.read_constants(source)
  return stored if stored is not None else preprocess.constants(config)
