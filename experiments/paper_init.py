r"""Does section 5's recipe learn at full width? configs/paper.py on real photos (CIFAR-10's
JPEGs, scaled to 256x256 by the input pipeline as ImageNet's are), one variant at a time.

    python -m experiments.paper_init --workdir=workdirs/paper_init --steps=300 \
        --variant=paper --variant=inverted_dropout --variant=lr_0.001

For each variant: the loss and per-layer scales of the first --diagnose_steps steps (the
standard deviation of every layer's output on one fixed batch, in evaluation mode, and each
layer's update |dW| / |W|), then the training program itself for --steps steps at batch
--batch_size (its metrics.jsonl: the loss every 10 steps, the centre-crop validation error
at the end on the 5,000 test images). Everything printed also goes to <workdir>/study.log.
"""
import argparse
import json
import math
import os
import pathlib

import jax
import numpy as np

from alexnet_jax import metrics
from alexnet_jax.data import input_pipeline
from alexnet_jax.nets import alexnet as model_lib
from alexnet_jax import parallel
from alexnet_jax import preprocess
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.configs import common
from alexnet_jax.configs import paper
from alexnet_jax.tools import features
from experiments import cifar10_data

# Each variant is a set of overrides of configs/paper.py; "paper" is the recipe as written.
VARIANTS = {
    "paper": {},
    "inverted_dropout": {"model.dropout_scaling": "inverted"},
    "lr_0.001": {"train.learning_rate": 0.001},
    "lr_0.003": {"train.learning_rate": 0.003},
    "bias_0.1": {"model.bias_init": 0.1},
    "no_dropout": {"model.dropout_rate": 0.0},
}
LAYERS = model_lib.LAYERS
MAPS = LAYERS[:-1]  # The recorded outputs (fc8's logits are not among them).


def study_config(variant, batch_size, steps_, root):
  config = paper.get_config()
  config.model.num_classes = 10
  config.model.image_size = 224
  config.mesh.model = 1
  config.data.update(source="folder", root=root, eval_split="test")
  config.train.update(batch_size=batch_size, num_steps=steps_, log_every_steps=10)
  config.eval.update(every_epochs=1000.0, ten_crop=False, batch_size=100)
  config.checkpoint.every_steps = 100_000
  for key, value in VARIANTS[variant].items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def diagnose(config, num_steps, log):
  """The first `num_steps` steps by hand: loss, per-layer output std on a fixed batch, and
  per-layer |dW| / |W| of the weights."""
  mesh = parallel.make_mesh(config)
  state = steps.create_train_state(config, mesh)
  consts = parallel.place_replicated(mesh, preprocess.constants(config))
  step_fn = steps.make_train_step(config, mesh)
  extract = features.make_extract(config, mesh, list(MAPS))
  batches = input_pipeline.train_iterator(config, batch_size=config.train.batch_size)
  probe = next(batches)
  probe_images = parallel.to_global(mesh, probe)["image"]
  log("step  loss   | output std: " + " ".join(f"{n:>7}" for n in MAPS) +
      " | |dW|/|W|: " + " ".join(f"{n:>7}" for n in LAYERS))
  for step in range(num_steps):
    stds = {k: float(np.std(v)) for k, v in extract(state.params, probe_images, consts).items()}
    before = jax.device_get(state.params)
    state, m = step_fn(state, parallel.to_global(mesh, next(batches)),
                       np.float32(config.train.learning_rate), consts)
    after = jax.device_get(state.params)
    ratio = {n: float(np.linalg.norm(after[n]["kernel"] - before[n]["kernel"]) /
                      np.linalg.norm(before[n]["kernel"])) for n in LAYERS}
    log(f"{step:4d} {float(m['loss']):6.3f} | " +
        " ".join(f"{stds[n]:7.3g}" for n in MAPS) + " |           " +
        " ".join(f"{ratio[n]:7.2g}" for n in LAYERS))


def curve(workdir):
  """[(step, loss)] and the final validation errors of a finished program run."""
  rows = metrics.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")
  losses = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
  final = [r for r in rows if "val_top1_error" in r]
  return losses, (final[-1] if final else {})


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--variant", action="append", choices=sorted(VARIANTS))
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--diagnose_steps", type=int, default=8)
  args = p.parse_args()
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  out = open(workdir / "study.log", "a")

  def log(text):
    print(text, flush=True)
    out.write(text + "\n")
    out.flush()

  root = common.cifar10_root()
  for variant in args.variant or ["paper"]:
    config = study_config(variant, args.batch_size, args.steps, root)
    cifar10_data.prepare(config)
    log(f"== {variant}: {VARIANTS[variant] or 'configs/paper.py as it is'}, "
        f"batch {args.batch_size}, {args.steps} steps, ln 10 = {math.log(10):.3f}")
    if args.diagnose_steps:
      diagnose(config, args.diagnose_steps, log)
    run_dir = workdir / variant
    train.train_and_evaluate(config, run_dir)
    losses, final = curve(run_dir)
    log("loss every 10 steps: " + " ".join(f"{loss:.3f}" for _, loss in losses))
    log(f"validation (centre crop, {final.get('step')} steps): " +
        json.dumps({k: v for k, v in final.items() if k.startswith("val_")}))


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  main()
