r"""Runs a grid of config overrides, one process per point, then writes the table and plots.

    python -m experiments.sweep --config=configs/paper.py:smoke \
        --grid='model.activation=relu,tanh' --grid='model.norm=lrn,none' \
        --workdir=workdirs/sweeps/act_lrn [--set train.num_steps=20 ...] [--parallel=1]
    python -m experiments.sweep --sweep=cifar10_fig1 --workdir=workdirs/sweeps/cifar10_fig1

Each point trains in <workdir>/<point>/ (its output in log.txt there) through
`python -m alexnet_jax.main --config=... --config.k=v ...`. A point whose summary.json says
"finished" is skipped; any other is started again, and the training loop resumes it from its
latest checkpoint. A failed point is reported with its log and the others still run; the exit
status is 1 if any failed. The table and plots (experiments/sweep_report.py) go to <workdir>/.
"""
import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

from absl import flags
from ml_collections import config_flags

from experiments import sweep_report
from experiments import named_sweeps

# The repository root: points run there, so the named sweeps' configs/... paths hold from
# wherever the sweep is started.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sweep", help=f"A ready-made sweep: {', '.join(sorted(named_sweeps.SWEEPS))}.")
  p.add_argument("--config", help="Base config, file[:arg] (default: the sweep's).")
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                 help="One axis of the grid; repeat for more (their product is run).")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="An override for every point; repeatable.")
  p.add_argument("--workdir", required=True, help="The sweep's folder (one subfolder a point).")
  p.add_argument("--parallel", type=int, default=1, help="Points run at once.")
  p.add_argument("--devices", default="",
                 help="Accelerator ids to split among the parallel points, e.g. 0,1,2,3 "
                      "(CUDA_VISIBLE_DEVICES per point); empty: every point sees them all.")
  p.add_argument("--module", help="What a point runs as python -m (default alexnet_jax.main).")
  p.add_argument("--report_only", action="store_true", help="Only rewrite the table and plots.")
  return p.parse_args(argv)


def parse_pair(text, flag):
  key, sep, value = text.partition("=")
  if not sep or not key.strip():
    raise ValueError(f"{flag} {text!r}: write KEY=VALUE, e.g. {flag} model.lrn=False.")
  return key.strip(), value.strip()


def build_sweep(args):
  """The Sweep to run: a named one, or --config with --grid axes; --set and --config apply."""
  if args.sweep:
    base = named_sweeps.get(args.sweep)
    if args.grid:
      raise ValueError("--grid and --sweep together: a named sweep fixes its points.")
  elif args.config and args.grid:
    base = named_sweeps.Sweep(args.config, [])
  else:
    raise ValueError("Give --sweep=NAME, or --config=FILE with at least one --grid=KEY=V1,V2.")
  axes = {}
  for text in args.grid:
    key, values = parse_pair(text, "--grid")
    axes[key] = [v.strip() for v in values.split(",")]
  points = named_sweeps.grid(**axes) if axes else base.points
  sets = dict(base.sets)
  sets.update(parse_pair(text, "--set") for text in args.set)
  return dataclasses.replace(base, config=args.config or base.config, points=points, sets=sets,
                             module=args.module or base.module)


def point_name(point):
  """A folder name for a point: 'activation=tanh,lr=0.01' from its overrides."""
  short = [k.split(".")[-1] for k in point]
  keys = short if len(set(short)) == len(short) else list(point)
  text = ",".join(f"{k}={v}" for k, v in zip(keys, point.values()))
  return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text) or "base"


def command(sweep, point, workdir):
  overrides = {**sweep.sets, **point}
  return [sys.executable, "-m", sweep.module, f"--config={sweep.config}",
          f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in overrides.items()]


def is_finished(workdir):
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    return json.load(f).get("status") == "finished"


