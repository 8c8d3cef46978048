r"""The three recipes of configs/recipes.py at full width on Tiny ImageNet's 200 classes: which
leaves chance. Each recipe trains as its own process (the program itself, one command each,
resumable), and the report reads their metrics.jsonl:

    python -m experiments.tiny_imagenet_recipes --workdir=workdirs/recipes \
        --root=$HOME/data/tiny-imagenet-200 --steps=300 [--recipe=paper --recipe=caffe] \
        [--parallel=3] [--set k=v ...]
    python -m experiments.tiny_imagenet_recipes --workdir=workdirs/recipes --report_only \
        --out=experiments/results/recipes_tiny_imagenet_cpu

The runs: batch 128 (the paper's), the mesh and devices from --set (two CPU devices with
mesh.model=2 by default), the centre-crop validation error at the end only, on
--eval_per_class images of each class. The report: `<out>.csv` (recipe, step, training loss
of each logged window), `<out>.png` (the curves, ln 200 dashed) and `<out>.md` (the table:
the loss at the first and last log, the lowest, the distance from ln 200, the training and
validation errors). experiments/README.md, "Three recipes on Tiny ImageNet", has the results.
"""
import argparse
import csv
import math
import os
import subprocess
import sys

from alexnet_jax import metrics
from alexnet_jax.configs import recipes

DEFAULT_SETS = ("mesh.model=2", "mesh.num_cpu_devices=2")


def command(recipe, workdir, root, steps, eval_per_class, sets=()):
  """The program's command line for one recipe's run."""
  overrides = {"train.batch_size": 128, "train.num_steps": steps, "train.log_every_steps": 10,
               "eval.every_epochs": 1000, "eval.ten_crop": False, "eval.batch_size": 100,
               "data.max_eval_per_class": eval_per_class, "checkpoint.every_steps": 50,
               "data.root": root}
  overrides.update(dict(s.split("=", 1) for s in (*DEFAULT_SETS, *sets)))
  return [sys.executable, "-m", "alexnet_jax.main",
          f"--config=configs/tiny_imagenet.py:{recipe}",
          f"--workdir={os.path.join(workdir, recipe)}",
          *(f"--config.{k}={v}" for k, v in overrides.items())]


def run_all(names, workdir, root, steps, eval_per_class, sets, parallel):
  """Starts the runs, `parallel` at a time; each one's output goes to <workdir>/<recipe>.log."""
  os.makedirs(workdir, exist_ok=True)
  pending, running, failed = list(names), [], []
  while pending or running:
    while pending and len(running) < parallel:
      name = pending.pop(0)
      log = open(os.path.join(workdir, f"{name}.log"), "a")
      cmd = command(name, workdir, root, steps, eval_per_class, sets)
      print(" ".join(cmd), flush=True)
      running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
    name, proc = running.pop(0)
    if proc.wait():
      failed.append(name)
  return failed


def curve(run_dir):
  """[(step, training loss, training top-1 error, top-5)] of each logged window."""
  path = os.path.join(run_dir, "metrics.jsonl")
  rows = metrics.read_jsonl(path) if os.path.exists(path) else []
  by_step = {r["step"]: r for r in rows if "train_loss" in r}  # A resumed window: the last.
  return [(s, r["train_loss"], r["train_top1_error"], r["train_top5_error"])
          for s, r in sorted(by_step.items())]


def final_validation(run_dir):
  path = os.path.join(run_dir, "metrics.jsonl")
  rows = metrics.read_jsonl(path) if os.path.exists(path) else []
  evals = [r for r in rows if "val_top1_error" in r]
  return evals[-1] if evals else {}


def summarise(name, run_dir, num_classes=200):
  points = curve(run_dir)
  chance = math.log(num_classes)
  val = final_validation(run_dir)
  if not points:
    return {"recipe": name, "steps": 0}
  last = points[-1]
  return {"recipe": name, "steps": last[0], "first_loss": points[0][1],
          "max_loss": max(p[1] for p in points), "min_loss": min(p[1] for p in points),
          "last_loss": last[1], "below_chance": chance - last[1],
          "last_train_top1": last[2], "last_train_top5": last[3],
          "val_top1": val.get("val_top1_error"), "val_top5": val.get("val_top5_error"),
          "val_step": val.get("step")}


