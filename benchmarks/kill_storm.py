r"""A kill storm: a short training run killed K times at random moments (SIGKILL and SIGTERM
mixed, at least one kill while a checkpoint is being written), restarted each time with the
same command, then compared with an uninterrupted run of the same command: bit-equal.

    python benchmarks/kill_storm.py --kills=20 --seed=0 --workdir=/tmp/storm
    python benchmarks/kill_storm.py --kills=3 --steps=24          # what make test runs

The seed fixes the signals and the moments, and is printed, so a failure can be replayed. The
run is the paper's network narrowed to 1/8 (67x67 inputs, generated data, 2 CPU devices, a
checkpoint every --every steps, max_to_keep large enough to keep them all). Prints a table:
each kill, its signal, the step the run had reached, the start's exit status (75 after a
SIGTERM: the step saved, the run to be started again), the step the next start resumed from,
the steps lost; then the totals and whether the final parameters equal the uninterrupted
run's.
"""
import argparse
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}


def command(workdir, cache_dir, steps, every):
  return [sys.executable, "-m", "alexnet_jax.main", "--config=configs/paper.py:smoke",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
          "--config.model.width=0.125", "--config.model.image_size=67",
          "--config.data.resize_size=72", "--config.data.generated.image_size=80",
          "--config.data.generated.train_per_class=8", "--config.data.generated.val_per_class=3",
          "--config.data.threads=2", "--config.train.batch_size=8",
          f"--config.train.num_steps={steps}", "--config.train.log_every_steps=1",
          "--config.eval.batch_size=8", "--config.eval.every_epochs=100",
          "--config.eval.ten_crop=False", f"--config.checkpoint.every_steps={every}",
          f"--config.checkpoint.max_to_keep={steps // every + 2}"]


def _reached(text):
  """The last step the run's output says it finished."""
  steps = [int(s) for s in re.findall(r"^step (\d+)/", text, re.M)]
  stopped = re.findall(r"after step (\d+)", text)
  return max(steps + [int(s) for s in stopped], default=0)


def _resumed_from(text):
  found = re.search(r"Resumed from .* at step (\d+)\.", text)
  return int(found.group(1)) if found else 0


def _latest_step(workdir):
  folder = pathlib.Path(workdir) / "checkpoints"
  return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0) \
      if folder.is_dir() else 0


def _saving(workdir):
  """Whether a checkpoint is being written now (orbax's temporary folder exists)."""
  folder = pathlib.Path(workdir) / "checkpoints"
  return folder.is_dir() and any(".orbax-checkpoint-tmp" in p.name for p in folder.iterdir())


def _kill_once(cmd, workdir, rng, during_save, log, start_step, span):
  """Starts the run and kills it once it has passed a random one of the `span` steps after
  `start_step` (or, with `during_save`, as soon as a checkpoint is being written); returns the
  kill's record."""
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  name = rng.choice(sorted(SIGNALS))
  target = start_step + 1 + rng.randrange(span)  # Then a little later, within the step.
  pause = rng.uniform(0.0, 0.05)
  lines, reached, saving, sent = [], [0], False, False
  reader = threading.Thread(target=_read, args=(proc.stdout, lines, reached), daemon=True)
  reader.start()
  while proc.poll() is None and not sent:
    if during_save and _saving(workdir):
      saving, sent = True, True
    elif not during_save and reached[0] >= target:
      time.sleep(pause)
      saving, sent = _saving(workdir), True
    else:
      time.sleep(0.002)
      continue
    proc.send_signal(SIGNALS[name])
  proc.wait()
  reader.join()
  out = "".join(lines)
  log.write(out)
  if not sent and "Finished" not in out:
    raise RuntimeError(f"A start failed on its own (exit status {proc.returncode}):\n{out[-3000:]}")
  return {"signal": name if sent else "none", "during_save": saving, "reached": _reached(out),
          "resumed_from": _resumed_from(out), "exit": proc.returncode,
          "finished": "Finished" in out}


def _read(stream, lines, reached):
  for line in stream:
    lines.append(line)
    found = re.match(r"step (\d+)/", line)
    if found:
      reached[0] = int(found.group(1))


