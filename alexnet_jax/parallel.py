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

from alexnet_jax import model

# Every parameter leaf has the tower axis first; it is split over `model` and replicated over
# `data`. Written out, not inferred: there is nothing else to shard.
PARAM_SPEC = P("model")
BATCH_SPEC = P("data")


def make_mesh(model: int = 0, devices=None) -> Mesh:
  """A (data, model) mesh; model=0 picks 2 when the device count is even, else 1."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if model == 0:
    model = 2 if n >= 2 and n % 2 == 0 else 1
  if model not in (1, 2):
    raise ValueError(f"config.mesh.model={model}: the network has two towers, so the model axis"
                     " is 1 (both towers on each device), 2 (one tower per device) or 0 (auto).")
  if n % model:
    raise ValueError(f"config.mesh.model={model} does not divide the {n} devices; use"
                     " config.mesh.model=1 or run on an even number of devices.")
  # Devices of one model group are neighbours in jax.devices(), i.e. on the same host.
  return Mesh(np.array(devices).reshape(n // model, model), ("data", "model"))


def param_shardings(mesh: Mesh, params):
  """NamedSharding(P("model")) for every leaf of `params` (arrays or shapes)."""
  return jax.tree.map(lambda _: NamedSharding(mesh, PARAM_SPEC), params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shapes(model_cfg):
  """Global parameter shapes and dtypes, without computing anything."""
  return jax.eval_shape(functools.partial(model.init_params, model_cfg), jax.random.key(0))


def create_sharded_params(model_cfg, mesh: Mesh, rng):
  """Parameters initialised directly into their shards (STYLE.md habit 4)."""
  init = functools.partial(model.init_params, model_cfg)
  shardings = param_shardings(mesh, jax.eval_shape(init, rng))
  return jax.jit(init, out_shardings=shardings)(rng)


def make_apply(model_cfg, mesh: Mesh):
  """Returns apply(params, images_BHWC, rng, train) -> logits_BK, sharded over `data`.

  `images_BHWC` and the logits hold the global batch; `params` are the global parameters
  (sharded by param_shardings). `rng` (a typed key) is used for dropout when `train` is True and
  may be None otherwise. Call it inside jit.
  """
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
