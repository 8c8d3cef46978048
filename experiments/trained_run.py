r"""The curves and the table of one long training run, from its workdir's metrics.jsonl.

    python -m experiments.trained_run --workdir=workdirs/tiny_w025 \
        --out=experiments/results/tiny_imagenet_w025

writes <out>.png (training loss and top-1 error, the logged windows and each epoch's mean;
validation top-1 / top-5 error at each evaluation, the centre crop; the learning rate, whose
plateau drops show as steps), <out>.csv (a row per epoch) and <out>.md (the same table, and
the final centre-crop and 10-crop errors of summary.json). A workdir with no evaluation yet is
refused, naming it, and nothing is written.
"""
import argparse
import csv
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alexnet_jax import metrics  # noqa: E402

COLUMNS = ("epoch", "step", "train_loss", "train_top1_error", "train_top5_error",
           "val_top1_error", "val_top5_error", "learning_rate", "elapsed_s")


def epoch_table(rows):
  """A row per evaluation: the epoch's mean training errors (over its batches) and mean loss
  (over its logged windows), the validation errors, the rate the epoch ended with, and the
  training time so far."""
  table, last, losses = [], {}, []
  for r in _resumed(rows):
    last.update({k: r[k] for k in ("learning_rate", "elapsed_s") if k in r})
    if "train_loss" in r:
      losses.append(r["train_loss"])
    if "epoch_train_top1_error" in r:
      last.update(train_top1_error=r["epoch_train_top1_error"],
                  train_top5_error=r["epoch_train_top5_error"],
                  train_loss=sum(losses) / len(losses) if losses else None)
      losses = []
    if "val_top1_error" in r and "val_top1_error_10crop" not in r:
      table.append({"epoch": round(float(r["epoch"]), 3), "step": r["step"],
                    "val_top1_error": r["val_top1_error"], "val_top5_error": r["val_top5_error"],
                    **{k: last.get(k) for k in COLUMNS if k in last}})
  return table


def _resumed(rows):
  """The rows a run kept: a resumed run logs again the steps after its checkpoint, so a row
  is dropped when a later one (the resumed run's) reaches the same step or an earlier one."""
  kept = []
  for r in rows:
    while kept and kept[-1]["step"] > r["step"]:
      kept.pop()
    if kept and kept[-1]["step"] == r["step"] and set(kept[-1]) == set(r):
      kept.pop()
    kept.append(r)
  return kept


def plot(rows, table, path, title):
  windows = [r for r in _resumed(rows) if "train_loss" in r]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4))
  ax = axes[0]
  ax.plot([r["epoch"] for r in windows], [r["train_loss"] for r in windows], lw=0.6, alpha=0.5,
          label="log window")
  ax.plot([t["epoch"] for t in table], [t["train_loss"] for t in table], "o-", label="epoch mean")
  ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
  ax.legend()
  ax = axes[1]
  ax.plot([r["epoch"] for r in windows], [r["train_top1_error"] for r in windows], lw=0.6,
          alpha=0.5, label="top-1, log window")
  ax.plot([t["epoch"] for t in table], [t["train_top1_error"] for t in table], "o-",
          label="top-1, epoch mean")
  ax.plot([t["epoch"] for t in table], [t["train_top5_error"] for t in table], "s-",
          label="top-5, epoch mean")
  ax.set(xlabel="epoch", ylabel="error", title="training error (dropout and augmentation on)")
  ax.legend()
  ax = axes[2]
  ax.plot([t["epoch"] for t in table], [t["val_top1_error"] for t in table], "o-", label="top-1")
  ax.plot([t["epoch"] for t in table], [t["val_top5_error"] for t in table], "s-", label="top-5")
  ax.set(xlabel="epoch", ylabel="error", title="validation error (centre crop)")
  ax.legend()
  ax = axes[3]
  ax.plot([r["epoch"] for r in windows], [r["learning_rate"] for r in windows])
  ax.set(xlabel="epoch", ylabel="learning rate", title="learning rate (plateau rule)",
         yscale="log")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def markdown(table, summary):
  lines = ["| epoch | training loss | training top-1 / top-5 error | validation top-1 / top-5 "
           "error (centre crop) | learning rate | training time |", "|---|---|---|---|---|---|"]
  for t in table:
    lines.append(f"| {t['epoch']:g} | {t['train_loss']:.3f} | {t['train_top1_error']:.1%} / "
                 f"{t['train_top5_error']:.1%} | {t['val_top1_error']:.1%} / "
                 f"{t['val_top5_error']:.1%} | {t['learning_rate']:g} | "
                 f"{t['elapsed_s'] / 60:.0f} min |")
  if summary.get("val_top1_error_10crop") is not None:
    lines += ["", f"After the last step ({summary['epochs']:g} epochs, "
              f"{summary['wall_time_s'] / 60:.0f} min): validation top-1 / top-5 error "
              f"{summary['final_val_top1_error']:.1%} / {summary['final_val_top5_error']:.1%} "
              f"(centre crop), {summary['val_top1_error_10crop']:.1%} / "
              f"{summary['val_top5_error_10crop']:.1%} (10 crops); best centre crop "
              f"{summary['best_val_top1_error']:.1%} / {summary['best_val_top5_error']:.1%}."]
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True, help="path prefix of the .png, .csv and .md")
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  workdir = os.path.expanduser(args.workdir)
  path = os.path.join(workdir, "metrics.jsonl")
  rows = metrics.read_jsonl(path) if os.path.exists(path) else []
  table = epoch_table(rows)
  if not table:
    raise SystemExit(f"{path}: no evaluation found (is --workdir a training run's folder, and "
                     "has it evaluated once?); nothing written.")
  summary = {}
  if os.path.exists(os.path.join(workdir, "summary.json")):
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
      summary = json.load(f)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  plot(rows, table, args.out + ".png", args.title or workdir)
  with open(args.out + ".csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
  with open(args.out + ".md", "w", encoding="utf-8") as f:
    f.write(markdown(table, summary))
  print(f"{len(table)} evaluations -> {args.out}.png, .csv, .md")


if __name__ == "__main__":
  main()
