#!/usr/bin/env bash
# Issue 10, the shipped model. The winning recipe's two seeds (g224e30: 224 px, no flip,
# 30 epochs, trained on a GPU by gpu.sh; seeds 42 and 43) exported as ONE ONNX graph
# (mean of the members' logits), int8 with 7-bit weights, calibrated and given its operating
# points on external validation (half of the official test split), with cross-fitted
# figures; then the recipe table over every run and candidate ensemble, the evaluation side
# by side, and the copy into the app (then sign it: pneumo model sign). Run search.sh,
# finalists.sh (43; FAMILY=ovl96 42) and gpu.sh (commands.sh) first.
set -euo pipefail
RUNS=${RUNS:-runs/recipe}
DATA=${DATA:-../shared/data/chest_xray}
EXT=${EXT:-../shared/data/external_val}
OUT=${OUT:-runs/export-gpu224}
MEMBERS=(g224e30-s42 g224e30-s43)
pneumo export $(printf -- "--model $RUNS/%s " "${MEMBERS[@]}") --calib-data "$DATA" --out "$OUT" --external-val "$EXT"
pneumo evaluate --model "$OUT/model.int8.onnx" --data "$EXT" --report reports/train/shipped --json reports/train/shipped/metrics.json
pneumo recipes --runs "$RUNS" --out reports/recipe --commands reports/recipe/commands.sh \
  --ensemble "finalists x3=noflip96,noflip96-s43,ovl96-s42" \
  --ensemble "earlier shipped x2=noflip96,noflip96-s43" \
  --ensemble "gpu96 x2=g96e40-s42,g96e40-s43" \
  --ensemble "gpu128 x2=g128e30-s42,g128e30-s43" \
  --ensemble "ft112 x2=ft112-s42,ft112-s43" \
  --ensemble "shipped x2=$(IFS=,; echo "${MEMBERS[*]}")" \
  --exported "shipped x2=$OUT/model.int8.onnx" \
  --exported "gpu96 x2=runs/export-gpu96/model.int8.onnx" \
  --exported "ft160e1-s42=runs/export-ft160/model.int8.onnx"
mkdir -p reports/export && cp "$OUT"/parity.* "$OUT"/external_*.png reports/export/
cp "$OUT/model.int8.onnx" pneumo/app/models/pneumo.int8.onnx
cp "$OUT/MODEL_CARD.md" pneumo/app/models/MODEL_CARD.md
