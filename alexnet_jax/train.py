"""Train state, loss, the SGD-momentum update of section 5, the pure train step, and the
program that trains and evaluates: `train_and_evaluate`."""
import json
import pathlib
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from alexnet_jax import checkpoint
from alexnet_jax import evaluate
from alexnet_jax import input_pipeline
from alexnet_jax import metrics
from alexnet_jax import model
from alexnet_jax import parallel
from alexnet_jax import schedule

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


# ---------------------------------------------------------------------------------------------
# The program (issue 4): train_and_evaluate.


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming its latest checkpoint; returns the summary dict."""
  run = _Run(config, workdir)
  try:
    if config.eval_only:
      return run.evaluate_only()
    return run.train()
  finally:
    run.close()


class _Run:
  """What one run holds: the mesh, the state, the schedule, the writers and the checkpoints."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, pathlib.Path(workdir)
    self.info = input_pipeline.dataset_info(config)
    _check_config(config, self.info)
    self.mesh = parallel.make_mesh(config.mesh.model)
    # The rows of each global batch this process feeds (parallel.data_slice), not its
    # process index: processes holding different towers of the same rows feed the same data.
    self.slice_index, self.slice_count = parallel.data_slice(self.mesh)
    self.per_epoch, self.total = _num_steps(config, self.info)
    self.eval_split = config.eval.split or self.info["eval_split"]
    # An eval-only run leaves the training run's config.json as it is.
    self.writer = metrics.Writer(self.workdir, None if config.eval_only else config)
    self.state = create_train_state(config, self.mesh)
    self.schedule = schedule.create(config.train, self.per_epoch)
    self.fingerprint = checkpoint.model_fingerprint(config)
    self.mgr = checkpoint.manager(self.workdir, max_to_keep=config.checkpoint.max_to_keep)
    self.apply_eval = _make_eval_apply(config, self.mesh)
    restored = checkpoint.restore_latest(self.mgr, _abstract(self.state),
                                         fingerprint=self.fingerprint)
    if restored is not None:
      self.state, extra = restored
      self.schedule = schedule.from_dict(self.schedule, extra["schedule"])
      self.writer.print(f"Resumed from {self.mgr.directory} at step {int(self.state.step)}.")
    self.writer.print(_describe(config, self.mesh, self.info, self.per_epoch, self.total,
                                self.state.params))

  def train(self):
    config, start = self.config, int(self.state.step)
    summary_path = self.workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary and (start >= self.total or _stopped_at_target(summary, config, start)):
      self.writer.print(f"Already trained to step {start}; its summary ({summary_path}):")
      self.writer.print(_summary_text(summary, self.workdir))
      return summary
    step_fn = make_train_step(config, self.mesh)
    batches = input_pipeline.train_iterator(
        config, batch_size=config.train.batch_size, slice_index=self.slice_index,
        slice_count=self.slice_count, start_step=start)
    clock = metrics.Clock(config.train.batch_size,
                          metrics.elapsed_at(self.workdir / "metrics.jsonl", start))
    epoch_sums, window = metrics.Means(), metrics.Means()
    last_eval = None
    for step in range(start, self.total):
      batch = _to_global(self.mesh, next(batches), self.slice_count)
      lr = self.schedule.rate(step)
      self.state, step_metrics = step_fn(self.state, batch, np.float32(lr))
      step_metrics = jax.device_get(step_metrics)
      _check_finite(step_metrics, step + 1, self.mgr)
      clock.tick()
      epoch_sums.add(step_metrics)
      window.add(step_metrics)
      done = step + 1
      if done % config.train.log_every_steps == 0 or done == self.total:
        self._log_train(done, window.mean(), lr, clock)
        window = metrics.Means()
      reached = False
      if done % self.per_epoch == 0:
        reached = self._log_epoch(done, epoch_sums.mean(), clock)
        epoch_sums = metrics.Means()
      if self._eval_due(done) or reached:
        last_eval = self._periodic_eval(done, clock)
        clock.restart()
      elif done % config.checkpoint.every_steps == 0:
        self._save(done)
      if reached:
        break
    return self._finish(last_eval, clock)

  def _eval_due(self, done):
    every = max(1, int(round(self.config.eval.every_epochs * self.per_epoch)))
    return done % every == 0 or done == self.total

  def _periodic_eval(self, done, clock):
    """Centre-crop validation error: logged, drives the plateau schedule, ranks checkpoints."""
    result = self._evaluate(ten_crop=False)
    if self.schedule.update(result["top1_error"]):
      self.writer.print(f"Validation error stopped improving: learning rate divided to "
                        f"{self.schedule.rate(done):g}.")
    scalars = {"epoch": done / self.per_epoch, "val_top1_error": result["top1_error"],
               "val_top5_error": result["top5_error"], "elapsed_s": clock.elapsed()}
    self.writer.write(done, scalars, console=(
        "step {step}: validation top-1 error {val_top1_error:.4f}, top-5 "
        "{val_top5_error:.4f} (centre crop)"))
    self._save(done, {"val_top1_error": result["top1_error"]})
    return result

  def _finish(self, last_eval, clock):
    """The final 10-crop evaluation, summary.json and a summary a person can read."""
    final = {"val_top1_error": last_eval["top1_error"] if last_eval else None,
             "val_top5_error": last_eval["top5_error"] if last_eval else None}
    if self.config.eval.ten_crop:
      ten = self._evaluate(ten_crop=True)
      final.update(val_top1_error_10crop=ten["top1_error"],
                   val_top5_error_10crop=ten["top5_error"])
      done = self.done()
      self.writer.write(done, {"epoch": done / self.per_epoch,
                                     **{k: v for k, v in final.items() if v is not None},
                                     "elapsed_s": clock.elapsed()})
    summary = _summary(self, final, clock)
    self.writer.write_summary(summary)
    self.writer.print(_summary_text(summary, self.workdir))
    return summary

  def evaluate_only(self):
    if self.mgr.latest_step() is None:
      raise FileNotFoundError(
          f"config.eval_only=True but {self.mgr.directory} holds no checkpoint: train first, "
          "or point --workdir at a run that has one.")
    step = int(self.state.step)
    result = {}
    for ten_crop in (False, True):
      r = self._evaluate(ten_crop=ten_crop)
      suffix = "_10crop" if ten_crop else ""
      result.update({f"val_top1_error{suffix}": r["top1_error"],
                     f"val_top5_error{suffix}": r["top5_error"], "count": r["count"]})
    self.writer.print(
        f"Checkpoint step {step}, split {self.eval_split} ({result['count']} images): "
        f"top-1 error {result['val_top1_error']:.4f} centre crop, "
        f"{result['val_top1_error_10crop']:.4f} 10 crops; top-5 "
        f"{result['val_top5_error']:.4f} / {result['val_top5_error_10crop']:.4f}.")
    return result

  def _evaluate(self, ten_crop):
    batches = input_pipeline.eval_iterator(
        self.config, self.eval_split, batch_size=self.config.eval.batch_size,
        ten_crop=ten_crop, slice_index=self.slice_index, slice_count=self.slice_count)
    return evaluate.evaluate(self.apply_eval, self.state.params, batches,
                             put_batch=lambda x: _to_global(self.mesh, x, self.slice_count))

  def _log_train(self, done, means, lr, clock):
    images_per_s, step_time = clock.lap()
    scalars = {"epoch": done / self.per_epoch, "train_loss": means["loss"],
               "train_top1_error": means["top1_error"], "train_top5_error": means["top5_error"],
               "learning_rate": lr, "images_per_s": images_per_s, "step_time_s": step_time,
               "elapsed_s": clock.elapsed()}
    self.writer.write(done, scalars, console=(
        f"step {{step}}/{self.total} epoch {{epoch:.2f}}: loss {{train_loss:.4f}}, top-1 error "
        "{train_top1_error:.3f}, lr {learning_rate:g}, {images_per_s:.1f} images/s"))

  def _log_epoch(self, done, means, clock):
    """Logs an epoch's mean training error; True when it reached train.stop_at_train_error."""
    self.writer.write(done, {"epoch": done / self.per_epoch,
                             "epoch_train_top1_error": means["top1_error"],
                             "epoch_train_top5_error": means["top5_error"],
                             "elapsed_s": clock.elapsed()})
    self.last_epoch_train = means
    target = self.config.train.stop_at_train_error
    if target > 0 and means["top1_error"] <= target:
      self.writer.print(f"Epoch {done // self.per_epoch}: training top-1 error "
                        f"{means['top1_error']:.4f} reached train.stop_at_train_error={target:g}; "
                        "the run stops here.")
      return True
    return False

  def _save(self, done, val_metrics=None):
    if not _all_finite(self.state.params):
      raise FloatingPointError(
          f"The parameters are no longer finite after step {done}; not saved. The last good "
          f"checkpoint (step {self.mgr.latest_step()}) in {self.mgr.directory} is intact.")
    extra = {"fingerprint": self.fingerprint, "schedule": schedule.to_dict(self.schedule)}
    checkpoint.save(self.mgr, done, self.state, extra, val_metrics)

  def done(self):
    """The last step trained: total, or earlier when the run stopped at its target error."""
    return int(self.state.step)

  def close(self):
    self.mgr.close()
    self.writer.close()


