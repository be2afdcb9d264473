"""Outcomes of the bundled model on external validation: pneumonia / review / no signs by class.

    python reports/outcomes/table.py --data ../shared/data/external_val --out reports/outcomes

Every image goes through the app's own pipeline (pneumo.app.pipeline.predictor.Predictor: decode, checks,
model, calibration, pneumo.app.pipeline.outcome.decide at the model's thresholds). Writes outcomes.md
and outcomes.json. External validation is half of the official test split: never trained on;
its images also chose the model's thresholds and calibration, so these counts are in-sample
for the thresholds (optimistic), as the model card says.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pneumo.app.pipeline.checks import NotAChestXray  # noqa: E402
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel  # noqa: E402
from pneumo.app.pipeline.outcome import OUTCOMES  # noqa: E402
from pneumo.app.pipeline.predictor import Predictor  # noqa: E402

log = logging.getLogger("outcomes")


def table(data: Path, model_path: Path) -> dict:
    """Counts of outcome by true class (and refusals) over a NORMAL/ PNEUMONIA/ folder."""
    model = OnnxModel(model_path)
    predictor = Predictor(model)
    counts: dict[str, Counter] = {"NORMAL": Counter(), "PNEUMONIA": Counter()}
    band: list[dict] = []
    files = [(c, f) for c in counts for f in sorted((data / c).glob("*")) if f.is_file()]
    for i, (cls, path) in enumerate(files, 1):
        try:
            pred = predictor.predict(path.read_bytes(), heatmap=False)
        except NotAChestXray as exc:
            counts[cls]["refused"] += 1
            log.info("refused %s: %s", path.name, ", ".join(r.code for r in exc.reasons))
            continue
        counts[cls][pred.outcome] += 1
        if pred.outcome == "review":
            band.append({"file": f"{cls}/{path.name}", "probability": round(pred.probability, 3)})
        if i % 50 == 0:
            log.info("%d/%d images", i, len(files))
    return {"model": {"name": model.name, "version": model.version, "sha256": model.sha256,
                      "thresholds": model.thresholds},
            "data": str(data), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": {c: {o: counts[c][o] for o in (*OUTCOMES, "refused")} for c in counts},
            "review_band": band}


def markdown(res: dict, command: str) -> str:
    """The table as Markdown."""
    t = res["model"]["thresholds"]
    lines = [f"# Outcomes on external validation: {res['model']['name']} "
             f"{res['model']['version']}", "",
             f"`{command}` ({res['date']}). Review band: screening {t['screening']:.3f} <= p < "
             f"balanced {t['balanced']:.3f}. Thresholds chosen on these images (in-sample).", "",
             "| true class | signs of pneumonia | review | no signs | refused |",
             "|---|---|---|---|---|"]
    for cls, c in res["counts"].items():
        lines.append(f"| {cls} | {c['pneumonia']} | {c['review']} | {c['no_signs']} | "
                     f"{c['refused']} |")
    lines += ["", "Images in the review band:", ""]
    lines += [f"- `{b['file']}`: {b['probability']:.3f}" for b in res["review_band"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder with NORMAL/, PNEUMONIA/")
    ap.add_argument("--out", required=True, type=Path, help="where outcomes.md/.json go")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = table(args.data, args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "outcomes.json").write_text(json.dumps(res, indent=1) + "\n")
    command = "python reports/outcomes/table.py --data ../shared/data/external_val --out " \
              "reports/outcomes"
    (args.out / "outcomes.md").write_text(markdown(res, command))
    print(markdown(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
