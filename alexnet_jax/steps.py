"""The jitted computations: `TrainState`, `make_train_step` (an optimizers.py rule, `accumulate`
over micro-batches) and `make_eval_step`; docs/design.md, "The step"."""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh

from alexnet_jax import errors
from alexnet_jax import evaluate
from alexnet_jax import nets
from alexnet_jax import optimizers
from alexnet_jax.nets import layers
from alexnet_jax import parallel
from alexnet_jax import preprocess

# Streams of jax.random.key(config.seed): initial weights, dropout, section 4.1's draws.
INIT_STREAM, DROPOUT_STREAM, AUGMENT_STREAM = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 scalar: steps taken.
  params: Any           # Global parameters, tower axis first, sharded over `model`.
  momentum: Any         # The velocity v of section 5, same structure and sharding as params.


def param_shardings(config, mesh: Mesh):
  """The global parameters' shardings under config.mesh.layout."""
  return parallel.layout(config, mesh).param_shardings


def state_shardings(config, mesh: Mesh) -> TrainState:
  params = param_shardings(config, mesh)
  return TrainState(step=parallel.replicated(mesh), params=params, momentum=params)


def abstract_state(config, mesh: Mesh) -> TrainState:
  """Shapes, dtypes and shardings of the train state: what a checkpoint restores into."""
  params = nets.abstract_params(config.model)
  shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, momentum=params)
  return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                               sharding=sharding),
                      shapes, state_shardings(config, mesh))


def create_train_state(config, mesh: Mesh) -> TrainState:
  """A fresh state, created directly into its shards; the weights come from config.seed."""
  rng = jax.random.fold_in(jax.random.key(config.seed), INIT_STREAM)
  init = lambda key: nets.init_params(config.model, key)
  shardings = state_shardings(config, mesh)
  params = jax.jit(init, out_shardings=shardings.params)(rng)  # Created into their shards.
  zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p), out_shardings=shardings.momentum)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, momentum=zeros(params))


def make_apply(config, mesh: Mesh):
  """apply(params, images_BHWC, rng, train) -> logits_BK of config.model on `mesh`."""
  return parallel.layout(config, mesh).apply