def _check_config(config, info):
  if info["num_classes"] != config.model.num_classes:
    raise ValueError(
        f"The dataset has {info['num_classes']} classes but config.model.num_classes="
        f"{config.model.num_classes}: set --config.model.num_classes={info['num_classes']}.")
  devices = jax.device_count()
  for name, batch in (("train", config.train.batch_size), ("eval", config.eval.batch_size)):
    if batch % devices or batch % jax.process_count():
      raise ValueError(
          f"config.{name}.batch_size={batch} does not split evenly over the {devices} devices "
          f"of {jax.process_count()} process(es): use a multiple of {devices}.")
  target = config.train.stop_at_train_error
  if not 0.0 <= target <= 1.0:
    raise ValueError(f"config.train.stop_at_train_error={target}: a training error between 0 "
                     "and 1 (e.g. 0.25), or 0 to train all config.train.num_epochs.")


def _num_steps(config, info):
  """Steps per epoch and in all, from the training split's size and the global batch."""
  per_epoch = info["num_train"] // config.train.batch_size
  if per_epoch < 1:
    raise ValueError(
        f"config.train.batch_size={config.train.batch_size} exceeds the training split's "
        f"{info['num_train']} examples: lower the batch size or use more data.")
  total = config.train.num_steps or int(round(config.train.num_epochs * per_epoch))
  return per_epoch, max(1, total)


