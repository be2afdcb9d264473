"""What a clinic gains from site thresholds: draw N labelled cases, propose, measure the rest.

    python reports/site/simulate.py --data ../shared/data/external_val --n 100 --repeats 200

Every image is scored once by the app's own pipeline (bundled model, all checks). For each
repeat, N answered cases are drawn (seeded), `pneumo.app.clinic.site_thresholds.propose` chooses
thresholds exactly as ``POST /api/v1/calibration/proposal`` does, and sensitivity,
specificity and accuracy on the remaining images are compared with the model's own
thresholds. One repeat is also run end to end through the HTTP API (post, confirm,
propose, accept, predict the rest) to check that the API gives the same answers.
Writes results.json and results.md beside this script (or --out).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import numpy as np

from pneumo.app.clinic.labelled import labelled_folder, score
from pneumo.app.clinic.site_thresholds import propose, rates
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel
from pneumo.app.pipeline.predictor import Predictor
from pneumo.app.web.app import create_app
from pneumo.app.web.state import get_state

log = logging.getLogger("simulate")


def _summary(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(np.nanmean(arr)), 4),
            "p5": round(float(np.nanpercentile(arr, 5)), 4),
            "p95": round(float(np.nanpercentile(arr, 95)), 4)}


def through_api(model: OnnxModel, files: list[Path], labels: list[int], pick: np.ndarray,
                rest: np.ndarray, data_dir: Path) -> dict:
    """One repeat through the real API (Flask test client): must match the offline math."""
    app = create_app({"model": model, "data_dir": data_dir, "secret_key": "sim"})
    c = app.test_client()

    def post(i: int) -> dict:
        return c.post("/api/v1/predict", content_type="multipart/form-data",
                      data={"image": (io.BytesIO(files[i].read_bytes()), files[i].name)}
                      ).get_json()

    try:
        for i in pick:
            rid = post(i)["id"]
            c.put(f"/api/v1/history/{rid}/confirmation",
                  json={"finding": "pneumonia" if labels[i] else "normal", "by": "sim"})
        prop = c.post("/api/v1/calibration/proposal", json={}).get_json()
        # measured whether or not the guard rail would let one click accept it
        c.post("/api/v1/calibration", json={"proposal_id": prop["id"], "by": "sim",
                                            "override": {"reason": "simulation", "by": "sim"}})
        answers = [post(i) for i in rest]
        ok = [(labels[i], a) for i, a in zip(rest, answers, strict=True) if "label" in a]
        y = np.array([t for t, _ in ok])
        pred = np.array([a["label"] == "PNEUMONIA" for _, a in ok])
        return {"thresholds": prop["thresholds"], "n": prop["n"],
                "guard_blocked": prop["guard"]["blocked"],
                "threshold_source": sorted({a["threshold_source"] for _, a in ok}),
                "sensitivity": float(pred[y == 1].mean()),
                "specificity": float((~pred[y == 0]).mean()),
                "accuracy": float((pred == (y == 1)).mean())}
    finally:
        get_state(app).history.close()


def main() -> int:
    """Run the simulation and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="labelled folder (NORMAL/, PNEUMONIA/)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--n", type=int, default=100, help="labelled cases a clinic confirms")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--data-name", default=None,
                    help="what the data is, for the report (default: named from the path)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="[simulate %(asctime)s] %(message)s",
                        datefmt="%H:%M:%S")
    name = args.data_name or ("external validation (half of the official test split)"
                              if "external_val" in args.data else args.data)
    model = OnnxModel(args.model)
    items = labelled_folder(args.data)
    scored = score(Predictor(model), items)
    keep = [i for i, r in enumerate(scored.results) if r["status"] == "ok"]
    y = np.array([scored.labels[i] for i in keep])
    p = np.array([scored.results[i]["probability"] for i in keep])
    model_t = dict(model.thresholds)
    rng = np.random.default_rng(args.seed)
    rows = {m: {"model": [], "site": [], "site_threshold": []} for m in model_t}
    too_few = blocked = 0
    first = None
    for _ in range(args.repeats):
        pick = rng.choice(len(y), size=args.n, replace=False)
        rest = np.setdiff1d(np.arange(len(y)), pick)
        try:
            prop = propose(y[pick], p[pick], model_t)
        except ValueError:
            too_few += 1
            continue
        first = first if first is not None else (pick, rest, prop)
        blocked += bool(prop["guard"]["blocked"])
        for m, t in model_t.items():
            rows[m]["model"].append(rates(y[rest], p[rest], t))
            rows[m]["site"].append(rates(y[rest], p[rest], prop["thresholds"][m]))
            rows[m]["site_threshold"].append(prop["thresholds"][m])
    result = {"data": args.data, "data_name": name, "model": model.version, "model_sha256": model.sha256,
              "images_answered": len(y), "n_cases": args.n, "repeats": args.repeats,
              "seed": args.seed, "repeats_with_too_few_cases": too_few,
              "repeats_blocked_by_the_guard_rail": blocked, "modes": {}}
    for m in model_t:
        result["modes"][m] = {
            "model_threshold": model_t[m],
            "site_threshold": _summary(rows[m]["site_threshold"]),
            **{f"{who}_{k}": _summary([r[k] for r in rows[m][who]])
               for who in ("model", "site") for k in ("sensitivity", "specificity", "accuracy")}}
    pick, rest, prop = first
    files = [scored.files[i] for i in keep]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        api = through_api(model, files, list(y), pick, rest, Path(tmp))
    offline = {m: rates(y[rest], p[rest], prop["thresholds"][m]) for m in model_t}
    result["api_check"] = {"api": api, "offline_balanced": offline["balanced"],
                           "offline_thresholds": prop["thresholds"]}
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = [f"# Site thresholds from {args.n} confirmed cases ({args.repeats} draws, seed "
             f"{args.seed})", "",
             f"Data: {name}, `{args.data}` ({len(y)} images answered by {model.version}); each draw "
             f"takes {args.n} cases as the clinic's confirmed ones and measures the other "
             f"{len(y) - args.n}. Mean (5th-95th percentile over draws).", "",
             "| setting | thresholds | sensitivity | specificity | accuracy |", "|---|---|---|---|---|"]
    for m, r in result["modes"].items():
        for who in ("model", "site"):
            t = (f"{r['model_threshold']:.3f}" if who == "model" else
                 f"{r['site_threshold']['mean']:.3f} ({r['site_threshold']['p5']:.3f}-"
                 f"{r['site_threshold']['p95']:.3f})")
            cells = [f"{r[f'{who}_{k}']['mean']:.3f} ({r[f'{who}_{k}']['p5']:.3f}-"
                     f"{r[f'{who}_{k}']['p95']:.3f})" for k in ("sensitivity", "specificity",
                                                             "accuracy")]
            lines.append(f"| {m}, {who} | {t} | " + " | ".join(cells) + " |")
    lines += ["", f"Guard rail: {blocked} of {args.repeats - too_few} site proposals raise a "
              "threshold without the confirmed pneumonias to back it and could be accepted only "
              "with an override (the 'site' rows measure them all).",
              "", f"API check (draw 1 through the HTTP API): {json.dumps(api)}; offline math on "
              f"the same draw: balanced {json.dumps(offline['balanced'])}.", ""]
    (out / "results.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
