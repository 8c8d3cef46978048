"""The networks, and which one `config.model.name` means, decided here alone: "alexnet" or
"owt" (nets/alexnet.py), "cifar4" (nets/cifar.py); `check_config`, `init_params`, `make_module`."""
import functools

import jax
import ml_collections

from alexnet_jax import errors
from alexnet_jax.nets import alexnet
from alexnet_jax.nets import cifar
from alexnet_jax.nets import layers

NAMES = ("alexnet", alexnet.OWT, cifar.NAME)


def _is_cifar(model_cfg):
  name = model_cfg.name
  if name not in NAMES:
    raise errors.ConfigError(f"config.model.name={name!r}: choose one of {NAMES}.")
  return name == cifar.NAME


def check_config(model_cfg):
  """Refuses settings the chosen network cannot take, naming the field."""
  (cifar if _is_cifar(model_cfg) else alexnet).check_config(model_cfg)


def init_params(model_cfg, rng):
  """The network's initial global parameters, as its paper or layers file says."""
  return (cifar if _is_cifar(model_cfg) else alexnet).init_params(model_cfg, rng)


def abstract_params(model_cfg):
  """Global parameter shapes and dtypes, without computing anything."""
  return jax.eval_shape(functools.partial(init_params, model_cfg), jax.random.key(0))


def towers(model_cfg) -> int:
  """How many towers the network splits into (section 3.2); the CIFAR nets have none (1)."""
  return 1 if _is_cifar(model_cfg) else alexnet.towers_of(model_cfg)


def model_axis(config) -> int:
  """The mesh's model axis that `config` asks for: config.mesh.model, where "auto" (0) gives 1
  for a network without towers (parallel.make_mesh picks 2 or 1 for AlexNet)."""
  if config.mesh.model == 0 and towers(config.model) == 1:
    return 1
  return config.mesh.model


def make_module(model_cfg, model_axis_size=1, model_axis="model", data_axis="data", impl=None):
  """The Flax module one device runs: towers(cfg) / model_axis_size towers, the others reached
  over `model_axis`, computed as `impl` (config.impl) says; its __call__(images_BHWC, train, rng)
  gives its data shard's logits."""
  check_config(model_cfg)
  total = towers(model_cfg)
  if total % model_axis_size:
    raise errors.ConfigError(f"config.mesh.model={model_axis_size}: {display_name(model_cfg)} has "
                             f"{total} tower(s), so the model axis must divide it; set "
                             "config.mesh.model=1.")
  frozen, impl = ml_collections.FrozenConfigDict(model_cfg), layers.impl_config(impl)
  if _is_cifar(model_cfg):
    return cifar.CifarNet(frozen, impl)
  return alexnet.AlexNet(frozen, impl, towers=total // model_axis_size, model_axis=model_axis,
                         data_axis=data_axis)


def display_name(model_cfg) -> str:
  if _is_cifar(model_cfg):
    return f"{model_cfg.name} ({model_cfg.layout})"
  if model_cfg.name == alexnet.OWT:
    return f"AlexNet of 2014, one column (width {model_cfg.width})"
  return f"AlexNet (width {model_cfg.width})"


def count_params(params) -> int:
  """The parameters, not batch normalisation's running averages (layers.RUNNING)."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(int(x.size) for path, x in leaves if getattr(path[-1], "key", None)
             not in layers.RUNNING)
