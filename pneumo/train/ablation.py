"""`pneumo ablation`: the seed paper's four-way experiment, several seeds each.

Variants (same architecture, recipe, split and budget):
  baseline      original imbalanced data, no augmentation
  augmentation  + augmentation (the seed paper's rotation, zoom, shear, flip; or --augment)
  gan           original + synthetic images
  combined      augmentation + synthetic images

Every run lives in OUT/<variant>/seed<K>/ and is a normal resumable training run: a killed
ablation restarts where it stopped, finished runs are skipped. All runs share one
patient-grouped split (`split_seed`, by default 42, the GAN's): the seeds vary weights,
batch order and augmentation only. That split must be the one the GAN was trained on, or
synthetic images of validation patients would leak into training. The table metrics use the
fixed 0.5 threshold (no threshold is tuned on the split the table reports).

With an evaluation folder (`eval_data`, e.g. ../shared/data/external_val) every run is also
judged on it (per epoch in history.csv, via TrainConfig.external_val, and at the end), and
each variant is compared with the baseline of the same seed, image by image: the difference
in AUC and in specificity at sensitivity >= 0.95 with a paired bootstrap CI (the same
resampled images for both models). The evaluation folder is never trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pneumo.train.ablation_report import (
    CROSS_FIT_METRIC,
    LOWER_IS_BETTER,
    METRICS,
    PAIRED_METRICS,
    TABLE_METRICS,
    write_ablation_report,
)
from pneumo.train.calibration import expected_calibration_error
from pneumo.train.metrics import auc, auc_rows, metrics_at, specificity_at_sensitivity

VARIANTS = {
    "baseline": {"augment": False, "synthetic": False},
    "augmentation": {"augment": True, "synthetic": False},
    "gan": {"augment": False, "synthetic": True},
    "combined": {"augment": True, "synthetic": True},
}
VARIANT_PROSE = {"augmentation": "Augmentation", "gan": "GAN images",
                 "combined": "Augmentation + GAN images"}
MIN_SENSITIVITY = 0.95
SCORES_VERSION = 2
SCORES_FILE = "ablation_metrics.json"
PREDICTIONS_FILE = "ablation_predictions.npz"
# TrainConfig fields that must be equal for every run of one ablation folder
RECIPE_FIELDS = ("epochs", "img_size", "arch", "batch_size", "learning_rate", "weight_decay",
                 "val_fraction", "split_seed", "augment", "augment_set", "augment_off", "synthetic",
                 "intensity", "label_smoothing", "mixup", "balance", "width", "select")

log = logging.getLogger(__name__)


def run_is_finished(run_dir: Path) -> bool:
    """A run is finished when its metrics file exists."""
    return (run_dir / SCORES_FILE).exists()


def eval_label(folder: str | Path, label: str | None = None) -> str:
    """The name every figure on the evaluation folder carries."""
    from pneumo.train.trainer import EXTERNAL_LABEL

    if label:
        return label
    if "external_val" in Path(folder).resolve().parts:
        return EXTERNAL_LABEL
    return f"evaluation folder {folder}"


def resolve_eval_folder(eval_data: str | Path) -> Path:
    """The labelled folder (NORMAL/, PNEUMONIA/) of --eval-data (a Kaggle root: its test/)."""
    from pneumo.train.data import resolve_split_dirs

    dirs = resolve_split_dirs(eval_data)
    if "data" in dirs:
        return dirs["data"]
    if "test" in dirs:
        return dirs["test"]
    raise FileNotFoundError(f"{eval_data} has no NORMAL/ and PNEUMONIA/ (nor test/) folders")


def _samples_key(samples) -> str:
    return hashlib.sha256(json.dumps([[s.path, s.label] for s in samples]).encode()
                          ).hexdigest()[:16]


def predict_run(run_dir: Path, samples, cache_dir: str | Path | None) -> np.ndarray:
    """Probabilities of a run's model.keras on samples, through the shared preprocessing.

    Images are squashed to the model's input size and get its model.json "intensity"
    normalisation, exactly as in training.
    """
    import keras

    from pneumo.app.pipeline.preprocess import normalize_intensity
    from pneumo.train.data import cached_arrays

    meta = json.loads((run_dir / "model.json").read_text())
    x, _ = cached_arrays(samples, int(meta["input_size"]), cache_dir)
    x = normalize_intensity(x, meta.get("intensity", "none"))
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    p = model.predict(x.astype(np.float32)[..., None] / 255.0, batch_size=64, verbose=0)
    return np.asarray(p, dtype=np.float64).reshape(len(samples))


def score(y: np.ndarray, p: np.ndarray) -> dict:
    """The table's metrics: METRICS at threshold 0.5, and specificity at sensitivity >= 0.95."""

    m = metrics_at(y, p, 0.5)
    return {k: m[k] for k in METRICS} | {
        "spec_at_sens95": specificity_at_sensitivity(y, p, MIN_SENSITIVITY), "n": int(len(y))}


