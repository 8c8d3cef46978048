"""Figure 2's network, written per tower (sections 3, 3.2), and the 2014 one's column ("owt"):
`AlexNet`, the one forward pass every layout runs through its exchange (`Towers` here),
`init_params` (section 5), `check_config`; docs/design.md, "The network"."""
import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from alexnet_jax import errors
from alexnet_jax.nets import layers

# Figure 2's widths per tower at width 1.0.
TOWER_CHANNELS = {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 128,
                  "fc6": 2048, "fc7": 2048}
NUM_TOWERS = 2
# "owt": Krizhevsky 2014's one column (torchvision's alexnet), docs/design.md.
OWT_CHANNELS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256,
                "fc6": 4096, "fc7": 4096}
OWT = "owt"
OWT_POOL = 6
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# Section 5: these layers' biases start at config.model.bias_init (1 in the paper), others at 0.
BIASED_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")
INITS = ("paper", "he")
DROPOUT_SCALINGS = ("paper", "inverted")


def towers_of(model_cfg) -> int:
  return 1 if model_cfg.name == OWT else NUM_TOWERS


def tower_widths(model_cfg) -> dict[str, int]:
  """Channels (or units) per tower of each hidden layer, scaled by `model_cfg.width`."""
  if model_cfg.width <= 0:
    raise errors.ConfigError(
        f"config.model.width={model_cfg.width} must be positive (1.0 is the paper).")
  channels = OWT_CHANNELS if model_cfg.name == OWT else TOWER_CHANNELS
  return {name: max(1, round(c * model_cfg.width)) for name, c in channels.items()}


def conv1_padding(model_cfg):
  """((top, bottom), (left, right)): the 2014 network's 2 on every side, the 2012 one's
  overhang below and right."""
  if model_cfg.name == OWT:
    return ((2, 2), (2, 2))
  o = conv1_overhang(model_cfg.image_size)
  return ((0, o), (0, o))


