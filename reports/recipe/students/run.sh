#!/bin/bash
# usage: run.sh NAME ARCH PX T SEED  -- one student run, resumable (rerun the same line)
set -e
cd "$(dirname "$0")/../../.."
name=$1; arch=$2; px=$3; T=$4; seed=$5
out=runs/students/$name-s$seed
mkdir -p $out
start=$(date +%s)
pneumo train --data ../shared/data/chest_xray --out $out \
  --arch $arch --img-size $px --epochs 25 --seed $seed --augment full --no-aug flip \
  --teacher pneumo/app/models/pneumo.int8.onnx --teacher-views 4 \
  --temperature $T --distill-alpha 0.7 --external-val ../shared/data/external_val \
  --cache-dir runs/students/cache >> $out/train.log 2>&1
echo "wall_s $(( $(date +%s) - start ))" >> $out/train.log