def run_points(sweep, workdir, parallel=1, devices=()):
  """Runs every unfinished point; returns {name: "finished" | "skipped" | "failed (log)"}."""
  status, queue, running = {}, [], {}
  for point in sweep.points:
    name = point_name(point)
    point_dir = os.path.join(workdir, name)
    if is_finished(point_dir):
      print(f"[sweep] {name}: finished before, skipped", flush=True)
      status[name] = "skipped"
    else:
      queue.append((name, point, point_dir))
  slots = [devices[i::parallel] for i in range(parallel)] if devices else [()] * parallel
  free = list(range(parallel))
  while queue or running:
    while queue and free:
      slot = free.pop(0)
      name, point, point_dir = queue.pop(0)
      running[name] = (_start(sweep, name, point, point_dir, slots[slot]), slot, point_dir)
    time.sleep(0.2)
    for name, (proc, slot, point_dir) in list(running.items()):
      if proc.poll() is None:
        continue
      del running[name]
      free.append(slot)
      log = os.path.join(point_dir, "log.txt")
      if proc.returncode == 0 and is_finished(point_dir):
        status[name] = "finished"
        print(f"[sweep] {name}: finished", flush=True)
      else:
        why = f"exit status {proc.returncode}" if proc.returncode else "no finished summary.json"
        status[name] = f"failed ({why}; log: {log})"
        print(f"[sweep] {name}: FAILED ({why}); see {log}", flush=True)
  return status


def _start(sweep, name, point, point_dir, devices):
  os.makedirs(point_dir, exist_ok=True)
  cmd = command(sweep, point, point_dir)
  env = dict(os.environ)
  if devices:
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
  log = open(os.path.join(point_dir, "log.txt"), "a", encoding="utf-8")
  log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
  log.flush()
  with open(os.path.join(point_dir, "point.json"), "w", encoding="utf-8") as f:
    json.dump({"overrides": {k: str(v) for k, v in point.items()}, "config": sweep.config,
               "sets": {k: str(v) for k, v in sweep.sets.items()}, "command": cmd}, f, indent=2)
  print(f"[sweep] {name}: running ({' '.join(cmd[2:])})", flush=True)
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  log.close()  # The child holds its own descriptor.
  return proc


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.parallel < 1:
    raise SystemExit(f"experiments.sweep: --parallel={args.parallel}: at least 1.")
  try:
    sweep = build_sweep(args)
  except ValueError as e:
    raise SystemExit(f"experiments.sweep: {e}") from None
  # The points run in the repository root; paths given from elsewhere must still hold.
  args.workdir = os.path.abspath(args.workdir)
  path, sep, arg = sweep.config.partition(":")
  if os.path.exists(path) and not os.path.isabs(path):
    sweep = dataclasses.replace(sweep, config=os.path.abspath(path) + sep + arg)
  os.makedirs(args.workdir, exist_ok=True)
  status = {}
  if not args.report_only:
    if sweep.prepare_cifar10:
      _prepare_cifar10(sweep)
    devices = [d for d in args.devices.split(",") if d]
    status = run_points(sweep, args.workdir, args.parallel, devices)
  names = [point_name(p) for p in sweep.points]
  paths = sweep_report.write_report(args.workdir, names, threshold=sweep.threshold,
                                    about=sweep.about)
  print(f"[sweep] table: {paths['markdown']} and {paths['csv']}; plots: "
        f"{', '.join(paths['plots'])}", flush=True)
  failed = {n: s for n, s in status.items() if s.startswith("failed")}
  for name, s in failed.items():
    print(f"[sweep] FAILED {name}: {s}", file=sys.stderr, flush=True)
  return 1 if failed else 0


def _prepare_cifar10(sweep):
  """Extracts CIFAR-10 and its statistics once, before the points start (they share them)."""
  from experiments import cifar10_data  # pylint: disable=g-import-not-at-top
  cifar10_data.prepare(load_config(os.path.join(ROOT, sweep.config)))


def load_config(path_and_arg):
  """The config that `--config=path_and_arg` gives the points (ml_collections' config_flags)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", path_and_arg, flag_values=values, lock_config=False,
                                  sys_argv=["sweep"])
  values(["sweep"])
  return values.config


if __name__ == "__main__":
  sys.exit(main())