def score_run(run_dir: Path, eval_samples, eval_info: dict | None, cache_dir: Path) -> dict:
    """Score a finished run on internal validation (and the eval folder); save predictions."""
    from pneumo.train.data import Split

    split = Split.from_json(json.loads((run_dir / "split.json").read_text()))
    y_val = np.array([s.label for s in split.val], dtype=np.int32)
    p_val = predict_run(run_dir, split.val, cache_dir)
    scores: dict = {"version": SCORES_VERSION, "val": score(y_val, p_val)}
    arrays = {"y_val": y_val, "p_val": p_val}
    if eval_samples:
        y_ev = np.array([s.label for s in eval_samples], dtype=np.int32)
        p_ev = predict_run(run_dir, eval_samples, cache_dir)
        scores["eval"] = score(y_ev, p_ev) | eval_info
        arrays |= {"y_eval": y_ev, "p_eval": p_ev,
                   "eval_paths": np.array([s.path for s in eval_samples])}
        ext = json.loads((run_dir / "model.json").read_text()).get("external_val") or {}
        if ext.get("folder") and Path(ext["folder"]).resolve() == Path(eval_info["folder"]
                                                                        ).resolve():
            if abs(ext["ext_auc"] - scores["eval"]["auc"]) > 1e-3:
                log.warning("%s: AUC %.4f here vs %.4f in model.json", run_dir,
                            scores["eval"]["auc"], ext["ext_auc"])
    np.savez(run_dir / PREDICTIONS_FILE, **arrays)
    (run_dir / SCORES_FILE).write_text(json.dumps(scores, indent=2))
    return scores


def _scores_current(run_dir: Path, eval_info: dict | None) -> bool:
    scores = json.loads((run_dir / SCORES_FILE).read_text())
    if scores.get("version") != SCORES_VERSION or not (run_dir / PREDICTIONS_FILE).exists():
        return False
    if eval_info is None:
        return True
    return scores.get("eval", {}).get("key") == eval_info["key"]


def _refuse_overlap(eval_dir: Path, data: str, synthetic: str | None) -> None:
    """Raise if the evaluation folder and the training images (train/, val/, synthetic) overlap."""
    from pneumo.train.data import resolve_split_dirs

    dirs = resolve_split_dirs(data)
    used = [dirs.get("train") or dirs.get("data"), dirs.get("val"),
            Path(synthetic) if synthetic else None]
    ev = eval_dir.resolve()
    for folder in filter(None, used):
        f = folder.resolve()
        if f == ev or f in ev.parents or ev in f.parents:
            raise ValueError(f"--eval-data {eval_dir} overlaps the training images in {folder}")


