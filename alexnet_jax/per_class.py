"""Per-class results of an evaluation (`report_run`): per_class_step<N>.csv, the five worst
classes, and below evaluate.CONFUSION_MAX_CLASSES classes confusion_step<N>.png
(docs/after_training.md, "Per-class results")."""
import csv

import numpy as np

from alexnet_jax import paths
from alexnet_jax import report as run_files
from alexnet_jax.data import input_pipeline
from alexnet_jax.faults import write_errors

VIEWS = (("", "centre crop"), ("_10crop", "10 crops"))


def write(workdir, step, class_names, results):
  """Writes the CSV (and PNG) of `results`, {"" or "_10crop": evaluate's result}; the paths."""
  path = paths.per_class_csv(workdir, step)
  columns = [(s, f"top{k}_error") for s, _ in VIEWS if s in results for k in (1, 5)]
  # POSIX writes csv's "\r\n" as it is; a bucket's files take no newline argument.
  with write_errors.naming(path), path.open("w", encoding="utf-8") as f:
    out = csv.writer(f)
    out.writerow(["class", "name", "count"] + [name + s for s, name in columns])
    for c, name in enumerate(class_names):
      errors = [results[s]["per_class"][column][c] for s, column in columns]
      out.writerow([c, name, int(results[columns[0][0]]["per_class"]["count"][c])] +
                   ["" if not np.isfinite(v) else f"{float(v):.6f}" for v in errors])
  suffix, title = main_view(results)
  if "confusion" not in results[suffix]:
    return [path]
  png = paths.confusion_png(workdir, step)
  confusion_png(png, results[suffix]["confusion"], class_names,
                f"Confusion at step {step}, {title} (rows: true class)")
  return [path, png]


def report(workdir, step, class_names, results):
  """Writes the files and returns the text to print: the worst classes, the files' paths."""
  written = write(workdir, step, class_names, results)
  suffix, title = main_view(results)
  return (worst_text(class_names, results[suffix], title) +
          f"\nPer-class errors: {', '.join(str(p) for p in written)}")


def main_view(results):
  """(suffix, title) of the view the summary reports: 10 crops when evaluated, else centre."""
  return VIEWS[1] if VIEWS[1][0] in results else VIEWS[0]


def worst_text(class_names, result, title, n=5):
  """The `n` classes with the highest top-1 error (then top-5), as one line each."""
  per = result["per_class"]
  order = sorted(np.nonzero(per["count"] > 0)[0],
                 key=lambda k: (-per["top1_error"][k], -per["top5_error"][k], k))[:n]
  width = max((len(class_names[k]) for k in order), default=0)
  return "\n".join(
      [f"The {len(order)} classes with the highest top-1 error ({title}):"] +
      [f"  {class_names[k]:<{width}}  top-1 {100 * per['top1_error'][k]:5.1f}%, top-5 "
       f"{100 * per['top5_error'][k]:5.1f}% ({int(per['count'][k])} images)" for k in order])


def confusion_png(path, confusion, class_names, title):
  """The row-normalised confusion matrix, each class's name on both axes."""
  import matplotlib  # Only this file draws.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  confusion = np.asarray(confusion, np.float64)
  rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  k = len(class_names)
  fig, ax = plt.subplots(figsize=(min(24.0, 3.0 + 0.28 * k),) * 2)
  image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
  fontsize = max(4, min(9, int(300 / k)))
  ax.set_xticks(range(k), class_names, rotation=90, fontsize=fontsize)
  ax.set_yticks(range(k), class_names, fontsize=fontsize)
  ax.set(xlabel="predicted (top-1)", ylabel="true class")
  ax.set_title(title, fontsize=10)
  if k <= 20:  # Room for the fractions in the cells.
    for i in range(k):
      for j in range(k):
        if confusion[i, j]:
          ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if rows[i, j] > 0.5 else "black")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  with write_errors.naming(path), path.open("wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def report_run(writer, workdir, config, step, results):
  """A run's per-class files and its five worst classes on the console (process 0)."""
  results = {k: v for k, v in results.items() if v is not None}
  if not results or not writer.active:
    return
  names = (run_files.read_class_names(workdir, config.model.num_classes)
           if paths.file(workdir, paths.CLASSES).exists()
           else input_pipeline.class_names(config))
  writer.print(report(workdir, step, names, results))
