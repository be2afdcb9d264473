"""What travels inside the ONNX file: metadata, OOD statistics and the model card."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np

from pneumo.app.pipeline.decoded import DATASET_SIZE
from pneumo.app.pipeline.onnx_model import METADATA_KEY, MODEL_CARD_KEY, encode_array
from pneumo.app.pipeline.preprocess import RECIPE
from pneumo.train.data import EXTERNAL_LABEL as EXTERNAL_SOURCE
from pneumo.train.metrics import figure_with_ci


def git_commit() -> str:
    """The current git commit of the project (or 'unknown' outside a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def acquisition_variants(x: np.ndarray) -> np.ndarray:
    """Real images under every acquisition shift of `train.shifts`, concatenated."""
    from pneumo.train.shifts import shifted_versions

    return np.concatenate(list(shifted_versions(x).values()))


def ood_statistics(train_emb: np.ndarray, val_emb: np.ndarray, shifted_val_emb: np.ndarray
                   ) -> dict:
    """Mahalanobis OOD model: mean + shrunk precision of training embeddings, thresholds.

    `reject` is set so real X-rays pass: above both the 99.9th percentile of validation
    images and the 99.5th percentile of validation images under acquisition changes, times
    a 1.5 safety margin; `warn` is the 99th percentile of validation images.
    """
    from sklearn.covariance import LedoitWolf

    mean = train_emb.mean(axis=0)
    lw = LedoitWolf().fit(train_emb)
    precision = lw.precision_

    def d2(e):
        d = e - mean
        return np.einsum("nc,cd,nd->n", d, precision, d)

    d_val, d_shift, d_train = d2(val_emb), d2(shifted_val_emb), d2(train_emb)
    reject = 1.5 * max(np.percentile(d_val, 99.9), np.percentile(d_shift, 99.5))
    warn = float(np.percentile(d_val, 99))
    return {
        "method": "mahalanobis (Ledoit-Wolf shrinkage) on the pooled embedding",
        "mean": encode_array(mean),
        "precision": encode_array(precision),
        "reject_distance": float(reject),
        "warn_distance": warn,
        "val_pass_rate": float(np.mean(d_val <= reject)),
        "shifted_val_pass_rate": float(np.mean(d_shift <= reject)),
        "distance_percentiles": {
            "train_p50": float(np.percentile(d_train, 50)),
            "val_p50": float(np.percentile(d_val, 50)),
            "val_p99": warn,
            "val_p99_9": float(np.percentile(d_val, 99.9)),
            "shifted_val_p99_5": float(np.percentile(d_shift, 99.5)),
        },
        "n_train": int(len(train_emb)),
        "n_val": int(len(val_emb)),
    }


INTERNAL_SOURCE = "internal validation split (patient-grouped, carved from the training data)"
INTERNAL_THRESHOLD_RULES = {
    "balanced": "Youden's J; of the thresholds within one bootstrap SE of the maximum, "
                "the highest",
    "screening": "highest threshold with sensitivity >= 0.95, never above the "
                 "J-maximising one",
}


def build_metadata(train_meta: dict, *, precision: str, thresholds: dict, val_metrics: dict,
                   ood: dict, source_sha256: str, external: dict | None = None,
                   val_ece: dict | None = None) -> dict:
    """The metadata document stored in metadata_props['pneumo'].

    `external` (from the export's external-validation step) adds calibration, thresholds
    chosen there and the cross-fitted external figures; an ensemble's `train_meta` carries
    `members`.
    """
    from pneumo.train.metrics import EXTERNAL_THRESHOLD_RULE

    intensity = str(train_meta.get("intensity") or "none")
    meta = {
        "name": train_meta.get("name", "pneumo-cnn"),
        "version": train_meta.get("version", "0"),
        "precision": precision,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trained": train_meta.get("created"),
        "git_commit": git_commit(),
        "input_size": int(train_meta["input_size"]),
        "input": {"name": "image", "shape": ["N", train_meta["input_size"],
                                             train_meta["input_size"], 1],
                  "dtype": "float32", "range": [0.0, 1.0]},
        "outputs": {"probability": "P(PNEUMONIA), shape [N, 1]",
                    "cam": "class activation map in logit units, shape [N, h, w]",
                    "embedding": "pooled last-conv features, shape [N, C]"},
        "intensity": intensity,
        "preprocessing": {"recipe": RECIPE, "dataset_size": DATASET_SIZE,
                          "module": "pneumo.app.pipeline.preprocess.to_model_input",
                          "intensity": intensity},
        "class_names": train_meta.get("class_names", ["NORMAL", "PNEUMONIA"]),
        "thresholds": thresholds,
        "threshold_rules": INTERNAL_THRESHOLD_RULES,
        "threshold_rule": "balanced: " + INTERNAL_THRESHOLD_RULES["balanced"] + "; screening: "
                          + INTERNAL_THRESHOLD_RULES["screening"] + " (on the internal "
                          "validation split)",
        "operating_points_source": INTERNAL_SOURCE,
        "val_metrics": val_metrics,
        "val_n": train_meta.get("val_n"),
        "train_manifest_sha256": train_meta.get("train_manifest_sha256"),
        "recipe": train_meta.get("recipe", {}),
        "arch": train_meta.get("arch"),
        "source_model_sha256": source_sha256,
        "ood": ood,
    }
    if val_ece:
        meta["val_ece"] = val_ece
    if train_meta.get("members"):
        meta["members"] = train_meta["members"]
        meta["outputs"] = {
            "probability": "P(PNEUMONIA) = sigmoid(mean of the members' logits), shape [N, 1]",
            "cam": "mean of the members' class activation maps (logit units), shape [N, h, w]",
            "embedding": "the members' pooled last-conv features concatenated, shape [N, C]",
        }
    if external:
        cf = external["cross_fit"]
        meta.update({
            "calibration": external["calibration"],
            "threshold_rules": {
                "balanced": "highest specificity with sensitivity >= 0.95 (highest threshold "
                            "among ties), on calibrated probabilities",
                "screening": "highest specificity with sensitivity >= 0.98 (highest threshold "
                             "among ties), on calibrated probabilities",
            },
            "threshold_rule": EXTERNAL_THRESHOLD_RULE + f"; chosen on the calibrated "
                              f"probabilities of all {cf['n']} images of the {EXTERNAL_SOURCE}",
            "operating_points_source": EXTERNAL_SOURCE,
            "external_metrics": {
                "set": EXTERNAL_SOURCE,
                "n": cf["n"], "n_normal": external["n_normal"],
                "n_pneumonia": external["n_pneumonia"],
                "method": "cross-fitted: calibration and thresholds fitted on one half "
                          "(split by patient, stratified by class, seed "
                          f"{cf['seed']}), measured on the other half, then swapped; 'mean' "
                          "averages the two halves, 'pooled' scores every image with the fit "
                          "of the half it was not in (95% bootstrap CIs over images, fits not "
                          "refitted)",
                "calibration_fit": cf["fit"],
                "mean": cf["mean"],
                "pooled": cf["pooled"],
                "halves": cf["halves"],
                "shipped_thresholds_in_sample": external["full_set"],
                "raw_auc": external.get("raw_auc"),
            },
        })
    return meta


def _f(v, digits: int = 3) -> str:
    """A number for the card ('n/a' for missing / NaN)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if np.isnan(v) else f"{v:.{digits}f}"


def _external_card(meta: dict) -> list[str]:
    """Model-card lines: internal and external figures side by side, ECE, borderline band."""
    ext, vm = meta["external_metrics"], meta["val_metrics"]
    mean, pooled, full = ext["mean"], ext["pooled"], ext["shipped_thresholds_in_sample"]
    ci = pooled.get("ci95", {})

    def pc(key: str) -> str:
        lo, hi = ci.get(key, [float("nan")] * 2)
        return f"{_f(lo)}-{_f(hi)}"

    rows = []
    for mode in ("balanced", "screening"):
        i, e, p = vm.get(mode, {}), mean[mode], pooled[mode]
        rows.append(
            f"| {mode} | {_f(meta['thresholds'][mode], 4)} | {_f(i.get('accuracy'))} / "
            f"{_f(i.get('sensitivity'))} / {_f(i.get('specificity'))} | "
            f"{_f(e['accuracy'])} / {_f(e['sensitivity'])} / {_f(e['specificity'])} | "
            f"{_f(p['accuracy'])} ({pc(mode + '.accuracy')}) / {_f(p['sensitivity'])} "
            f"({pc(mode + '.sensitivity')}) / {_f(p['specificity'])} "
            f"({pc(mode + '.specificity')}) |")
    cal = meta["calibration"]
    ve = meta.get("val_ece") or {}
    bb = full["borderline"]
    sel = cal.get("selection", {}).get("cross_fitted_ece")
    sel_txt = (" (cross-fitted ECE: " + ", ".join(f"{k} {_f(v, 4)}" for k, v in sel.items())
               + ")") if sel else ""
    return [
        f"## Internal validation and {EXTERNAL_SOURCE}",
        f"Operating points and calibration were chosen on the {EXTERNAL_SOURCE} (n = "
        f"{ext['n']}: {ext['n_normal']} NORMAL, {ext['n_pneumonia']} PNEUMONIA). The "
        f"**shipped thresholds are chosen on all {ext['n']} images**; the external figures "
        "below are **cross-fitted**: calibration and thresholds chosen on one half (split by "
        "patient), measured on the other half, swapped, averaged (and pooled, with 95% "
        "bootstrap CIs). Internal figures: the internal validation split at the shipped "
        "thresholds, calibrated probabilities.",
        "",
        "| mode | shipped threshold | internal validation acc / sens / spec | external, "
        "cross-fitted mean of halves acc / sens / spec | external, cross-fitted pooled "
        "acc / sens / spec (95% CI) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- AUC: internal validation {_f(vm.get('balanced', {}).get('auc'), 4)}; external "
        f"{_f(mean['auc'], 4)} (cross-fitted mean of halves), {_f(pooled['auc'], 4)} pooled "
        f"({pc('auc')})",
        f"- calibration: {cal.get('fit', cal['method'])} (a {_f(cal['a'], 3)}, b "
        f"{_f(cal['b'], 3)}), chosen by cross-fitted ECE{sel_txt}; calibrated p = "
        "sigmoid(a * logit(p_raw) + b)",
        f"- ECE (10 equal-width bins) before -> after calibration: external "
        f"{_f(mean['ece_before'], 4)} -> {_f(mean['ece_after'], 4)} (cross-fitted mean of "
        f"halves); internal validation {_f(ve.get('before'), 4)} -> {_f(ve.get('after'), 4)}",
        f"- borderline band (screening <= p < balanced, {_f(bb['band'][0], 4)}-"
        f"{_f(bb['band'][1], 4)}: the two modes disagree, review advised): "
        f"{_f(100 * mean['borderline_share'], 1)}% of external images cross-fitted "
        f"({_f(100 * bb['share'], 1)}% with the shipped thresholds, in-sample); accuracy "
        f"outside the band {_f(mean['accuracy_outside_borderline'])} cross-fitted "
        f"({_f(bb['accuracy_outside'])} in-sample)",
        f"- threshold rule: {meta['threshold_rule']}",
        "",
    ]


def _distillation_lines(d: dict | None) -> list[str]:
    """The model card's account of a distilled student's teacher and recipe (none if not)."""
    if not d:
        return []
    t = d.get("teacher", {})
    return [f"Distilled (a student): it learnt from the teacher `{t.get('name')}` "
            f"{t.get('version')} (sha256 `{t.get('sha256')}`, {t.get('input_size')} px; its "
            f"logit: the {t.get('logit', 'logit')}) on {d.get('views')} views of every "
            f"training image (the image and augmented copies), loss (1 - alpha) x BCE(label) "
            f"+ alpha x T^2 x BCE(teacher, student at T) with alpha {d.get('alpha'):g}, "
            f"T {d.get('temperature'):g} (pneumo/train/distill.py). The teacher never saw the "
            "external validation images either."]


def model_card(meta: dict) -> str:
    """A human-readable model card (Markdown) from the metadata."""
    vm = meta["val_metrics"]
    rows = []
    for mode in ("balanced", "screening"):
        m = vm.get(mode)
        if not m:
            continue
        rows.append(f"| {mode} | {m['threshold']:.4f} | " + " | ".join(
            figure_with_ci(m, k) for k in ("accuracy", "sensitivity", "specificity", "auc"))
            + " |")
    recipe = meta.get("recipe", {})
    external = "external_metrics" in meta
    source = meta.get("operating_points_source", INTERNAL_SOURCE)
    members = meta.get("members") or []
    member_lines = [f"  - {m.get('name')} {m.get('version')} (seed {m.get('seed')}; "
                    + ", ".join(f"{k} {v}" for k, v in (m.get("recipe") or {}).items())
                    + ")" for m in members]
    return "\n".join([
        f"# Model card: {meta['name']} {meta['version']} ({meta['precision']})",
        "",
        "## Intended use",
        "Decision support for screening **pediatric frontal (PA/AP) chest X-rays** for signs of",
        "pneumonia, in clinics without a radiologist on site. It is **not a diagnosis**: a",
        "clinician reads the image and decides. Not validated on adults, lateral views, CT,",
        "or images from devices unlike those of the training hospital.",
        "",
        "## Model",
        f"- architecture: `{meta.get('arch')}` (pneumo/train/model.py), input {meta['input_size']} x "
        f"{meta['input_size']} grayscale; outputs P(pneumonia), a class activation map and an",
        "  embedding used to refuse images that are not chest X-rays (Mahalanobis distance).",
        *([f"- ensemble of {len(members)} networks: probability = sigmoid(mean of the "
           "members' logits), heatmap = mean of their CAMs:"] + member_lines if members else []),
        f"- operating points, chosen on the {source}"
        + (" (on calibrated probabilities)" if external else "") + ": "
        + "; ".join(f"`{k}` {v:.4f} ({meta.get('threshold_rules', {}).get(k, '')})"
                    for k, v in meta["thresholds"].items()),
        f"- preprocessing: {meta['preprocessing']['recipe']}; intensity normalisation: "
        f"{meta.get('intensity', 'none')}",
        f"- weights: {meta['precision']}; git commit {meta['git_commit']}",
        "",
        "## Training data",
        "Kermany et al. 2018 pediatric chest X-rays (Guangzhou Women and Children's Medical",
        "Center; CC BY 4.0), official training split, 224 x 224 grayscale. Validation: a",
        f"patient-grouped {recipe.get('val_fraction', 0.2):.0%} of the training split (seed "
        f"{recipe.get('seed')}), never used for training. Augmentation: "
        f"{recipe.get('augmentation')}; synthetic (GAN) images: "
        f"{'yes' if recipe.get('synthetic_data') else 'no'}; class weights "
        + ", ".join(f"{k} {v:.2f}" for k, v in (recipe.get("class_weights") or {}).items())
        + f"; {recipe.get('epochs')} epochs, seed {recipe.get('seed')}.",
        f"Training manifest sha256: `{meta.get('train_manifest_sha256')}`.",
        *_distillation_lines(recipe.get("distillation")),
        "",
        f"## Internal validation metrics (n = {meta.get('val_n')}, 95% bootstrap CIs)"
        + (" at the shipped thresholds, calibrated probabilities" if external else ""),
        "| mode | threshold | accuracy | sensitivity | specificity | AUC |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *(_external_card(meta) if external else []),
        "## Limitations",
        "- Internal validation images come from the same hospital and period as the training",
        "  images; models of this kind lose accuracy on other sources and tend to over-call",
        "  pneumonia on normal images from a different acquisition. Expect lower figures in",
        "  practice" + (f"; the {EXTERNAL_SOURCE} is the better guide, though its "
                        f"{meta['external_metrics']['n']} images give wide intervals."
                        if external else "."),
        "- Pediatric frontal chest X-rays only. The out-of-distribution check refuses many",
        "  non-X-ray images but cannot recognise every wrong input (e.g. an adult chest X-ray).",
        "- The heatmap shows where the network looked; it is not a lesion segmentation.",
        "- Bacterial and viral pneumonia are not distinguished.",
    ])


def write_metadata(path: str | Path, meta: dict, card: str) -> None:
    """Store metadata JSON and the model card in the ONNX file's metadata_props."""
    import onnx

    m = onnx.load(str(path))
    keep = [p for p in m.metadata_props if p.key not in (METADATA_KEY, MODEL_CARD_KEY)]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for key, value in ((METADATA_KEY, json.dumps(meta)), (MODEL_CARD_KEY, card)):
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    m.producer_name = "pneumo"
    m.doc_string = f"{meta['name']} {meta['version']} ({meta['precision']})"
    onnx.save(m, str(path))