def _check_recipe(run_dir: Path, cfg) -> None:
    """Refuse to mix recipes in one ablation folder (a finished run would be reused)."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved, wanted = json.loads(path.read_text()), asdict(cfg)
    diff = [f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in RECIPE_FIELDS
            if k in saved and saved[k] != wanted[k]]
    if diff:
        raise ValueError(f"{run_dir} was trained with another recipe ({'; '.join(diff)}); "
                         "use a new --out for a new recipe")


def run_ablation(data: str, synthetic: str | None, out: str, *, seeds: int = 3,
                 epochs: int = 8, img_size: int = 128, variants: list[str] | None = None,
                 eval_data: str | None = None, split_seed: int = 42,
                 eval_name: str | None = None, augment: str = "seed",
                 recipe: dict | None = None, n_boot: int = 1000) -> dict:
    """Train and score every (variant, seed); write ablation.md/.json and the plots.

    `recipe` holds further TrainConfig fields shared by every run (intensity, select,
    label_smoothing, mixup, balance, width, arch, batch_size, learning_rate, weight_decay,
    augment_set, augment_off); `augment_set` and `augment_off` apply to the augmented
    variants only.
    """
    from pneumo.train.data import list_class_folder, refuse_external_val
    from pneumo.train.trainer import TrainConfig, train

    recipe = dict(recipe or {})
    aug_set = list(recipe.pop("augment_set", []) or [])
    aug_off = list(recipe.pop("augment_off", []) or [])
    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    names = variants or list(VARIANTS)
    if synthetic is None and any(VARIANTS[v]["synthetic"] for v in names):
        raise ValueError("the gan and combined variants need --synthetic DIR")
    refuse_external_val(data, "ablation training data")
    refuse_external_val(synthetic, "synthetic training images")
    eval_samples, eval_info, eval_dir = [], None, None
    if eval_data:
        eval_dir = resolve_eval_folder(eval_data)
        _refuse_overlap(eval_dir, data, synthetic)
        eval_samples = list_class_folder(eval_dir)
        if len({s.label for s in eval_samples}) < 2:
            raise FileNotFoundError(f"{eval_dir} needs images in both NORMAL/ and PNEUMONIA/")
        eval_info = {"label": eval_label(eval_dir, eval_name), "folder": str(eval_dir),
                     "key": _samples_key(eval_samples)}
        log.info("judging every run on %s: %d images from %s", eval_info["label"],
                 len(eval_samples), eval_dir)
    cache = out_p / "cache"
    total, done = len(names) * seeds, 0
    results: dict[str, list[dict]] = {v: [] for v in names}
    preds: dict[str, list[dict]] = {v: [] for v in names}
    for v in names:
        augmented = VARIANTS[v]["augment"]
        for k in range(seeds):
            run_dir = out_p / v / f"seed{k}"
            done += 1
            cfg = TrainConfig(data=data, out=str(run_dir), epochs=epochs, img_size=img_size,
                              seed=k, split_seed=split_seed,
                              augment=augment if augmented else "none",
                              augment_set=aug_set if augmented else [],
                              augment_off=aug_off if augmented else [],
                              synthetic=synthetic if VARIANTS[v]["synthetic"] else None,
                              patience=epochs, cache_dir=str(cache),
                              external_val=str(eval_dir) if eval_dir else None, **recipe)
            _check_recipe(run_dir, cfg)
            if run_is_finished(run_dir):
                log.info("[%d/%d] %s seed %d: finished earlier, skipped", done, total, v, k)
            else:
                log.info("[%d/%d] %s seed %d: training %d epochs at %d px", done, total, v, k,
                         epochs, img_size)
                train(cfg)
            if not run_is_finished(run_dir) or not _scores_current(run_dir, eval_info):
                score_run(run_dir, eval_samples, eval_info, cache)
            results[v].append(json.loads((run_dir / SCORES_FILE).read_text()))
            with np.load(run_dir / PREDICTIONS_FILE) as z:
                preds[v].append({key: z[key] for key in z.files})
    summary = summarise(results)
    paired = {}
    if "baseline" in names and len(names) > 1:
        sets = [("val", "internal validation split")]
        if eval_info:
            sets.insert(0, ("eval", eval_info["label"]))
        for key, label in sets:
            paired[key] = paired_comparison(preds, key, n_boot=n_boot) | {"label": label}
    else:
        log.warning("no paired comparison: it needs the baseline and another variant")
    info = {"epochs": epochs, "img_size": img_size, "seeds": seeds, "split_seed": split_seed,
            "synthetic": synthetic, "augment": augment, "augment_set": aug_set,
            "augment_off": aug_off, **recipe,
            "variants": names, "n_boot": n_boot,
            "eval": {k: eval_info[k] for k in ("label", "folder")} if eval_info else None}
    write_ablation_report(summary, paired, out_p, info)
    return {"summary": summary, "paired": paired, "info": info}


def summarise(results: dict[str, list[dict]]) -> dict:
    """Mean, std and 95% t-interval over seeds, per variant, split and metric."""
    from scipy import stats

    summary: dict = {}
    for v, runs in results.items():
        for split in ("val", "eval"):
            if split not in runs[0]:
                continue
            for metric in TABLE_METRICS:
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


def stratified_indices(y: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) bootstrap draws of image indices, resampled within each class.

    Columns are ordered by class (all NORMAL draws first), so every draw has the labels
    np.sort(y) and both classes.
    """
    rng = np.random.default_rng(seed)
    parts = [rng.choice(np.flatnonzero(y == c), size=(n_boot, int((y == c).sum())))
             for c in (0, 1)]
    return np.concatenate(parts, axis=1)


