#!/usr/bin/env bash
# Issue 10, stage 3: the shipped model. The winning recipe's two seeds (noflip96 s42, s43)
# exported as ONE ONNX graph
# (mean of the members' logits), int8 with 7-bit weights, calibrated and given its operating
# points on external validation (half of the official test split), with cross-fitted
# figures; then the recipe table over every run and candidate ensemble, the evaluation side
# by side, and the copy into the app. Run search.sh and finalists.sh (43; FAMILY=ovl96 42)
# first.
set -euo pipefail
RUNS=${RUNS:-runs/recipe}
DATA=${DATA:-../shared/data/chest_xray}
EXT=${EXT:-../shared/data/external_val}
OUT=${OUT:-runs/export-final2}
MEMBERS=(noflip96 noflip96-s43)
pneumo export $(printf -- "--model $RUNS/%s " "${MEMBERS[@]}") --calib-data "$DATA" --out "$OUT" --external-val "$EXT"
pneumo evaluate --model "$OUT/model.int8.onnx" --data "$EXT" --report reports/train/shipped --json reports/train/shipped/metrics.json
pneumo recipes --runs "$RUNS" --out reports/recipe --commands reports/recipe/commands.sh \
  --ensemble "finalists x3=noflip96,noflip96-s43,ovl96-s42" \
  --ensemble "shipped x2=$(IFS=,; echo "${MEMBERS[*]}")" \
  --exported "shipped x2=$OUT/model.int8.onnx"
mkdir -p reports/export && cp "$OUT"/parity.* "$OUT"/external_*.png reports/export/
cp "$OUT/model.int8.onnx" edge_app/models/pneumo.int8.onnx
cp "$OUT/MODEL_CARD.md" edge_app/models/MODEL_CARD.md
