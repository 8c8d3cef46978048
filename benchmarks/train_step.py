"""Training-step images/s of the full network on 2 CPU devices, beside PyTorch in the same run.

    .venv/bin/python benchmarks/train_step.py                      # everything, ~10 minutes
    .venv/bin/python benchmarks/train_step.py --batch 32 --model 2 --torch none
    .venv/bin/python benchmarks/train_step.py --net cifar --batch 128   # figure 1's net
    .venv/bin/python benchmarks/train_step.py --batch 2 --model 2 --width 0.125 --torch none \
        --steps 1 --out=/tmp/step.json             # a smoke test of the script, seconds

Anchors measured on the project's 2-core machine, float32: PyTorch 2.13 trained this
network at ~22 images/s eager at batch 32, 25-26 with torch.compile, 33 with torch.compile and
jemalloc; a training step costs ~4.1-4.3 GFLOP per image and two cores reach ~150 GFLOP/s on a
large matmul, so ~35 images/s is the ceiling. The first Flax version (grouped convolutions) ran
at 6.5 images/s, per-tower ungrouped convolutions at 16.8. layers.max_pool's phase gradient
took model=2 at batch 32 from 10.3 to 11.9 images/s (both measured in one quiet window).
torch is imported only here.

`--net cifar` times figure 1's CIFAR-10 net (cuda-convnet's layers-18pct, configs/cifar10_fig1.py,
data parallel over the 2 devices) beside the same net in PyTorch. Its anchors, batch 128 on the
same machine: 451 images/s with reduce_window max-pooling, 548 with strided maxima, 869 with
layers.max_pool's phase gradient, when PyTorch 2.13 ran it at 750 (eager) and 665 (compiled).
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

from alexnet_jax import runtime  # noqa: E402

runtime.configure_jax(num_cpu_devices=2)
jax.config.update("jax_platforms", "cpu")

import numpy as np  # noqa: E402

from alexnet_jax import nets, parallel, steps  # noqa: E402
from alexnet_jax.configs import cifar10_fig1  # noqa: E402
from alexnet_jax.configs import paper  # noqa: E402

ANCHORS = {32: "torch eager ~22, compiled 25-26 (33 w/ jemalloc); ceiling ~35",
           128: "ceiling ~35"}
CIFAR_ANCHORS = {128: "JAX 451, 548, 869 (pool versions); torch eager 750, compiled 665"}


def time_steps(run_step, batch_size, num_steps, warmup):
  """images/s over `num_steps` steps after `warmup` untimed ones (the first compiles)."""
  t0 = time.perf_counter()
  for _ in range(warmup):
    run_step()
  first = time.perf_counter() - t0
  times = []
  for _ in range(num_steps):
    t0 = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - t0)
  return batch_size / np.median(times), batch_size / min(times), first


def jax_case(net_name, batch_size, model_axis, num_steps, warmup, width=1.0):
  config = cifar10_fig1.get_config() if net_name == "cifar" else paper.get_config()
  config.train.batch_size = batch_size
  if net_name != "cifar":
    config.model.width = width
  size, classes = config.data.resize_size, config.model.num_classes
  mesh = parallel.make_mesh(model_axis)
  state = steps.create_train_state(config, mesh)
  step = steps.make_train_step(config, mesh)
  rng = np.random.default_rng(0)
  batch = jax.device_put(
      {"image": rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.uint8),
       "label": rng.integers(0, classes, batch_size).astype(np.int32)},
      parallel.batch_sharding(mesh))
  # The step's data constants (mean image, PCA basis) as the statistics give them in shape.
  consts = parallel.place_replicated(mesh, {
      "mean": np.full((size, size, 3), 120.0, np.float32),
      "pca": np.diag([60.0, 20.0, 10.0]).astype(np.float32)})
  holder = [state]

  def run_step():
    holder[0], metrics = step(holder[0], batch, 0.01, consts)
    jax.block_until_ready(metrics["loss"])

  return time_steps(run_step, batch_size, num_steps, warmup)


def torch_alexnet(torch):
  """The same network in PyTorch: towers as grouped convolutions (cuDNN/oneDNN-friendly)."""
  nn = torch.nn
  lrn = lambda: nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)  # alpha/n convention.
  return nn.Sequential(
      nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
      nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
      nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
      nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
      nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 1000))


def torch_cifar(torch):
  """layers-18pct in PyTorch: pools cover the border (ceil_mode), as nets/cifar.py's pool does."""
  nn = torch.nn
  return nn.Sequential(
      nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
      nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
      nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
      nn.Flatten(), nn.Linear(4 * 4 * 64, 10))


