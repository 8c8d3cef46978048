"""cuda-convnet's CIFAR-10 nets, with which figure 1 and section 3.3's LRN claim were measured:
`CifarNet`, layouts "18pct" (89,578 parameters) and "conv_local" (1,116,490), no towers;
docs/design.md, "The network"."""
import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from alexnet_jax import errors
from alexnet_jax.configs import common
from alexnet_jax.nets import layers

# The configs name these without importing JAX, so they are written there once.
NAME = common.CIFAR_MODEL_NAME
INPUT_SIZE = common.CIFAR_INPUT_SIZE
LAYOUTS = tuple(INPUT_SIZE)


def pooled_size(size, window=3, stride=2):
  """cuda-convnet's pool output size with outputsX=0: the last window may hang over the edge."""
  return max(1, math.ceil((size - window) / stride) + 1)


def pool(x_BHWC, kind, window=3, stride=2):
  """Max (layers.max_pool over -inf padding) or average pooling; windows past the border
  count only the pixels inside the image."""
  size = x_BHWC.shape[1]
  over = (pooled_size(size, window, stride) - 1) * stride + window - size
  pad = ((0, 0), (0, over), (0, over), (0, 0))
  if kind == "max":
    return layers.max_pool(jnp.pad(x_BHWC, pad, constant_values=-jnp.inf), window, stride)
  total = lax.reduce_window(x_BHWC, 0.0, lax.add, (1, window, window, 1),
                            (1, stride, stride, 1), pad)
  inside = np.pad(np.ones((size, size), np.float32), ((0, over), (0, over)))
  count = np.lib.stride_tricks.sliding_window_view(inside, (window, window))[::stride, ::stride]
  return total / count.sum(axis=(2, 3))[None, :, :, None].astype(x_BHWC.dtype)


def patches(x_BHWC, k, p):
  """[B, H', W', C * k * k], lax.conv_general_dilated_patches' order, as k * k slices: the
  patches op's grouped convolution has a slow gradient on CPU."""
  b, h, w, c = x_BHWC.shape
  x = jnp.pad(x_BHWC, ((0, 0), (p, p), (p, p), (0, 0)))
  out_h, out_w = h + 2 * p - k + 1, w + 2 * p - k + 1
  parts = [x[:, i:i + out_h, j:j + out_w, :] for i in range(k) for j in range(k)]
  return jnp.stack(parts, axis=-1).reshape(b, out_h, out_w, c * k * k)


class LocallyConnected(nn.Module):
  """cuda-convnet's `local` layer: a convolution whose filters (and biases) differ per output
  position. Kernel [H, W, C*k*k, F]."""
  features: int
  kernel_size: int
  padding: int
  weight_std: float

  @nn.compact
  def __call__(self, x_BHWC):
    patches_BHWP = patches(x_BHWC, self.kernel_size, self.padding)
    _, h, w, c = patches_BHWP.shape
    kernel = self.param("kernel", nn.initializers.normal(self.weight_std), (h, w, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (h, w, self.features))
    return jnp.einsum("bhwp,hwpf->bhwf", patches_BHWP, kernel) + bias[None]


class CifarNet(nn.Module):
  """`config` is `config.model` (name "cifar4"), `impl` config.impl (its defaults if None);
  returns logits [B, num_classes]."""
  config: ml_collections.FrozenConfigDict
  impl: Any = None

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False, rng=None):
    del train, rng  # No dropout: the same signature as alexnet.AlexNet for the training loop.
    cfg = self.config
    if x_BHWC.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise ValueError(f"Images of shape {x_BHWC.shape[1:]} do not match config.model.image_size="
                       f"{cfg.image_size}.")
    act = layers.ACTIVATIONS[cfg.activation]
    x = x_BHWC.astype(jnp.dtype(cfg.dtype))
    if cfg.layout == "18pct":
      x = self._norm(pool(act(self._conv("conv1", x, 32, 1e-4)), "max"))
      x = self._norm(pool(act(self._conv("conv2", x, 32, 0.01)), "avg"))
      x = pool(act(self._conv("conv3", x, 64, 0.01)), "avg")
    else:
      x = pool(self._norm(act(self._conv("conv1", x, 64, 1e-4))), "max")
      x = pool(self._norm(act(self._conv("conv2", x, 64, 0.01))), "max")
      x = act(LocallyConnected(32, 3, 1, 0.04, name="local3")(x))
      x = act(LocallyConnected(32, 3, 1, 0.04, name="local4")(x))
    x = x.reshape(x.shape[0], -1)
    logits_BK = nn.Dense(cfg.num_classes, kernel_init=nn.initializers.normal(0.01),
                         name="fc10", **self._compute("dot_general", lax.dot_general))(x)
    return logits_BK.astype(jnp.float32)

  def _compute(self, name, op):
    """Flax's keywords for config.model.dtype's products (`op`, Flax's `name`), as
    layers.product_type; none for float32."""
    dtype = jnp.dtype(self.config.dtype)
    if dtype == jnp.float32:
      return {}
    if layers.impl_config(self.impl).product_output == "compute":
      return {"dtype": dtype}
    return {"dtype": dtype, name: functools.partial(op, preferred_element_type=jnp.float32)}

  def _conv(self, name, x, features, std):
    compute = self._compute("conv_general_dilated", lax.conv_general_dilated)
    return nn.Conv(features, (5, 5), padding=((2, 2), (2, 2)), name=name,
                   kernel_init=nn.initializers.normal(std), **compute)(x)

  def _norm(self, x):
    cfg = self.config
    if cfg.norm != "lrn":
      return x
    return layers.lrn(x, k=cfg.lrn_k, n=cfg.lrn_n, alpha=cfg.lrn_alpha, beta=cfg.lrn_beta,
                       convention=cfg.lrn_convention)


def check_config(model_cfg):
  """Clear errors for settings the CIFAR nets do not have."""
  if model_cfg.layout not in LAYOUTS:
    raise errors.ConfigError(f"config.model.layout={model_cfg.layout!r}: choose one of {LAYOUTS}.")
  if model_cfg.activation not in layers.ACTIVATIONS:
    raise errors.ConfigError(f"config.model.activation={model_cfg.activation!r}: use one of "
                             f"{sorted(layers.ACTIVATIONS)}.")
  if model_cfg.dropout_rate:
    raise errors.ConfigError(
        "config.model.dropout_rate must be 0 for the CIFAR nets (cuda-convnet's "
        "layer files have no dropout).")
  if model_cfg.norm not in ("lrn", "none"):
    raise errors.ConfigError(
        f"config.model.norm={model_cfg.norm!r}: the CIFAR nets have 'lrn' or "
        "'none' (batch normalisation is built for AlexNet, config.model.name).")
  expected = INPUT_SIZE[model_cfg.layout]
  if model_cfg.image_size != expected:
    raise errors.ConfigError(f"config.model.image_size={model_cfg.image_size}: layout "
                             f"{model_cfg.layout!r} takes {expected}x{expected} images.")


def init_params(model_cfg, rng):
  """Parameters initialised as the layers file says (normal(initW), biases 0)."""
  check_config(model_cfg)
  net = CifarNet(ml_collections.FrozenConfigDict(model_cfg))
  x = jnp.zeros((1, model_cfg.image_size, model_cfg.image_size, 3), jnp.float32)
  return net.init(rng, x)["params"]


def logits(model_cfg, params, images_BHWC):
  """Logits for a batch; under jit with the batch sharded over `data` XLA splits the work."""
  return CifarNet(ml_collections.FrozenConfigDict(model_cfg)).apply({"params": params},
                                                                     images_BHWC)
