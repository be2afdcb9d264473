"""Fit the orientation heads of a model file (pneumo.app.pipeline.orientation) and store them
in its metadata: `pneumo orientation-check`, also run at every export.

Every training image goes through the app's own preprocessing and the model in four
orientations (upright, rotated 180 degrees, flipped top to bottom, mirrored left to right).
Two logistic heads on the standardised features: "upside down" (rotated or flipped) and
"mirrored" (mirrored or rotated). Thresholds come from out-of-fold scores (5 folds grouped by
patient, so no patient's images score a head fitted on them): the upside-down refusal just
above the highest upright out-of-fold score (no held-out upright training image refused),
the mirror warning above all but 0.1 % of them. The shipped heads are then fitted on all training
images. External validation is scored only, never fitted on, and reported on its own.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.app.pipeline.onnx_model import OnnxModel, encode_array, read_metadata
from pneumo.app.pipeline.orientation import METADATA_KEY, OrientationCheck, features, side_file
from pneumo.train.data import EXTERNAL_LABEL, Sample, list_class_folder, patient_id

log = logging.getLogger(__name__)

ORIENTATIONS = {"upright": None, "rotate_180": Image.Transpose.ROTATE_180,
                "flip_vertical": Image.Transpose.FLIP_TOP_BOTTOM,
                "flip_horizontal": Image.Transpose.FLIP_LEFT_RIGHT}
"""The four ways a film arrives, by the transform that makes each from the upright one."""

TARGETS = {"upside_down": ("rotate_180", "flip_vertical"),
           "mirrored": ("rotate_180", "flip_horizontal")}
"""Each head's positive orientations."""

C = 0.1  # L2 strength of both heads (chosen among 0.1 and 1 on held-out training patients)
FOLDS = 5
MIRROR_FALSE_ALARMS = 0.001
"""Share of held-out upright training images the mirror warning may flag."""


def orientation_features(model: OnnxModel, samples: list[Sample], *, batch: int = 32
                         ) -> dict[str, np.ndarray]:
    """Orientation -> (N, F) features of the samples through the app's preprocessing."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ORIENTATIONS}
    for start in range(0, len(samples), batch):
        grays = [Image.open(s.path).convert("L") for s in samples[start:start + batch]]
        for name, op in ORIENTATIONS.items():
            x = np.stack([model.model_input(g if op is None else g.transpose(op))
                          for g in grays])
            o = model.run(x)
            out[name].extend(features(x[i], o.cam[i], o.embedding[i]) for i in range(len(x)))
        if start // batch % 20 == 0:
            log.info("orientation features: %d/%d images", min(start + batch, len(samples)),
                     len(samples))
    return {k: np.stack(v) for k, v in out.items()}


def _design(feats: dict[str, np.ndarray], head: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([feats[k] for k in ORIENTATIONS])
    y = np.concatenate([np.full(len(feats[k]), k in TARGETS[head], dtype=int)
                        for k in ORIENTATIONS])
    return x, y


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    m = LogisticRegression(C=C, max_iter=3000).fit((x - mean) / scale, y)
    return mean, scale, m.coef_[0], float(m.intercept_[0])


def _probability(x, mean, scale, w, b) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(((x - mean) / scale) @ w + b, -50, 50)))


def _rates(p: dict[str, np.ndarray], head: str, threshold: float) -> dict:
    return {"false_alarms_upright": float(np.mean(p["upright"] >= threshold)),
            "n_upright": int(len(p["upright"])),
            "detected": {k: float(np.mean(p[k] >= threshold)) for k in TARGETS[head]}}


def fit_orientation(train: dict[str, np.ndarray], groups: np.ndarray) -> tuple[dict, dict]:
    """(the metadata block, out-of-fold figures) from training features in four orientations."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    n = len(groups)
    block: dict = {"heads": {}}
    figures: dict = {}
    shared = np.concatenate([train[k] for k in ORIENTATIONS])
    mean, scale = shared.mean(axis=0), shared.std(axis=0)
    scale[scale < 1e-6] = 1.0
    block.update(mean=encode_array(mean), scale=encode_array(scale))
    for head in TARGETS:
        x, y = _design(train, head)
        oof = np.zeros(len(y))
        g = np.tile(groups, len(ORIENTATIONS))
        for fold, (tr, te) in enumerate(GroupKFold(FOLDS).split(x, y, g), start=1):
            fm, fs, w, b = _fit(x[tr], y[tr])
            oof[te] = _probability(x[te], fm, fs, w, b)
            log.info("orientation head %s: fold %d/%d", head, fold, FOLDS)
        by = {k: oof[i * n:(i + 1) * n] for i, k in enumerate(ORIENTATIONS)}
        # flagged is p >= threshold: just above the highest upright score (upside down), or
        # above all but MIRROR_FALSE_ALARMS of them (mirrored)
        allowed = 0 if head == "upside_down" else int(MIRROR_FALSE_ALARMS * n)
        top = float(np.sort(by["upright"])[n - 1 - allowed])
        threshold = min(max(float(np.nextafter(top, 1.0)), 0.5), 1.0 - 1e-9)  # >= an even call
        m = LogisticRegression(C=C, max_iter=3000).fit((x - mean) / scale, y)
        block["heads"][head] = {"weights": encode_array(m.coef_[0]),
                                "bias": float(m.intercept_[0]), "threshold": threshold}
        figures[head] = {"threshold": threshold, **_rates(by, head, threshold)}
        if head == "mirrored":  # how well it picks the fix of an upside-down film (at 0.5)
            figures["fix_chosen_right"] = {"rotate_180": float(np.mean(by["rotate_180"] >= 0.5)),
                                           "flip_vertical": float(np.mean(
                                               by["flip_vertical"] < 0.5))}
    return block, figures