def torch_case(net_name, batch_size, compiled, num_steps, warmup):
  import torch  # Only here: torch is no dependency of the package.
  torch.manual_seed(0)
  torch.set_num_threads(2)
  cifar = net_name == "cifar"
  net = torch_cifar(torch) if cifar else torch_alexnet(torch)
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9,
                        weight_decay=0.0 if cifar else 5e-4)
  size, classes = (32, 10) if cifar else (227, 1000)
  images = torch.randn(batch_size, 3, size, size)
  labels = torch.randint(0, classes, (batch_size,))
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(images), labels)
    loss.backward()
    opt.step()
    return loss

  run = torch.compile(step) if compiled else step
  return time_steps(lambda: float(run()), batch_size, num_steps,
                    warmup + (1 if compiled else 0))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--net", choices=["alexnet", "cifar"], default="alexnet")
  parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
  parser.add_argument("--model", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--torch", nargs="+", default=["eager", "compile"],
                      choices=["eager", "compile", "none"])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--width", type=float, default=1.0,
                      help="config.model.width of the JAX AlexNet (the anchors are of 1.0)")
  parser.add_argument("--out", default="", help="also write the rows to this JSON file")
  args = parser.parse_args()
  model = paper.get_config().model
  model.width = args.width
  print(f"jax {jax.__version__}, devices {jax.devices()}, XLA_FLAGS={os.environ.get('XLA_FLAGS')}"
        + ("" if args.net == "cifar" else
           f", parameters {nets.count_params(nets.abstract_params(model)):,}"))
  rows = []
  for batch_size in args.batch:
    for model_axis in args.model:
      if args.net == "cifar" and model_axis != 1:
        continue  # The CIFAR net has no towers.
      rows.append((f"jax model={model_axis}", batch_size,
                   *jax_case(args.net, batch_size, model_axis, args.steps, args.warmup,
                             args.width)))
      print(*rows[-1], flush=True)
    for mode in args.torch:
      if mode != "none":
        try:
          rows.append((f"torch {mode}", batch_size,
                       *torch_case(args.net, batch_size, mode == "compile", args.steps,
                                   args.warmup)))
        except Exception as e:  # torch.compile needs a C++ toolchain; report, don't stop.
          rows.append((f"torch {mode}: {type(e).__name__}: {str(e)[:60]}", batch_size,
                       float("nan"), float("nan"), float("nan")))
        print(*rows[-1], flush=True)
  print_table(args.net, rows)
  if args.out:
    keys = ("case", "batch", "images_per_s_median", "images_per_s_best", "first_s")
    with open(args.out, "w") as f:
      json.dump({"net": args.net, "width": args.width, "rows": [dict(zip(keys, r)) for r in rows]},
                f, indent=1)


def print_table(net_name, rows):
  print(f"\nTraining step of {net_name}, float32, 2 CPU devices (noisy if the CPU is shared)")
  print(f"{'case':28s} {'batch':>5s} {'img/s median':>12s} {'img/s best':>10s} "
        f"{'first s':>8s}  anchor (img/s)")
  for name, batch_size, median, best, first in rows:
    print(f"{name:28s} {batch_size:5d} {median:12.1f} {best:10.1f} {first:8.1f}  "
          f"{(CIFAR_ANCHORS if net_name == 'cifar' else ANCHORS).get(batch_size, '')}")


if __name__ == "__main__":
  main()
