#!/usr/bin/env bash
# LRN against batch normalisation at full width on Tiny ImageNet on a CPU (experiments/README.md,
# "LRN or batch normalisation"): the paper's network, two towers on 2 CPU devices, 300 steps of
# 128 for each norm, everything else alike: He initialisation on pixels scaled by 1/60, biases
# 0, section 5's rate of 0.01, dropout, section 4.1's augmentation; validation (centre crop, all
# 10,000 images) at steps 150 and 300.
#
#   ROOT=~/data/tiny-imagenet-200 OUT=workdirs/norm bash experiments/norm_tiny_imagenet.sh [lrn batch]
#
# Needs the dataset's statistics first (python -m alexnet_jax.data.stats, as the README says).
# Stopped, the same command resumes each norm from its latest checkpoint.
set -u
ROOT=${ROOT:-~/data/tiny-imagenet-200}
OUT=${OUT:-workdirs/norm}
PY=${PY:-.venv/bin/python}
norms=("$@")
[ ${#norms[@]} -eq 0 ] && norms=(lrn batch)
for norm in "${norms[@]}"; do
  nice -n 5 "$PY" -m alexnet_jax.main \
    --config=configs/tiny_imagenet.py --workdir="$OUT/$norm" \
    --config.data.root="$ROOT" --config.data.decoded_cache=mmap \
    --config.model.norm="$norm" --config.model.init=he \
    --config.model.input_scale=0.016666666666666666 --config.model.bias_init=0 \
    --config.mesh.model=2 --config.mesh.num_cpu_devices=2 \
    --config.train.learning_rate=0.01 --config.train.num_steps=300 \
    --config.train.log_every_steps=10 --config.eval.every_epochs=0.3846153846153846 \
    --config.eval.ten_crop=False --config.checkpoint.every_steps=50 || exit 1
done