def _make_eval_apply(config, mesh):
  apply = parallel.make_apply(config.model, mesh)
  return jax.jit(lambda params, images_BHWC: apply(params, images_BHWC, None, train=False))


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      tree)


def _to_global(mesh, local, slice_count=1):
  """This process's data slice of a batch (a pytree; parallel.data_slice) -> global arrays
  sharded over `data`, `slice_count` times as many rows."""
  sharding = parallel.batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), (x.shape[0] * slice_count,) + x.shape[1:]), local)


def _check_finite(step_metrics, done, mgr):
  loss = float(step_metrics["loss"])
  if not np.isfinite(loss):
    mgr.wait_until_finished()
    kept = (f"The last good checkpoint (step {mgr.latest_step()}) in {mgr.directory} is intact"
            if mgr.latest_step() is not None else "No checkpoint had been saved yet")
    raise FloatingPointError(
        f"The training loss became {loss} at step {done}; the run stopped. {kept}. Lower "
        "config.train.learning_rate or check the input, then start again.")


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _describe(config, mesh, info, per_epoch, total, params):
  per_device = sum(x.addressable_shards[0].data.size for x in jax.tree.leaves(params))
  return (
      f"{_model_name(config)}: {model.count_params(params):,} parameters ({per_device:,} per "
      f"device), {config.model.num_classes} classes, "
      f"{config.model.image_size}x{config.model.image_size} inputs.\n"
      f"Mesh: data={mesh.shape['data']} x model={mesh.shape['model']} over "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s), {jax.process_count()} "
      f"process(es).\n"
      f"Data: {_data_name(config)}: {info['num_train']} "
      f"training, {info['num_eval']} {info['eval_split']} images; {per_epoch} steps of "
      f"{config.train.batch_size} per epoch, {total} steps.")


def _model_name(config):
  if config.model.get("name", "alexnet") == "alexnet":
    return f"AlexNet (width {config.model.width})"
  return f"{config.model.name} ({config.model.get('layout', '')})"


def _data_name(config):
  d = config.data
  return {"tfds": f"TFDS {d.name}", "folder": f"image folder {d.root}"}.get(
      d.source, f"generated ({d.generated.num_classes} classes)")


def _summary(run, final, clock):
  epoch = getattr(run, "last_epoch_train", {})
  evals = [r for r in metrics.read_jsonl(run.workdir / "metrics.jsonl")
           if "val_top1_error" in r] if run.writer.active else []
  best = lambda k: min((r[k] for r in evals), default=None)  # noqa: E731
  done = run.done()
  summary = {"status": "finished", "steps": done, "epochs": done / run.per_epoch,
          "wall_time_s": clock.elapsed(), "images_per_s": clock.mean_images_per_s(),
          "final_train_top1_error": epoch.get("top1_error"),
          "final_train_top5_error": epoch.get("top5_error"),
          "final_val_top1_error": final["val_top1_error"],
          "final_val_top5_error": final["val_top5_error"],
          "best_val_top1_error": best("val_top1_error"),
          "best_val_top5_error": best("val_top5_error"),
          "val_top1_error_10crop": final.get("val_top1_error_10crop"),
          "val_top5_error_10crop": final.get("val_top5_error_10crop"),
          "learning_rate": run.schedule.rate(done)}
  target = run.config.train.stop_at_train_error
  if target > 0 and done < run.total:
    summary["stopped_at_train_error"] = target
  return summary


def _stopped_at_target(summary, config, step):
  """Whether `summary` is of a run that stopped at this config's target error at `step`."""
  target = config.train.stop_at_train_error
  return (summary.get("status") == "finished" and summary.get("steps") == step and
          target > 0 and summary.get("stopped_at_train_error") == target)


def _summary_text(s, workdir):
  def pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"
  return "\n".join([
      f"Finished {s['steps']} steps ({s['epochs']:.2f} epochs) in {s['wall_time_s']:.0f} s, "
      f"{s['images_per_s']:.1f} training images/s.",
      f"  validation error, centre crop: top-1 {pct(s['final_val_top1_error'])}, top-5 "
      f"{pct(s['final_val_top5_error'])}",
      f"  validation error, 10 crops:    top-1 {pct(s['val_top1_error_10crop'])}, top-5 "
      f"{pct(s['val_top5_error_10crop'])}",
      f"  last epoch's training error:   top-1 {pct(s['final_train_top1_error'])}",
      f"Checkpoints: {workdir}/checkpoints; metrics: {workdir}/metrics.jsonl; TensorBoard: "
      f"tensorboard --logdir {workdir}/tensorboard"])
