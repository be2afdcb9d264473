"""Parity report of an export: Markdown + JSON + PNG (Keras vs fp32 ONNX vs int8 ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pneumo.train.data import EXTERNAL_LABEL as EXTERNAL_SOURCE

RELIABILITY_PNG = "external_reliability.png"
ROC_PNG = "external_roc.png"


def write_external_report(ext: dict, y: np.ndarray, out: Path) -> dict[str, str]:
    """Reliability diagram (before / after calibration, cross-fitted) and ROC on the external
    set; returns {plot: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from pneumo.train.calibration import reliability_bins

    cf, p_raw, p_full = ext["cross_fit"], ext["p_raw"], ext["p_calibrated"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    curves = (("before (raw network output)", p_raw, cf["mean"]["ece_before"]),
              ("after, cross-fitted (other half's fit)", cf["p_crossfit"],
               cf["mean"]["ece_after"]))
    for label, p, ece in curves:
        b = reliability_bins(y, p, cf["n_bins"])
        pts = [(m, f) for m, f in zip(b["mean_predicted"], b["fraction_positive"], strict=True)
               if m is not None]
        ax.plot(*zip(*pts, strict=True), "o-", label=f"{label}, ECE {ece:.3f}")
    ax.set(xlabel="predicted P(pneumonia)", ylabel="observed fraction with pneumonia",
           xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"Reliability (10 bins), {EXTERNAL_SOURCE}", fontsize=8)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / RELIABILITY_PNG, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    fpr, tpr, _ = roc_curve(y, p_raw)
    ax.plot(fpr, tpr, label=f"int8 AUC {ext['raw_auc']:.4f}")
    neg, pos = y == 0, y == 1
    for mode, marker, color in (("balanced", "o", "C1"), ("screening", "s", "C3")):
        t = ext["thresholds"][mode]
        ax.plot(np.mean(p_full[neg] >= t), np.mean(p_full[pos] >= t), marker, ms=7,
                color=color, label=f"{mode} {t:.3f} (shipped, chosen on all {len(y)})")
        pm = cf["pooled"][mode]
        ax.plot(1 - pm["specificity"], pm["sensitivity"], marker, mfc="none", ms=10,
                color=color, label=f"{mode}, cross-fitted pooled")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(f"ROC, {EXTERNAL_SOURCE}", fontsize=8)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / ROC_PNG, dpi=110)
    plt.close(fig)
    return {"reliability": RELIABILITY_PNG, "roc": ROC_PNG}


def _external_lines(ext: dict) -> list[str]:
    """The external-validation section of parity.md."""
    e = ext["int8"]
    cf, cal, full = e["cross_fit"], e["calibration"], e["shipped_thresholds_in_sample"]
    mean, pooled = cf["mean"], cf["pooled"]
    ci = pooled.get("ci95", {})

    def pc(k: str) -> str:
        lo, hi = ci.get(k, [float("nan")] * 2)
        return f"({lo:.3f}-{hi:.3f})"

    lines = [
        f"## {EXTERNAL_SOURCE}",
        "",
        f"n = {ext['n']}. Raw AUC: fp32 {ext['raw_auc']['fp32']:.4f}, int8 "
        f"{ext['raw_auc']['int8']:.4f}; int8 vs fp32 label agreement at each file's balanced "
        f"threshold {ext['int8_vs_fp32_label_agreement_balanced']:.4f}.",
        "",
        f"Calibration (int8): {cal.get('fit')} a = {cal['a']:.4f}, b = {cal['b']:.4f}; "
        f"selection {json.dumps(cal.get('selection', {}))}.",
        f"Shipped thresholds (calibrated scale, chosen on all {ext['n']} images): "
        + ", ".join(f"{k} {v:.4f}" for k, v in e["thresholds"].items()) + ".",
        "",
        f"Cross-fitted figures (seed {cf['seed']}): calibration and thresholds fitted on one "
        "patient-grouped half, measured on the other, swapped; mean of the two halves and "
        "pooled out-of-half predictions with 95% bootstrap CIs.",
        "",
        "| mode | mean threshold | accuracy (mean / pooled) | sensitivity (mean / pooled) "
        "| specificity (mean / pooled) |",
        "|---|---|---|---|---|",
    ]
    for mode in ("balanced", "screening"):
        m, p = mean[mode], pooled[mode]
        lines.append(
            f"| {mode} | {m['threshold']:.4f} | {m['accuracy']:.3f} / {p['accuracy']:.3f} "
            f"{pc(mode + '.accuracy')} | {m['sensitivity']:.3f} / {p['sensitivity']:.3f} "
            f"{pc(mode + '.sensitivity')} | {m['specificity']:.3f} / {p['specificity']:.3f} "
            f"{pc(mode + '.specificity')} |")
    lines += [
        "",
        f"- AUC: {mean['auc']:.4f} (mean of halves), {pooled['auc']:.4f} pooled {pc('auc')}",
        f"- ECE before -> after: {mean['ece_before']:.4f} -> {mean['ece_after']:.4f} (mean of "
        f"halves); pooled {pooled['ece_before']:.4f} -> {pooled['ece_after']:.4f}",
        f"- borderline band share: {mean['borderline_share']:.3f} (mean of halves); accuracy "
        f"outside it {mean['accuracy_outside_borderline']:.3f}; with the shipped thresholds "
        f"(in-sample) {full['borderline']['share']:.3f} and "
        f"{full['borderline']['accuracy_outside']:.3f}",
        "",
    ]
    for h in cf["halves"]:
        lines.append(
            f"- {h['name']}: n {h['n_fit']} / {h['n_eval']}, a {h['calibration']['a']:.3f} "
            f"b {h['calibration']['b']:.3f}, thresholds "
            + ", ".join(f"{k} {v:.4f}" for k, v in h["thresholds"].items())
            + f"; balanced sens {h['balanced']['sensitivity']:.3f} spec "
            f"{h['balanced']['specificity']:.3f}; screening sens "
            f"{h['screening']['sensitivity']:.3f} spec {h['screening']['specificity']:.3f}; "
            f"ECE {h['ece_before']:.4f} -> {h['ece_after']:.4f}")
    plots = ext.get("plots", {})
    lines += ["", *(f"![{k}]({v})" for k, v in plots.items()), ""]
    return lines


def write_parity_report(parity: dict, probs: dict[str, np.ndarray], y: np.ndarray, out: Path
                        ) -> Path:
    """Write parity.json, parity.md and parity.png into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    (out / "parity.json").write_text(json.dumps(parity, indent=2))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    a1.scatter(probs["fp32"], probs["int8"], s=6, c=y, cmap="coolwarm", alpha=0.7)
    a1.plot([0, 1], [0, 1], "k--", lw=0.8)
    t = parity["threshold"]
    a1.axvline(t, color="grey", lw=0.6)
    a1.axhline(t, color="grey", lw=0.6)
    a1.set(xlabel="fp32 ONNX probability", ylabel="int8 ONNX probability",
           title=f"int8 vs fp32 (agreement {parity['int8_vs_fp32_label_agreement']:.2%})")
    for name, p in probs.items():
        fpr, tpr, _ = roc_curve(y, p)
        a2.plot(fpr, tpr, label=f"{name} AUC {parity['metrics'][name]['auc']:.4f}")
    a2.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC on the validation split")
    a2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=110)
    plt.close(fig)

    m, size, lat = parity["metrics"], parity["size_bytes"], parity["latency_ms_batch1_median"]
    lines = [
        "# Export parity report",
        "",
        f"Validation split of the training run: n = {parity['n_val']}; one threshold for all "
        f"three models (the Keras model's balanced threshold, {parity['threshold']:.4f}).",
        "",
        "| model | accuracy | AUC | sensitivity | specificity | size (KiB) | latency batch 1 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("keras", "fp32", "int8"):
        lines.append(
            f"| {name} | {m[name]['accuracy']:.4f} | {m[name]['auc']:.4f} | "
            f"{m[name]['sensitivity']:.4f} | {m[name]['specificity']:.4f} | "
            f"{size[name] / 1024:.0f} | {lat[name]:.2f} |"
        )
    d = parity["int8_vs_fp32_abs_delta_p"]
    lines += [
        "",
        f"- int8 vs fp32 label agreement: **{parity['int8_vs_fp32_label_agreement']:.4f}** "
        f"(gate >= {parity['gates']['min_agreement']})",
        f"- int8 vs fp32 |delta p|: max {d['max']:.4f}, mean {d['mean']:.5f}",
        f"- AUC drop int8 vs fp32: {parity['auc_drop_int8']:+.5f} "
        f"(gate <= {parity['gates']['max_auc_drop']})",
        f"- fp32 ONNX vs Keras max |delta p|: {parity['fp32_vs_keras_abs_delta_p_max']:.2e}",
        f"- op types (int8): {', '.join(parity['ops']['int8'])}",
        f"- OOD check (int8): {json.dumps(parity['ood'])}",
        f"- result: **{'PASSED' if parity['passed'] else 'FAILED'}**",
        "",
        "Latency: median of 30 single-image runs on this machine, default thread settings.",
        "",
        "![parity](parity.png)",
        "",
    ]
    if parity.get("external"):
        lines += _external_lines(parity["external"])
    path = out / "parity.md"
    path.write_text("\n".join(lines))
    return path
