"""The layers AlexNet is made of that are not plain convolutions: local response normalisation
(section 3.3) and overlapping max pooling (3.4), each with its gradient written out, the
activations (3.1), dropout whose masks do not depend on the mesh (4.2), batch normalisation
(in place of LRN: config.model.norm), and the float32 sums of a lower-precision compute dtype.
`nets/alexnet.py` builds the towers from them; `nets/cifar.py` (figure 1's network) and the
hybrid layout (parallel/hybrid.py) use them too.

VARIANTS lists other ways to compute the same layers (config.model.<field>, the first of each
the default), to time on accelerators (benchmarks/accelerator.py --parts variants).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

LRN_CONVENTIONS = ("paper", "caffe")
GRADIENTS = ("custom", "autodiff")
VARIANTS = {"lrn_grad": GRADIENTS, "pool_grad": ("custom", "reduce_window"),
            "lrn_dtype": ("float32", "compute"), "tower_conv": ("separate", "grouped"),
            "conv1_channels": (3, 4, 8), "model1_gathers": (True, False),
            "product_output": ("compute", "float32")}


ACTIVATIONS = {
    "relu": nn.relu,                                  # 3.1
    "tanh": jnp.tanh,                                 # figure 1's comparison
    "abs_tanh": lambda x: jnp.abs(jnp.tanh(x)),       # 3.1, Jarrett et al.'s f(x) = |tanh(x)|
    "sigmoid": nn.sigmoid,
}


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


def configured_lrn(cfg):
  """`lrn` with config.model's constants, convention, gradient and dtype."""
  return functools.partial(lrn, k=cfg.lrn_k, n=cfg.lrn_n, alpha=cfg.lrn_alpha, beta=cfg.lrn_beta,
                           convention=cfg.lrn_convention, gradient=cfg.lrn_grad,
                           in_float32=cfg.lrn_dtype == "float32")


