#!/usr/bin/env bash
# Short probes for the long Tiny ImageNet run (experiments/README.md, "A network trained on 200
# classes, 2"): batch normalisation at width 0.375, two towers on 2 CPU devices, He
# initialisation on pixels scaled by 1/60, biases 0, 150 steps of 128 at each learning rate,
# then the centre-crop error on all 10,000 validation images.
#
#   ROOT=~/data/tiny-imagenet-200 OUT=workdirs/probes bash experiments/tiny_imagenet_probes.sh [0.02 0.05 0.1]
set -u
ROOT=${ROOT:-~/data/tiny-imagenet-200}
OUT=${OUT:-workdirs/probes}
PY=${PY:-.venv/bin/python}
WIDTH=${WIDTH:-0.375}
STEPS=${STEPS:-150}
rates=("$@")
[ ${#rates[@]} -eq 0 ] && rates=(0.02 0.05 0.1)
for lr in "${rates[@]}"; do
  echo "== probe: width $WIDTH, batch normalisation, learning rate $lr, $STEPS steps"
  nice -n 5 "$PY" -m alexnet_jax.main \
    --config=configs/tiny_imagenet.py --workdir="$OUT/w${WIDTH}_lr$lr" \
    --config.data.root="$ROOT" --config.data.decoded_cache=mmap \
    --config.model.width="$WIDTH" --config.model.norm=batch --config.model.init=he \
    --config.model.input_scale=0.016666666666666666 --config.model.bias_init=0 \
    --config.mesh.model=2 --config.mesh.num_cpu_devices=2 \
    --config.train.learning_rate="$lr" --config.train.num_steps="$STEPS" \
    --config.train.log_every_steps=25 --config.eval.every_epochs=100 \
    --config.eval.ten_crop=False --config.checkpoint.every_steps=1000 || exit 1
done
