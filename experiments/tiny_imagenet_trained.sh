#!/usr/bin/env bash
# The network trained for 10 epochs on Tiny ImageNet on a CPU (experiments/README.md, "A network
# trained on 200 classes"): width 0.1875, two towers on 2 CPU devices, LRN, dropout, section
# 4.1's augmentation, the plateau rule evaluated every epoch, 10-crop test at the end.
#
#   ROOT=~/data/tiny-imagenet-200 WORKDIR=workdirs/tiny_w01875 bash experiments/tiny_imagenet_trained.sh
#
# Needs the dataset's statistics first (python -m alexnet_jax.data.stats, as the README says).
# XLA:CPU's two device threads can fail to meet in an all-gather on a crowded 2-core machine
# (the process then sits at 0% CPU, or aborts after XLA's 40 s "Termination timeout"); a wait
# of 180 s aborts instead, and the loop resumes the run from its latest checkpoint, which is
# what rerunning the command by hand does.
set -u
ROOT=${ROOT:-~/data/tiny-imagenet-200}
WORKDIR=${WORKDIR:-workdirs/tiny_w01875}
PY=${PY:-.venv/bin/python}
for attempt in 1 2 3 4 5 6 7 8; do
  XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_collective_call_terminate_timeout_seconds=180" \
    nice -n 5 "$PY" -m alexnet_jax.main \
    --config=configs/tiny_imagenet.py --workdir="$WORKDIR" \
    --config.data.root="$ROOT" --config.data.decoded_cache=mmap \
    --config.model.width=0.1875 --config.model.init=he \
    --config.model.input_scale=0.016666666666666666 \
    --config.model.bias_init=0 --config.mesh.model=2 --config.mesh.num_cpu_devices=2 \
    --config.train.learning_rate=0.03 --config.train.num_epochs=10 \
    --config.train.plateau_patience=1 --config.train.log_every_steps=50 \
    --config.checkpoint.every_steps=130
  status=$?
  echo "attempt $attempt exited with status $status at $(date -u +%H:%M:%S)"
  [ "$status" -eq 0 ] && exit 0
  [ "$status" -eq 1 ] && exit 1  # A user's error (one line above): rerunning will not help.
done
exit 1