def _window_sum(y_BHWC, n):
  """Sum over the n channels centred on each channel, clipped at the edges (zero padding)."""
  channels = y_BHWC.shape[-1]
  padded = jnp.pad(y_BHWC, ((0, 0), (0, 0), (0, 0), (n // 2, n // 2)))
  return sum(padded[..., i:i + channels] for i in range(n))


def _neg_pow(d, beta):
  """d ** -beta; for the paper's beta = 0.75 as two rsqrts, cheaper than pow on CPU
  (benchmarks/README.md)."""
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
  out_h, out_w = (pooled(n, window, stride) for n in x_BHWC.shape[1:3])
  out = None
  for i in range(window):
    for j in range(window):
      part = _window_offset(x_BHWC, i, j, out_h, out_w, stride)
      out = part if out is None else jnp.maximum(out, part)
  return out


def pooled(size, window, stride):
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
  The CIFAR-10 training step is faster for it (benchmarks/README.md).
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


def product_type(product_output, dtype):
  """What a convolution's or matmul's products return (config.model.product_output).
  "compute": the compute dtype, summed in float32 inside cuDNN, cuBLAS and the TPU's MXU (the
  CPU converts bfloat16 operands to float32 and rounds the result). "float32": a float32 result,
  which XLA:GPU computes as a float32 (TF32) convolution of upcast operands (OperandUpcaster in
  gpu_compiler.cc), and whose gradients JAX computes in float32 (benchmarks/README.md)."""
  return None if product_output == "compute" else accumulation(dtype)


def accumulation(dtype):
  """float32 sums for a lower-precision compute dtype: a bfloat16 running sum stops growing
  once a term falls under 2^-9 of it, and a conv1 unit sums 363 products per position. None
  (the inputs' dtype) for float32, which computes exactly what it always did."""
  return None if jnp.dtype(dtype) == jnp.float32 else jnp.float32


def add_bias(y, bias, dtype):
  """y + bias, then the compute dtype. For bfloat16 the add is in float32, so the bias gradient,
  a sum over the batch and every position (387,200 terms per conv1 unit at batch 128), is
  summed in float32 too; for float32 the same ops as ever."""
  if jnp.dtype(dtype) == jnp.float32:
    return y + bias.astype(dtype)[(None,) * (y.ndim - 1)]
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)[(None,) * (y.ndim - 1)]).astype(dtype)


# config.model.norm: section 3.3's LRN after the ReLU of conv1 and conv2, batch normalisation
# (Ioffe & Szegedy 2015) after every convolution and before its ReLU, or neither.
NORMS = ("lrn", "batch", "none")
# Leaves of a normalised layer's parameters that are running averages, not parameters: the
# update rules leave them alone and the training step writes them (with_running_stats).
RUNNING = ("mean", "var")


def batch_norm(y_BHWC, scale, bias, mean, var, *, train, axes, epsilon, dtype):
  """(scale (y - mu) / sqrt(sigma^2 + epsilon) + bias, (mu, sigma^2)) per channel.

  Training: mu and sigma^2 are the batch's, over its rows and positions, averaged over the
  mesh axes `axes` (equal rows per device), so that devices splitting the batch normalise as
  one device would with the whole of it. Evaluation: the running averages `mean` and `var`.
  In float32 whatever the compute dtype (sums of ~10^5 terms)."""
  y, per_channel = y_BHWC.astype(jnp.float32), lambda c: c[None, None, None, :]
  if train:
    mu = jnp.mean(y, axis=(0, 1, 2))
    mu = lax.pmean(mu, axes) if axes else mu
    sigma2 = jnp.mean(jnp.square(y - per_channel(mu)), axis=(0, 1, 2))
    sigma2 = lax.pmean(sigma2, axes) if axes else sigma2
  else:
    mu, sigma2 = mean, var
  out = (y - per_channel(mu)) * per_channel(scale * lax.rsqrt(sigma2 + epsilon)) + per_channel(
      bias)
  return out.astype(dtype), (mu, sigma2)


def partition(params):
  """(trainable, running): a {layer: {leaf: array}} tree split by RUNNING; merge undoes it."""
  trainable = {name: {k: v for k, v in p.items() if k not in RUNNING}
               for name, p in params.items()}
  running = {name: {k: v for k, v in p.items() if k in RUNNING} for name, p in params.items()}
  return trainable, {name: r for name, r in running.items() if r}


def merge(trainable, running):
  return {layer: {**p, **running.get(layer, {})} for layer, p in trainable.items()}


def with_running_stats(running, moments, momentum):
  """The running averages moved towards this batch's moments ({layer: (mean, var)}):
  r <- momentum r + (1 - momentum) moment."""
  return {layer: {k: momentum * r[k] + (1.0 - momentum) * m.astype(r[k].dtype)
                  for k, m in zip(RUNNING, moments[layer])} for layer, r in running.items()}


def dropout(cfg, h, layer, *, train, rng, micro=None, row_blocks=1, row_block=0, unit_blocks=1,
            unit_block=0, first_tower=0):
  """Dropout (4.2) of the towers `h` (this device's, [rows, units] each) whose masks do not
  depend on the mesh or the layout.

  Tower g's mask for layer l is drawn from fold_in(fold_in(rng, l), g) for the whole step's
  batch and every unit of the tower: `row_blocks` blocks of rows (one per device that holds
  rows), each holding `count` micro-batches (micro = (index, count), config.train.accum_steps).
  This device takes block `row_block` (None: every block, when it holds the whole batch) of
  micro-batch `index`, and block `unit_block` of `unit_blocks` of the units. So any mesh, either
  layout and one device without a mesh draw the same mask for the same example and unit.

  config.model.dropout_scaling: "paper" (4.2) keeps the kept units as they are while training
  and multiplies every output by 1 - rate (0.5) at test time (at_test_time); "inverted" (Caffe,
  PyTorch) scales the kept units by 1 / (1 - rate) while training and uses the outputs as they
  are at test time. The two compute the same function when the next layer's weights differ by
  that factor, but they do not train alike: the next layer's gradient is (1 - rate) times as
  large with "paper", so its weights move 1 / (1 - rate)^2 times more slowly relative to their
  function at the same learning rate.
  """
  rate, paper = cfg.dropout_rate, cfg.dropout_scaling == "paper"
  if rate == 0.0 or not train:
    return h  # Evaluation: at_test_time.
  if rng is None:
    raise ValueError("AlexNet needs `rng` when training with dropout_rate > 0.")
  rows, units = h[0].shape
  index, count = (0, 1) if micro is None else micro
  per_block = rows if row_block is not None else rows // row_blocks
  out = []
  for t, y in enumerate(h):
    key = jax.random.fold_in(jax.random.fold_in(rng, layer), first_tower + t)
    keep = jax.random.bernoulli(key, 1.0 - rate,
                                (row_blocks * count * per_block, units * unit_blocks))
    keep = keep.reshape(row_blocks, count, per_block, units * unit_blocks)
    keep = lax.dynamic_index_in_dim(keep, index, axis=1, keepdims=False)
    if row_block is not None:
      keep = lax.dynamic_index_in_dim(keep, row_block, axis=0, keepdims=False)
    keep = lax.dynamic_slice_in_dim(keep.reshape(rows, -1), unit_block * units, units, axis=1)
    out.append(jnp.where(keep, y if paper else y / (1.0 - rate), jnp.zeros_like(y)))
  return out


def at_test_time(cfg, h, train):
  """Section 4.2's test time: every output of a dropped-out layer times 1 - rate (0.5)."""
  rate = cfg.dropout_rate
  if train or rate == 0.0 or cfg.dropout_scaling != "paper":
    return h
  return [y * (1.0 - rate) for y in h]
