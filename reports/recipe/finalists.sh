#!/usr/bin/env bash
# Issue 10, stage 2: the search's winner (noflip96: today's recipe at 96 px without the
# left-right flip) with two more seeds, so that the finalist is judged on >= 2 seeds and the
# shipped ensemble has three members. Same split (split seed 42) and budget as stage 1.
# Resumable. Usage: [FAMILY=ovl96] bash reports/recipe/finalists.sh SEED... Two lanes with one TensorFlow thread each (see search.sh).
set -uo pipefail
RUNS=${RUNS:-runs/recipe}
DATA=${DATA:-../shared/data/chest_xray}
EXT=${EXT:-../shared/data/external_val}
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-1} TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-1}
COMMON="--data $DATA --external-val $EXT --img-size 96 --epochs 8 --select last --split-seed 42 --cache-dir $RUNS/cache --no-aug flip"
# FAMILY=ovl96 (default noflip96) adds burned-in unit text to training images (--overlays 0.5).
FAMILY=${FAMILY:-noflip96}
EXTRA=""; [ "$FAMILY" = ovl96 ] && EXTRA="--overlays 0.5"
# FAMILY=noflipbal96 (stage 1b's best balanced row) adds balanced sampling.
[ "$FAMILY" = noflipbal96 ] && EXTRA="--balance sampling"
for seed in "${@:-43 44}"; do
  name=$FAMILY-s$seed
  if [ -f "$RUNS/$name/model.json" ]; then echo "skip $name (done)"; continue; fi
  echo "=== $name: pneumo train $COMMON $EXTRA --seed $seed --out $RUNS/$name"
  pneumo train $COMMON $EXTRA --seed "$seed" --out "$RUNS/$name" >> "$RUNS/$name.log" 2>&1 || echo "FAILED $name"
done
