r"""Tables and plots of a sweep's runs, read from each run's metrics.jsonl and summary.json.

    python -m experiments.sweep_report --workdir=workdirs/sweeps/NAME [--threshold=0.25]

Writes <workdir>/results.md, results.csv, train_error_vs_epochs.png and
train_error_vs_time.png; with a threshold (figure 1) also fig1.png (each activation's fastest
run) and, in results.md, the epochs each run needed to reach that training error and the ratio
of the fastest runs. The plots carry the run names in their PNG metadata ("Runs"), one per line.
"""
import argparse
import csv
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

from alexnet_jax import metrics  # noqa: E402

COLUMNS = ("status", "epochs", "steps", "wall_time_s",
           "final_train_top1_error", "final_train_top5_error",
           "best_train_top1_error", "best_train_top5_error",
           "final_val_top1_error", "final_val_top5_error",
           "best_val_top1_error", "best_val_top5_error",
           "val_top1_error_10crop", "val_top5_error_10crop", "images_per_s")


def load_run(run_dir):
  """{"name", "overrides", "rows", "summary"} of one run folder (missing files: empty)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  rows = metrics.read_jsonl(path) if os.path.exists(path) else []
  summary, overrides = {}, {}
  if os.path.exists(os.path.join(run_dir, "summary.json")):
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
      summary = json.load(f)
  if os.path.exists(os.path.join(run_dir, "point.json")):
    with open(os.path.join(run_dir, "point.json"), encoding="utf-8") as f:
      overrides = json.load(f)["overrides"]
  return {"name": os.path.basename(os.path.normpath(run_dir)), "overrides": overrides,
          "rows": rows, "summary": summary}


def train_curve(rows, key="top1", per="window"):
  """(epochs, errors, elapsed_s) of the training error as the network trains.

  per="window": the logged means over each log_every_steps window of batches (the curves and
  the epochs-to-threshold use these: finer than epochs, like cuda-convnet's running training
  error). per="epoch": the per-epoch means, or the window means if no epoch has ended.
  """
  epoch_rows = [r for r in rows if f"epoch_train_{key}_error" in r]
  if per == "epoch" and epoch_rows:
    name, chosen = f"epoch_train_{key}_error", epoch_rows
  else:
    name, chosen = f"train_{key}_error", [r for r in rows if f"train_{key}_error" in r]
  chosen = _last_per_step(chosen)
  return ([float(r["epoch"]) for r in chosen], [float(r[name]) for r in chosen],
          _training_time(chosen))


def _training_time(rows):
  """Seconds of training at each row (in step order). Runs resumed before train.py carried
  elapsed_s over logged it from 0 again; each such restart adds the time reached before it."""
  times, offset, last = [], 0.0, 0.0
  for r in rows:
    t = float(r.get("elapsed_s", math.nan))
    if t < last:
      offset += last
    last = t
    times.append(t + offset)
  return times


def _last_per_step(rows):
  """A resumed run may log a step twice; keep the last row of each step, in step order."""
  by_step = {}
  for r in rows:
    by_step[r["step"]] = r
  return [by_step[s] for s in sorted(by_step)]


def epochs_to_reach(epochs, errors, threshold):
  """The first epoch at which the error curve reaches `threshold`, interpolating linearly
  between the last point above it and the first at or below it; None if it never does."""
  prev = None
  for e, err in zip(epochs, errors):
    if err <= threshold:
      if prev is None:
        return float(e)
      (e0, err0) = prev
      return float(e0 + (e - e0) * (err0 - threshold) / (err0 - err))
    prev = (e, err)
  return None


def summarise(run):
  """One table row: the summary's numbers, or the metrics' last values for unfinished runs."""
  s, rows = run["summary"], run["rows"]
  row = {c: s.get(c) for c in COLUMNS}
  row["status"] = s.get("status") or ("unfinished" if rows else "no metrics")
  last = {}
  for r in rows:
    last.update(r)
  row["epochs"] = s.get("epochs", last.get("epoch"))
  row["steps"] = s.get("steps", last.get("step"))
  row["wall_time_s"] = _training_time(_last_per_step(rows))[-1] if rows else s.get("wall_time_s")
  for key in ("top1", "top5"):
    _, errors, _ = train_curve(rows, key, per="epoch")
    row[f"best_train_{key}_error"] = min(errors) if errors else None
    if row[f"final_train_{key}_error"] is None and errors:
      row[f"final_train_{key}_error"] = errors[-1]
    vals = [r[f"val_{key}_error"] for r in rows if f"val_{key}_error" in r]
    if row[f"final_val_{key}_error"] is None and vals:
      row[f"final_val_{key}_error"] = vals[-1]
    if row[f"best_val_{key}_error"] is None and vals:
      row[f"best_val_{key}_error"] = min(vals)
  return row


def write_report(workdir, names, threshold=0.0, about=""):
  """Writes the table (md, csv) and plots for the runs `names` under `workdir`; returns paths
  and, per plot, the run names drawn in it."""
  runs = [load_run(os.path.join(workdir, n)) for n in names]
  keys = list(dict.fromkeys(k for r in runs for k in r["overrides"]))  # First-seen order.
  table = []
  for run in runs:
    row = {"run": run["name"], **{k: run["overrides"].get(k, "") for k in keys}, **summarise(run)}
    if threshold:
      epochs, errors, _ = train_curve(run["rows"])
      row[f"epochs_to_{threshold:g}"] = epochs_to_reach(epochs, errors, threshold)
    table.append(row)
  paths = {"markdown": os.path.join(workdir, "results.md"),
           "csv": os.path.join(workdir, "results.csv"), "plots": [], "plotted": {}}
  _write_csv(paths["csv"], table)
  text = _markdown(table, about)
  if threshold:
    text += _threshold_text(table, runs, threshold)
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write(text)
  plots = [("train_error_vs_epochs.png", "epochs", False),
           ("train_error_vs_time.png", "time", False)]
  if threshold:
    plots.append(("fig1.png", "epochs", True))
  for filename, x_axis, paper_style in plots:
    path = os.path.join(workdir, filename)
    drawn = _figure1_runs(runs, threshold) if paper_style else runs
    paths["plotted"][filename] = _plot(drawn, path, x_axis, threshold if paper_style else 0.0)
    paths["plots"].append(path)
  return paths


def _figure1_runs(runs, threshold):
  """Figure 1 draws one line per activation, its fastest run, in the sweep's order."""
  chosen = {id(run) for run in _fastest_by_activation(runs, threshold).values()}
  return [run for run in runs if id(run) in chosen]


