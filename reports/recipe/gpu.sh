#!/usr/bin/env bash
# Recipe search, stage 3 (issue 10): what 2 CPU cores could not afford, on a GPU machine that
# has no TensorFlow: longer schedules (40-80 epochs instead of 8) and larger inputs.
# Keras runs on JAX (`pneumo train --backend jax`): the same model code, recipe flags, split
# and reports; the run folders export here with TensorFlow as usual (`pneumo export`).
# Every run: no flip (the stage-1 winner), the last epoch is the result, split seed 42,
# judged on external validation (half of the official test split) after every epoch, never
# trained on. Resumable: rerun the same command after a kill.
#
# Usage: bash reports/recipe/gpu.sh NAME [NAME ...]    (one lane; lanes can share one GPU)
#   PNEUMO  the command (default: pneumo; on a machine without the package installed,
#           "python3 -m pneumo.cli" from the repository root)
#   EXTRA   flags appended to every run (a dry run: EXTRA="--epochs 1 --img-size 32")
#   AFTER   a command run with the run's name after each run (e.g. to pack it)
#   CACHE   decoded-image cache (default RUNS/cache; give each concurrent lane its own)
set -uo pipefail
RUNS=${RUNS:-runs/recipe}
DATA=${DATA:-../shared/data/chest_xray}
EXT=${EXT:-../shared/data/external_val}
PNEUMO=${PNEUMO:-pneumo}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # lanes share the GPU's memory
COMMON="--backend jax --data $DATA --external-val $EXT --select last --split-seed 42 --no-aug flip --cache-dir ${CACHE:-$RUNS/cache}"
declare -A RECIPE=(
  [g96e40-s42]="--img-size 96 --epochs 40 --seed 42"     # the shipped recipe, 5x the epochs
  [g96e40-s43]="--img-size 96 --epochs 40 --seed 43"
  [g96e80-s42]="--img-size 96 --epochs 80 --seed 42"     # 10x the epochs
  [g96e80-s43]="--img-size 96 --epochs 80 --seed 43"
  [g96e80-s44]="--img-size 96 --epochs 80 --seed 44"
  [g128e60-s42]="--img-size 128 --epochs 60 --seed 42"
  [g128e30-s42]="--img-size 128 --epochs 30 --seed 42"   # the largest input one member can
  [g128e30-s43]="--img-size 128 --epochs 30 --seed 43"   #   afford in 5 ms on one core
  [g96e40reg-s42]="--img-size 96 --epochs 40 --seed 42 --mixup 0.2 --label-smoothing 0.1 --aug-set erasing=0.5"
  [g224e30-s42]="--img-size 224 --epochs 30 --seed 42"   # reference: does input size matter?
  [g224e30-s43]="--img-size 224 --epochs 30 --seed 43"
)
mkdir -p "$RUNS"
for name in "$@"; do
  if [ -z "${RECIPE[$name]+x}" ]; then echo "unknown run $name"; continue; fi
  if [ -f "$RUNS/$name/model.json" ]; then echo "skip $name (done)"; continue; fi
  echo "=== $name: pneumo train $COMMON --out $RUNS/$name ${RECIPE[$name]} ${EXTRA:-}"
  $PNEUMO train $COMMON --out "$RUNS/$name" ${RECIPE[$name]} ${EXTRA:-} >> "$RUNS/$name.log" 2>&1 \
    || echo "FAILED $name"
  if [ -n "${AFTER:-}" ]; then $AFTER "$name"; fi
done
