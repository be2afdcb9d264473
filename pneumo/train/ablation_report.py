"""The ablation's report: ablation.md, ablation.json and its plots (the paired comparison
with the baseline and of combined with augmentation, and the per-variant table)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METRICS = ("accuracy", "precision", "sensitivity", "f1", "auc")
TABLE_METRICS = METRICS + ("spec_at_sens95",)
PAIRED_METRICS = {"auc": "AUC", "spec_at_sens95": "specificity at sensitivity >= 0.95"}
CROSS_FIT_METRIC = {"crossfit_balanced_spec": "cross-fitted balanced specificity",
                    "crossfit_ece": "ECE after cross-fitted calibration"}
"""The primary figure on an external set (its file names give the patient-grouped halves):
Platt calibration and the sensitivity >= 0.95 threshold fitted on one half, applied to the
other, swapped (train.calibration.cross_fit, seed 0); the pooled specificity of those calls.
Secondary: the ECE (10 bins) of those out-of-half calibrated probabilities."""
LOWER_IS_BETTER = frozenset({"crossfit_ece"})
"""Paired metrics where a negative difference is the gain."""


def _fmt_ci(ci: list[float]) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _label(name: str, r: dict) -> str:
    """'gan - baseline', 'combined - augmentation': a comparison as the tables name it."""
    return name if " - " in name else f"{name} - {r.get('reference', 'baseline')}"


def _paired_lines(p: dict, *, conclusions: bool = True) -> list[str]:
    lines = [f"## Paired comparisons: {p['label']}", "",
             f"{p['n']} images. Each variant minus its reference (the baseline; for combined "
             "also augmentation alone) trained with the same seed on "
             f"the same split; 95% CIs from a paired bootstrap over the images ({p['n_boot']} "
             "draws, stratified by class, the same images for both models). The CI of the mean "
             "over seeds resamples images once for every model; the seeds' own spread is the "
             "t-interval. A gain or loss is called measurable only when the CI of the mean "
             "excludes 0 and every seed agrees in sign.", ""]
    if conclusions:
        lines += [f"- **{r['conclusion']}**" for r in p["variants"].values()] + [""]
    lines += ["| variant - reference | seed | AUC reference | AUC variant | AUC diff [95% CI] | "
              "spec@sens0.95 reference | spec@sens0.95 variant | spec diff [95% CI] |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in p["variants"].items():
        v = _label(name, r)
        for row in r["per_seed"]:
            a, s = row["auc"], row["spec_at_sens95"]
            lines.append(f"| {v} | {row['seed']} | {a['reference']:.4f} | {a['variant']:.4f} | "
                         f"{a['diff']:+.4f} {_fmt_ci(a['ci95'])} | {s['reference']:.3f} | "
                         f"{s['variant']:.3f} | {s['diff']:+.4f} {_fmt_ci(s['ci95'])} |")
        a, s = r["mean"]["auc"], r["mean"]["spec_at_sens95"]
        lines.append(f"| {v} | mean | | | **{a['diff']:+.4f}** {_fmt_ci(a['ci95'])} | | | "
                     f"**{s['diff']:+.4f}** {_fmt_ci(s['ci95'])} |")
        if a["seed_t_ci95"] and s["seed_t_ci95"]:
            lines.append(f"| {v} | t-interval over seeds | | | {_fmt_ci(a['seed_t_ci95'])} | | | "
                         f"{_fmt_ci(s['seed_t_ci95'])} |")
    lines.append("")
    for m, name in p.get("metrics", {}).items():
        if m in PAIRED_METRICS:
            continue
        lines += [f"**{name[:1].upper() + name[1:]}** (each run's calls made once; the images "
                  "resampled" + ("; lower is better" if m in LOWER_IS_BETTER else "") + "):", "",
                  "| variant - reference | seed | reference | variant | diff [95% CI] |",
                  "|---|---|---|---|---|"]
        for name, r in p["variants"].items():
            v = _label(name, r)
            for row in r["per_seed"]:
                c = row[m]
                lines.append(f"| {v} | {row['seed']} | {c['reference']:.3f} | {c['variant']:.3f} "
                             f"| {c['diff']:+.4f} {_fmt_ci(c['ci95'])} |")
            c = r["mean"][m]
            lines.append(f"| {v} | mean | | | **{c['diff']:+.4f}** {_fmt_ci(c['ci95'])} |")
        lines.append("")
    return lines


def plot_paired(p: dict, path: Path) -> None:
    """Per-seed differences (variant - reference) with their 95% CIs, and the seed mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = p.get("metrics", PAIRED_METRICS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4))
    variants = list(p["variants"])
    for ax, (m, name) in zip(axes, metrics.items(), strict=True):
        for i, v in enumerate(variants):
            rows = p["variants"][v]["per_seed"]
            for j, row in enumerate(rows):
                x = i + (j - (len(rows) - 1) / 2) * 0.12
                d, (lo, hi) = row[m]["diff"], row[m]["ci95"]
                ax.errorbar(x, d, yerr=[[d - lo], [hi - d]], fmt="o", color="tab:blue",
                            capsize=3, label="per seed" if i == j == 0 else None)
            mean = p["variants"][v]["mean"][m]
            d, (lo, hi) = mean["diff"], mean["ci95"]
            ax.errorbar(i + 0.4, d, yerr=[[d - lo], [hi - d]], fmt="D", color="black",
                        capsize=4, label="mean over seeds" if i == 0 else None)
        ax.axhline(0, color="grey", lw=1, ls="--")
        ax.set_xticks(np.arange(len(variants)) + 0.1,
                      [_label(v, p["variants"][v]).replace(" - ", "\n- ") for v in variants])
        ax.set_ylabel(f"difference in {name}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Paired differences, 95% bootstrap CIs: {p['label']} "
                 f"(n = {p['n']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_ablation_report(summary: dict, paired: dict, out: Path, info: dict) -> None:
    """ablation.json, ablation.md, ablation.png and (with a paired comparison) ablation_paired.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "ablation.json").write_text(json.dumps(
        {"info": info, "summary": summary, "paired": paired}, indent=2))
    titles = {"val": "internal validation split",
              "eval": (info.get("eval") or {}).get("label", "evaluation folder")}
    lines = ["# Ablation: baseline / augmentation / GAN / combined", "",
             f"Settings: {json.dumps(info)}.", ""]
    if paired:
        main = "eval" if "eval" in paired else "val"
        lines += ["## Conclusion", "", f"On {paired[main]['label']}:", ""]
        lines += [f"- {r['conclusion']}" for r in paired[main]["variants"].values()] + [""]
        plot_paired(paired[main], out / "ablation_paired.png")
        lines += _paired_lines(paired[main], conclusions=False) + ["![paired differences](ablation_paired.png)", ""]
    metrics_desc = ("Threshold 0.5 for accuracy, precision, sensitivity and F1; spec_at_sens95 "
                    "is the best specificity at sensitivity >= 0.95. Mean +/- std over seeds, "
                    "95% t-interval in brackets.")
    fig, axes = plt.subplots(1, len(summary), figsize=(7 * len(summary), 4), squeeze=False)
    for ax, (split, table) in zip(axes[0], summary.items(), strict=True):
        lines += [f"## Per-variant metrics: {titles[split]}", "", metrics_desc, "",
                  "| variant | " + " | ".join(TABLE_METRICS) + " |",
                  "|---" * (len(TABLE_METRICS) + 1) + "|"]
        for v, ms in table.items():
            cells = [f"{ms[m]['mean']:.4f} +/- {ms[m]['std']:.4f} "
                     f"[{ms[m]['ci95'][0]:.4f}, {ms[m]['ci95'][1]:.4f}]" for m in TABLE_METRICS]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
        width = 0.8 / len(table)
        for i, (v, ms) in enumerate(table.items()):
            xs = np.arange(len(TABLE_METRICS)) + i * width
            ax.bar(xs, [ms[m]["mean"] for m in TABLE_METRICS], width,
                   yerr=[ms[m]["std"] for m in TABLE_METRICS], label=v, capsize=2)
        ax.set_xticks(np.arange(len(TABLE_METRICS)) + 0.4 - width / 2, TABLE_METRICS,
                      fontsize=8)
        ax.set_ylim(0.0 if split == "eval" else 0.5, 1.0)
        ax.set_title(titles[split], fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)
    lines += ["![ablation](ablation.png)", ""]
    if paired and "val" in paired and "eval" in paired:
        lines += _paired_lines(paired["val"])
    (out / "ablation.md").write_text("\n".join(lines))
