"""Evaluation's speed beside the training step's, in one process on 2 CPU devices: training
images/s, centre-crop images/s and 10-crop crops/s of the same network, in interleaved rounds,
with the ratios evaluation / training that train.py's log lines also show.

    .venv/bin/python benchmarks/eval_speed.py          # the long Tiny ImageNet run's network
    .venv/bin/python benchmarks/eval_speed.py --width 0.125 --rounds 1 --batches 1   # seconds

`--eval_model` times evaluation on another model axis over the same devices (1: each device
holds both towers and half the batch, no exchange between devices).
"""
import argparse
import json
import time

from alexnet_jax import runtime

runtime.configure_jax(num_cpu_devices=2)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import parallel, steps  # noqa: E402
from alexnet_jax.configs import tiny_imagenet  # noqa: E402


def config_of(args, model):
  c = tiny_imagenet.get_config()
  c.model.update(width=args.width, norm=args.norm, init="he", input_scale=1 / 60, bias_init=0.0)
  c.mesh.update(model=model, num_cpu_devices=2)
  c.train.batch_size = c.eval.batch_size = args.batch
  return c


def timed(fn, count):
  """Seconds for `count` calls after one untimed call, the outputs waited for at the end."""
  jax.block_until_ready(fn())
  start, outs = time.perf_counter(), [fn() for _ in range(count)]
  jax.block_until_ready(outs)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--width", type=float, default=0.375)
  parser.add_argument("--norm", default="batch")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batches", type=int, default=4, help="timed steps per round and kind")
  parser.add_argument("--eval_model", type=int, nargs="+", default=[2, 1])
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch, 256, 256, 3), dtype=np.uint8)
  labels = rng.integers(0, 200, (args.batch,), dtype=np.int32)
  consts = {"mean": np.full((256, 256, 3), 110, np.float32), "pca": np.eye(3, dtype=np.float32)}

  config = config_of(args, 2)
  mesh = parallel.make_mesh(config)
  state = steps.create_train_state(config, mesh)
  step = steps.make_train_step(config, mesh)
  batch = parallel.to_global(mesh, {"image": images, "label": labels})
  placed = parallel.place_replicated(mesh, consts)
  holder = {"state": state}

  def train():
    holder["state"], m = step(holder["state"], batch, np.float32(0.01), placed)
    return m["loss"]

  evals = {}
  for model in args.eval_model:
    c = config_of(args, model)
    m = parallel.make_mesh(c)
    ev = steps.make_eval_step(c, m)
    x, k = parallel.to_global(m, images), parallel.place_replicated(m, consts)
    evals[model] = (ev, x, k, m)

  rows = []
  for r in range(args.rounds):
    row = {"round": r, "train_images_per_s": args.batch * args.batches / timed(train,
                                                                             args.batches)}
    for model, (ev, x, k, m) in evals.items():
      params = jax.device_put(holder["state"].params, steps.param_shardings(config_of(args, model),
                                                                             m))
      for ten in (False, True):
        n = args.batches if not ten else max(1, args.batches // 4)
        seconds = timed(lambda: ev(params, x, k, ten), n)
        per_s = args.batch * n * (10 if ten else 1) / seconds
        row[f"eval_model{model}_{'ten' if ten else 'centre'}_per_s"] = per_s
        row[f"ratio_model{model}_{'ten' if ten else 'centre'}"] = per_s / row[
            "train_images_per_s"]
    rows.append(row)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}),
          flush=True)
  keys = [k for k in rows[0] if k != "round"]
  median = {k: float(np.median([row[k] for row in rows])) for k in keys}
  print("median over rounds:", json.dumps({k: round(v, 2) for k, v in median.items()}))
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "rounds": rows, "median": median}, f, indent=1)


if __name__ == "__main__":
  main()
