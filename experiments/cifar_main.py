r"""`python -m alexnet_jax.main` for the CIFAR-10 nets, until parallel.py dispatches on
config.model.name itself.

The training loop builds the network through three functions of alexnet_jax/parallel.py:
param_shapes, create_sharded_params and make_apply (and train._describe prints its width). For config.model.name == "cifar4" they
must build alexnet_jax/cifar_model.CifarNet instead of the two-tower AlexNet; the versions
below do exactly that and are what parallel.py needs (then delete this file and point the CIFAR
sweeps in experiments/sweeps.py back at alexnet_jax.main). The CIFAR nets have no towers: the
configs set mesh.model=1, so P("model") on a parameter is a replication, and the batch is split
over `data` by jit alone (no shard_map).
"""
import functools
import sys

import jax

from alexnet_jax import cifar_model
from alexnet_jax import parallel

_ALEXNET = {"param_shapes": parallel.param_shapes,
            "create_sharded_params": parallel.create_sharded_params,
            "make_apply": parallel.make_apply}


def _is_cifar(model_cfg):
  return model_cfg.get("name", "alexnet") == cifar_model.NAME


def _check_mesh(mesh):
  if mesh.shape["model"] != 1:
    raise ValueError(f"config.mesh.model={mesh.shape['model']}: the CIFAR nets have no towers; "
                     "set config.mesh.model=1.")


def param_shapes(model_cfg):
  if not _is_cifar(model_cfg):
    return _ALEXNET["param_shapes"](model_cfg)
  return jax.eval_shape(functools.partial(cifar_model.init_params, model_cfg), jax.random.key(0))


def create_sharded_params(model_cfg, mesh, rng):
  if not _is_cifar(model_cfg):
    return _ALEXNET["create_sharded_params"](model_cfg, mesh, rng)
  _check_mesh(mesh)
  init = functools.partial(cifar_model.init_params, model_cfg)
  shardings = parallel.param_shardings(mesh, jax.eval_shape(init, rng))
  return jax.jit(init, out_shardings=shardings)(rng)


def make_apply(model_cfg, mesh):
  if not _is_cifar(model_cfg):
    return _ALEXNET["make_apply"](model_cfg, mesh)
  _check_mesh(mesh)
  cifar_model.check_config(model_cfg)

  def apply(params, images_BHWC, rng, train: bool):
    del rng, train  # No dropout in the CIFAR nets.
    return cifar_model.apply(model_cfg, params, images_BHWC)

  return apply


def describe(config, mesh, info, per_epoch, total, params):
  """train._describe's opening line names AlexNet and its width; the rest is the same."""
  if not _is_cifar(config.model):
    return _ALEXNET["describe"](config, mesh, info, per_epoch, total, params)
  m = config.model
  lines = _ALEXNET["describe"](_with_width(config), mesh, info, per_epoch, total,
                               params).split("\n")
  lines[0] = (f"CIFAR net {m.layout} ({m.activation}, LRN {'on' if m.lrn else 'off'}): "
              f"{cifar_model.count_params(params):,} parameters, {m.num_classes} classes, "
              f"{m.image_size}x{m.image_size} inputs.")
  return "\n".join(lines)


def _with_width(config):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.width = 1.0
  return config


def install():
  """Routes the four functions through the versions above, unless parallel.py already knows
  the CIFAR nets."""
  if "cifar_model" in vars(parallel):
    return
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  _ALEXNET["describe"] = train._describe  # pylint: disable=protected-access
  train._describe = describe  # pylint: disable=protected-access
  parallel.param_shapes = param_shapes
  parallel.create_sharded_params = create_sharded_params
  parallel.make_apply = make_apply


if __name__ == "__main__":
  install()
  from absl import app  # pylint: disable=g-import-not-at-top
  from alexnet_jax import main as alexnet_main  # pylint: disable=g-import-not-at-top
  app.run(alexnet_main.main, argv=sys.argv)
