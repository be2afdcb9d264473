"""Reference statistics for the app's drift check, stored in the model file's metadata.

Computed by running the exported model through the app's own pipeline (all checks) on the
images its operating points were chosen on (external validation at export): quantiles of the
out-of-distribution distance (all answered images, and within each class called at the
balanced threshold) and of the calibrated score, the borderline rate and the share refused. `pneumo.app.clinic.drift` compares a clinic's recent answers with them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pneumo.app.clinic.labelled import labelled_folder, score
from pneumo.app.pipeline.onnx_model import OnnxModel, read_metadata
from pneumo.app.pipeline.predictor import Predictor

log = logging.getLogger(__name__)

N_QUANTILES = 101


def reference_statistics(model_path: str | Path, folder: str | Path, source: str) -> dict:
    """The drift reference of a model on a labelled folder (NORMAL/, PNEUMONIA/)."""
    model = OnnxModel(model_path)
    scored = score(Predictor(model), labelled_folder(folder))
    _, answered = scored.answered()
    if not answered:
        raise ValueError(f"no image of {folder} was answered by the model")
    probs = np.array([r["probability"] for r in answered])
    ood = np.array([r["ood_distance"] for r in answered if r["ood_distance"] is not None])
    q = np.linspace(0.0, 1.0, N_QUANTILES)
    cut = model.thresholds.get("balanced", 0.5)
    by_label = {}
    for label, positive in (("NORMAL", False), ("PNEUMONIA", True)):
        vals = np.array([r["ood_distance"] for r in answered if r["ood_distance"] is not None
                         and (r["probability"] >= cut) == positive])
        if len(vals):
            by_label[label] = vals
    borderline = sum(1 for r in answered if r["confidence"] == "borderline")
    n_all = len(scored.results)
    return {
        "source": source,
        "n": len(answered),
        "n_refused": scored.refused(),
        "refusal_rate": round(scored.refused() / n_all, 6),
        "borderline_rate": round(borderline / len(answered), 6),
        "split_threshold": cut,
        "score_quantiles": [float(v) for v in np.quantile(probs, q)],
        "ood_quantiles": [float(v) for v in np.quantile(ood, q)] if len(ood) else [],
        "ood_quantiles_by_label": {k: [float(x) for x in np.quantile(v, q)]
                                   for k, v in by_label.items()},
        "n_by_label": {k: len(v) for k, v in by_label.items()},
    }


def add_drift_reference(model_path: str | Path, folder: str | Path, source: str) -> dict:
    """Compute the reference and write it into the model file's metadata; returns it."""
    from pneumo.export.metadata import write_metadata

    reference = reference_statistics(model_path, folder, source)
    meta, card = read_metadata(model_path)
    meta["drift_reference"] = reference
    write_metadata(model_path, meta, card)
    log.info("drift reference written to %s: %d images answered, %d refused, borderline %.3f",
             model_path, reference["n"], reference["n_refused"], reference["borderline_rate"])
    return reference
