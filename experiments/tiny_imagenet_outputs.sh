#!/usr/bin/env bash
# What experiments/results/<run>/ holds for a Tiny ImageNet run, made from its workdir: the
# curves (png, csv, md), the best step's weights (float16: the width-0.375 net's float32 is over
# 20 MB), predict's 10 crops on the sample photos whose classes are among the 200, figures 3
# and 4 (fc7 neighbours among the first 10,000 training images), the per-class errors.
#
#   WORKDIR=workdirs/tiny_bn_w0375 OUT=experiments/results/tiny_imagenet_bn_w0375 \
#       bash experiments/tiny_imagenet_outputs.sh
set -eu
WORKDIR=${WORKDIR:?set WORKDIR, the workdir of the run}
OUT=${OUT:?set OUT, the results folder}
ROOT=${ROOT:-~/data/tiny-imagenet-200}
SAMPLES=${SAMPLES:-../shared/data/imagenet_samples}
DTYPE=${DTYPE:-float16}
PY=${PY:-.venv/bin/python}
BEST=--config.eval.checkpoint=best
mkdir -p "$OUT"
"$PY" -m experiments.trained_run --workdir="$WORKDIR" --out="$OUT/curves"
"$PY" -m alexnet_jax.tools.weights --workdir="$WORKDIR" --out="$OUT/weights.npz" \
  --dtype="$DTYPE" "$BEST" > "$OUT/weights.txt"
photos=()
for f in "$SAMPLES"/*; do
  grep -qx "$(basename "$f" | cut -d_ -f1)" "$ROOT/wnids.txt" && photos+=("$f")
done
"$PY" -m alexnet_jax.tools.predict --weights="$OUT/weights.npz" --ten_crop "${photos[@]}" \
  > "$OUT/predict.txt"
"$PY" -m alexnet_jax.tools.figures --workdir="$WORKDIR" --out="$OUT" --figures=fig3,fig4 \
  --max_train=10000 "$BEST" 2>&1 | tee "$OUT/figures.txt"
# The run writes per-class errors at its end; a best step before the end needs an eval_only run.
step=$(sed -n 's/^Step \([0-9]*\) of.*/\1/p' "$OUT/weights.txt")
cp "$WORKDIR/per_class_step$step.csv" "$OUT/" || echo "No per-class file of step $step:" \
  "evaluate it with --config.eval_only=True --config.eval.checkpoint=best." >&2
