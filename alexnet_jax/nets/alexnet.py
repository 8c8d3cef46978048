"""The network of section 3 and figure 2, written per tower.

Every parameter has a leading tower axis: 2 in the global parameters, and inside `shard_map`
either 1 (model=2: one tower per device, as each GTX 580 held one) or 2 (model=1: one device
computes both). Each local tower runs its own ungrouped convolution: a grouped convolution
(`feature_group_count=2`, or `vmap` over the towers, which lowers to the same thing) is about
10x slower in its backward pass on CPU (measured with benchmarks/train_step.py;
jax-ml/jax#13800 on CUDA). config.model.tower_conv="grouped" keeps the grouped form, and the
other fields of VARIANTS other ways to compute the same network, to time on accelerators.

conv2, conv4 and conv5 see only their own tower's maps; the inputs of conv3, fc6, fc7 and fc8
are both towers' maps, concatenated over channels (tower 0 first) and exchanged through
`lax.all_gather` over the `model` axis (section 3.2). fc8 is split too: each tower owns
`num_classes / 2` logits, and the two halves are gathered once more for the softmax.

Inputs are 224x224 as the paper writes (3.5, 4.1); conv1 gives 55x55 from them as the authors'
cuda-convnet did, its last row and column of filters overhanging the image by 3 zero pixels
(`conv1_overhang`). 227x227 inputs (Caffe's convention) tile exactly and give the same maps.

No mesh code lives here: the module only names the `model` and `data` axes, and with both
names set to None it runs on one device without `shard_map` (used by `init_params`).
"""
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

# Per-tower widths at width 1.0 (figure 2: 48+48, 128+128, 192+192, 192+192, 128+128 kernels,
# 2048+2048 units in fc6 and fc7).
TOWER_CHANNELS = {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 128,
                  "fc6": 2048, "fc7": 2048}
NUM_TOWERS = 2
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# Section 5: these layers' biases start at config.model.bias_init (1 in the paper), others at 0.
BIASED_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")
LRN_CONVENTIONS = ("paper", "caffe")
INITS = ("paper", "he")
DROPOUT_SCALINGS = ("paper", "inverted")
# Variants of the same computation, to time on accelerators (benchmarks/accelerator.py
# --parts variants); the first of each is the default.
GRADIENTS = ("custom", "autodiff")
VARIANTS = {"lrn_grad": GRADIENTS, "pool_grad": ("custom", "reduce_window"),
            "lrn_dtype": ("float32", "compute"), "tower_conv": ("separate", "grouped"),
            "conv1_channels": (3, 4, 8), "model1_gathers": (True, False)}


def variant(model_cfg, field):
  """config.model.<field> of VARIANTS, its default where the config predates the field (a run's
  config.json written before it)."""
  return model_cfg.get(field, VARIANTS[field][0])

ACTIVATIONS = {
    "relu": nn.relu,                                  # 3.1
    "tanh": jnp.tanh,                                 # figure 1's comparison
    "abs_tanh": lambda x: jnp.abs(jnp.tanh(x)),       # 3.1, Jarrett et al.'s f(x) = |tanh(x)|
    "sigmoid": nn.sigmoid,
}


def tower_widths(model_cfg) -> dict[str, int]:
  """Channels (or units) per tower of each hidden layer, scaled by `model_cfg.width`."""
  if model_cfg.width <= 0:
    raise ValueError(f"config.model.width={model_cfg.width} must be positive (1.0 is the paper).")
  return {name: max(1, round(c * model_cfg.width)) for name, c in TOWER_CHANNELS.items()}


