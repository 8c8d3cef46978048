#!/usr/bin/env bash
# The step alone (benchmarks/train_step.py) and a whole run's training images/s (the demo
# config at width 0.25 on generated data, 200 steps of 32), each for the checkout at BEFORE
# (the loop that never waits) and this one, alternated twice in one window.
#
#   git worktree add /tmp/before 39e94fa && BEFORE=/tmp/before bash benchmarks/steps_in_flight.sh
set -u
BEFORE=${BEFORE:-/tmp/before}
AFTER=$(pwd)
PY=${PY:-$AFTER/.venv/bin/python}
CACHE=${CACHE:-/tmp/steps_in_flight_cache}
for round in 1 2; do
  for side in before after; do
    repo=$([ $side = before ] && echo "$BEFORE" || echo "$AFTER")
    step=$(cd "$repo" && PYTHONPATH="$repo" "$PY" benchmarks/train_step.py --batch 32 --model 2 --width 0.25 \
      --torch none --steps 5 2>/dev/null | grep "^jax model=2" | tail -1)
    rm -rf /tmp/steps_in_flight_run
    run=$(cd "$repo" && PYTHONPATH="$repo" "$PY" -m alexnet_jax.main --config=configs/demo.py \
      --workdir=/tmp/steps_in_flight_run --config.data.cache_dir="$CACHE" \
      --config.train.num_steps=200 --config.train.log_every_steps=50 \
      --config.eval.every_epochs=1000 --config.eval.ten_crop=False 2>&1 | grep "^Finished")
    echo "round $round $side: step alone [$step]; run [$run]"
  done
done
