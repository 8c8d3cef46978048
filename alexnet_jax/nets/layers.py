"""The layers besides plain convolutions: `lrn` (3.3) and `max_pool` (3.4) with their gradients
written out, ACTIVATIONS (3.1), `dropout` (4.2), `batch_norm`, float32 sums; `impl_config`, how
they are computed (docs/design.md, "Layers")."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from alexnet_jax import errors

LRN_CONVENTIONS = ("paper", "caffe")
# How the layers are computed, not what (config.impl), the first of each the default: only a CPU
# has timed them, and these lost there; a GPU measurement is to decide (benchmarks/README.md).
IMPL = {"pool_grad": ("custom", "reduce_window"), "lrn_dtype": ("float32", "compute"),
        "tower_conv": ("separate", "grouped"), "conv1_channels": (3, 4, 8),
        "model1_gathers": (True, False), "product_output": ("compute", "float32")}


def impl_config(impl=None) -> ml_collections.FrozenConfigDict:
  """config.impl checked, the defaults where `impl` is None or lacks a field."""
  values = {k: allowed[0] for k, allowed in IMPL.items()} | dict(impl or {})
  for field, value in values.items():
    allowed = IMPL.get(field)
    if allowed is None or value not in allowed:
      raise errors.ConfigError(f"config.impl.{field}={value!r}: " + (
          f"use one of {allowed} (the first is the default)." if allowed else
          f"no such field; config.impl holds {tuple(IMPL)}."))
  return ml_collections.FrozenConfigDict(values)


ACTIVATIONS = {
    "relu": nn.relu,                                  # 3.1
    "tanh": jnp.tanh,                                 # figure 1's comparison
    "abs_tanh": lambda x: jnp.abs(jnp.tanh(x)),       # 3.1, Jarrett et al.'s f(x) = |tanh(x)|
    "sigmoid": nn.sigmoid,
}


def lrn(x_BHWC, *, k, n, alpha, beta, convention="paper", in_float32=True):
  """3.3 over one tower's channels, the window clipped at its edges: b_i = a_i / (k + alpha *
  sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta, `convention` "caffe" with alpha / n."""
  if convention not in LRN_CONVENTIONS:
    raise errors.ConfigError(f"config.model.lrn_convention={convention!r}: use 'paper' or 'caffe'.")
  scale = alpha / n if convention == "caffe" else alpha
  # float32 by default: bfloat16 would round the denominator (~1e4-1e6) by up to 0.4%.
  y = _lrn(x_BHWC.astype(jnp.float32 if in_float32 else x_BHWC.dtype), float(k), int(n),
         float(scale), float(beta))
  return y.astype(x_BHWC.dtype)


def configured_lrn(cfg, impl):
  """`lrn` with config.model's constants and convention, in config.impl's dtype."""
  return functools.partial(lrn, k=cfg.lrn_k, n=cfg.lrn_n, alpha=cfg.lrn_alpha, beta=cfg.lrn_beta,
                           convention=cfg.lrn_convention, in_float32=impl.lrn_dtype == "float32")


def _window_sum(y_BHWC, n):
  """Sum over the n channels centred on each channel, clipped at the edges (zero padding)."""
  channels = y_BHWC.shape[-1]
  padded = jnp.pad(y_BHWC, ((0, 0), (0, 0), (0, 0), (n // 2, n // 2)))
  return sum(padded[..., i:i + channels] for i in range(n))


def _neg_pow(d, beta):
  """d ** -beta; the paper's 0.75 as two rsqrts, cheaper than pow on CPU."""
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x_BHWC, window, stride):
  """Max over window x window patches (VALID) of window^2 strided slices: lax.reduce_window's
  values and gradient (ties to the first maximum), cheaper on CPU."""
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
  """Without scatters or strided pads: offset (i, j) pads its gradient densely into phase
  (i % stride, j % stride), and one reshape interleaves the phases."""
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
  """max_pool through lax.reduce_window (config.impl.pool_grad="reduce_window")."""
  # A Python -inf, so that lax.reduce_window sees the max monoid and can differentiate it.
  return lax.reduce_window(x_BHWC, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), "VALID")


def product_type(product_output, dtype):
  """What products return (config.impl.product_output): "compute", the compute dtype, or
  "float32" (docs/design.md, "Layers")."""
  return None if product_output == "compute" else accumulation(dtype)


def accumulation(dtype):
  """float32 sums for a lower-precision dtype (a bfloat16 sum stops growing); None for float32."""
  return None if jnp.dtype(dtype) == jnp.float32 else jnp.float32


def add_bias(y, bias, dtype):
  """y + bias in the compute dtype, added in float32 for bfloat16 (so is the bias gradient)."""
  if jnp.dtype(dtype) == jnp.float32:
    return y + bias.astype(dtype)[(None,) * (y.ndim - 1)]
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)[(None,) * (y.ndim - 1)]).astype(dtype)


NORMS = ("lrn", "batch", "none")  # config.model.norm.
# Running averages among a layer's leaves: the training step writes them, no rule descends.
RUNNING = ("mean", "var")


def batch_norm(y_BHWC, scale, bias, mean, var, *, train, axes, epsilon, dtype):
  """(scale (y - mu) / sqrt(sigma^2 + epsilon) + bias, (mu, sigma^2)) per channel, in float32:
  the whole batch's moments over the mesh `axes` when training, `mean` and `var` otherwise."""
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


def split_running(params):
  """(trainable, running): a {layer: {leaf: array}} tree split by RUNNING (join_running)."""
  trainable = {name: {k: v for k, v in p.items() if k not in RUNNING}
               for name, p in params.items()}
  running = {name: {k: v for k, v in p.items() if k in RUNNING} for name, p in params.items()}
  return trainable, {name: r for name, r in running.items() if r}


def join_running(trainable, running):
  return {layer: {**p, **running.get(layer, {})} for layer, p in trainable.items()}


def with_running_stats(running, moments, momentum):
  """r <- momentum r + (1 - momentum) moment, for {layer: (mean, var)}."""
  return {layer: {k: momentum * r[k] + (1.0 - momentum) * m.astype(r[k].dtype)
                  for k, m in zip(RUNNING, moments[layer])} for layer, r in running.items()}


def dropout(cfg, h, layer, *, train, rng, micro=None, row_blocks=1, row_block=0, unit_blocks=1,
            unit_block=0, first_tower=0):
  """4.2 on this device's towers `h` ([rows, units] each): tower g of layer l masked from
  fold_in(fold_in(rng, l), g) over the whole step's batch, of which this device takes its
  `row_block`, micro-batch and `unit_block`, so no mesh changes a mask (docs/design.md)."""
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