def score_set(block: dict, feats: dict[str, np.ndarray]) -> dict:
    """Each head's figures on a set the heads were not fitted on (external validation)."""
    check = OrientationCheck(block)
    out = {}
    for head in TARGETS:
        mean, scale = check.mean, check.scale
        w, b, threshold = check.heads[head]
        p = {k: _probability(v, mean, scale, w, b) for k, v in feats.items()}
        out[head] = {"threshold": threshold, **_rates(p, head, threshold)}
    return out


def add_orientation_check(model_path: str | Path, train_dir: str | Path,
                          external_val: str | Path | None = None,
                          report_dir: str | Path | None = None, *, beside: bool = False
                          ) -> dict:
    """Fit the heads on train_dir and store them in the model file (or, with ``beside``, in
    ``MODEL.orientation.json``, for a model already signed); returns the figures."""
    from pneumo.export.metadata import write_metadata

    model = OnnxModel(model_path, intra_op_threads=0)
    samples = list_class_folder(Path(train_dir))
    if not samples:
        raise ValueError(f"no images in {train_dir}/NORMAL or /PNEUMONIA")
    log.info("orientation check: %d training images x %d orientations", len(samples),
             len(ORIENTATIONS))
    train = orientation_features(model, samples)
    block, held_out = fit_orientation(train, np.array([patient_id(s.name) for s in samples]))
    figures = {"held_out_training_patients": held_out, "n_train": len(samples),
               "folds": FOLDS, "C": C}
    if external_val:
        ext_samples = list_class_folder(Path(external_val))
        figures["external_validation"] = score_set(block, orientation_features(model,
                                                                               ext_samples))
        figures["n_external"] = len(ext_samples)
    block["fitted_on"] = {"train_dir": str(train_dir), "n": len(samples)}
    block["figures"] = figures
    if beside:  # the model file stays as signed; the heads name the file they belong to
        block["model_sha256"] = model.sha256
        side = side_file(model_path)
        side.write_text(json.dumps(block, separators=(",", ":")))
        log.info("orientation check written to %s (beside the model)", side)
    else:
        meta, card = read_metadata(model_path)
        meta[METADATA_KEY] = block
        write_metadata(model_path, meta, card)
        log.info("orientation check written to %s", model_path)
    if report_dir:
        write_report(figures, Path(report_dir), model_path)
    return figures


def write_report(figures: dict, out: Path, model_path: str | Path) -> None:
    """orientation.json, orientation.md and orientation.png (detection and false alarms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "orientation.json").write_text(json.dumps(figures, indent=2))
    sets = [("held-out training patients (5-fold, by patient)",
             figures["held_out_training_patients"], figures["n_train"])]
    if "external_validation" in figures:
        sets.append((EXTERNAL_LABEL, figures["external_validation"], figures["n_external"]))
    lines = ["# Orientation check: figures", "",
             f"Model: `{Path(model_path).name}`. Command: `pneumo orientation-check "
             f"{model_path} --images ../shared/data/chest_xray/train --external-val "
             "../shared/data/external_val --report reports/orientation` (deterministic: "
             "GroupKFold by patient, no random seed).", "",
             "Each image in four orientations. \"Upside down\" refuses (rotated 180 degrees or "
             "flipped top to bottom); \"mirrored\" warns (mirrored or rotated).", "",
             "| set | head | threshold | upright flagged | detected |", "|---|---|---|---|---|"]
    for name, fig, n in sets:
        for head, f in fig.items():
            if head not in TARGETS:
                continue
            det = ", ".join(f"{k} {v:.2%}" for k, v in f["detected"].items())
            lines.append(f"| {name} (n={n}) | {head} | {f['threshold']:.4f} | "
                         f"{f['false_alarms_upright']:.2%} | {det} |")
    right = figures["held_out_training_patients"].get("fix_chosen_right")
    if right:
        lines += ["", "The fix offered for an upside-down film (rotate or flip, by the mirror "
                  "head at 0.5) on held-out training patients: right for "
                  f"{right['rotate_180']:.1%} of rotated and {right['flip_vertical']:.1%} of "
                  "flipped images."]
    (out / "orientation.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.5), squeeze=False)
    for ax, (name, f, n) in zip(axes[0], sets, strict=True):
        labels, values = [], []
        for head, d in f.items():
            if head not in TARGETS:
                continue
            labels.append(f"{head}\nupright flagged")
            values.append(d["false_alarms_upright"])
            for k, v in d["detected"].items():
                labels.append(f"{head}\n{k} detected")
                values.append(v)
        ax.barh(labels, values, color=["#c44" if "flagged" in s else "#48a" for s in labels])
        ax.set_xlim(0, 1)
        ax.set_title(f"{name[:40]} (n={n})", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "orientation.png", dpi=110)
    plt.close(fig)