def conv1_overhang(image_size) -> int:
  """Zero rows (and columns) added below (and right of) the image for conv1.

  cuda-convnet sizes a convolution's output as 1 + ceil((2 * padding + size - filter) / stride)
  (cuda-convnet2 layer.py, ConvLayer): for the paper's 224 that is 55, and its last row and
  column of 11x11 filters, at stride 4, overhang the image by (55 - 1) * 4 + 11 - 224 = 3
  pixels, which read zeros. 227 tiles exactly (Caffe's choice) and needs none.
  """
  out = 1 + -(-(image_size - 11) // 4)
  return (out - 1) * 4 + 11 - image_size


def feature_map_sizes(model_cfg) -> dict[str, int]:
  """Spatial size after each layer, conv1 sized as cuda-convnet sizes it (conv1_overhang)."""
  size = model_cfg.image_size
  if size < 11:
    raise ValueError(f"config.model.image_size={size}: conv1's 11x11 filters need at least 11 "
                     "pixels (224, the paper's, or 227, Caffe's).")
  pool = lambda s: _pooled(s, model_cfg.pool_window, model_cfg.pool_stride)
  sizes = {"conv1": (size + conv1_overhang(size) - 11) // 4 + 1}
  sizes["pool1"] = pool(sizes["conv1"])
  sizes["conv2"] = sizes["pool1"]
  sizes["pool2"] = pool(sizes["conv2"])
  sizes["conv3"] = sizes["conv4"] = sizes["conv5"] = sizes["pool2"]
  sizes["pool5"] = pool(sizes["conv5"])
  if sizes["pool5"] < 1:
    raise ValueError(f"config.model.image_size={size} is too small: nothing is left after pool5.")
  return sizes


def check_config(model_cfg):
  """Refuses, once and before anything is built, the settings the network cannot take."""
  if model_cfg.num_classes % NUM_TOWERS:
    raise ValueError(f"config.model.num_classes={model_cfg.num_classes} must be even: each tower"
                     " owns half of fc8's outputs (section 3.2). Pad the label set by one class.")
  if model_cfg.activation not in ACTIVATIONS:
    raise ValueError(f"config.model.activation={model_cfg.activation!r}: use one of "
                     f"{sorted(ACTIVATIONS)}.")
  if model_cfg.lrn_convention not in LRN_CONVENTIONS:
    raise ValueError(f"config.model.lrn_convention={model_cfg.lrn_convention!r}: use 'paper' or"
                     " 'caffe'.")
  if model_cfg.init not in INITS:
    raise ValueError(f"config.model.init={model_cfg.init!r}: expected 'paper' or 'he'.")
  if model_cfg.dropout_scaling not in DROPOUT_SCALINGS:
    raise ValueError(f"config.model.dropout_scaling={model_cfg.dropout_scaling!r}: use one of "
                     f"{DROPOUT_SCALINGS}.")
  if not 0.0 <= model_cfg.dropout_rate < 1.0:
    raise ValueError(f"config.model.dropout_rate={model_cfg.dropout_rate}: a probability in "
                     "[0, 1) (0.5 in the paper, 0 for no dropout).")
  for layer, std in model_cfg.get("layer_weight_std", {}).items():
    if layer not in LAYERS or std < 0:
      raise ValueError(f"config.model.layer_weight_std.{layer}={std}: a standard deviation >= 0 "
                       f"of one of {LAYERS} (0: config.model.weight_std).")
  for field, allowed in VARIANTS.items():
    if variant(model_cfg, field) not in allowed:
      raise ValueError(f"config.model.{field}={variant(model_cfg, field)!r}: use one of "
                       f"{allowed} (the first is the default).")
  tower_widths(model_cfg)
  feature_map_sizes(model_cfg)


def param_shapes(model_cfg):
  """{layer: (kernel shape, bias shape)} of the global parameters, tower axis first."""
  w, t = tower_widths(model_cfg), NUM_TOWERS
  pool5 = feature_map_sizes(model_cfg)["pool5"]
  fan_in = {"conv1": (11, 11, 3), "conv2": (5, 5, w["conv1"]), "conv3": (3, 3, t * w["conv2"]),
            "conv4": (3, 3, w["conv3"]), "conv5": (3, 3, w["conv4"]),
            "fc6": (t * w["conv5"] * pool5 * pool5,), "fc7": (t * w["fc6"],),
            "fc8": (t * w["fc7"],)}
  outputs = dict(w, fc8=model_cfg.num_classes // t)
  return {name: ((t, *fan_in[name], outputs[name]), (t, outputs[name])) for name in LAYERS}


def bias_value(model_cfg, layer):
  """Section 5: the biases of BIASED_LAYERS start at config.model.bias_init, the others at 0."""
  return model_cfg.bias_init if layer in BIASED_LAYERS else 0.0


def lrn(x_BHWC, *, k, n, alpha, beta, convention="paper", gradient="custom", in_float32=True):
  """Local response normalisation over the channels of one tower (section 3.3).

  paper: b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta.
  caffe: the same with alpha / n (Caffe, PyTorch and cuda-convnet; they also default k to 1,
  set `lrn_k` for that). The window is clipped at the tower's first and last channel.
  gradient: "custom" (_lrn_bwd, written out) or "autodiff" (JAX differentiates the formula);
  in_float32=False computes in x's dtype: both are variants to time on accelerators.
  """
  if convention not in LRN_CONVENTIONS:
    raise ValueError(f"config.model.lrn_convention={convention!r}: use 'paper' or 'caffe'.")
  if gradient not in GRADIENTS:
    raise ValueError(f"config.model.lrn_grad={gradient!r}: use one of {GRADIENTS}.")
  scale = alpha / n if convention == "caffe" else alpha
  # In float32 by default whatever the compute dtype: the sum of squares over the window spans
  # ~1e4-1e6 for 0-255 inputs, and bfloat16's 8-bit mantissa would round the denominator by up
  # to 0.4%.
  fn = _lrn if gradient == "custom" else _lrn_formula
  y = fn(x_BHWC.astype(jnp.float32 if in_float32 else x_BHWC.dtype), float(k), int(n),
         float(scale), float(beta))
  return y.astype(x_BHWC.dtype)


def _window_sum(y_BHWC, n):
  """Sum over the n channels centred on each channel, clipped at the edges (zero padding)."""
  channels = y_BHWC.shape[-1]
  padded = jnp.pad(y_BHWC, ((0, 0), (0, 0), (0, 0), (n // 2, n // 2)))
  return sum(padded[..., i:i + channels] for i in range(n))


def _neg_pow(d, beta):
  """d ** -beta; for the paper's beta = 0.75 as two rsqrts, ~10x cheaper than pow on CPU."""
  if beta == 0.75:
    return lax.rsqrt(d) * lax.rsqrt(jnp.sqrt(d))
  return lax.pow(d, jnp.asarray(-beta, d.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, k, n, scale, beta):
  return _lrn_fwd(x, k, n, scale, beta)[0]


def _lrn_fwd(x, k, n, scale, beta):
  d = k + scale * _window_sum(jnp.square(x), n)
  p = _neg_pow(d, beta)
  return x * p, (x, d, p)


def _lrn_bwd(k, n, scale, beta, residuals, g):
  """The gradient written out: d b_i / d a_j = [i=j] d_i^-beta - 2 scale beta a_i a_j d_i^-beta-1
  for j in i's window; the window is symmetric, so the sum over i is another window sum."""
  x, d, p = residuals
  return (g * p - (2.0 * scale * beta) * x * _window_sum(g * x * p / d, n),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def _lrn_formula(x, k, n, scale, beta):
  """The same values as _lrn, its gradient left to autodiff (config.model.lrn_grad)."""
  return _lrn_fwd(x, k, n, scale, beta)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x_BHWC, window, stride):
  """Max over window x window patches (VALID), as the maximum of window^2 strided slices.

  Same values and gradient as lax.reduce_window (on ties the gradient goes to the first
  maximum in row-major window order, as select_and_scatter does), but cheaper on CPU: see
  _max_pool_bwd.
  """
  out_h, out_w = (_pooled(n, window, stride) for n in x_BHWC.shape[1:3])
  out = None
  for i in range(window):
    for j in range(window):
      part = _window_offset(x_BHWC, i, j, out_h, out_w, stride)
      out = part if out is None else jnp.maximum(out, part)
  return out


def _pooled(size, window, stride):
  return (size - window) // stride + 1


def _window_offset(x_BHWC, i, j, out_h, out_w, stride):
  """The input pixel at offset (i, j) of every window: x[:, i::stride, j::stride] [B, oh, ow, C]."""
  b, _, _, c = x_BHWC.shape
  return lax.slice(x_BHWC, (0, i, j, 0),
                   (b, i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, c),
                   (1, stride, stride, 1))


def _max_pool_fwd(x_BHWC, window, stride):
  out = max_pool(x_BHWC, window, stride)
  return out, (x_BHWC, out)


def _max_pool_bwd(window, stride, residuals, g_BOOC):
  """The gradient without scatters or strided pads, which XLA:CPU runs slowly: the input
  pixels are split into stride x stride phases (row % stride, column % stride). Window offset
  (i, j) sends its pixel's gradient to phase (i % stride, j % stride), shifted by
  (i // stride, j // stride), a dense pad; the phases are then interleaved by one reshape.
  This halved the CIFAR-10 training step (benchmarks/train_step.py --cifar).
  """
  x, out = residuals
  b, h, w, c = x.shape
  out_h, out_w = out.shape[1:3]
  reach = (window - 1) // stride
  phases, taken = {}, None
  for i in range(window):
    for j in range(window):
      hit = _window_offset(x, i, j, out_h, out_w, stride) == out
      hit = hit if taken is None else hit & ~taken
      taken = hit if taken is None else taken | hit
      (qi, pi), (qj, pj) = divmod(i, stride), divmod(j, stride)
      part = jnp.pad(jnp.where(hit, g_BOOC, 0.0),
                     ((0, 0), (qi, reach - qi), (qj, reach - qj), (0, 0)))
      phases[pi, pj] = part + phases[pi, pj] if (pi, pj) in phases else part
  zeros = jnp.zeros((b, out_h + reach, out_w + reach, c), g_BOOC.dtype)
  # grid: [B, oh + reach, stride, ow + reach, stride, C].
  grid = jnp.stack([jnp.stack([phases.get((pi, pj), zeros) for pj in range(stride)], axis=3)
                    for pi in range(stride)], axis=2)
  dx = grid.reshape(b, (out_h + reach) * stride, (out_w + reach) * stride, c)[:, :h, :w]
  dx = jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0)))
  return (dx.astype(x.dtype),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def reduce_window_max(x_BHWC, window, stride):
  """max_pool's values through lax.reduce_window, whose gradient is XLA's select_and_scatter
  (cuDNN's pooling on GPUs): config.model.pool_grad="reduce_window"."""
  # A Python -inf, so that lax.reduce_window sees the max monoid and can differentiate it.
  return lax.reduce_window(x_BHWC, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), "VALID")


# The layers' own initialiser only gives Flax the shapes it checks against; the values always
# come from init_params, and AlexNet.init is refused so that nobody gets another initialisation.
_SHAPE_ONLY = nn.initializers.zeros


class TowerConv(nn.Module):
  """One convolution per local tower; kernel [towers, k, k, C_in, C_out].

  grouped: the local towers in ONE convolution instead (config.model.tower_conv="grouped"),
  feature_group_count=towers over their concatenated inputs, or, with shared_input (conv1 and
  conv3, whose towers read the same maps), one convolution with the towers' kernels side by
  side. in_channels > C_in zero-pads the input and the kernel to that many channels
  (config.model.conv1_channels): the same sums, in a layout some convolution kernels prefer.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: Any = 0             # An int (all sides), or ((top, bottom), (left, right)).
  towers: int = NUM_TOWERS
  dtype: Any = jnp.float32
  grouped: bool = False
  shared_input: bool = False
  in_channels: int = 0

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
    k, c_in = self.kernel_size, xs[0].shape[-1]
    kernel = self.param("kernel", _SHAPE_ONLY, (self.towers, k, k, c_in, self.features))
    bias = self.param("bias", _SHAPE_ONLY, (self.towers, self.features))
    if self.in_channels > c_in:
      extra = ((0, 0),) * 3 + ((0, self.in_channels - c_in),)
      xs, kernel = [jnp.pad(x, extra) for x in xs], jnp.pad(kernel, extra + ((0, 0),))
    if self.grouped and self.towers > 1:
      return self._grouped(xs, kernel, bias)
    return [_add_bias(self._conv(x, kernel[t]), bias[t], self.dtype) for t, x in enumerate(xs)]

  def _conv(self, x, kernel_HWIO, groups=1):
    pad = (((self.padding, self.padding),) * 2 if isinstance(self.padding, int)
           else self.padding)
    return lax.conv_general_dilated(x, kernel_HWIO.astype(self.dtype), (self.stride,) * 2, pad,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups,
                                    preferred_element_type=_accumulation(self.dtype))

  def _grouped(self, xs, kernel, bias):
    """Tower t's outputs are channels [t F, (t + 1) F) of one convolution; split back."""
    t, f = self.towers, self.features
    kernel_HWIO = jnp.moveaxis(kernel, 0, 3).reshape(kernel.shape[1:4] + (t * f,))
    x, groups = (xs[0], 1) if self.shared_input else (jnp.concatenate(xs, axis=-1), t)
    y = _add_bias(self._conv(x, kernel_HWIO, groups), bias.reshape(t * f), self.dtype)
    return [y[..., i * f:(i + 1) * f] for i in range(t)]


class TowerDense(nn.Module):
  """One fully connected layer per local tower; kernel [towers, F_in, F_out]."""
  features: int
  towers: int = NUM_TOWERS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
    kernel = self.param("kernel", _SHAPE_ONLY, (self.towers, xs[0].shape[-1], self.features))
    bias = self.param("bias", _SHAPE_ONLY, (self.towers, self.features))
    return [_add_bias(jnp.matmul(x, kernel[t].astype(self.dtype),
                                 preferred_element_type=_accumulation(self.dtype)),
                      bias[t], self.dtype) for t, x in enumerate(xs)]


def _accumulation(dtype):
  """float32 sums for a lower-precision compute dtype: a bfloat16 running sum stops growing
  once a term falls under 2^-9 of it, and a conv1 unit sums 363 products per position. None
  (the inputs' dtype) for float32, which computes exactly what it always did."""
  return None if jnp.dtype(dtype) == jnp.float32 else jnp.float32


def _add_bias(y, bias, dtype):
  """y + bias, then the compute dtype. For bfloat16 the add is in float32, so the bias gradient,
  a sum over the batch and every position (387,200 terms per conv1 unit at batch 128), is
  summed in float32 too; for float32 the same ops as ever."""
  if jnp.dtype(dtype) == jnp.float32:
    return y + bias.astype(dtype)[(None,) * (y.ndim - 1)]
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)[(None,) * (y.ndim - 1)]).astype(dtype)


class AlexNet(nn.Module):
  """AlexNet, figure 2. `config` is `config.model`; `towers` is how many towers this device holds.

  Call inside `shard_map` over ("data", "model") (see parallel.make_apply), or with
  `model_axis=data_axis=None` and `towers=2` on one device. `rng` is needed only when training
  with dropout. Parameters come from `init_params`; `check_config` vets the config first.
  """
  config: ml_collections.FrozenConfigDict
  towers: int = NUM_TOWERS
  model_axis: str | None = "model"
  data_axis: str | None = "data"

  def init(self, *args, **kwargs):
    raise ValueError("AlexNet's parameters come from model.init_params (section 5's "
                     "initialisation, one draw for every mesh); pass them to net.apply instead "
                     "of calling net.init.")

  init_with_output = init

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False, rng=None, micro=None):
    """micro: (index, count) when this call is micro-batch `index` of `count` of one step
    (config.train.accum_steps): the dropout masks are then the big batch's rows."""
    cfg = self.config
    if self.model_axis is None and self.towers != NUM_TOWERS:
      raise ValueError("Without a model axis the device must hold both towers (towers=2).")
    if x_BHWC.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise ValueError(f"Images of shape {x_BHWC.shape[1:]} do not match config.model.image_size="
                       f"{cfg.image_size}.")
    widths = tower_widths(cfg)
    dtype = jnp.dtype(cfg.dtype)
    act = ACTIVATIONS[cfg.activation]
    grouped = variant(cfg, "tower_conv") == "grouped"
    conv = lambda name, f, k, **kw: TowerConv(f, k, towers=self.towers, dtype=dtype, name=name,
                                              grouped=grouped, **kw)
    dense = lambda name, f: TowerDense(f, towers=self.towers, dtype=dtype, name=name)
    x = x_BHWC.astype(dtype)
    if cfg.input_scale != 1.0:  # The paper feeds 0-255 pixels minus the mean (scale 1).
      x = x * jnp.asarray(cfg.input_scale, dtype)
    maps = {}  # Per-layer maps, returned in the "intermediates" collection when it is mutable.

    o = conv1_overhang(cfg.image_size)  # 3 at 224: the filters overhang into zeros.
    h = self._each(maps, "conv1", [act(y) for y in conv(
        "conv1", widths["conv1"], 11, stride=4, padding=((0, o), (0, o)), shared_input=True,
        in_channels=variant(cfg, "conv1_channels"))([x] * self.towers)])
    h = self._norm_pool(maps, "1", h)
    h = self._each(maps, "conv2", [act(y) for y in conv("conv2", widths["conv2"], 5, padding=2)(h)])
    h = self._norm_pool(maps, "2", h)
    both = self._gather(h)
    h = self._each(maps, "conv3", [act(y) for y in conv("conv3", widths["conv3"], 3, padding=1,
                                                        shared_input=True)([both] * self.towers)])
    h = self._each(maps, "conv4", [act(y) for y in conv("conv4", widths["conv4"], 3, padding=1)(h)])
    h = self._each(maps, "conv5", [act(y) for y in conv("conv5", widths["conv5"], 3, padding=1)(h)])
    h = self._each(maps, "pool5", [self._pool(y) for y in h])
    both = self._gather(h)
    both = both.reshape(both.shape[0], -1)
    h = dense("fc6", widths["fc6"])([both] * self.towers)
    # The recorded fc6 and fc7 maps: the units' outputs, dropped out while training, but before
    # the test-time scaling (so that both dropout scalings record the same features).
    h = self._each(maps, "fc6", self._dropout([act(y) for y in h], 6, train, rng, micro))
    h = dense("fc7", widths["fc7"])([self._gather(self._test_scale(h, train))] * self.towers)
    h = self._each(maps, "fc7", self._dropout([act(y) for y in h], 7, train, rng, micro))
    h = self._test_scale(h, train)
    h = dense("fc8", cfg.num_classes // NUM_TOWERS)([self._gather(h)] * self.towers)
    logits_BK = self._gather(h, to="invarying")
    if maps:
      self.sow("intermediates", "maps", maps)
    return logits_BK.astype(jnp.float32)

  def _norm_pool(self, maps, i, h):
    cfg = self.config
    if cfg.lrn:  # 3.3: after the ReLU of conv1 and conv2, each tower over its own channels.
      h = self._each(maps, f"norm{i}", [lrn(y, k=cfg.lrn_k, n=cfg.lrn_n, alpha=cfg.lrn_alpha,
                                      beta=cfg.lrn_beta, convention=cfg.lrn_convention,
                                      gradient=variant(cfg, "lrn_grad"),
                                      in_float32=variant(cfg, "lrn_dtype") == "float32")
                                  for y in h])
    return self._each(maps, f"pool{i}", [self._pool(y) for y in h])

  def _pool(self, y):
    cfg = self.config
    pool = max_pool if variant(cfg, "pool_grad") == "custom" else reduce_window_max
    return pool(y, cfg.pool_window, cfg.pool_stride)

  def _each(self, maps, name, h):
    """Records the local towers' maps (concatenated over channels) when asked to."""
    if self.is_mutable_collection("intermediates"):
      maps[name] = jnp.concatenate(h, axis=-1)
    return h

  def _gather(self, h, to="varying"):
    """Both towers' maps over the last axis, tower 0 first: the only cross-device traffic.

    With both towers on this device (model=1) the all_gather runs over a model axis of one
    device, and XLA keeps it, with the reduce-scatter that is its transpose.
    config.model.model1_gathers=False skips it; the logits, which leave shard_map invariant
    over `model`, become so through a psum over that one device instead. Same numbers.
    """
    x = h[0] if len(h) == 1 else jnp.concatenate(h, axis=-1)
    if self.model_axis is None:
      return x
    if self.towers == NUM_TOWERS and not variant(self.config, "model1_gathers"):
      return x if to == "varying" else lax.psum(x, self.model_axis)
    return lax.all_gather(x, self.model_axis, axis=x.ndim - 1, tiled=True, to=to)

  def _dropout(self, h, layer, train, rng, micro=None):
    """Dropout (4.2) whose masks do not depend on the mesh.

    Tower g's mask for layer l is drawn from fold_in(fold_in(rng, l), g) for the GLOBAL batch,
    and this data shard takes its own rows: any ("data", "model") mesh, and one device without
    a mesh, draw the same mask for the same example and unit.

    config.model.dropout_scaling: "paper" (4.2) keeps the kept units as they are while training
    and multiplies every output by 1 - rate (0.5) at test time; "inverted" (Caffe, PyTorch)
    scales the kept units by 1 / (1 - rate) while training and uses the outputs as they are at
    test time. The two compute the same function when the next layer's weights differ by that
    factor (W_paper = W_inverted / (1 - rate): twice as large at rate 0.5), but they do not train
    alike: the next layer's gradient is (1 - rate) times as large with "paper", and so its
    weights start, relative to their function, 1 / (1 - rate) times smaller and move 1 / (1 -
    rate)^2 times more slowly at the same learning rate (their weight decay as strong).
    """
    rate, paper = self.config.dropout_rate, self.config.dropout_scaling == "paper"
    if rate == 0.0 or not train:
      return h  # Evaluation: _test_scale.
    if rng is None:
      raise ValueError("AlexNet needs `rng` when training with dropout_rate > 0.")
    b_local, features = h[0].shape
    shards = 1 if self.data_axis is None else lax.axis_size(self.data_axis)
    # Micro-batch `index` of `count` holds rows [index b, (index + 1) b) of each shard's block.
    index, count = (0, 1) if micro is None else micro
    start = 0 if self.data_axis is None else lax.axis_index(self.data_axis) * b_local * count
    start = start + index * b_local
    shards = shards * count
    first_tower = 0 if self.model_axis is None else lax.axis_index(self.model_axis) * self.towers
    out = []
    for t, y in enumerate(h):
      key = jax.random.fold_in(jax.random.fold_in(rng, layer), first_tower + t)
      keep_GF = jax.random.bernoulli(key, 1.0 - rate, (b_local * shards, features))
      keep_BF = lax.dynamic_slice_in_dim(keep_GF, start, b_local, axis=0)
      out.append(jnp.where(keep_BF, y if paper else y / (1.0 - rate), jnp.zeros_like(y)))
    return out

  def _test_scale(self, h, train):
    """Section 4.2's test time: every output of a dropped-out layer times 1 - rate (0.5)."""
    rate = self.config.dropout_rate
    if train or rate == 0.0 or self.config.dropout_scaling != "paper":
      return h
    return [y * (1.0 - rate) for y in h]


def init_params(model_cfg, rng):
  """Global parameters (tower axis 2), initialised as in section 5: weights N(0, weight_std),
  biases by `bias_value`. The only initialisation of the network (AlexNet.init is refused):
  all kernels come from ONE normal draw, sliced in layer order, so XLA compiles one
  random-number loop instead of sixteen, which saves 10-20 s per compile on a 2-core CPU.
  """
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
    offset += size
  return params


def _weight_std(model_cfg, layer, kernel_shape):
  """Section 5's N(0, weight_std) for init="paper", or the layer's own standard deviation
  where config.model.layer_weight_std gives one (> 0: the authors' layer files and Caffe's
  differ from the paper per layer); init="he" (an ablation, not the paper) scales each layer by
  sqrt(2 / fan_in), which starts learning at once in narrow networks."""
  if model_cfg.init == "paper":
    own = model_cfg.get("layer_weight_std", {}).get(layer, 0.0)
    return own if own > 0 else model_cfg.weight_std
  if model_cfg.init == "he":
    fan_in = math.prod(kernel_shape[1:-1])  # [tower, (kh, kw,) inputs, outputs]
    return math.sqrt(2.0 / fan_in)
  raise ValueError(f"config.model.init={model_cfg.init!r}: expected 'paper' or 'he'.")
