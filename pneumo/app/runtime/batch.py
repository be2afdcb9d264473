"""Batch prediction on files and folders, without a server (`pneumo predict`)."""

from __future__ import annotations

import csv
import json
import sys
from typing import TextIO

from pneumo.app.config import DEFAULT_SETTING
from pneumo.app.pipeline.files import iter_inputs, predict_file
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.predictor import Predictor

CSV_FIELDS = ("file", "status", "outcome", "headline", "label", "probability", "threshold",
              "mode", "confidence", "message", "model_version", "sha256", "width", "height",
              "format", "ood_distance", "warnings", "error_code", "error_message")


def _csv_row(rec: dict) -> dict:
    """A flat CSV row for a result or failure."""
    row = {k: rec.get(k, "") for k in CSV_FIELDS}
    if rec["status"] == "ok":
        row.update(width=rec["input"]["width"], height=rec["input"]["height"],
                   format=rec["input"]["format"],
                   warnings="; ".join(w["code"] for w in rec.get("quality", [])))
    else:
        row.update(error_code=rec["error"]["code"], error_message=rec["error"]["message"])
    return row


def run_batch(paths: list[str], *, model_path: str, mode: str = DEFAULT_SETTING,
              csv_path: str | None = None, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Predict every input, print JSON lines; returns 1 if any file failed, else 0."""
    out = out or sys.stdout
    err = err or sys.stderr
    model = OnnxModel(model_path)
    predictor = Predictor(model)
    try:
        predictor.check_mode(mode)
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    files = list(iter_inputs(paths))
    if not files:
        print("error: no image files found", file=err)
        return 2
    failures: list[dict] = []
    csv_file = open(csv_path, "w", newline="", encoding="utf-8-sig") if csv_path else None  # noqa: SIM115
    try:
        writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS) if csv_file else None
        if writer:
            writer.writeheader()
        for i, path in enumerate(files, 1):
            rec = predict_file(predictor, path, mode)
            print(json.dumps(rec, ensure_ascii=False), file=out, flush=True)
            if writer:
                writer.writerow(_csv_row(rec))
            status = (f"{rec['headline']} ({rec['outcome']}; {rec['mode']} label "
                      f"{rec['label']})" if rec["status"] == "ok"
                      else "FAILED " + rec["error"]["code"])
            print(f"[{i}/{len(files)}] {path}: {status}", file=err, flush=True)
            if rec["status"] != "ok":
                failures.append(rec)
    finally:
        if csv_file:
            csv_file.close()
    print(f"done: {len(files) - len(failures)} ok, {len(failures)} failed "
          f"(model {model.name} {model.version}, mode {mode})", file=err)
    for rec in failures:
        print(f"  FAILED {rec['file']}: {rec['error']['code']}: {rec['error']['message']}",
              file=err)
    return 1 if failures else 0
