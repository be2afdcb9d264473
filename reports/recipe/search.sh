#!/usr/bin/env bash
# The recipe search of issue 10, stage 1: one seed per candidate, 128 px, 10 epochs, the last
# epoch is the result (internal validation is near-separable and cannot pick epochs).
# Every run is judged on external validation (half of the official test split) after each
# epoch; nothing is trained on it. Runs are resumable: rerun the same command after a kill.
#
# Usage: bash reports/recipe/search.sh [NAME ...]     (default: every candidate, in order)
# On 2 cores, two lanes with one TensorFlow thread each use the CPU better than one run
# with two threads (TF's thread pool stalls when anything else runs):
#   bash reports/recipe/search.sh base128 eqsamp128 & bash reports/recipe/search.sh eq128 eqreg128 stretch128 &
set -uo pipefail
RUNS=${RUNS:-runs/recipe}
DATA=${DATA:-../shared/data/chest_xray}
EXT=${EXT:-../shared/data/external_val}
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-1} TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-1}
COMMON="--data $DATA --external-val $EXT --img-size 128 --epochs 10 --select last --seed 42 --split-seed 42 --cache-dir $RUNS/cache"
declare -A RECIPE=(
  [base128]=""                                                       # today's recipe at 128 px
  [eq128]="--intensity equalize"                                     # histogram equalisation, also in the app
  [eqreg128]="--intensity equalize --mixup 0.2 --label-smoothing 0.1 --aug-set erasing=0.5"
  [eqsamp128]="--intensity equalize --balance sampling"              # balanced batches instead of loss weights
  [stretch128]="--intensity stretch"                                 # 1-99 % percentile stretch
)
ORDER=(base128 eq128 eqreg128 eqsamp128 stretch128)
mkdir -p "$RUNS"
for name in "${@:-${ORDER[@]}}"; do
  if [ -f "$RUNS/$name/model.json" ]; then echo "skip $name (done)"; continue; fi
  echo "=== $name: pneumo train $COMMON --out $RUNS/$name ${RECIPE[$name]}"
  pneumo train $COMMON --out "$RUNS/$name" ${RECIPE[$name]} >> "$RUNS/$name.log" 2>&1 || echo "FAILED $name"
done
