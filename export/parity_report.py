"""Parity report of an export: Markdown + JSON + PNG (Keras vs fp32 ONNX vs int8 ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
    path = out / "parity.md"
    path.write_text("\n".join(lines))
    return path