def _pct(v):
  return "-" if v is None else f"{100 * v:.1f}%"


def markdown(rows, num_classes=200):
  chance = math.log(num_classes)
  lines = [f"| recipe | steps | loss at the first log | highest | lowest | last | ln {num_classes}"
           " - last | training top-1 / top-5 error (last window) | validation top-1 / top-5 "
           "(centre crop) |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if not r["steps"]:
      lines.append(f"| {r['recipe']} | 0 | - | - | - | - | - | - | - |")
      continue
    lines.append(
        f"| {r['recipe']} | {r['steps']} | {r['first_loss']:.3f} | {r['max_loss']:.3f} | "
        f"{r['min_loss']:.3f} | {r['last_loss']:.3f} | {r['below_chance']:+.3f} | "
        f"{_pct(r['last_train_top1'])} / {_pct(r['last_train_top5'])} | "
        f"{_pct(r['val_top1'])} / {_pct(r['val_top5'])} |")
  lines.append(f"\nChance: loss ln {num_classes} = {chance:.3f}, top-1 error "
               f"{1 - 1 / num_classes:.1%}, top-5 {1 - 5 / num_classes:.1%}.")
  return "\n".join(lines) + "\n"


def write_report(workdir, names, out, num_classes=200):
  """<out>.csv, <out>.md and <out>.png from the runs in <workdir>/<recipe>; returns the rows.

  Refuses (FileNotFoundError naming the folder), writing nothing, when none of the runs is
  there: a mistyped --workdir must not overwrite a committed report with empty rows."""
  workdir = os.path.expanduser(workdir)  # As the runs themselves read it (paths.root).
  found = [n for n in names if os.path.exists(os.path.join(workdir, n, "metrics.jsonl"))]
  if not found:
    raise FileNotFoundError(
        f"No runs in {os.path.abspath(workdir)}: none of {', '.join(names)} has a metrics.jsonl "
        "there; nothing written. (The shell leaves a ~ after --workdir= as it is: write $HOME.)")
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  curves = {n: curve(os.path.join(workdir, n)) for n in names}
  with open(out + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["recipe", "step", "train_loss", "train_top1_error", "train_top5_error"])
    for n in names:
      w.writerows([n, *p] for p in curves[n])
  rows = [summarise(n, os.path.join(workdir, n), num_classes) for n in names]
  with open(out + ".md", "w") as f:
    f.write(markdown(rows, num_classes))
  _plot(curves, out + ".png", num_classes)
  return rows


def _plot(curves, path, num_classes):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, points in curves.items():
    if points:
      ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
  chance = math.log(num_classes)
  ax.axhline(chance, color="grey", linestyle="--", label=f"ln {num_classes} (chance)")
  top = max((p[1] for points in curves.values() for p in points), default=chance)
  if top > chance + 0.6:  # A first window far above chance would flatten the rest.
    ax.set_ylim(chance - 0.4, chance + 0.6)
    ax.text(0.99, 0.97, f"(off the chart: up to {top:.2f})", transform=ax.transAxes,
            ha="right", va="top", fontsize=8)
  ax.set_xlabel("step (batch 128)")
  ax.set_ylabel("training loss (10-step window mean)")
  ax.set_title(f"Full-width AlexNet on Tiny ImageNet ({num_classes} classes)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--root", default="~/data/tiny-imagenet-200")
  p.add_argument("--recipe", action="append", choices=recipes.NAMES)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--eval_per_class", type=int, default=10)
  p.add_argument("--parallel", type=int, default=1)
  p.add_argument("--set", action="append", default=[], help="k=v override for every run")
  p.add_argument("--report_only", action="store_true")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  names = args.recipe or list(recipes.NAMES)
  failed = []
  if not args.report_only:
    failed = run_all(names, args.workdir, args.root, args.steps, args.eval_per_class, args.set,
                     args.parallel)
  try:
    rows = write_report(args.workdir, names, args.out or os.path.join(args.workdir, "recipes"))
  except FileNotFoundError as e:
    print(e, file=sys.stderr)
    return 2
  print(markdown(rows))
  if failed:
    print(f"Failed: {failed} (their logs: {args.workdir}/<recipe>.log)")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
