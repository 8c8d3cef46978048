"""The ("data", "model") mesh, the PartitionSpecs and the shard_map wrapper (section 3.2).

The only module that knows devices. With model=2 each device holds one tower (its half of every
layer, as each GTX 580 did) and the batch splits over `data`; with model=1 each device holds both
towers and the batch splits over all devices. The code path is the same: model.AlexNet computes
the towers it is given and exchanges maps through `all_gather` over `model`.
"""
import functools

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import cifar_model
from alexnet_jax import model

# Every parameter leaf has the tower axis first; it is split over `model` and replicated over
# `data`. Written out, not inferred: there is nothing else to shard.
PARAM_SPEC = P("model")
BATCH_SPEC = P("data")


def make_mesh(model: int = 0, devices=None) -> Mesh:
  """A (data, model) mesh; model=0 picks 2 when the device count is even, else 1."""
  devices = _by_process(jax.devices() if devices is None else devices)
  n = len(devices)
  if model == 0:  # 2 only when every host can hold whole model groups (see _by_process).
    model = 2 if n >= 2 and all(c % 2 == 0 for c in _local_counts(devices).values()) else 1
  if model not in (1, 2):
    raise ValueError(f"config.mesh.model={model}: the network has two towers, so the model axis"
                     " is 1 (both towers on each device), 2 (one tower per device) or 0 (auto).")
  if n % model:
    raise ValueError(f"config.mesh.model={model} does not divide the {n} devices; use"
                     " config.mesh.model=1 or run on an even number of devices.")
  # Devices of one model group are neighbours in `devices`, i.e. on the same host when the
  # hosts' device counts allow it.
  mesh = Mesh(np.array(devices).reshape(n // model, model), ("data", "model"))
  _data_blocks(_process_grid(mesh), model)  # Raises if processes cannot feed whole rows.
  return mesh


def param_shardings(mesh: Mesh, params):
  """NamedSharding(P("model")) for every leaf of `params` (arrays or shapes)."""
  return jax.tree.map(lambda _: NamedSharding(mesh, PARAM_SPEC), params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _is_cifar(model_cfg):
  """config.model.name "cifar4": cuda-convnet's small CIFAR-10 nets (experiments/)."""
  return model_cfg.get("name", "alexnet") == cifar_model.NAME


def _init_fn(model_cfg):
  init = cifar_model.init_params if _is_cifar(model_cfg) else model.init_params
  return functools.partial(init, model_cfg)


def param_shapes(model_cfg):
  """Global parameter shapes and dtypes, without computing anything."""
  return jax.eval_shape(_init_fn(model_cfg), jax.random.key(0))


def create_sharded_params(model_cfg, mesh: Mesh, rng):
  """Parameters initialised directly into their shards (STYLE.md habit 4)."""
  if _is_cifar(model_cfg):
    _check_no_towers(mesh)
  init = _init_fn(model_cfg)
  shardings = param_shardings(mesh, jax.eval_shape(init, rng))
  return jax.jit(init, out_shardings=shardings)(rng)


def _check_no_towers(mesh):
  if mesh.shape["model"] != 1:
    raise ValueError(f"config.mesh.model={mesh.shape['model']}: the CIFAR nets have no towers;"
                     " set config.mesh.model=1.")


def _make_cifar_apply(model_cfg, mesh):
  """The CIFAR nets run data-parallel only: with model=1, P("model") replicates their
  parameters and jit splits the batch over `data`."""
  _check_no_towers(mesh)
  cifar_model.check_config(model_cfg)

  def apply(params, images_BHWC, rng, train: bool):
    del rng, train  # No dropout in the CIFAR nets.
    return cifar_model.apply(model_cfg, params, images_BHWC)

  return apply


def make_apply(model_cfg, mesh: Mesh):
  """Returns apply(params, images_BHWC, rng, train) -> logits_BK, sharded over `data`.

  `images_BHWC` and the logits hold the global batch; `params` are the global parameters
  (sharded by param_shardings). `rng` (a typed key) is used for dropout when `train` is True and
  may be None otherwise. Call it inside jit.
  """
  if _is_cifar(model_cfg):
    return _make_cifar_apply(model_cfg, mesh)
  towers = model.NUM_TOWERS // mesh.shape["model"]
  net = model.AlexNet(ml_collections.FrozenConfigDict(model_cfg), towers=towers)

  def apply(params, images_BHWC, rng, train: bool):
    data = mesh.shape["data"]
    if images_BHWC.shape[0] % data:
      raise ValueError(f"The global batch ({images_BHWC.shape[0]}) must divide over the {data}"
                       " devices of the mesh's data axis (config.train.batch_size).")
    if rng is None:
      if train and model_cfg.dropout_rate > 0:
        raise ValueError("apply(..., train=True) with dropout needs an rng.")
      rng = jax.random.key(0)  # Unused.

    def local(params, images_BHWC, rng):
      return net.apply({"params": params}, images_BHWC, train=train, rng=rng)

    sharded = jax.shard_map(local, mesh=mesh, out_specs=BATCH_SPEC,
                            in_specs=(jax.tree.map(lambda _: PARAM_SPEC, params), BATCH_SPEC, P()))
    return sharded(params, images_BHWC, rng)

  return apply


# ---------------------------------------------------------------------------------------------
# Several processes (issue 5): which rows of the global batch each process feeds.


def data_slice(mesh: Mesh, process_index=None):
  """(index, count): this process feeds slice `index` of the global batch cut in `count`.

  Under BATCH_SPEC the batch splits over `data` only, so processes whose devices sit in the
  same data rows (e.g. the two towers on two hosts, model=2 with one device per host) hold the
  same rows and must feed the same examples: `count` is the number of distinct row blocks,
  not jax.process_count(). Pass it to the input pipeline as slice_index/slice_count.
  """
  process = jax.process_index() if process_index is None else process_index
  blocks, owner = _data_blocks(_process_grid(mesh), mesh.shape["model"])
  return blocks.index(owner[process]), len(blocks)


def _by_process(devices):
  """`devices` grouped by host (stable: each host's own order is kept)."""
  return sorted(devices, key=lambda d: d.process_index)


def _local_counts(devices):
  counts = {}
  for d in devices:
    counts[d.process_index] = counts.get(d.process_index, 0) + 1
  return counts


def _process_grid(mesh: Mesh):
  """int [data, model]: the process owning each device of the mesh."""
  return np.vectorize(lambda d: d.process_index, otypes=[int])(mesh.devices)


def _data_blocks(process_DM, model):
  """(sorted row blocks, {process: its block}); raises when the processes' devices do not
  cover whole, contiguous, equal, non-overlapping blocks of data rows."""
  owner = {int(p): tuple(sorted(set(np.nonzero(process_DM == p)[0].tolist())))
           for p in np.unique(process_DM)}
  blocks = sorted(set(owner.values()))
  rows = [r for b in blocks for r in b]
  if (rows != list(range(process_DM.shape[0])) or len({len(b) for b in blocks}) != 1
      or any(b != tuple(range(b[0], b[-1] + 1)) for b in blocks)):
    per_host = ", ".join(f"process {p}: {int((process_DM == p).sum())}" for p in owner)
    raise ValueError(
        f"The devices of {len(owner)} processes ({per_host}) do not fit a mesh with "
        f"config.mesh.model={model}: each process must hold whole model groups (a device count "
        f"divisible by {model}) or a single device, and all processes the same number of "
        "devices. Use config.mesh.model=1, or equal, even device counts per process.")
  return blocks, owner
