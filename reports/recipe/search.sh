#!/usr/bin/env bash
# The recipe search of issue 10, stage 1: one seed per candidate, 96 px, 8 epochs, the last
# epoch is the result (internal validation is near-separable and cannot pick epochs).
# Every run is judged on external validation (half of the official test split) after each
# epoch; nothing is trained on it. Runs are resumable: rerun the same command after a kill.
#
# Usage: bash reports/recipe/search.sh [NAME ...]     (default: every candidate, in order)
# On 2 cores, two lanes with one TensorFlow thread each use the CPU better than one run
# with two threads (TF's thread pool stalls when anything else runs):
#   bash reports/recipe/search.sh base96 reg96 & bash reports/recipe/search.sh eq96 noflip96 &
set -uo pipefail
RUNS=${RUNS:-runs/recipe}
DATA=${DATA:-../shared/data/chest_xray}
EXT=${EXT:-../shared/data/external_val}
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-1} TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-1}
COMMON="--data $DATA --external-val $EXT --img-size 96 --epochs 8 --select last --seed 42 --split-seed 42 --cache-dir $RUNS/cache"
declare -A RECIPE=(  # a 2 x 2 design: intensity normalisation x regularisation
  [base96]=""                                                        # today's recipe at 96 px
  [eq96]="--intensity equalize"                                      # histogram equalisation, also in the app
  [reg96]="--mixup 0.2 --label-smoothing 0.1 --aug-set erasing=0.5"  # mixup, label smoothing, random erasing
  [eqreg96]="--intensity equalize --mixup 0.2 --label-smoothing 0.1 --aug-set erasing=0.5"  # stopped: eq96 showed no gain
  [noflip96]="--no-aug flip"                                         # no left-right flip: chest X-rays are not symmetric
  # stage 1b, on top of the winner noflip96 (later session):
  [noflipbal96]="--no-aug flip --balance sampling"                   # balanced batches instead of loss weights
  [noflipwd96]="--no-aug flip --weight-decay 0.05"                   # AdamW weight decay 0.05 (default 1e-4)
)
ORDER=(base96 eq96 reg96 noflip96)
mkdir -p "$RUNS"
for name in "${@:-${ORDER[@]}}"; do
  if [ -f "$RUNS/$name/model.json" ]; then echo "skip $name (done)"; continue; fi
  echo "=== $name: pneumo train $COMMON --out $RUNS/$name ${RECIPE[$name]}"
  pneumo train $COMMON --out "$RUNS/$name" ${RECIPE[$name]} >> "$RUNS/$name.log" 2>&1 || echo "FAILED $name"
done
