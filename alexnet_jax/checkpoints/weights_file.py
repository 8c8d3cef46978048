r"""The network's parameters as one `.npz` (tools/weights.py writes it), and fine-tuning's
start from one, from another run's workdir or one of its steps:

    python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/finetune \
        --config.init_from=demo.npz --config.init_reset=fc8

The file (docs/after_training.md, "Weights out and in"): one array per "<layer>/kernel" and
"<layer>/bias", float32, with the tower axis first as the checkpoint holds them (AlexNet: conv
kernels [2, kh, kw, C_in, C_out], fully connected [2, F_in, F_out], biases [2, C_out]; tower
t's half is [t]); "preprocess/mean" [R, R, 3], the mean image subtracted from the 0-255 RGB input
before config.model.input_scale; "meta", a JSON string: format, step, the model config, the
class names.

Fine-tuning: a run with config.init_from set starts (when it has no checkpoint of its own)
from that file, or from another run's workdir (its latest step) or `<workdir>/checkpoints/
<step>`; the layers named in config.init_reset keep their fresh initialisation, e.g. fc8 for
a dataset with another number of classes.
"""
import json
import pathlib

import jax
import numpy as np

from alexnet_jax import paths
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import trained_run

FORMAT = "alexnet_jax.weights/1"
META_KEY = "meta"
MEAN_KEY = "preprocess/mean"
# Fields of config.model that change what the weights compute (not only how they start).
FUNCTION_FIELDS = ("name", "layout", "activation", "norm", "lrn_convention", "lrn_across_towers",
                   "lrn_k", "lrn_n", "lrn_alpha", "lrn_beta", "bn_epsilon", "pool_window",
                   "pool_stride", "input_scale", "image_size")


def flatten(params):
  """{"conv1/kernel": NumPy array, ...} of a nested parameter dict (fetched from the devices)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(k.key for k in path): np.asarray(jax.device_get(leaf))
          for path, leaf in leaves}


def unflatten(flat):
  params = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = params
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return params


def save(path, params, *, config, class_names, step, mean=None):
  """Writes the .npz described above; returns its path."""
  meta = {"format": FORMAT, "step": int(step), "model": config.model.to_dict(),
          "class_names": list(class_names)}
  arrays = flatten(params)
  if mean is not None:
    arrays[MEAN_KEY] = np.asarray(mean, np.float32)
  path = pathlib.Path(path)
  np.savez(path, **arrays, **{META_KEY: np.array(json.dumps(meta))})
  return path


def load(path):
  """(nested NumPy parameters, meta dict) of a file `save` wrote."""
  path = paths.root(path)
  if not path.exists():
    raise FileNotFoundError(f"No weights file {path} (config.init_from): export one with "
                            "python -m alexnet_jax.tools.weights --workdir=RUN --out=FILE.npz.")
  with path.open("rb") as raw, np.load(raw, allow_pickle=False) as f:
    if META_KEY not in f.files or json.loads(str(f[META_KEY])).get("format") != FORMAT:
      raise ValueError(f"{path} is not a weights file of this package (no {FORMAT!r} meta); "
                       "export one with python -m alexnet_jax.tools.weights.")
    meta = json.loads(str(f[META_KEY]))
    flat = {k: f[k] for k in f.files if k not in (META_KEY, MEAN_KEY)}
  return unflatten(flat), meta


def initial_params(config, fresh, mesh, log=print):
  """The parameters a fine-tuning run starts from: config.init_from's, except the layers in
  config.init_reset, which keep `fresh` (this run's own initialisation). Shapes must agree
  layer by layer; a layer that differs (fc8 for another class count) must be reset."""
  source = str(config.init_from)
  reset = [name.strip() for name in str(config.init_reset).split(",") if name.strip()]
  unknown = [name for name in reset if name not in fresh]
  if unknown:
    raise ValueError(f"config.init_reset names {unknown}, which the network does not have; "
                     f"its layers: {sorted(fresh)}.")
  if source.endswith(".npz"):
    loaded, meta = load(source)
  else:
    src_config, loaded, step = trained_run.load_step_dir(source, mesh)
    meta = {"model": src_config.model.to_dict(), "step": step}
  _check_layers(source, fresh, loaded, reset)
  _note_differences(source, meta["model"], config.model.to_dict(), log)
  params = {}
  for layer, leaves in fresh.items():
    params[layer] = leaves if layer in reset else jax.tree.map(
        lambda f, x: place(x, f.sharding), leaves, loaded[layer])
  kept = [layer for layer in fresh if layer not in reset]
  log(f"Initialised from {source} (step {meta.get('step')}): {', '.join(kept)}"
      + (f"; {', '.join(reset)} initialised afresh." if reset else "."))
  return params


def _check_layers(source, fresh, loaded, reset):
  missing = [layer for layer in fresh if layer not in reset and layer not in loaded]
  if missing:
    raise ValueError(f"config.init_from={source} has no {missing}: it holds {sorted(loaded)}.")
  for layer in (layer for layer in fresh if layer not in reset):
    for leaf, value in fresh[layer].items():
      have = tuple(np.shape(loaded[layer].get(leaf)))
      if have != tuple(value.shape):
        raise ValueError(
            f"config.init_from={source}: {layer}/{leaf} has shape {have} there but "
            f"{tuple(value.shape)} in this run's network; set --config.init_reset={layer} to "
            "initialise it afresh (fc8 for another number of classes).")


def _note_differences(source, src_model, model, log):
  src_model = compatibility.upgrade_model(dict(src_model))
  differ = [f"{k}: {src_model.get(k)!r} -> {model.get(k)!r}" for k in FUNCTION_FIELDS
            if src_model.get(k) != model.get(k)]
  if differ:
    log(f"Note: config.init_from={source} was trained with other settings of what the network "
        f"computes ({'; '.join(differ)}).")


def place(value, sharding):
  """A host array (every process holds all of it) or a device array, placed with `sharding`
  (for loaded weights: the sharding of the parameter they replace)."""
  if isinstance(value, jax.Array) and value.sharding == sharding:
    return value
  value = np.asarray(value, np.float32)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
