r"""A split's layer maps as <layer>.npy [N, D], labels.npy, files.txt, for probes and retrieval;
a stopped run goes on (docs/after_training.md, "Features out"). --weights=FILE.npz needs the
dataset's --config.data.* fields:

    python -m alexnet_jax.tools.features --workdir=workdirs/demo --out=features/demo \
        [--layers=fc6,fc7] [--split=val] [--pool=flatten] [--config.eval.checkpoint=best]
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from alexnet_jax import errors
from alexnet_jax import nets
from alexnet_jax import parallel
from alexnet_jax import preprocess
from alexnet_jax import progress
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.data import sources
from alexnet_jax.tools import common

POOLS = ("flatten", "mean")


def map_ranks(model_cfg):
  """{name: rank with the batch axis} of every map the network records."""
  if model_cfg.name not in ("alexnet", "owt"):
    raise errors.ConfigError(
        f"config.model.name={model_cfg.name!r}: only AlexNet (2012 or 2014) records its layer "
        "maps; features, and figure 4, need an AlexNet run.")
  net = nets.make_module(model_cfg, 1, model_axis=None, data_axis=None)
  size = model_cfg.image_size
  _, state = jax.eval_shape(
      lambda p, x: net.apply({"params": p}, x, train=False, mutable=["intermediates"]),
      nets.abstract_params(model_cfg), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return {name: len(m.shape) for name, m in state["intermediates"]["maps"][0].items()}


def make_extract(config, mesh, layers, pool="flatten"):
  """extract(params, uint8 images [B, R, R, 3], consts) -> {layer: float32 [B, D]}, jitted:
  the centre crop as evaluation cuts it, then the named maps, each flattened or averaged."""
  ranks = map_ranks(config.model)
  unknown = [name for name in layers if name not in ranks]
  if unknown or pool not in POOLS:
    raise errors.ConfigError(
        f"Layers {unknown} / pool {pool!r}: choose layers among {sorted(ranks)} "
        f"and a pool among {POOLS}.")
  net = nets.make_module(config.model, mesh.shape["model"], impl=config.impl)
  maps = parallel.shard_maps(net, mesh, {name: ranks[name] for name in layers},
                                  towered=nets.towers(config.model) > 1)
  crop = config.model.image_size

  @jax.jit
  def extract(params, images, consts):
    out = maps(params, preprocess.eval_images(images, consts, crop, False))
    if pool == "mean":
      out = {k: v.mean(axis=(1, 2)) if v.ndim == 4 else v for k, v in out.items()}
    return {k: v.reshape(v.shape[0], -1).astype(jnp.float32) for k, v in out.items()}

  return extract


def write_split(out, *, config, params, step, mesh, consts, split_name, layers, pool,
                batch_size, limit=0):
  """Writes (or goes on writing) the module docstring's files; returns the number of rows."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  split = sources.open_checked_split(config, split_name)
  n = split.num_examples if not limit else min(limit, split.num_examples)
  extract = make_extract(config, mesh, layers, pool)
  size = config.data.resize_size
  dims = {k: v.shape[1] for k, v in jax.eval_shape(
      extract, params, jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.uint8),
      consts).items()}
  record = {"split": split_name, "step": int(step), "layers": list(layers), "pool": pool,
            "num_examples": n, "dims": dims}
  done = _resume_point(out, record)
  mode = "r+" if done else "w+"
  arrays = {k: np.lib.format.open_memmap(out / f"{k}.npy", mode, np.float32, (n, d))
            for k, d in dims.items()}
  arrays["labels"] = np.lib.format.open_memmap(out / "labels.npy", mode, np.int32, (n,))
  if not done:
    (out / "files.txt").write_text("\n".join(common.file_names(split)[:n]) + "\n")
  with progress.Progress(n, f"features of {split_name}", every_s=30.0) as bar:
    bar.update(done)
    for batch in common.image_batches(config, split, batch_size=batch_size, start=done, stop=n):
      rows = int(batch["mask"].sum())
      feats = jax.device_get(extract(params, parallel.to_global(mesh, batch["image"]), consts))
      for k, v in {**feats, "labels": batch["label"]}.items():
        arrays[k][done:done + rows] = v[:rows]
        arrays[k].flush()
      done += rows
      (out / "progress.json").write_text(json.dumps({**record, "done": done}) + "\n")
      bar.update(rows)
  return n


def _resume_point(out, record):
  """Rows already written by an earlier run with the same settings; 0 for a fresh folder."""
  path = out / "progress.json"
  if not path.exists():
    return 0
  stored = json.loads(path.read_text())
  done = stored.pop("done", 0)
  if stored != json.loads(json.dumps(record)):
    raise errors.ConfigError(
        f"{out} holds features written with other settings ({path}: {stored}); "
        "use another --out, or delete it to start again.")
  return done


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = common.config_from_flags()
  f = flags.FLAGS
  source = common.source()
  config, params, step = trained_run.load_run(source, config=config)
  mesh = parallel.make_mesh(config)
  split = f.split or sources.eval_split_name(config)
  n = write_split(f.out, config=config, params=params, step=step, mesh=mesh,
                  consts=parallel.place_replicated(mesh, trained_run.constants(source, config)),
                  split_name=split, layers=f.layers, pool=f.pool,
                  batch_size=config.eval.batch_size, limit=f.limit)
  print(f"Step {step}, split {split}: {n} images, layers {', '.join(f.layers)} -> {f.out}")


if __name__ == "__main__":
  from alexnet_jax.faults import logs
  common.define_flags()
  flags.adopt_module_key_flags(common)  # Listed by --help, as this command's own.
  flags.DEFINE_string("out", None, "Folder for the .npy files.", required=True)
  flags.DEFINE_list("layers", ["fc6", "fc7"], "Maps to write (conv1-5, norm1-2, pool1/2/5, "
                    "fc6, fc7).")
  flags.DEFINE_string("split", "", "Split to read; default: the run's evaluation split.")
  flags.DEFINE_enum("pool", "flatten", POOLS, "Conv maps: flattened, or averaged over space.")
  flags.DEFINE_integer("limit", 0, "Only the first N images of the split (0: all).")
  app.run(logs.one_line_errors(main, "tools.features"))
