"""`pneumo ablation`: the seed paper's four-way experiment, several seeds each.

Variants (same architecture, split and budget):
  baseline      original imbalanced data, no augmentation
  augmentation  + the seed paper's augmentation (rotation, zoom, shear, flip)
  gan           original + synthetic images
  combined      augmentation + synthetic images

Every run lives in OUT/<variant>/seed<K>/ and is a normal resumable training run: a killed
ablation restarts where it stopped, finished runs are skipped. All runs share one
patient-grouped split (`split_seed`, by default 42, the GAN's): the seeds vary weights,
batch order and augmentation only. That split must be the one the GAN was trained on, or
synthetic images of validation patients would leak into training. Metrics use the fixed
0.5 threshold (no threshold is tuned on the split the table reports).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "baseline": {"augment": "none", "synthetic": False},
    "augmentation": {"augment": "seed", "synthetic": False},
    "gan": {"augment": "none", "synthetic": True},
    "combined": {"augment": "seed", "synthetic": True},
}
METRICS = ("accuracy", "precision", "sensitivity", "f1", "auc")


def log(msg: str) -> None:
    """Progress to stderr."""
    import sys

    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_is_finished(run_dir: Path) -> bool:
    """A run is finished when its metrics file exists."""
    return (run_dir / "ablation_metrics.json").exists()


def _score(model_dir: Path, samples) -> dict:
    from train.evaluate import evaluate, load_predictor

    predict, meta = load_predictor(model_dir / "model.keras")
    meta = dict(meta, thresholds={"fixed_0.5": 0.5})
    res = evaluate(predict, meta, samples, n_boot=0)
    m = res["operating_points"]["fixed_0.5"]
    return {k: m[k] for k in METRICS} | {"n": res["n"]}


def run_ablation(data: str, synthetic: str | None, out: str, *, seeds: int = 3,
                 epochs: int = 8, img_size: int = 128, variants: list[str] | None = None,
                 eval_data: str | None = None, split_seed: int = 42) -> dict:
    """Train and score every (variant, seed); write ablation.md/.json and a bar chart."""
    from train.data import list_class_folder, resolve_split_dirs
    from train.trainer import TrainConfig, train

    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    names = variants or list(VARIANTS)
    if synthetic is None and any(VARIANTS[v]["synthetic"] for v in names):
        raise ValueError("the gan and combined variants need --synthetic DIR")
    extra = None
    if eval_data:
        dirs = resolve_split_dirs(eval_data)
        extra = list_class_folder(dirs.get("test") or dirs.get("data") or next(iter(dirs.values())))
    total, done = len(names) * seeds, 0
    results: dict[str, list[dict]] = {v: [] for v in names}
    for v in names:
        for k in range(seeds):
            run_dir = out_p / v / f"seed{k}"
            done += 1
            if run_is_finished(run_dir):
                log(f"[{done}/{total}] {v} seed {k}: finished earlier, skipped")
            else:
                log(f"[{done}/{total}] {v} seed {k}: training {epochs} epochs at {img_size} px")
                cfg = TrainConfig(data=data, out=str(run_dir), epochs=epochs, img_size=img_size,
                                  seed=k, split_seed=split_seed,
                                  augment=VARIANTS[v]["augment"],
                                  synthetic=synthetic if VARIANTS[v]["synthetic"] else None,
                                  patience=epochs, cache_dir=str(out_p / "cache"))
                train(cfg)
                from train.data import Split

                split = Split.from_json(json.loads((run_dir / "split.json").read_text()))
                scores = {"val": _score(run_dir, split.val)}
                if extra:
                    scores["eval_data"] = _score(run_dir, extra)
                (run_dir / "ablation_metrics.json").write_text(json.dumps(scores, indent=2))
            results[v].append(json.loads((run_dir / "ablation_metrics.json").read_text()))
    summary = summarise(results)
    write_ablation_report(summary, out_p, epochs=epochs, img_size=img_size, seeds=seeds,
                          split_seed=split_seed, synthetic=synthetic)
    return summary


def summarise(results: dict[str, list[dict]]) -> dict:
    """Mean, std and 95% t-interval over seeds, per variant, split and metric."""
    from scipy import stats

    summary: dict = {}
    for v, runs in results.items():
        for split in runs[0]:
            for metric in METRICS:
                vals = np.array([r[split][metric] for r in runs], dtype=float)
                n = len(vals)
                sd = float(vals.std(ddof=1)) if n > 1 else 0.0
                half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else 0.0
                summary.setdefault(split, {}).setdefault(v, {})[metric] = {
                    "mean": float(vals.mean()), "std": sd,
                    "ci95": [float(vals.mean() - half), float(vals.mean() + half)],
                    "values": vals.tolist(),
                }
    return summary


def write_ablation_report(summary: dict, out: Path, **info) -> None:
    """ablation.json, ablation.md and ablation.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "ablation.json").write_text(json.dumps({"info": info, "summary": summary}, indent=2))
    lines = ["# Ablation: baseline / augmentation / GAN / combined", "",
             f"Settings: {json.dumps(info)}. Threshold 0.5; mean +/- std over seeds, "
             "95% t-interval in brackets.", ""]
    fig, axes = plt.subplots(1, len(summary), figsize=(7 * len(summary), 4), squeeze=False)
    for ax, (split, table) in zip(axes[0], summary.items(), strict=True):
        lines += [f"## {split}", "", "| variant | " + " | ".join(METRICS) + " |",
                  "|---" * (len(METRICS) + 1) + "|"]
        for v, ms in table.items():
            cells = [f"{ms[m]['mean']:.4f} +/- {ms[m]['std']:.4f} "
                     f"[{ms[m]['ci95'][0]:.4f}, {ms[m]['ci95'][1]:.4f}]" for m in METRICS]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
        width = 0.8 / len(table)
        for i, (v, ms) in enumerate(table.items()):
            xs = np.arange(len(METRICS)) + i * width
            ax.bar(xs, [ms[m]["mean"] for m in METRICS], width,
                   yerr=[ms[m]["std"] for m in METRICS], label=v, capsize=2)
        ax.set_xticks(np.arange(len(METRICS)) + 0.4 - width / 2, METRICS)
        ax.set_ylim(0.5, 1.0)
        ax.set_title(split)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)
    lines += ["![ablation](ablation.png)", ""]
    (out / "ablation.md").write_text("\n".join(lines))
