#!/usr/bin/env bash
# The network trained for 10 epochs on Tiny ImageNet on a CPU (experiments/README.md, "A network
# trained on 200 classes"): width 0.1875, two towers on 2 CPU devices, LRN, dropout, section
# 4.1's augmentation, the plateau rule evaluated every epoch, 10-crop test at the end.
#
#   ROOT=~/data/tiny-imagenet-200 WORKDIR=workdirs/tiny_w01875 bash experiments/tiny_imagenet_trained.sh
#
# Needs the dataset's statistics first (python -m alexnet_jax.data.stats, as the README says).
# Stopped, the same command resumes from the latest checkpoint. (The run committed in
# experiments/results/tiny_imagenet_w01875 was restarted twice after XLA:CPU's all-gather
# rendezvous aborted, before the loop bounded its steps in flight: config.train.steps_in_flight.)
set -u
ROOT=${ROOT:-~/data/tiny-imagenet-200}
WORKDIR=${WORKDIR:-workdirs/tiny_w01875}
PY=${PY:-.venv/bin/python}
exec nice -n 5 "$PY" -m alexnet_jax.main \
  --config=configs/tiny_imagenet.py --workdir="$WORKDIR" \
  --config.data.root="$ROOT" --config.data.decoded_cache=mmap \
  --config.model.width=0.1875 --config.model.init=he \
  --config.model.input_scale=0.016666666666666666 \
  --config.model.bias_init=0 --config.mesh.model=2 --config.mesh.num_cpu_devices=2 \
  --config.train.learning_rate=0.03 --config.train.num_epochs=10 \
  --config.train.plateau_patience=1 --config.train.log_every_steps=50 \
  --config.checkpoint.every_steps=130