def conv1_overhang(image_size) -> int:
  """Zero rows and columns below and right of the image for conv1: cuda-convnet sizes its
  output 1 + ceil((size - 11) / 4), 55 at 224, overhanging by 3; 227 tiles exactly."""
  out = 1 + -(-(image_size - 11) // 4)
  return (out - 1) * 4 + 11 - image_size


def feature_map_sizes(model_cfg) -> dict[str, int]:
  """Spatial size after each layer, conv1 sized as cuda-convnet sizes it (conv1_overhang)."""
  size = model_cfg.image_size
  if size < 11:
    raise errors.ConfigError(
        f"config.model.image_size={size}: conv1's 11x11 filters need at least 11 "
        "pixels (224, the paper's, or 227, Caffe's).")
  pool = lambda s: layers.pooled(s, model_cfg.pool_window, model_cfg.pool_stride)
  sizes = {"conv1": (size + sum(conv1_padding(model_cfg)[0]) - 11) // 4 + 1}
  sizes["pool1"] = pool(sizes["conv1"])
  sizes["conv2"] = sizes["pool1"]
  sizes["pool2"] = pool(sizes["conv2"])
  sizes["conv3"] = sizes["conv4"] = sizes["conv5"] = sizes["pool2"]
  sizes["pool5"] = pool(sizes["conv5"])
  if sizes["pool5"] < 1:
    raise errors.ConfigError(
        f"config.model.image_size={size} is too small: nothing is left after pool5.")
  sizes["fc6_in"] = OWT_POOL if model_cfg.name == OWT else sizes["pool5"]
  return sizes


def check_config(model_cfg):
  """Refuses, once and before anything is built, the settings the network cannot take."""
  if model_cfg.num_classes % towers_of(model_cfg):
    raise errors.ConfigError(
        f"config.model.num_classes={model_cfg.num_classes} must be even: each tower"
        " owns half of fc8's outputs (section 3.2). Pad the label set by one class.")
  for field, allowed in (("activation", tuple(layers.ACTIVATIONS)), ("norm", layers.NORMS),
                         ("lrn_convention", layers.LRN_CONVENTIONS), ("init", INITS),
                         ("dropout_scaling", DROPOUT_SCALINGS)):
    if model_cfg[field] not in allowed:
      raise errors.ConfigError(f"config.model.{field}={model_cfg[field]!r}: use one of {allowed}.")
  if not 0.0 <= model_cfg.dropout_rate < 1.0:
    raise errors.ConfigError(
        f"config.model.dropout_rate={model_cfg.dropout_rate}: a probability in "
        "[0, 1) (0.5 in the paper, 0 for no dropout).")
  for layer, std in model_cfg.layer_weight_std.items():
    if layer not in LAYERS or std < 0:
      raise errors.ConfigError(
          f"config.model.layer_weight_std.{layer}={std}: a standard deviation >= 0 "
          f"of one of {LAYERS} (0: config.model.weight_std).")
  tower_widths(model_cfg)
  feature_map_sizes(model_cfg)


def param_shapes(model_cfg):
  """{layer: (kernel shape, bias shape)} of the global parameters, tower axis first."""
  w, t = tower_widths(model_cfg), towers_of(model_cfg)
  pool5 = feature_map_sizes(model_cfg)["fc6_in"]
  fan_in = {"conv1": (11, 11, 3), "conv2": (5, 5, w["conv1"]), "conv3": (3, 3, t * w["conv2"]),
            "conv4": (3, 3, w["conv3"]), "conv5": (3, 3, w["conv4"]),
            "fc6": (t * w["conv5"] * pool5 * pool5,), "fc7": (t * w["fc6"],),
            "fc8": (t * w["fc7"],)}
  outputs = dict(w, fc8=model_cfg.num_classes // t)
  return {name: ((t, *fan_in[name], outputs[name]), (t, outputs[name])) for name in LAYERS}


def bias_value(model_cfg, layer):
  """Section 5: the biases of BIASED_LAYERS start at config.model.bias_init, the others at 0."""
  return model_cfg.bias_init if layer in BIASED_LAYERS else 0.0


# Shapes for Flax's checks only: the values come from init_params (AlexNet.init is refused).
_SHAPE_ONLY = nn.initializers.zeros


class TowerConv(nn.Module):
  """One convolution per local tower, kernel [towers, k, k, C_in, C_out]; `grouped` in one
  (config.impl.tower_conv), `in_channels` zero-padded, `batch_norm` sowing the moments."""
  features: int
  kernel_size: int
  stride: int = 1
  padding: Any = 0             # An int (all sides), or ((top, bottom), (left, right)).
  towers: int = NUM_TOWERS
  dtype: Any = jnp.float32
  product_output: str = "float32"  # AlexNet passes config.impl.product_output.
  grouped: bool = False
  shared_input: bool = False
  in_channels: int = 0
  batch_norm: bool = False
  stat_axes: tuple = ()        # Mesh axes that split the batch: the moments average over them.
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool = False) -> list[jax.Array]:
    k, c_in, shape = self.kernel_size, xs[0].shape[-1], (self.towers, self.features)
    kernel = self.param("kernel", _SHAPE_ONLY, (self.towers, k, k, c_in, self.features))
    bias = self.param("bias", _SHAPE_ONLY, shape)
    if self.in_channels > c_in:
      extra = ((0, 0),) * 3 + ((0, self.in_channels - c_in),)
      xs, kernel = [jnp.pad(x, extra) for x in xs], jnp.pad(kernel, extra + ((0, 0),))
    if not self.batch_norm:
      if self.grouped and self.towers > 1:
        return self._grouped(xs, kernel, bias)
      return [layers.add_bias(self._conv(x, kernel[t]), bias[t], self.dtype)
              for t, x in enumerate(xs)]
    scale, mean, var = (self.param(name, _SHAPE_ONLY, shape) for name in ("scale", *layers.RUNNING))
    ys = (self._grouped(xs, kernel, None) if self.grouped and self.towers > 1 else
          [self._conv(x, kernel[t]) for t, x in enumerate(xs)])
    out = [layers.batch_norm(y, scale[t], bias[t], mean[t], var[t], train=train,
                             axes=self.stat_axes, epsilon=self.epsilon, dtype=self.dtype)
           for t, y in enumerate(ys)]
    if train:
      moments = tuple(jnp.stack(m) for m in zip(*(m for _, m in out)))
      self.sow("batch_stats", "moments", moments, reduce_fn=lambda _, new: new)
    return [y for y, _ in out]

  def _conv(self, x, kernel_HWIO, groups=1):
    pad = (((self.padding, self.padding),) * 2 if isinstance(self.padding, int)
           else self.padding)
    return lax.conv_general_dilated(x, kernel_HWIO.astype(self.dtype), (self.stride,) * 2, pad,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups,
                                    preferred_element_type=layers.product_type(
                                        self.product_output, self.dtype))

  def _grouped(self, xs, kernel, bias):
    """Tower t's outputs are channels [t F, (t + 1) F) of one convolution; split back."""
    t, f = self.towers, self.features
    kernel_HWIO = jnp.moveaxis(kernel, 0, 3).reshape(kernel.shape[1:4] + (t * f,))
    x, groups = (xs[0], 1) if self.shared_input else (jnp.concatenate(xs, axis=-1), t)
    y = self._conv(x, kernel_HWIO, groups)
    if bias is not None:
      y = layers.add_bias(y, bias.reshape(t * f), self.dtype)
    return [y[..., i * f:(i + 1) * f] for i in range(t)]


class TowerDense(nn.Module):
  """One fully connected layer per local tower; kernel [towers, F_in, F_out]."""
  features: int
  towers: int = NUM_TOWERS
  dtype: Any = jnp.float32
  product_output: str = "float32"

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
    kernel = self.param("kernel", _SHAPE_ONLY, (self.towers, xs[0].shape[-1], self.features))
    bias = self.param("bias", _SHAPE_ONLY, (self.towers, self.features))
    return [layers.add_bias(
        jnp.matmul(x, kernel[t].astype(self.dtype),
                   preferred_element_type=layers.product_type(self.product_output, self.dtype)),
        bias[t], self.dtype) for t, x in enumerate(xs)]


@dataclasses.dataclass(frozen=True)
class Towers:
  """The towers layout's exchange: `towers` of each layer's on this device, its rows over
  `data_axis`, both towers' maps gathered over `model_axis` (both None: one device)."""
  towers: int = NUM_TOWERS
  model_axis: str | None = "model"
  data_axis: str | None = "data"
  gathers_on_one: bool = True  # config.impl.model1_gathers: see gather.
  total: int = NUM_TOWERS      # The network's towers: 2, or 1 for the 2014 network.

  conv_towers = property(lambda self: self.towers)
  fc_towers = property(lambda self: self.towers)
  stat_axes = property(lambda self: (self.data_axis,) if self.data_axis else ())

  def fc_units(self, units):
    return units

  def merge(self, h):
    """conv3's input: both towers' maps, tower 0's channels first."""
    return self.gather(h)

  def fc_input(self, h):
    """fc6's input: both towers' pool5 maps, flattened (H, W, C)."""
    both = self.gather(h)
    return both.reshape(both.shape[0], -1)

  def units(self, h):
    """fc7's and fc8's input: every unit of both towers' layer below."""
    return self.gather(h)

  def fc8_input(self, h):
    return self.gather(h)

  def fc8_reduce(self, partial):
    """The local towers' logits are whole: nothing to sum."""
    return partial

  def logits(self, y):
    return self.gather([y], to="invarying")

  def fc8_shapes(self, units, classes):
    return (self.towers, self.total * units, classes // self.total), (self.towers,
                                                                     classes // self.total)

  def dropout_place(self, rows, inputs=False):
    """layers.dropout's row and unit blocks: this device's rows, every unit of its towers
    (`inputs`: of the one input every tower reads)."""
    if self.data_axis is None:
      return {}
    first = 0 if inputs else lax.axis_index(self.model_axis) * self.towers
    return {"row_blocks": lax.axis_size(self.data_axis),
            "row_block": lax.axis_index(self.data_axis), "first_tower": first}

  def gather(self, h, to="varying"):
    """Both towers' maps over the last axis, tower 0 first: the only cross-device traffic
    (model1_gathers=False skips a gather over one device)."""
    x = h[0] if len(h) == 1 else jnp.concatenate(h, axis=-1)
    if self.model_axis is None:
      return x
    if self.towers == self.total and not self.gathers_on_one:
      return x if to == "varying" else lax.psum(x, self.model_axis)
    return lax.all_gather(x, self.model_axis, axis=x.ndim - 1, tiled=True, to=to)


class _Params(nn.Module):
  """A layer's kernel and bias, for a layer whose product the exchange computes (fc8)."""
  shapes: tuple

  @nn.compact
  def __call__(self):
    return tuple(self.param(name, _SHAPE_ONLY, shape)
                 for name, shape in zip(("kernel", "bias"), self.shapes))


class AlexNet(nn.Module):
  """Figure 2's forward pass for every layout, inside shard_map or (both axes None) on one
  device; `exchange` says what this device holds and what crosses devices (Towers if None);
  `impl` how the layers are computed (config.impl, its defaults if None)."""
  config: ml_collections.FrozenConfigDict
  impl: Any = None
  towers: int = NUM_TOWERS
  model_axis: str | None = "model"
  data_axis: str | None = "data"
  exchange: Any = None

  def init(self, *args, **kwargs):
    raise ValueError("AlexNet's parameters come from alexnet.init_params (section 5's "
                     "initialisation, one draw for every mesh); pass them to net.apply instead "
                     "of calling net.init.")

  init_with_output = init

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False, rng=None, micro=None):
    """micro: (index, count) of a step's micro-batches, whose dropout masks are the step's."""
    cfg, impl = self.config, layers.impl_config(self.impl)
    total = towers_of(cfg)
    ex = self.exchange or Towers(min(self.towers, total), self.model_axis, self.data_axis,
                                 impl.model1_gathers, total)
    if ex.model_axis is None and ex.conv_towers != total:
      raise ValueError("Without a model axis the device must hold both towers (towers=2).")
    if x_BHWC.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise ValueError(f"Images of shape {x_BHWC.shape[1:]} do not match config.model.image_size="
                       f"{cfg.image_size}.")
    widths = tower_widths(cfg)
    dtype = jnp.dtype(cfg.dtype)
    act = layers.ACTIVATIONS[cfg.activation]
    grouped = impl.tower_conv == "grouped"
    out = impl.product_output
    norm = dict(batch_norm=cfg.norm == "batch", epsilon=cfg.bn_epsilon, stat_axes=ex.stat_axes)
    conv = lambda name, f, k, **kw: functools.partial(TowerConv(
        f, k, towers=ex.conv_towers, dtype=dtype, name=name, grouped=grouped, product_output=out,
        **norm, **kw), train=train)
    dense = lambda name, f: TowerDense(ex.fc_units(f), towers=ex.fc_towers, dtype=dtype,
                                       name=name, product_output=out)
    x = x_BHWC.astype(dtype)
    if cfg.input_scale != 1.0:  # The paper feeds 0-255 pixels minus the mean (scale 1).
      x = x * jnp.asarray(cfg.input_scale, dtype)
    maps = {}  # Per-layer maps, returned in the "intermediates" collection when it is mutable.

    h = self._each(maps, "conv1", [act(y) for y in conv(
        "conv1", widths["conv1"], 11, stride=4, padding=conv1_padding(cfg), shared_input=True,
        in_channels=impl.conv1_channels)([x] * ex.conv_towers)])
    h = self._norm_pool(maps, "1", h, ex, impl)
    h = self._each(maps, "conv2", [act(y) for y in conv("conv2", widths["conv2"], 5, padding=2)(h)])
    h = self._norm_pool(maps, "2", h, ex, impl)
    with jax.named_scope("conv3"):
      both = ex.merge(h)
    h = self._each(maps, "conv3", [act(y) for y in conv("conv3", widths["conv3"], 3, padding=1,
                                                        shared_input=True)([both] * len(h))])
    h = self._each(maps, "conv4", [act(y) for y in conv("conv4", widths["conv4"], 3, padding=1)(h)])
    h = self._each(maps, "conv5", [act(y) for y in conv("conv5", widths["conv5"], 3, padding=1)(h)])
    h = self._each(maps, "pool5", [self._pool(y, impl) for y in h])
    if cfg.name == OWT:
      h = [adaptive_average_pool(y, OWT_POOL) for y in h]
    with jax.named_scope("fc6"):
      x = ex.fc_input(h)
    if cfg.name == OWT:  # 2014: dropout on fc6's input.
      drop_in = functools.partial(layers.dropout, cfg, train=train, rng=rng, micro=micro,
                                  **(ex.dropout_place(x.shape[0], inputs=True) if train else {}))
      x = layers.at_test_time(cfg, drop_in([x], 5), train)[0]
    h = dense("fc6", widths["fc6"])([x] * ex.fc_towers)
    # fc6's and fc7's maps are recorded before the test-time scaling: alike for both scalings.
    drop = functools.partial(layers.dropout, cfg, train=train, rng=rng, micro=micro,
                             **(ex.dropout_place(x.shape[0]) if train else {}))
    h = self._each(maps, "fc6", drop([act(y) for y in h], 6))
    with jax.named_scope("fc7"):
      x = ex.units(layers.at_test_time(cfg, h, train))
    h = dense("fc7", widths["fc7"])([x] * ex.fc_towers)
    h = [act(y) for y in h]
    if cfg.name != OWT:  # 2012: dropout on fc7's outputs; 2014 leaves them.
      h = layers.at_test_time(cfg, self._each(maps, "fc7", drop(h, 7)), train)
    else:
      h = self._each(maps, "fc7", h)
    kernel, bias = _Params(ex.fc8_shapes(ex.fc_units(widths["fc7"]), cfg.num_classes),
                           name="fc8")()
    with jax.named_scope("fc8"):  # The exchange says what fc8 reads and how its sums meet.
      x, product = ex.fc8_input(h), layers.product_type(out, dtype)
      partial = jnp.concatenate([jnp.matmul(x, kernel[t].astype(dtype),
                                            preferred_element_type=product)
                                 for t in range(kernel.shape[0])], axis=-1)
      logits_BK = ex.logits(layers.add_bias(ex.fc8_reduce(partial), bias.reshape(-1), dtype))
    if maps:
      self.sow("intermediates", "maps", maps)
    return logits_BK.astype(jnp.float32)

  def _norm_pool(self, maps, i, h, ex, impl):
    cfg = self.config
    if cfg.norm == "lrn":  # 3.3: after the ReLU of conv1 and conv2, each tower over its own.
      norm = layers.configured_lrn(cfg, impl)
      h = self._each(maps, f"norm{i}", self._lrn_across(h, norm, ex) if cfg.lrn_across_towers
                     else [norm(y) for y in h])
    return self._each(maps, f"pool{i}", [self._pool(y, impl) for y in h])

  def _lrn_across(self, h, norm, ex):
    """LRN over both towers' channels as one stack (lrn_across_towers), the neighbours' edge
    channels fetched over the model axis."""
    x, r, width = jnp.concatenate(h, axis=-1), self.config.lrn_n // 2, h[0].shape[-1]
    if ex.model_axis is not None and len(h) < towers_of(self.config) and r:
      if r > x.shape[-1]:
        raise errors.ConfigError(f"config.model.lrn_across_towers: a window of {self.config.lrn_n} "
                                 f"channels reaches past the neighbouring tower's {x.shape[-1]}.")
      edges = lax.all_gather(jnp.concatenate([x[..., :r], x[..., -r:]], axis=-1),
                             ex.model_axis)  # [devices, B, H, W, 2r]: first and last r.
      i, last = lax.axis_index(ex.model_axis), edges.shape[0] - 1
      left = jnp.where(i > 0, edges[jnp.maximum(i - 1, 0)][..., r:], 0.0)
      right = jnp.where(i < last, edges[jnp.minimum(i + 1, last)][..., :r], 0.0)
      y = norm(jnp.concatenate([left.astype(x.dtype), x, right.astype(x.dtype)],
                               axis=-1))[..., r:r + x.shape[-1]]
    else:
      y = norm(x)
    return [y[..., t * width:(t + 1) * width] for t in range(len(h))]

  def _pool(self, y, impl):
    pool = layers.max_pool if impl.pool_grad == "custom" else layers.reduce_window_max
    return pool(y, self.config.pool_window, self.config.pool_stride)

  def _each(self, maps, name, h):
    """Records the local towers' maps (concatenated over channels) when asked to."""
    if self.is_mutable_collection("intermediates"):
      maps[name] = jnp.concatenate(h, axis=-1)
    return h


def adaptive_average_pool(x_BHWC, size):
  """torch.nn.AdaptiveAvgPool2d(size): output cell i averages input rows floor(i H / size) to
  ceil((i + 1) H / size); the identity where H is already `size` (224 inputs)."""
  def cells(n):
    return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]
  if x_BHWC.shape[1:3] == (size, size):
    return x_BHWC
  rows = jnp.stack([x_BHWC[:, a:b].mean(axis=1) for a, b in cells(x_BHWC.shape[1])], axis=1)
  return jnp.stack([rows[:, :, a:b].mean(axis=2) for a, b in cells(x_BHWC.shape[2])], axis=2)


def init_params(model_cfg, rng):
  """The global parameters as section 5 initialises them, every kernel sliced from one normal
  draw (one random-number loop to compile, not sixteen)."""
  check_config(model_cfg)
  shapes = param_shapes(model_cfg)
  sizes = [math.prod(shapes[layer][0]) for layer in LAYERS]
  draw = jax.random.normal(rng, (sum(sizes),), jnp.float32)
  params, offset = {}, 0
  for layer, size in zip(LAYERS, sizes):
    kernel_shape, bias_shape = shapes[layer]
    std = _weight_std(model_cfg, layer, kernel_shape)
    params[layer] = {"kernel": std * draw[offset:offset + size].reshape(kernel_shape),
                     "bias": jnp.full(bias_shape, bias_value(model_cfg, layer), jnp.float32)}
    if model_cfg.norm == "batch" and layer.startswith("conv"):  # Scale 1, the unit moments.
      params[layer].update(scale=jnp.ones(bias_shape), mean=jnp.zeros(bias_shape),
                           var=jnp.ones(bias_shape))
    offset += size
  return params


def _weight_std(model_cfg, layer, kernel_shape):
  """init="paper": weight_std, or layer_weight_std's where > 0 (the recipes'); "he" (an
  ablation): sqrt(2 / fan_in), which starts learning at once in narrow networks."""
  if model_cfg.init == "paper":
    own = model_cfg.layer_weight_std.get(layer, 0.0)
    return own if own > 0 else model_cfg.weight_std
  fan_in = math.prod(kernel_shape[1:-1])  # [tower, (kh, kw,) inputs, outputs]
  return math.sqrt(2.0 / fan_in)