def crossfit_calls(y: np.ndarray, p: np.ndarray, names) -> tuple[np.ndarray, np.ndarray]:
    """The balanced-mode calls (0/1) of cross-fitted calibration and thresholds, and the
    calibrated probabilities: each image calibrated and called with the half it was not in
    (calibration.cross_fit, seed 0)."""
    from pneumo.train.calibration import cross_fit

    cf = cross_fit(y, p, [str(n) for n in names], n_boot=0)
    calls = np.zeros(len(y), dtype=int)
    for half, measured in zip(cf["halves"], (cf["split"]["b"], cf["split"]["a"]), strict=True):
        calls[measured] = cf["p_crossfit"][measured] >= half["thresholds"]["balanced"]
    return calls, np.asarray(cf["p_crossfit"], dtype=float)


def _point_metrics(y: np.ndarray, p: np.ndarray, cf: tuple | None) -> dict[str, float]:
    out = {"auc": auc(y, p),
           "spec_at_sens95": specificity_at_sensitivity(y, p, MIN_SENSITIVITY)}
    if cf is not None:
        calls, p_cal = cf
        out["crossfit_balanced_spec"] = float((calls[y == 0] == 0).mean())
        out["crossfit_ece"] = expected_calibration_error(y, p_cal)
    return out


def _draw_metrics(y: np.ndarray, p: np.ndarray, idx: np.ndarray,
                  cf: tuple | None = None) -> dict[str, np.ndarray]:
    ys = y[idx[0]]
    rows = p[idx]
    out = {"auc": auc_rows(ys, rows),
           "spec_at_sens95": np.array([specificity_at_sensitivity(ys, r, MIN_SENSITIVITY)
                                       for r in rows])}
    if cf is not None:  # calibration and calls are made once per run; the images resampled
        calls, p_cal = cf
        out["crossfit_balanced_spec"] = (calls[idx] == 0)[:, ys == 0].mean(axis=1)
        out["crossfit_ece"] = np.array([expected_calibration_error(ys, r) for r in p_cal[idx]])
    return out


def _ci(draws: np.ndarray) -> list[float]:
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def verdict(lo: float, hi: float, per_seed: list[float], *, lower_is_better: bool = False
            ) -> str:
    """'gain' / 'loss' when the CI excludes 0 and every seed agrees in sign; else 'none'
    (for a metric where lower is better, such as ECE, a gain is a negative difference)."""
    if lower_is_better:
        return verdict(-hi, -lo, [-d for d in per_seed])
    if lo > 0 and all(d > 0 for d in per_seed):
        return "gain"
    if hi < 0 and all(d < 0 for d in per_seed):
        return "loss"
    return "none"


def comparisons(variants) -> list[tuple[str, str]]:
    """(variant, reference) pairs: every variant minus the baseline, and combined minus
    augmentation (do GAN images help on top of the classic set?) when both ran."""
    pairs = [(v, "baseline") for v in variants if v != "baseline"]
    if "combined" in variants and "augmentation" in variants:
        pairs.append(("combined", "augmentation"))
    return pairs


def comparison_name(variant: str, reference: str) -> str:
    """The key of a comparison: the variant's name (vs the baseline) or 'A - B'."""
    return variant if reference == "baseline" else f"{variant} - {reference}"


