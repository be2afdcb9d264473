"""Evaluation report: Markdown + JSON + PNG plots (ROC, confusion, calibration, curves)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pneumo.train.data import CLASS_NAMES
from pneumo.train.evaluate import Evaluation
from pneumo.train.metrics import figure, figure_with_ci


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(y: np.ndarray, p: np.ndarray, points: dict, path: Path) -> None:
    """ROC curve with the operating points marked."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for mode, m in points.items():
        ax.plot(1 - m["specificity"], m["sensitivity"], "o",
                label=f"{mode} (t={m['threshold']:.3f})")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(points: dict, path: Path) -> None:
    """One confusion matrix per operating point."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4))
    axes = np.atleast_1d(axes)
    for ax, (mode, m) in zip(axes, points.items(), strict=True):
        cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black", fontsize=14)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
               xlabel="predicted", ylabel="true", title=f"{mode} (t={m['threshold']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> None:
    """Reliability diagram: mean predicted probability vs observed pneumonia rate."""
    from sklearn.calibration import calibration_curve

    plt = _plt()
    frac, mean_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    ax.plot(mean_pred, frac, "o-", label="model")
    ax.set(xlabel="predicted probability of pneumonia", ylabel="observed fraction",
           title="Calibration (quantile bins)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history_csv: Path, path: Path) -> None:
    """Training curves (loss and AUC per epoch) from a run's history.csv."""
    with history_csv.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    plt = _plt()
    ep = [int(r["epoch"]) for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [float(r["loss"]) for r in rows], label="train")
    a1.plot(ep, [float(r["val_loss"]) for r in rows], label="validation")
    a1.set(xlabel="epoch", ylabel="loss", title="Loss")
    a1.legend()
    a2.plot(ep, [float(r["auc"]) for r in rows], label="train")
    a2.plot(ep, [float(r["val_auc"]) for r in rows], label="internal validation")
    if rows[0].get("ext_auc"):
        a2.plot(ep, [float(r["ext_auc"]) for r in rows], label="external validation")
        a2.plot(ep, [float(r["ext_spec_at_sens95"]) for r in rows], ":",
                label="external: specificity at sensitivity 0.95")
    a2.set(xlabel="epoch", ylabel="ROC AUC", title="AUC")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _side_by_side(result: Evaluation) -> list[str]:
    """Internal and external figures at the same thresholds, one row per set and mode."""
    lines = ["| set | operating point | threshold | accuracy | sensitivity | specificity | AUC |",
             "|---|---|---|---|---|---|---|"]
    for res in (result, result.external):
        for mode, m in res.operating_points.items():
            cells = [figure_with_ci(m, k) for k in ("accuracy", "sensitivity", "specificity",
                                                    "auc")]
            lines.append(f"| {res.title} (n={res.n}) | {mode} | "
                         f"{m['threshold']:.4f} | " + " | ".join(cells) + " |")
    return lines


def _external_section(result: Evaluation, out: Path, plots: list) -> list[str]:
    """The external set: side-by-side table, its own ROC and reliability plots."""
    ext = result.external
    y, p = ext.labels, ext.probabilities
    plot_roc(y, p, ext.operating_points, out / "roc_external.png")
    plot_calibration(y, p, out / "calibration_external.png")
    plots += [(f"ROC, {ext.title}", "roc_external.png"),
              (f"Calibration, {ext.title}", "calibration_external.png")]
    return ["## Internal and external validation side by side", "",
            f"External: `{ext.data}`, {ext.title}; n = {ext.n} "
            + ", ".join(f"{k} {v}" for k, v in ext.n_per_class.items()) + ".", "",
            *_side_by_side(result), ""]


def write_report(result: Evaluation, out: Path, *, model_path: str,
                 history_csv: Path | None = None) -> Path:
    """Write report.md, metrics.json and the PNG plots into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    y, p = result.labels, result.probabilities
    points = result.operating_points
    plots = []
    if len(np.unique(y)) == 2:
        plot_roc(y, p, points, out / "roc.png")
        plot_calibration(y, p, out / "calibration.png")
        plots += [("ROC curve", "roc.png"), ("Calibration", "calibration.png")]
    plot_confusion(points, out / "confusion.png")
    plots.append(("Confusion matrices", "confusion.png"))
    if history_csv:
        plot_history(history_csv, out / "training_curves.png")
        plots.append(("Training curves", "training_curves.png"))
    (out / "metrics.json").write_text(json.dumps(result.to_json(), indent=2))

    model = result.model
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{model_path}` ({model.get('name')} {model.get('version')}, "
        f"input {model.get('input_size')} px)",
        f"- data: `{result.data or '?'}`: n = {result.n} "
        + ", ".join(f"{k} {v}" for k, v in result.n_per_class.items()),
        "- confidence intervals: 95% percentile bootstrap over images (1000 resamples, seed 0)",
        "",
        "| operating point | threshold | accuracy | sensitivity | specificity | precision | F1 | AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, m in points.items():
        cells = [figure_with_ci(m, k) for k in ("accuracy", "sensitivity", "specificity",
                                                "precision", "f1", "auc")]
        lines.append(f"| {mode} | {m['threshold']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "Confusion counts: " + "; ".join(
        f"{mode}: TN {m['tn']} FP {m['fp']} FN {m['fn']} TP {m['tp']}"
        for mode, m in points.items()), ""]
    if result.acquisition_shifts is not None:
        lines += ["## Under acquisition shifts (balanced threshold)", "",
                  "The same images rendered as another machine or exposure might "
                  "(`pneumo/train/shifts.py`).", "",
                  "| shift | accuracy | sensitivity | specificity | AUC |", "|---|---|---|---|---|"]
        for name, m in result.acquisition_shifts.items():
            lines.append(f"| {name} | " + " | ".join(
                figure(m[k]) for k in ("accuracy", "sensitivity", "specificity", "auc")) + " |")
        lines.append("")
    if result.external is not None:
        lines += _external_section(result, out, plots)
    for title, fname in plots:
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
