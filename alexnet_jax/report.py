"""What a run tells a person: `describe` at the start, `summary` and `summary_text` at the end,
and the run files that serve without the dataset (`write_run_files`: classes, constants)."""
import json

import jax
import numpy as np

from alexnet_jax import errors
from alexnet_jax import metrics
from alexnet_jax import nets
from alexnet_jax import paths
from alexnet_jax.faults import write_errors


def describe(config, mesh, info, steps_per_epoch, total_steps, params):
  """Three lines: the network and its size, the mesh, the data and the step counts."""
  per_device = sum(x.addressable_shards[0].data.size for x in jax.tree.leaves(params))
  d = config.data
  data = {"tfds": f"TFDS {d.name}", "folder": f"image folder {d.root}",
          "tiny_imagenet": f"Tiny ImageNet {d.root}", "imagenet": f"ImageNet {d.root}"}.get(
              d.source, f"generated ({d.generated.num_classes} classes)")
  return (
      f"{nets.display_name(config.model)}: {nets.count_params(params):,} parameters "
      f"({per_device:,} per device), {config.model.num_classes} classes, "
      f"{config.model.image_size}x{config.model.image_size} inputs.\n"
      f"Mesh: data={mesh.shape['data']} x model={mesh.shape['model']} over "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s), {jax.process_count()} "
      f"process(es).\n"
      f"Data: {data}: {info['num_train']} training, {info['num_eval']} {info['eval_split']} "
      f"images; {steps_per_epoch} steps of {config.train.batch_size} per epoch, {total_steps} "
      "steps.")


def summary(config, workdir, *, steps, steps_per_epoch, total_steps, clock, epoch_train,
            final, learning_rate, write_metrics=True):
  """The summary.json dict: final and best errors, 10-crop errors, time and speed."""
  evals = [r for r in metrics.read_jsonl(paths.file(workdir, paths.METRICS))
           if "val_top1_error" in r] if write_metrics else []
  best = lambda k: min((r[k] for r in evals), default=None)
  result = {"status": "finished", "steps": steps, "epochs": steps / steps_per_epoch,
            "wall_time_s": clock.elapsed(), "images_per_s": clock.mean_images_per_s(),
            "cores_share": clock.mean_cores_share(),
            "final_train_top1_error": epoch_train.get("top1_error"),
            "final_train_top5_error": epoch_train.get("top5_error"),
            "final_val_top1_error": final.get("val_top1_error"),
            "final_val_top5_error": final.get("val_top5_error"),
            "best_val_top1_error": best("val_top1_error"),
            "best_val_top5_error": best("val_top5_error"),
            "val_top1_error_10crop": final.get("val_top1_error_10crop"),
            "val_top5_error_10crop": final.get("val_top5_error_10crop"),
            "learning_rate": learning_rate}
  target = config.train.stop_at_train_error
  if target > 0 and steps < total_steps:
    result["stopped_at_train_error"] = target
  return result


def stopped_at_target(summary_dict, config, step):
  """Whether `summary_dict` is of a run that stopped at this config's target error at `step`."""
  target = config.train.stop_at_train_error
  return (summary_dict.get("status") == "finished" and summary_dict.get("steps") == step and
          target > 0 and summary_dict.get("stopped_at_train_error") == target)


def summary_text(s, workdir):
  def pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"
  cores = "" if s.get("cores_share") is None else f", {s['cores_share']:.0%} of the cores"
  return "\n".join([
      f"Finished {s['steps']} steps ({s['epochs']:.2f} epochs) in {s['wall_time_s']:.0f} s, "
      + (f"{s['images_per_s']:.1f} training images/s{cores}." if s["images_per_s"]
         is not None else "no step timed in this start."),
      f"  validation error, centre crop: top-1 {pct(s['final_val_top1_error'])}, top-5 "
      f"{pct(s['final_val_top5_error'])}",
      f"  validation error, 10 crops:    top-1 {pct(s['val_top1_error_10crop'])}, top-5 "
      f"{pct(s['val_top5_error_10crop'])}",
      f"  last epoch's training error:   top-1 {pct(s['final_train_top1_error'])}",
      f"Checkpoints: {workdir}/checkpoints; metrics: {workdir}/metrics.jsonl; TensorBoard: "
      f"tensorboard --logdir {workdir}/tensorboard"])


def write_run_files(workdir, class_names, consts):
  """classes.json and the mean image and PCA basis: what predict needs beside a checkpoint."""
  classes, constants = paths.file(workdir, paths.CLASSES), paths.file(workdir, paths.CONSTANTS)
  with write_errors.naming(classes):
    classes.write_text(json.dumps(list(class_names), indent=0) + "\n")
  with write_errors.naming(constants), constants.open("wb") as f:
    np.savez(f, **{k: np.asarray(v) for k, v in consts.items()})


def read_class_names(workdir, num_classes):
  """The run's class names; "class <k>" for a run that stored none (older workdirs)."""
  path = paths.file(workdir, paths.CLASSES)
  if not path.exists():
    return [f"class {k}" for k in range(num_classes)]
  names = json.loads(path.read_text())
  if len(names) != num_classes:
    raise errors.ConfigError(
        f"{path} lists {len(names)} classes but the run's config.model.num_classes="
        f"{num_classes}: the file belongs to another run; delete it or fix it.")
  return names


def read_constants(workdir):
  """The run's stored preprocessing constants, or None when it stored none."""
  path = paths.file(workdir, paths.CONSTANTS)
  if not path.exists():
    return None
  with path.open("rb") as raw, np.load(raw) as f:
    return {k: f[k] for k in f.files}