def storm(workdir, cache_dir, kills, seed, steps, every, log):
  rng = random.Random(seed)
  cmd = command(workdir, cache_dir, steps, every)
  save_kill = rng.randrange(kills)  # Which kill waits for a checkpoint being written.
  rows, start = [], 0
  for k in range(kills):
    if start >= steps - 1:
      break  # Nothing left to kill in.
    # The steps left shared among the kills left, so that all of them land before the end.
    span = max(1, (steps - 1 - start) // (kills - k))
    row = _kill_once(cmd, workdir, rng, k == save_kill, log, start, span)
    rows.append(row)
    if row["finished"]:
      break
    start = _latest_step(workdir)
  final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  log.write(final.stdout + final.stderr)
  if final.returncode:
    raise RuntimeError(f"The last restart failed:\n{final.stdout[-2000:]}{final.stderr[-2000:]}")
  # Each start resumed from the step its predecessor left; the next row's resumed_from.
  resumed = [r["resumed_from"] for r in rows[1:]] + [_resumed_from(final.stdout)]
  for row, back_to in zip(rows, resumed):
    row["next_resumed_from"] = back_to
    row["lost"] = max(0, row["reached"] - back_to)
  return rows


def final_params(workdir):
  from alexnet_jax import runtime
  runtime.configure_jax(num_cpu_devices=2)
  import jax
  import numpy as np
  from alexnet_jax.checkpoints import manager
  from alexnet_jax.checkpoints import trained_run
  from alexnet_jax import parallel
  from alexnet_jax import steps
  config = trained_run.read_config(workdir)
  mgr = manager.create(workdir, read_only=True)
  try:
    state, _ = manager.restore(mgr, mgr.latest_step(),
                               steps.abstract_state(config, parallel.make_mesh(config)))
  finally:
    mgr.close()
  return int(state.step), jax.tree.map(np.asarray, state.params)


def table(rows, steps):
  """The kills as a markdown table; a start killed after its last step was in the final
  evaluation."""
  lines = ["| kill | signal | step reached | exit status | resumed from | steps lost |",
           "|---|---|---|---|---|---|"]
  for k, r in enumerate(rows, 1):
    when = " (while saving)" if r["during_save"] else ""
    if r["reached"] == steps and not r["finished"]:
      when += " (in the final evaluation)"
    status = "killed" if r["exit"] < 0 else r["exit"]
    lines.append(f"| {k} | {r['signal']}{when} | {r['reached']} | {status} | "
                 f"{r['next_resumed_from']} | {r['lost']} |")
  lost = sum(r["lost"] for r in rows)
  lines.append(f"| total | {len(rows)} kills | | | | {lost} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--kills", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--every", type=int, default=4, help="checkpoint period, steps")
  p.add_argument("--workdir", default="/tmp/alexnet_jax_kill_storm")
  p.add_argument("--out", default="", help="write the rows and the verdict as JSON here")
  args = p.parse_args(argv)
  root = pathlib.Path(args.workdir)
  cache_dir, whole, stormed = root / "cache", root / "whole", root / "storm"
  for d in (whole, stormed):
    if d.exists():
      raise SystemExit(f"{d} exists: give a fresh --workdir.")
  root.mkdir(parents=True, exist_ok=True)
  print(f"Kill storm: {args.kills} kills, seed {args.seed}, {args.steps} steps, a checkpoint "
        f"every {args.every}; replay with --seed={args.seed}.", flush=True)
  with open(root / "runs.log", "w") as log:
    done = subprocess.run(command(whole, cache_dir, args.steps, args.every), cwd=ROOT,
                          capture_output=True, text=True)
    log.write(done.stdout + done.stderr)
    if done.returncode:
      raise SystemExit(f"The uninterrupted run failed: {done.stderr[-2000:]}")
    rows = storm(stormed, cache_dir, args.kills, args.seed, args.steps, args.every, log)
  import numpy as np
  (step_a, a), (step_b, b) = final_params(whole), final_params(stormed)
  import jax
  equal = step_a == step_b == args.steps and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print(table(rows, args.steps))
  print(f"Final parameters after {step_b} steps: "
        f"{'bit-equal to' if equal else 'DIFFERENT from'} the uninterrupted run's.")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps({"seed": args.seed, "rows": rows,
                                                  "bit_equal": bool(equal)}, indent=1))
  return 0 if equal else 1


if __name__ == "__main__":
  sys.exit(main())