def paired_comparison(preds: dict[str, list[dict]], key: str, *, n_boot: int = 1000,
                      seed: int = 0) -> dict:
    """Each variant minus its reference of the same seed on one image set ('eval' or 'val'):
    the baseline for every variant, and augmentation for combined (`comparisons`).

    Per seed: the difference in AUC and in specificity at sensitivity >= 0.95 (on 'eval' also
    the cross-fitted balanced specificity and ECE), with a 95 % paired bootstrap CI (the same
    resampled image indices for both models, stratified by class). Over seeds: the mean
    difference, its CI from the same draws (images resampled once for every model), and a
    t-interval over the seeds' differences.
    """
    from scipy import stats
    y = preds["baseline"][0][f"y_{key}"]
    idx = stratified_indices(y, n_boot, seed)
    metrics = {**PAIRED_METRICS, **(CROSS_FIT_METRIC if key == "eval" else {})}
    scored: dict[str, list[tuple]] = {}  # variant -> per seed (point, draws)

    def score_runs(v: str) -> list[tuple]:
        if v not in scored:
            scored[v] = []
            for k, r in enumerate(preds[v]):
                if not np.array_equal(r[f"y_{key}"], y) or (key == "eval" and not np.array_equal(
                        r["eval_paths"], preds["baseline"][0]["eval_paths"])):
                    raise ValueError(f"{v} seed {k} was scored on other {key} images than "
                                     "baseline")
                cf = (crossfit_calls(y, r[f"p_{key}"], r["eval_paths"]) if key == "eval"
                      else None)
                scored[v].append((_point_metrics(y, r[f"p_{key}"], cf),
                                  _draw_metrics(y, r[f"p_{key}"], idx, cf)))
        return scored[v]

    out: dict = {"n": int(len(y)), "n_boot": n_boot, "min_sensitivity": MIN_SENSITIVITY,
                 "metrics": metrics, "variants": {}}
    for v, ref in comparisons(list(preds)):
        res: dict = {"reference": ref, "per_seed": [], "mean": {}}
        diff_draws: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
        for k, ((point_b, draws_b), (point_v, draws_v)) in enumerate(
                zip(score_runs(ref), score_runs(v), strict=False)):
            row: dict = {"seed": k}
            for m in metrics:
                d = draws_v[m] - draws_b[m]
                diff_draws[m].append(d)
                row[m] = {"reference": point_b[m], "variant": point_v[m],
                          "diff": point_v[m] - point_b[m], "ci95": _ci(d)}
            res["per_seed"].append(row)
        for m in metrics:
            diffs = [r[m]["diff"] for r in res["per_seed"]]
            mean = float(np.mean(diffs))
            lo, hi = _ci(np.mean(diff_draws[m], axis=0))
            n = len(diffs)
            sd = float(np.std(diffs, ddof=1)) if n > 1 else 0.0
            half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else None
            t_ci = None if half is None else [mean - half, mean + half]
            res["mean"][m] = {"diff": mean, "ci95": [lo, hi], "seeds": n, "seed_std": sd,
                              "seed_t_ci95": t_ci, "verdict": verdict(
                                  lo, hi, diffs, lower_is_better=m in LOWER_IS_BETTER)}
        res["conclusion"] = conclusion(v, res["mean"], metrics, reference=ref)
        out["variants"][comparison_name(v, ref)] = res
    return out


def conclusion(variant: str, mean: dict, metrics: dict[str, str] | None = None, *,
               reference: str = "baseline") -> str:
    """One plain sentence: did the variant measurably change each paired metric?"""
    words = {"gain": "measurable gain", "loss": "measurably worse", "none": "no measurable gain"}
    parts = []
    for m, name in (metrics or PAIRED_METRICS).items():
        r = mean[m]
        parts.append(f"{name}: {words[r['verdict']]}, difference {r['diff']:+.4f} "
                     f"(95% CI {r['ci95'][0]:+.4f} to {r['ci95'][1]:+.4f})")
    seeds = mean["auc"]["seeds"]
    against = ("baseline" if reference == "baseline"
               else VARIANT_PROSE.get(reference, reference).lower() + " alone")
    return (f"{VARIANT_PROSE.get(variant, variant)} vs {against} ({seeds} seed"
            f"{'s' if seeds != 1 else ''}): " + "; ".join(parts) + ".")
