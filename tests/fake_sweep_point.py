"""Stands in for alexnet_jax.main in the sweep tests (tests/test_experiments.py), run as
`python -m tests.fake_sweep_point` from the repository root like every sweep point: writes
the files a point must write, or fails when asked."""
import json
import os
import sys


def main(argv):
  args = dict(a.lstrip("-").split("=", 1) for a in argv)
  workdir = args["workdir"]
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "calls.txt"), "a") as f:
    f.write("run\n")
  if args.get("config.model.activation") == "bogus":
    print("ValueError: config.model.activation='bogus'", file=sys.stderr)
    sys.exit(3)
  err = float(args.get("config.train.learning_rate", "0.5"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 1, "time": 0, "epoch": 1.0, "epoch_train_top1_error": err,
                        "epoch_train_top5_error": err, "elapsed_s": 1.0}) + "\n")
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"status": "finished", "steps": 1, "epochs": 1, "wall_time_s": 1.0}, f)


if __name__ == "__main__":
  main(sys.argv[1:])