def _fmt(v):
  if v is None:
    return ""
  if isinstance(v, float):
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
  return str(v)


def _write_csv(path, table):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["run"])
    writer.writeheader()
    for row in table:
      writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _markdown(table, about):
  if not table:
    return "No runs.\n"
  cols = list(table[0])
  lines = [f"{about}\n"] if about else []
  lines.append("| " + " | ".join(cols) + " |")
  lines.append("|" + "---|" * len(cols))
  lines += ["| " + " | ".join(_fmt(row[c]) for c in cols) + " |" for row in table]
  return "\n".join(lines) + "\n"


def _threshold_text(table, runs, threshold):
  key = f"epochs_to_{threshold:g}"
  lines = [f"\nEpochs to reach {threshold:.0%} training error (the logged training error, a mean "
           "over each log_every_steps window of batches; linear interpolation):\n"]
  for row in table:
    e = row[key]
    lines.append(f"- {row['run']}: " + (f"{e:.2f} epochs" if e is not None else
                                        f"not reached in {_fmt(row['epochs'])} epochs"))
  fastest = _fastest_by_activation(runs, threshold)
  if not {"relu", "tanh"} <= set(fastest):
    return "\n".join(lines) + "\n"
  curves = {a: train_curve(fastest[a]["rows"])[:2] for a in ("relu", "tanh")}
  lines.append(f"\ntanh / ReLU epochs to reach each training error, each activation's fastest "
               f"run ({fastest['relu']['name']}; {fastest['tanh']['name']}; the paper: about 6x "
               "at 25%):\n")
  lines.append("| training error | ReLU epochs | tanh epochs | tanh / ReLU |")
  lines.append("|---|---|---|---|")
  for level in sorted({threshold, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7}, reverse=True):
    relu, tanh = (epochs_to_reach(*curves[a], level) for a in ("relu", "tanh"))
    if relu is None:
      continue
    ratio = f"{tanh / relu:.2f}" if tanh else f"> {curves['tanh'][0][-1] / relu:.2f}"
    tanh_text = f"{tanh:.2f}" if tanh else "not reached"
    lines.append(f"| {level:.0%} | {relu:.2f} | {tanh_text} | {ratio} |")
  return "\n".join(lines) + "\n"


def _fastest_by_activation(runs, threshold):
  """{activation: its run that reached `threshold` in the fewest epochs, or, if none did, the
  one with the lowest last training error} (the paper picks each activation's fastest rate)."""
  def key(run):
    epochs, errors, _ = train_curve(run["rows"])
    reached = epochs_to_reach(epochs, errors, threshold)
    return (0, reached) if reached is not None else (1, errors[-1] if errors else math.inf)

  groups = {}
  for run in runs:
    groups.setdefault(run["overrides"].get("model.activation"), []).append(run)
  return {act: min(group, key=key) for act, group in groups.items()}


def _plot(runs, path, x_axis, threshold):
  """Training top-1 error against epochs or wall time, a line per run. Returns the names."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  drawn = []
  for run in runs:
    epochs, errors, elapsed = train_curve(run["rows"])
    if not errors:
      continue
    xs = epochs if x_axis == "epochs" else [t / 60.0 for t in elapsed]
    style = "--" if threshold and run["overrides"].get("model.activation") == "tanh" else "-"
    ax.plot(xs, errors, style, marker="." if len(xs) < 30 else None, label=run["name"])
    drawn.append(run["name"])
  if threshold:  # Figure 1: training error rate against epochs, 25% dashed.
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    top = max([0.8] + [e for line in ax.get_lines() for e in line.get_ydata()])
    ax.set_ylim(0, min(1.0, top + 0.02))
    ax.set_xlim(left=0)
    ax.set_title(f"Figure 1: training error vs epochs ({threshold:.0%} line)")
  ax.set_xlabel("epochs" if x_axis == "epochs" else "wall time (minutes)")
  ax.set_ylabel("training error rate (top-1)")
  if drawn:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100, metadata={"Runs": "\n".join(drawn)})
  plt.close(fig)
  return drawn


def main(argv=None):
  p = argparse.ArgumentParser(description="Writes a sweep's table and plots.")
  p.add_argument("--workdir", required=True)
  p.add_argument("--threshold", type=float, default=0.0)
  args = p.parse_args(argv)
  workdir = os.path.expanduser(args.workdir)
  names = sorted(d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d))
                 and os.path.exists(os.path.join(workdir, d, "metrics.jsonl")))
  if not names:
    sys.exit(f"No runs in {os.path.abspath(workdir)} (no <run>/metrics.jsonl); nothing written.")
  paths = write_report(workdir, names, threshold=args.threshold)
  print(open(paths["markdown"], encoding="utf-8").read())


if __name__ == "__main__":
  main()