def cross_entropy(logits_BK, labels_B):
  """Mean over the global batch: the gradient is the data-parallel average."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B).mean()


def top_k_error(logits_BK, labels_B, k):
  """Fraction of examples whose label is not among the top k (evaluate.topk_correct's ties)."""
  return 1.0 - jnp.mean(evaluate.topk_correct(logits_BK, labels_B, k).astype(jnp.float32))


def to_micro(x, blocks, count):
  """[B, ...] -> [count, B / count, ...]: micro-batch i takes the i-th 1/count of each of the
  `blocks` row blocks that the devices hold, so that it splits over them as the batch did."""
  b = x.shape[0] // (blocks * count)
  x = x.reshape((blocks, count, b) + x.shape[1:])
  return jnp.swapaxes(x, 0, 1).reshape((count, blocks * b) + x.shape[3:])


def from_micro(x, blocks):
  """to_micro's inverse: [count, B / count, ...] -> [B, ...]."""
  count, rows = x.shape[:2]
  x = x.reshape((count, blocks, rows // blocks) + x.shape[2:])
  return jnp.swapaxes(x, 0, 1).reshape((count * rows,) + x.shape[3:])


def accumulate(loss_fn, params, images_BHWC, labels_B, count, blocks, constrain=lambda x: x):
  """(loss, logits_BK, grads) of the batch as the mean of `count` micro-batches of
  loss_fn(params, images, labels, (index, count)), each kept on its devices by `constrain`."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  xs = (to_micro(images_BHWC, blocks, count), to_micro(labels_B, blocks, count),
        jnp.arange(count, dtype=jnp.int32))

  def body(total, x):
    images, labels, index = x
    (loss, logits), grads = grad_fn(params, constrain(images), constrain(labels), (index, count))
    return jax.tree.map(jnp.add, total, grads), (loss, logits)

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, (losses, logits) = lax.scan(body, zeros, xs)
  grads = jax.tree.map(lambda g: g / count, grads)
  return losses.mean(), from_micro(logits, blocks), grads


def step_key(config):
  """The dropout and augmentation keys' root, of config.rng_impl's PRNG ("": threefry2x32;
  "rbg", "unsafe_rbg": cheaper on accelerators); the initial weights stay threefry's."""
  impl = config.rng_impl
  return jax.random.key(config.seed, dtype=impl) if impl else jax.random.key(config.seed)


def make_train_step(config, mesh: Mesh):
  """train_step(state, batch, learning_rate, consts) -> (state, metrics), jitted once, the
  state donated: the uint8 global batch cropped on the device, keys fold_in(seed, step)."""
  placed = parallel.layout(config, mesh)
  apply = placed.apply
  mu, decay = config.train.momentum, config.train.weight_decay
  bias_rule = {"bias_lr_mult": config.train.bias_lr_mult,
               "bias_decay_mult": config.train.bias_decay_mult}
  root = step_key(config)
  dropout_root = jax.random.fold_in(root, DROPOUT_STREAM)
  augment_root = jax.random.fold_in(root, AUGMENT_STREAM)
  update, accum = optimizers.update_rule(config.train), config.train.accum_steps
  # The row blocks the devices hold: micro-batches take a part of each (`to_micro`).
  blocks = placed.row_blocks
  constrain = lambda x: jax.lax.with_sharding_constraint(x, parallel.batch_sharding(mesh))
  if accum > 1 and (not placed.towered or config.train.batch_size % (blocks * accum)):
    raise errors.ConfigError(f"config.train.accum_steps={accum}: AlexNet only, with a batch "
                             f"({config.train.batch_size}) that divides into {accum} micro-batches "
                             f"over the {blocks} row blocks of the devices.")
  batch_norm = config.model.norm == "batch"
  if accum > 1 and batch_norm:
    raise errors.ConfigError(
        f"config.train.accum_steps={accum} with config.model.norm='batch': each "
        "micro-batch would be normalised by its own moments, not the step's batch. "
        "Use accum_steps=1 (a larger batch over more devices) or another norm.")

  def train_step(state: TrainState, batch, learning_rate, consts):
    images_BHWC = preprocess.train_images(
        batch["image"], jax.random.fold_in(augment_root, state.step), consts, config.data,
        config.model.image_size)
    rng = jax.random.fold_in(dropout_root, state.step)

    def loss_fn(params, images_BHWC, labels_B, micro=None):
      logits_BK, moments = apply(params, images_BHWC, rng, train=True, micro=micro,
                                 moments=True)
      return cross_entropy(logits_BK, labels_B), (logits_BK, moments)

    def loss_logits(*args):
      loss, (logits_BK, _) = loss_fn(*args)
      return loss, logits_BK

    if accum > 1:
      loss, logits_BK, grads = accumulate(
          loss_logits, state.params, images_BHWC, batch["label"], accum, blocks, constrain)
    else:
      (loss, (logits_BK, moments)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, images_BHWC, batch["label"])
    if batch_norm:  # The running averages are no parameters: written, not descended.
      (params, running), (velocity, still) = (layers.split_running(state.params),
                                              layers.split_running(state.momentum))
      params, velocity = update(params, velocity, layers.split_running(grads)[0],
                                learning_rate, mu=mu, decay=decay, **bias_rule)
      running = layers.with_running_stats(running, moments, config.model.bn_momentum)
      params, momentum = layers.join_running(params, running), layers.join_running(velocity, still)
    else:
      params, momentum = update(state.params, state.momentum, grads, learning_rate,
                                mu=mu, decay=decay, **bias_rule)
    step_metrics = {"loss": loss,
                    "top1_error": top_k_error(logits_BK, batch["label"], 1),
                    "top5_error": top_k_error(logits_BK, batch["label"], 5)}
    return state.replace(step=state.step + 1, params=params, momentum=momentum), step_metrics

  shardings = state_shardings(config, mesh)
  batch = {"image": parallel.batch_sharding(mesh), "label": parallel.batch_sharding(mesh)}
  replicated = parallel.replicated(mesh)
  return jax.jit(train_step, in_shardings=(shardings, batch, replicated, replicated),
                 out_shardings=(shardings, replicated), donate_argnums=(0,))


def make_eval_step(config, mesh: Mesh):
  """Returns eval_step(params, images, consts, ten_crop) -> logits, jitted: the centre crop
  ([B, K]) or the ten crops ([B, 10, K]) of uint8 [B, R, R, 3] images, cut on the device."""
  apply = make_apply(config, mesh)
  crop = config.model.image_size

  @functools.partial(jax.jit, static_argnums=3)
  def eval_step(params, images, consts, ten_crop):
    x = preprocess.eval_images(images, consts, crop, ten_crop)
    if not ten_crop:
      return apply(params, x, None, train=False)
    logits = apply(params, x.reshape((-1,) + x.shape[2:]), None, train=False)
    return logits.reshape(x.shape[0], x.shape[1], logits.shape[-1])

  return eval_step


def eval_mesh(config, mesh: Mesh) -> Mesh:
  """Where evaluation runs: on one process with the towers split over the devices, both towers
  on each device and the batch split instead, so that no map crosses devices (the 10 crops
  ran 1.5x faster so on 2 CPU devices: benchmarks/README.md); elsewhere the training mesh."""
  if (jax.process_count() == 1 and parallel.layout(config, mesh).name == "towers"
      and mesh.shape["model"] > 1):
    return parallel.make_mesh(1, list(mesh.devices.flat))
  return mesh

