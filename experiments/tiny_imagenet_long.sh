#!/usr/bin/env bash
# The long Tiny ImageNet run (experiments/README.md, "A network trained on 200 classes"): the
# paper's two-tower network at width 0.375 on 2 CPU devices, batch normalisation in place of
# LRN, dropout, section 4.1's augmentation and 10-crop test; He initialisation on pixels scaled
# by 1/60, biases 0; SGD with momentum 0.9 and weight decay 5e-4 at LR, decayed linearly to 0
# over EPOCHS epochs; the centre crop evaluated every epoch. The choices and their probes:
# experiments/tiny_imagenet_probes.sh and experiments/README.md.
#
#   ROOT=~/data/tiny-imagenet-200 WORKDIR=workdirs/tiny_bn_w0375 bash experiments/tiny_imagenet_long.sh
#
# Needs the dataset's statistics first (python -m alexnet_jax.data.stats, as the README says).
# Stopped (a kill, SIGTERM, a reboot), the same command resumes from the latest checkpoint.
set -u
ROOT=${ROOT:-~/data/tiny-imagenet-200}
WORKDIR=${WORKDIR:-workdirs/tiny_bn_w0375}
PY=${PY:-.venv/bin/python}
LR=${LR:-0.05}
EPOCHS=${EPOCHS:-15}
exec "$PY" -m alexnet_jax.main \
  --config=configs/tiny_imagenet.py --workdir="$WORKDIR" \
  --config.data.root="$ROOT" --config.data.decoded_cache=mmap \
  --config.model.width=0.375 --config.model.norm=batch --config.model.init=he \
  --config.model.input_scale=0.016666666666666666 --config.model.bias_init=0 \
  --config.mesh.model=2 --config.mesh.num_cpu_devices=2 \
  --config.train.learning_rate="$LR" --config.train.num_epochs="$EPOCHS" \
  --config.train.schedule=poly --config.train.poly_power=1 \
  --config.train.log_every_steps=50 --config.checkpoint.every_steps=130
