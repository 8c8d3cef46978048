"""Train state, loss, the SGD-momentum update of section 5 and the pure train step."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from alexnet_jax import parallel

# Streams folded into jax.random.key(config.seed): the initial weights and the dropout masks.
INIT_STREAM, DROPOUT_STREAM = 0, 1


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 scalar: steps taken.
  params: Any           # Global parameters, tower axis first, sharded over `model`.
  momentum: Any         # The velocity v of section 5, same structure and sharding as params.


def state_shardings(config, mesh: Mesh) -> TrainState:
  params = parallel.param_shardings(mesh, parallel.param_shapes(config.model))
  return TrainState(step=parallel.replicated(mesh), params=params, momentum=params)


def create_train_state(config, mesh: Mesh) -> TrainState:
  """A fresh state, created directly into its shards; the weights come from config.seed."""
  rng = jax.random.fold_in(jax.random.key(config.seed), INIT_STREAM)
  params = parallel.create_sharded_params(config.model, mesh, rng)
  shardings = state_shardings(config, mesh)
  zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p), out_shardings=shardings.momentum)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, momentum=zeros(params))


def cross_entropy(logits_BK, labels_B):
  """Mean over the global batch: the gradient is the data-parallel average."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B).mean()


def top_k_error(logits_BK, labels_B, k):
  """Fraction of examples whose label is not among the k highest logits."""
  _, top_BK = jax.lax.top_k(logits_BK, min(k, logits_BK.shape[-1]))
  return 1.0 - jnp.mean(jnp.any(top_BK == labels_B[:, None], axis=-1))


def sgd_momentum(params, momentum, grads, learning_rate, *, mu, decay):
  """Section 5, written out: v <- mu v - decay eps w - eps grad;  w <- w + v.

  Weight decay applies to the kernels only, not to the biases: the paper writes the rule for the
  weights w, and cuda-convnet's layer files (which trained the paper's net) give the decay `wc`
  to weights alone. Decaying the biases would also pull section 5's bias of 1 back towards 0.
  """
  def velocity(path, w, v, g):
    decay_term = decay * learning_rate * w if path[-1].key == "kernel" else 0.0
    return mu * v - decay_term - learning_rate * g

  momentum = jax.tree_util.tree_map_with_path(velocity, params, momentum, grads)
  return jax.tree.map(jnp.add, params, momentum), momentum


def make_train_step(config, mesh: Mesh):
  """Returns train_step(state, batch, learning_rate) -> (state, metrics), jitted once.

  batch = {"image": float32 [B, S, S, 3], "label": int32 [B]} with B the global batch, sharded
  over `data`. learning_rate is a traced scalar, so a schedule may change it between steps
  without recompiling. The state is donated. The dropout key is fold_in(seed, step): a run
  resumed from a checkpoint draws the same masks as one that never stopped.
  """
  apply = parallel.make_apply(config.model, mesh)
  mu, decay = config.train.momentum, config.train.weight_decay
  dropout_root = jax.random.fold_in(jax.random.key(config.seed), DROPOUT_STREAM)

  def train_step(state: TrainState, batch, learning_rate):
    rng = jax.random.fold_in(dropout_root, state.step)

    def loss_fn(params):
      logits_BK = apply(params, batch["image"], rng, train=True)
      return cross_entropy(logits_BK, batch["label"]), logits_BK

    (loss, logits_BK), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, momentum = sgd_momentum(state.params, state.momentum, grads, learning_rate,
                                    mu=mu, decay=decay)
    metrics = {"loss": loss,
               "top1_error": top_k_error(logits_BK, batch["label"], 1),
               "top5_error": top_k_error(logits_BK, batch["label"], 5)}
    return state.replace(step=state.step + 1, params=params, momentum=momentum), metrics

  shardings = state_shardings(config, mesh)
  batch = {"image": parallel.batch_sharding(mesh), "label": parallel.batch_sharding(mesh)}
  return jax.jit(train_step, in_shardings=(shardings, batch, parallel.replicated(mesh)),
                 out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=(0,))
