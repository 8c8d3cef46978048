"""Large global batches: the learning-rate rules, LARS and gradient accumulation.

Section 5 trained at 128 images a step. For a global batch k times larger:
  config.train.lr_scaling  "none" (section 5's rate as given), "sqrt" (x sqrt(k): Krizhevsky
                           2014, "One weird trick", section 5) or "linear" (x k: Goyal et al. 2017,
                           "Accurate, Large Minibatch SGD", with config.train.warmup_epochs of
                           linear warmup from the unscaled rate);
  config.train.schedule    "poly": polynomial decay to 0 of power config.train.poly_power (2 in
                           You, Gitman & Ginsburg 2017) after the warmup;
  config.train.optimizer   "sgd" (section 5's rule) or "lars" (You et al. 2017, `lars` below);
  config.train.accum_steps k micro-batches make one step of k times the batch (`accumulate`).
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

SCALINGS = ("none", "sqrt", "linear")
OPTIMIZERS = ("sgd", "lars")


def scaled_rate(train_cfg):
  """config.train.learning_rate, scaled by config.train.lr_scaling from lr_base_batch (128, the
  paper's) to config.train.batch_size."""
  rule = train_cfg.get("lr_scaling", "none")
  if rule not in SCALINGS:
    raise ValueError(f"config.train.lr_scaling={rule!r}: use one of {SCALINGS}.")
  if rule == "none":
    return train_cfg.learning_rate
  k = train_cfg.batch_size / train_cfg.get("lr_base_batch", 128)
  return train_cfg.learning_rate * (math.sqrt(k) if rule == "sqrt" else k)


@dataclasses.dataclass
class Poly:
  """Linear warmup from `start_rate` to `learning_rate` over `warmup_steps` (Goyal et al. 2017,
  section 2.2, "gradual warmup"), then learning_rate x (1 - t / T)^power to 0 at `total_steps`
  (You et al. 2017, power 2). Holds no progress: a resumed run computes it from the step."""
  learning_rate: float
  total_steps: int
  warmup_steps: int = 0
  start_rate: float = 0.0
  power: float = 2.0
  drops: int = 0
  max_drops: int = 0

  def update(self, val_error):
    del val_error
    return False

  def rate(self, step):
    if step < self.warmup_steps:
      return self.start_rate + (self.learning_rate - self.start_rate) * step / self.warmup_steps
    span = max(1, self.total_steps - self.warmup_steps)
    left = max(0.0, 1.0 - (step - self.warmup_steps) / span)
    return self.learning_rate * left**self.power


def poly(train_cfg, steps_per_epoch, total_steps):
  return Poly(learning_rate=scaled_rate(train_cfg), total_steps=int(total_steps),
              warmup_steps=int(round(train_cfg.get("warmup_epochs", 0.0) * steps_per_epoch)),
              start_rate=train_cfg.learning_rate, power=train_cfg.get("poly_power", 2.0))


def lars(params, momentum, grads, learning_rate, *, mu, decay, trust, eps=0.0,
         bias_lr_mult=1.0, bias_decay_mult=0.0):
  """You, Gitman & Ginsburg 2017, algorithm 1, in section 5's form: for each layer's kernel
  (both towers together: the layer of the one-device network),
      local = trust ||w|| / (||g|| + decay ||w|| + eps)   (1 where ||w|| or ||g|| is 0),
      v <- mu v - eps_t local (g + decay w);   w <- w + v.
  Biases are left to section 5's rule at the global rate (LARS's exclusion of biases and
  normalisation parameters). Written out rather than optax.lars: optax divides by ||g + decay
  w|| and keeps its momentum in a chain state, where the train state holds section 5's v."""
  def velocity(path, w, v, g):
    if path[-1].key != "kernel":
      rate = learning_rate if bias_lr_mult == 1.0 else bias_lr_mult * learning_rate
      decay_term = 0.0 if bias_decay_mult == 0.0 else bias_decay_mult * decay * rate * w
      return mu * v - decay_term - rate * g
    w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
    ratio = jnp.where((w_norm > 0) & (g_norm > 0),
                      trust * w_norm / (g_norm + decay * w_norm + eps), 1.0)
    return mu * v - learning_rate * ratio * (g + decay * w)

  momentum = jax.tree_util.tree_map_with_path(velocity, params, momentum, grads)
  return jax.tree.map(jnp.add, params, momentum), momentum


def split(x, blocks, count):
  """[B, ...] -> [count, B / count, ...]: micro-batch i takes the i-th 1/count of each of the
  `blocks` row blocks that the devices hold, so that it splits over them as the batch did."""
  b = x.shape[0] // (blocks * count)
  x = x.reshape((blocks, count, b) + x.shape[1:])
  return jnp.swapaxes(x, 0, 1).reshape((count, blocks * b) + x.shape[3:])


def merge(x, blocks):
  """split's inverse: [count, B / count, ...] -> [B, ...]."""
  count, rows = x.shape[:2]
  x = x.reshape((count, blocks, rows // blocks) + x.shape[2:])
  return jnp.swapaxes(x, 0, 1).reshape((count * rows,) + x.shape[3:])


def accumulate(loss_fn, params, images_BHWC, labels_B, count, blocks, constrain=lambda x: x):
  """(loss, logits_BK, grads) of the whole batch as the mean of `count` micro-batches.

  loss_fn(params, images, labels, micro) -> (loss, logits), micro = (index, count). Each
  micro-batch's loss is its own mean, so their mean is the batch's and so is the gradient's;
  the dropout masks and crops are the whole batch's (the network reads `micro`). `constrain`
  keeps each micro-batch's rows on the devices that hold them.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  xs = (split(images_BHWC, blocks, count), split(labels_B, blocks, count),
        jnp.arange(count, dtype=jnp.int32))

  def body(total, x):
    images, labels, index = x
    (loss, logits), grads = grad_fn(params, constrain(images), constrain(labels), (index, count))
    return jax.tree.map(jnp.add, total, grads), (loss, logits)

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, (losses, logits) = lax.scan(body, zeros, xs)
  grads = jax.tree.map(lambda g: g / count, grads)
  return losses.mean(), merge(logits, blocks), grads
