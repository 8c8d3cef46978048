r"""The parameters as one `.npz` (`save`, `load`; its keys: docs/after_training.md, "Weights out
and in"), read as a run by the tools and eval_only, and fine-tuning's start from it or from
another run (`initial_params`; config.init_reset's layers start fresh):

    python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/finetune \
        --config.init_from=demo.npz --config.init_reset=fc8
"""
import contextlib
import json
import os
import pathlib

import jax
import numpy as np
from flax import traverse_util

from alexnet_jax import errors
from alexnet_jax import parallel
from alexnet_jax import paths
from alexnet_jax import report
from alexnet_jax import schedule
from alexnet_jax import steps
from alexnet_jax.checkpoints import compatibility
from alexnet_jax.checkpoints import manager
from alexnet_jax.checkpoints import trained_run

FORMAT = "alexnet_jax.weights/1"
META_KEY = "meta"
MEAN_KEY = "preprocess/mean"
# The mean as statistics (data/stats.py's format) in a run written from a file: the evaluation
# subtracts it through config.data.stats_file, and its presence marks the run as a file's.
MEAN_FILE = "weights_mean.npz"
# Fields of config.model that change what the weights compute (not only how they start).
FUNCTION_FIELDS = ("name", "layout", "activation", "norm", "lrn_convention", "lrn_across_towers",
                   "lrn_k", "lrn_n", "lrn_alpha", "lrn_beta", "bn_epsilon", "pool_window",
                   "pool_stride", "input_scale", "image_size")


def is_weights_file(source):
  return str(source).endswith(".npz")


