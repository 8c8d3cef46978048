#!/usr/bin/env bash
# One GPU call of the `device` tool: `bash benchmarks/device_run.sh session|recipes [budget_s]`,
# with carry [".device"] (benchmarks/README.md, "The GPU session, ready to run", says how to make
# it). The machine's own python3 has JAX, flax, optax and orbax but neither ml_collections nor
# TensorFlow: ml_collections comes as a wheel in .device/wheels, and neither script needs
# TensorFlow. Output goes to $OUT (session.log, session.json, default_step.hlo.txt; or
# recipes.log, .csv, .md, .png, .json), and a hard timeout backs each script's own budget.
set -o pipefail
cd "$(dirname "$0")/.."
what=${1:?session or recipes}
budget=${2:-540}
out=${OUT:-/tmp/device_out}
mkdir -p "$out"
if ls .device/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .device/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
limit=$(( ${budget%.*} + 45 ))
case $what in
  session) timeout "$limit" python3 benchmarks/gpu_session.py --out="$out" --budget_s="$budget" \
               "${@:3}" 2>&1 | tee "$out/session.log" ;;
  recipes) timeout "$limit" python3 -m experiments.gpu_recipes --data=.device/tiny.tar.gz \
               --out="$out" --budget_s="$budget" "${@:3}" 2>&1 | tee "$out/recipes.log" ;;
  *) echo "session or recipes, not $what" >&2; exit 2 ;;
esac
