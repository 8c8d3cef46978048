"""The update rules, one step of each on a parameter tree: section 5's `sgd_momentum` and You
et al.'s `lars` for large batches, the biases following section 5 in both; `update_rule`."""
import functools

import jax
import jax.numpy as jnp

from alexnet_jax import errors

OPTIMIZERS = ("sgd", "lars")


def _bias_velocity(w, v, g, learning_rate, *, mu, decay, bias_lr_mult, bias_decay_mult):
  """Section 5 for a bias: rate eps x bias_lr_mult, decayed by decay x bias_decay_mult."""
  # A multiplier of 1 or 0 is left out, so the paper's recipe computes what it did.
  rate = learning_rate if bias_lr_mult == 1.0 else bias_lr_mult * learning_rate
  decay_term = 0.0 if bias_decay_mult == 0.0 else bias_decay_mult * decay * rate * w
  return mu * v - decay_term - rate * g


def _apply(kernel_velocity, params, momentum, grads, learning_rate, *, mu, decay, bias_lr_mult,
           bias_decay_mult):
  def velocity(path, w, v, g):
    if path[-1].key == "kernel":
      return kernel_velocity(w, v, g)
    return _bias_velocity(w, v, g, learning_rate, mu=mu, decay=decay, bias_lr_mult=bias_lr_mult,
                          bias_decay_mult=bias_decay_mult)

  momentum = jax.tree_util.tree_map_with_path(velocity, params, momentum, grads)
  return jax.tree.map(jnp.add, params, momentum), momentum


def sgd_momentum(params, momentum, grads, learning_rate, *, mu, decay, bias_lr_mult=1.0,
                 bias_decay_mult=0.0):
  """Section 5: v <- mu v - decay eps w - eps grad; w <- w + v (the kernels alone decay)."""
  kernel = lambda w, v, g: mu * v - decay * learning_rate * w - learning_rate * g
  return _apply(kernel, params, momentum, grads, learning_rate, mu=mu, decay=decay,
                bias_lr_mult=bias_lr_mult, bias_decay_mult=bias_decay_mult)


def lars(params, momentum, grads, learning_rate, *, mu, decay, trust, eps=0.0,
         bias_lr_mult=1.0, bias_decay_mult=0.0):
  """You et al. 2017's algorithm 1 for each kernel (both towers): local = trust ||w|| / (||g||
  + decay ||w|| + eps) (1 where a norm is 0), v <- mu v - eps_t local (g + decay w)."""
  def kernel(w, v, g):
    w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
    ratio = jnp.where((w_norm > 0) & (g_norm > 0),
                      trust * w_norm / (g_norm + decay * w_norm + eps), 1.0)
    return mu * v - learning_rate * ratio * (g + decay * w)

  return _apply(kernel, params, momentum, grads, learning_rate, mu=mu, decay=decay,
                bias_lr_mult=bias_lr_mult, bias_decay_mult=bias_decay_mult)


def update_rule(train_cfg):
  """config.train.optimizer's rule, its own settings bound: "sgd" or "lars"."""
  name = train_cfg.optimizer
  if name not in OPTIMIZERS:
    raise errors.ConfigError(f"config.train.optimizer={name!r}: use one of {OPTIMIZERS}.")
  if name == "sgd":
    return sgd_momentum
  return functools.partial(lars, trust=train_cfg.lars_trust)