def flatten(params):
  """{"conv1/kernel": NumPy array, ...} of a nested parameter dict, in jax's (sorted) order."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  return {name: np.asarray(flat[name]) for name in sorted(flat)}


DTYPES = ("float32", "float16")


def save(path, params, *, config, class_names, step, mean=None, dtype="float32"):
  """Writes the .npz described above, the parameters in `dtype` (float16: half the bytes, read
  back as float32); returns its path."""
  if dtype not in DTYPES:
    raise errors.ConfigError(f"--dtype={dtype}: use one of {DTYPES}.")
  meta = {"format": FORMAT, "step": int(step), "model": config.model.to_dict(),
          "class_names": list(class_names), "dtype": dtype,
          "data": {"resize_size": config.data.resize_size, "resize": config.data.resize}}
  arrays = {k: v.astype(dtype) for k, v in flatten(params).items()}
  if mean is not None:
    arrays[MEAN_KEY] = np.asarray(mean, np.float32)
  np.savez(path, **arrays, **{META_KEY: np.array(json.dumps(meta))})
  return pathlib.Path(path)


@contextlib.contextmanager
def _opened(path):
  """(the open NpzFile, its meta dict), refusing a file this package did not write."""
  path = paths.root(path)
  if not path.exists():
    raise errors.MissingFileError(
        f"No weights file {path}: export one with python -m alexnet_jax.tools.weights "
        "--workdir=RUN --out=FILE.npz.")
  with path.open("rb") as raw, np.load(raw, allow_pickle=False) as f:
    meta = json.loads(str(f[META_KEY])) if META_KEY in f.files else {}
    if meta.get("format") != FORMAT:
      raise errors.ConfigError(f"{path} is not a weights file of this package (no {FORMAT!r} "
                               "meta); export one with python -m alexnet_jax.tools.weights.")
    yield f, meta


def load(path):
  """(nested NumPy parameters, meta dict) of a file `save` wrote."""
  with _opened(path) as (f, meta):
    flat = {k: f[k].astype(np.float32) if f[k].dtype == np.float16 else f[k]
            for k in f.files if k not in (META_KEY, MEAN_KEY)}
  return traverse_util.unflatten_dict(flat, sep="/"), meta


def load_meta(path):
  """(meta dict, mean image float32 [R, R, 3] or None): the file without its parameters."""
  with _opened(path) as (f, meta):
    return meta, (f[MEAN_KEY] if MEAN_KEY in f.files else None)


def write_run(workdir, config, params, class_names, mean, step=0):
  """`params` as a run at `step` in `workdir` that the tools and eval_only read as a trained run,
  config.data.stats_file the mean's MEAN_FILE, so that an evaluation subtracts it."""
  from alexnet_jax.data import stats  # TensorFlow: only when a run is written.

  workdir = paths.root(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if paths.checkpoints(workdir).exists():
    raise errors.ConfigError(f"{workdir} holds checkpoints already: name a new folder.")
  mesh = parallel.make_mesh(config)
  state = steps.create_train_state(config, mesh)
  state = state.replace(
      step=jax.device_put(np.int32(step), state.step.sharding),
      params=jax.tree.map(lambda x, f: place(x, f.sharding), params, state.params))
  mgr = manager.create(workdir)
  manager.save(mgr, int(step), state, {
      "fingerprint": compatibility.model_fingerprint(config),
      "schedule": schedule.to_dict(schedule.create(config.train, 1))})
  manager.close(mgr)
  mean = np.asarray(mean, np.float32)
  config.data.update(mean="image", stats_file=str(workdir / MEAN_FILE))
  stats.save_stats(dict(mean_image=mean, channel_mean=mean.mean(axis=(0, 1)),
                        eigval=np.zeros(3, np.float32), eigvec=np.eye(3, dtype=np.float32),
                        num_images=np.int64(0), dataset=np.str_("")), config.data.stats_file)
  paths.file(workdir, paths.CONFIG).write_text(config.to_json_best_effort(indent=2) + "\n")
  report.write_run_files(workdir, class_names, {"mean": mean, "pca": np.zeros((3, 3), np.float32)})


def write_import(out, workdir, config, params, class_names, mean):
  """An importer's weights file at `out` and, with a `workdir`, the file as a run at step 0
  there, which eval_only of the file reads as the file's own."""
  path = save(out, params, config=config, class_names=class_names, step=0, mean=mean)
  if workdir:
    config.init_from = os.path.realpath(path)
    write_run(workdir, config, params, class_names, mean)
  return path


def evaluation_start(config, workdir):
  """eval_only with config.init_from a weights file evaluates the file: its network, decoding
  and mean replace config's, and the file becomes a run at its step in `workdir` (written on
  the first evaluation). A workdir holding a run of its own (fine-tuned from the file, say) is
  left alone: eval_only evaluates its checkpoints, as for any run."""
  if not (config.eval_only and is_weights_file(config.init_from)):
    return
  workdir = paths.root(workdir)
  source = str(config.init_from)
  if paths.checkpoints(workdir).exists() and not (workdir / MEAN_FILE).exists():
    return
  file_config = trained_run.read_config(source)
  config.model.update({k: v for k, v in file_config.model.items() if k in config.model}  # Fields
                      | {"dtype": config.model.dtype})  # since removed are left out.
  config.data.update(resize_size=file_config.data.resize_size, resize=file_config.data.resize,
                     mean="image", stats_file=str(workdir / MEAN_FILE))
  config.init_from = os.path.realpath(source)
  if paths.checkpoints(workdir).exists():
    written = json.loads(paths.file(workdir, paths.CONFIG).read_text()).get("init_from")
    if written != config.init_from:
      raise errors.ConfigError(f"{workdir} holds the run of another weights file ({written}): "
                               "name a new --workdir to evaluate this one.")
    return
  params, meta = load(source)
  _, mean = load_meta(source)
  if mean is None:
    raise errors.ConfigError(f"{source} holds no mean image ({MEAN_KEY}) to subtract.")
  write_run(workdir, config, params, trained_run.class_names(source, config), mean, meta["step"])


def initial_params(config, fresh, mesh, log=print):
  """Fine-tuning's start: config.init_from's parameters, but `fresh` (this run's initialisation)
  in config.init_reset's layers, which a layer of another shape (fc8) must be among."""
  source = str(config.init_from)
  reset = [name.strip() for name in str(config.init_reset).split(",") if name.strip()]
  unknown = [name for name in reset if name not in fresh]
  if unknown:
    raise errors.ConfigError(f"config.init_reset names {unknown}, which the network does not have; "
                             f"its layers: {sorted(fresh)}.")
  if is_weights_file(source):
    loaded, meta = load(source)
  else:  # A workdir's latest step, or one of its steps: <workdir>/checkpoints/<step>.
    path = paths.root(source)
    one = path.parent.name == "checkpoints" and path.name.isdigit()
    src_config, loaded, step = trained_run.load_run(path.parent.parent if one else path,
                                                    path.name if one else "latest", mesh=mesh)
    meta = {"model": src_config.model.to_dict(), "step": step}
  kept = [layer for layer in fresh if layer not in reset]
  _check_layers(source, fresh, loaded, kept)
  _note_differences(source, meta["model"], config.model.to_dict(), log)
  params = {layer: jax.tree.map(lambda f, x: place(x, f.sharding), leaves, loaded[layer])
            if layer in kept else leaves for layer, leaves in fresh.items()}
  log(f"Initialised from {source} (step {meta.get('step')}): {', '.join(kept)}"
      + (f"; {', '.join(reset)} initialised afresh." if reset else "."))
  return params


def _check_layers(source, fresh, loaded, kept):
  missing = [layer for layer in kept if layer not in loaded]
  if missing:
    raise errors.ConfigError(
        f"config.init_from={source} has no {missing}: it holds {sorted(loaded)}.")
  for layer in kept:
    for leaf, value in fresh[layer].items():
      have = tuple(np.shape(loaded[layer].get(leaf)))
      if have != tuple(value.shape):
        raise errors.ConfigError(
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
  """A host array (every process holds all of it) or a device array, placed with `sharding`."""
  if isinstance(value, jax.Array) and value.sharding == sharding:
    return value
  value = np.asarray(value, np.float32)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
