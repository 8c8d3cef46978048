r"""A soak: `python -m alexnet_jax.main` on 2 CPU devices for thousands of steps while the machine
is busy, over small and large widths, batches and logging intervals; counts aborts (a non-zero
exit, XLA's rendezvous "Termination timeout" among them) and hangs (the run's CPU time still for
--hang_s seconds: its threads wait on a rendezvous that will not complete).

    python benchmarks/soak.py --busy=4 --out=benchmarks/results/soak_after.json
    python benchmarks/soak.py --repo=/tmp/before --busy=4      # another checkout's program
    python benchmarks/soak.py --cases=0.125:8:2000:100 --busy=0   # one short case

A case is width:batch:log_every_steps:steps on the demo config (generated data, two towers);
--busy starts that many spinning processes beside it for the whole soak. A case that aborts or
hangs is recorded and not resumed: the next case starts.
"""
import argparse
import json
import multiprocessing
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The command (a line every 2,000 steps) first; 5,000 steps in all.
CASES = ("0.125:8:2000:3000", "0.125:32:10:500", "0.25:8:500:1000", "0.5:16:100:500")


def command(workdir, cache_dir, width, batch, log_every, steps, extra=()):
  return [sys.executable, "-m", "alexnet_jax.main", "--config=configs/demo.py",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
          f"--config.model.width={width}", f"--config.train.batch_size={batch}",
          f"--config.train.log_every_steps={log_every}", f"--config.train.num_steps={steps}",
          "--config.eval.every_epochs=1000", "--config.eval.ten_crop=False",
          "--config.checkpoint.every_steps=1000", *extra]


def cpu_seconds(pid):
  """User and system CPU time of `pid` and its threads, from /proc."""
  fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(case, repo, cache_dir, hang_s, log, extra=()):
  width, batch, log_every, steps = case.split(":")
  with tempfile.TemporaryDirectory() as workdir:
    argv = command(workdir, cache_dir, width, batch, log_every, steps, extra)
    started = time.time()
    with open(log, "a") as out:
      out.write(f"== {case}: {' '.join(argv[1:])}\n")
      out.flush()
      proc = subprocess.Popen(argv, cwd=repo, stdout=out, stderr=subprocess.STDOUT)
      last_cpu, last_move, hung = 0.0, time.time(), False
      while proc.poll() is None:
        time.sleep(2)
        try:
          cpu = cpu_seconds(proc.pid)
        except (OSError, IndexError):
          continue
        if cpu > last_cpu + 0.5:
          last_cpu, last_move = cpu, time.time()
        elif time.time() - last_move > hang_s:
          hung = True
          proc.kill()
          proc.wait()
    text = pathlib.Path(log).read_text().rsplit(f"== {case}:", 1)[1]
    finished = re.search(r"Finished (\d+) steps", text)
    return {"case": case, "width": float(width), "batch": int(batch),
            "log_every_steps": int(log_every), "steps": int(steps),
            "exit": proc.returncode, "hang": hung,
            "abort": not hung and proc.returncode != 0,
            "rendezvous_timeout": "Termination timeout" in text,
            "steps_finished": int(finished.group(1)) if finished else 0,
            "seconds": round(time.time() - started, 1)}


def spin():
  while True:
    pass


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", nargs="+", default=list(CASES))
  parser.add_argument("--busy", type=int, default=4, help="spinning processes beside the soak")
  parser.add_argument("--repo", default=str(ROOT), help="the checkout whose program runs")
  parser.add_argument("--cache_dir", default="", help="the generated data's folder")
  parser.add_argument("--hang_s", type=float, default=60.0)
  parser.add_argument("--log", default="/tmp/soak.log")
  parser.add_argument("--out", default="")
  parser.add_argument("--set", default="", help="more --config.x=y for every case, one string")
  args = parser.parse_args()
  pathlib.Path(args.log).write_text("")
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # The spinners stop with the soak.
  spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
  for p in spinners:
    p.start()
  try:
    rows = []
    for case in args.cases:
      rows.append(run_case(case, args.repo, args.cache_dir, args.hang_s, args.log,
                           args.set.split()))
      print(json.dumps(rows[-1]), flush=True)
  finally:
    for p in spinners:
      p.terminate()
  total = {"steps_finished": sum(r["steps_finished"] for r in rows),
           "aborts": sum(r["abort"] for r in rows), "hangs": sum(r["hang"] for r in rows),
           "busy_processes": args.busy, "cpu_count": os.cpu_count(), "repo": args.repo}
  print(f"{total['steps_finished']} steps finished; {total['aborts']} aborts, {total['hangs']} "
        f"hangs; {args.busy} busy processes beside it; log {args.log}")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps({"cases": rows, "total": total}, indent=1) + "\n")
  return 1 if total["aborts"] or total["hangs"] else 0


if __name__ == "__main__":
  sys.exit(main())
