"""Where arrays live, the only package that knows devices (3.2): `make_mesh`, `layout` (towers,
or hybrid.py's), the PartitionSpecs, `shard_net`, `data_slice`, `prefetch_to_device`;
docs/design.md, "Layouts"."""
import collections
import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import errors
from alexnet_jax import nets
from alexnet_jax.parallel import hybrid

# A towered network's leaves split by their first axis over `model`; others stay whole.
TOWER_SPEC = P("model")
REPLICATED_SPEC = P()
BATCH_SPEC = P("data")


def make_mesh(model=0, devices=None) -> Mesh:
  """A (data, model) mesh. `model`: the model axis, or a config (its config.mesh.model, where
  "auto" (0) gives a network without towers 1); 0 picks 2 when the device count is even, else 1."""
  if not isinstance(model, int):
    model = nets.model_axis(model)
  devices = _by_process(jax.devices() if devices is None else devices)
  n = len(devices)
  if model == 0:  # 2 only when every host can hold whole model groups (see _by_process).
    counts = collections.Counter(d.process_index for d in devices).values()
    model = 2 if n >= 2 and all(c % 2 == 0 for c in counts) else 1
  if model not in (1, 2):
    raise errors.ConfigError(
        f"config.mesh.model={model}: the network has two towers, so the model axis"
        " is 1 (both towers on each device), 2 (one tower per device) or 0 (auto).")
  if n % model:
    raise errors.ConfigError(f"config.mesh.model={model} does not divide the {n} devices; use"
                             " config.mesh.model=1 or run on an even number of devices.")
  # A model group's devices are neighbours: on one host when the hosts' counts allow it.
  mesh = Mesh(np.array(devices).reshape(n // model, model), ("data", "model"))
  _data_blocks(_process_grid(mesh), model)  # Raises if processes cannot feed whole rows.
  return mesh


def param_spec(towered: bool) -> P:
  return TOWER_SPEC if towered else REPLICATED_SPEC


def param_shardings(mesh: Mesh, params, towered=True):
  """The sharding of every leaf of `params` (arrays or shapes): split over `model` by tower."""
  return jax.tree.map(lambda _: NamedSharding(mesh, param_spec(towered)), params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def create_sharded_params(init_fn, mesh: Mesh, rng, towered=True):
  """`init_fn(rng)`'s global parameters, created directly into their shards."""
  shardings = param_shardings(mesh, jax.eval_shape(init_fn, rng), towered)
  return jax.jit(init_fn, out_shardings=shardings)(rng)


def shard_net(net, mesh: Mesh, towered=True):
  """apply(params, images_BHWC, rng, train, micro, moments) -> global logits_BK (with
  `moments`: and {layer: (mean, var)}), each device running `net` on its towers and rows."""

  def apply(params, images_BHWC, rng, train: bool, micro=None, moments=False):
    data = mesh.shape["data"]
    if images_BHWC.shape[0] % data:
      raise errors.ConfigError(
          f"The global batch ({images_BHWC.shape[0]}) must divide over the {data}"
          " devices of the mesh's data axis (config.train.batch_size).")
    if rng is None:
      if train:
        raise ValueError("apply(..., train=True) needs an rng: it draws the dropout masks.")
      rng = jax.random.key(0)  # Unused: without training there is no dropout.

    def local(params, images_BHWC, rng, index):
      extra = {} if micro is None else {"micro": (index, micro[1])}
      if not moments:
        return net.apply({"params": params}, images_BHWC, train=train, rng=rng, **extra)
      logits, state = net.apply({"params": params}, images_BHWC, train=train, rng=rng,
                                mutable=["batch_stats"], **extra)
      return logits, {layer: sown["moments"]
                      for layer, sown in state.get("batch_stats", {}).items()}

    stats_spec = param_spec(towered)  # Averaged over `data`, split by tower like the params.
    sharded = jax.shard_map(local, mesh=mesh,
                            out_specs=(BATCH_SPEC, stats_spec) if moments else BATCH_SPEC,
                            in_specs=(jax.tree.map(lambda _: param_spec(towered), params),
                                      BATCH_SPEC, P(), P()))
    return sharded(params, images_BHWC, rng, 0 if micro is None else micro[0])

  return apply


def shard_maps(net, mesh: Mesh, map_ranks, towered=True):
  """maps(params, images_BHWC) -> {name: global map} of the recorded maps `map_ranks` names
  ({name: rank}), both towers' channels last, tower 0's first; inference mode."""
  channel = "model" if towered else None

  def maps(params, images_BHWC):
    def local(params, images_BHWC):
      _, state = net.apply({"params": params}, images_BHWC, train=False,
                           mutable=["intermediates"])
      recorded = state["intermediates"]["maps"][0]
      return {name: recorded[name] for name in map_ranks}

    out_specs = {name: P("data", *([None] * (rank - 2)), channel)
                 for name, rank in map_ranks.items()}
    sharded = jax.shard_map(local, mesh=mesh, out_specs=out_specs,
                            in_specs=(jax.tree.map(lambda _: param_spec(towered), params),
                                      BATCH_SPEC))
    return sharded(params, images_BHWC)

  return maps


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where one run's arrays live (config.mesh.layout on a mesh), decided once: the parameters'
  shardings, the apply function, the row blocks of the batch that the devices hold."""
  name: str
  mesh: Mesh
  param_shardings: Any        # The global parameters' NamedShardings.
  apply: Callable             # apply(params, images_BHWC, rng, train, micro, moments).
  row_blocks: int             # Micro-batches take a part of each block (steps.to_micro).
  towered: bool


def layout(config, mesh: Mesh) -> Layout:
  """config.mesh.layout on `mesh`: "towers" (shard_net) or "hybrid" (parallel/hybrid.py)."""
  shapes = nets.abstract_params(config.model)
  if hybrid.layout_name(config) == "hybrid":
    return Layout("hybrid", mesh, hybrid.param_shardings(mesh, shapes),
                  hybrid.shard_net(config.model, mesh, config.impl), mesh.size, True)
  towered = nets.towers(config.model) > 1
  net = nets.make_module(config.model, mesh.shape["model"], impl=config.impl)
  return Layout("towers", mesh, param_shardings(mesh, shapes, towered),
                shard_net(net, mesh, towered), mesh.shape["data"], towered)


def to_global(mesh: Mesh, local, slice_count=1):
  """This process's data slice of a batch -> global arrays over `data`, copied asynchronously."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), (x.shape[0] * slice_count,) + x.shape[1:]), local)


def prefetch_to_device(host_batches, mesh: Mesh, slice_count, size, on_wait=None):
  """The host's batches on the devices, `size` ahead of the one handed out; `on_wait(seconds)`
  hears how long each host batch took."""
  queue = collections.deque()
  while True:
    while len(queue) < size:
      t = time.perf_counter()
      batch = next(host_batches)
      if on_wait:
        on_wait(time.perf_counter() - t)
      queue.append(to_global(mesh, batch, slice_count))
    yield queue.popleft()


def place_replicated(mesh: Mesh, tree):
  """NumPy constants (the mean image, the PCA basis) copied whole to every device once."""
  return jax.device_put(tree, replicated(mesh))


def data_slice(mesh: Mesh, process_index=None):
  """(index, count): the slice of the global batch this process feeds, `count` the distinct
  row blocks (processes holding the same rows feed the same examples), not the processes."""
  process = jax.process_index() if process_index is None else process_index
  blocks, owner = _data_blocks(_process_grid(mesh), mesh.shape["model"])
  return blocks.index(owner[process]), len(blocks)


def _by_process(devices):
  """`devices` grouped by host (stable: each host's own order is kept)."""
  return sorted(devices, key=lambda d: d.process_index)


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
    raise errors.ConfigError(
        f"The devices of {len(owner)} processes ({per_host}) do not fit a mesh with "
        f"config.mesh.model={model}: each process must hold whole model groups (a device count "
        f"divisible by {model}) or a single device, and all processes the same number of "
        "devices. Use config.mesh.model=1, or equal, even device counts per process.")
  return blocks, owner
