"""A model judged on labelled images: metrics with bootstrap CIs at its own operating
thresholds (`Evaluation`, its table), the engine of `pneumo evaluate` (`evaluate_cli`).

Accepts a Keras run (``model.keras`` with ``model.json`` beside it) or an exported ``.onnx``
file (fp32 or int8). Images go through the one shared preprocessing (`pneumo.app.pipeline.preprocess`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo.train.data import (
    CLASS_NAMES,
    Sample,
    Split,
    list_class_folder,
    load_arrays,
    resolve_split_dirs,
)
from pneumo.train.metrics import bootstrap_ci, figure, metrics_at

PredictFn = Callable[[np.ndarray], np.ndarray]

DEFAULT_LABEL = "evaluation data"


@dataclass
class Evaluation:
    """One model judged on one labelled image set, with the per-image labels and probabilities."""

    model: dict
    """Name, version, input size and thresholds of the model (from its metadata)."""
    labels: np.ndarray
    """True class per image (0 NORMAL, 1 PNEUMONIA)."""
    probabilities: np.ndarray
    """The model's probability of PNEUMONIA per image."""
    operating_points: dict[str, dict] = field(default_factory=dict)
    """Mode -> metrics at that threshold, each with its 95% bootstrap CIs under ``ci95``."""
    acquisition_shifts: dict[str, dict] | None = None
    """Shift name -> metrics at the balanced threshold (only when shifts were asked for)."""
    data: str | None = None
    """Where the images came from."""
    label: str | None = None
    """What the set is called in tables ("internal validation", external validation...)."""
    external: Evaluation | None = None
    """The same model judged on an external set, reported beside this one."""

    @property
    def n(self) -> int:
        """Number of images."""
        return int(len(self.labels))

    @property
    def n_per_class(self) -> dict[str, int]:
        """Images per class name."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(CLASS_NAMES)}

    @property
    def title(self) -> str:
        """The set's label, or a generic name when it has none."""
        return self.label or DEFAULT_LABEL

    def to_json(self) -> dict:
        """The JSON document (`pneumo evaluate --json`, metrics.json): everything but the
        per-image arrays."""
        doc: dict = {"model": self.model, "n": self.n, "n_per_class": self.n_per_class,
                     "operating_points": self.operating_points}
        if self.acquisition_shifts is not None:
            doc["acquisition_shifts"] = self.acquisition_shifts
        if self.data is not None:
            doc["data"] = self.data
        if self.label is not None:
            doc["label"] = self.label
        if self.external is not None:
            doc["external"] = self.external.to_json()
        return doc


def format_table(result: Evaluation) -> str:
    """A plain-text table of the metrics with CIs (and the external set's, when evaluated)."""
    lines = [f"[{result.title}]", f"n = {result.n} ({result.n_per_class})"]
    for mode, m in result.operating_points.items():
        lines.append(f"[{mode}] threshold {m['threshold']:.4f}")
        for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc"):
            lo, hi = m["ci95"].get(k, [float("nan")] * 2)
            lines.append(f"  {k:<12} {figure(m[k], 4)}  (95% CI {figure(lo, 4)}-"
                         f"{figure(hi, 4)})")
        lines.append(f"  confusion    TN {m['tn']}  FP {m['fp']}  FN {m['fn']}  TP {m['tp']}")
    if result.acquisition_shifts is not None:
        lines.append("[acquisition shifts, balanced threshold]  accuracy  sensitivity  "
                     "specificity  AUC")
        for name, m in result.acquisition_shifts.items():
            lines.append(f"  {name:<16} " + "  ".join(
                f"{figure(m[k], 4):<11}" for k in ("accuracy", "sensitivity", "specificity",
                                                    "auc")).rstrip())
    if result.external is not None:
        lines += ["", format_table(result.external)]
    return "\n".join(lines)


def load_predictor(model_path: str | Path) -> tuple[PredictFn, dict]:
    """(batch -> probabilities, metadata) for a .keras or .onnx model."""
    path = Path(model_path)
    if path.suffix == ".onnx":
        from pneumo.app.pipeline.onnx_model import OnnxModel

        m = OnnxModel(path, intra_op_threads=0)
        return m.predict, dict(m.metadata)
    if path.is_dir():
        path = path / "model.keras"
    meta_path = path.with_name("model.json")
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: a Keras model needs its model.json")
    import keras

    model = keras.models.load_model(path, compile=False)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(batch, batch_size=64, verbose=0)).reshape(len(batch))

    return predict, json.loads(meta_path.read_text())


def resolve_eval_samples(model_path: str | Path, data: str | Path, split: str = "auto"
                         ) -> tuple[list[Sample], str]:
    """Which images to evaluate on, and a name for them.

    A folder with NORMAL/ and PNEUMONIA/ is taken whole. For a Kaggle root, `split` picks
    test/val/train; 'auto' takes test/ if present, else the model's own validation split
    (split.json of its training run), never training images.
    """
    dirs = resolve_split_dirs(data)
    if "data" in dirs:
        return list_class_folder(dirs["data"]), str(dirs["data"])
    if split == "auto":
        split = "test" if "test" in dirs else "val"
    if split in ("val", "validation"):
        run_split = Path(model_path).resolve().parent / "split.json"
        if run_split.exists():
            sp = Split.from_json(json.loads(run_split.read_text()))
            return sp.val, f"validation split of the training run ({run_split})"
        if "val" in dirs:
            return list_class_folder(dirs["val"]), str(dirs["val"])
        raise FileNotFoundError(
            f"no val/ folder in {data} and no split.json beside {model_path}; "
            "pass a folder with NORMAL/ and PNEUMONIA/ instead"
        )
    if split not in dirs:
        raise FileNotFoundError(f"no {split}/ folder under {data}")
    return list_class_folder(dirs[split]), str(dirs[split])


def _predict_all(predict: PredictFn, x: np.ndarray) -> np.ndarray:
    """Probabilities for a float (N, S, S, 1) or uint8 (N, S, S) array, in batches of 64."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32)[..., None] / 255.0
    if not len(x):
        return np.zeros(0)
    return np.concatenate([predict(x[i:i + 64]) for i in range(0, len(x), 64)])


def evaluate(predict: PredictFn, meta: dict, samples: list[Sample], *, n_boot: int = 1000,
             shifts: bool = False) -> Evaluation:
    """Metrics (with 95% CIs) at each of the model's operating thresholds.

    With `shifts`, also the metrics at the balanced threshold under each acquisition shift
    of `train.shifts` (a proxy for images from another hospital).
    """
    from pneumo.app.pipeline.preprocess import normalize_intensity

    size, intensity = int(meta["input_size"]), meta.get("intensity", "none")
    x_raw, y = load_arrays(samples, size, progress=len(samples) > 500)
    x = normalize_intensity(x_raw, intensity)
    probs = _predict_all(predict, x)
    result = Evaluation(
        model={k: meta.get(k) for k in ("name", "version", "input_size", "thresholds")},
        labels=y, probabilities=probs)
    for mode, t in meta["thresholds"].items():
        m = metrics_at(y, probs, float(t))
        m["ci95"] = bootstrap_ci(y, probs, float(t), n_boot=n_boot)
        result.operating_points[mode] = m
    if shifts:
        from pneumo.train.shifts import shifted_versions

        t = float(meta["thresholds"]["balanced"])
        result.acquisition_shifts = {  # shift the raw pixels, then normalise as the app does
            name: metrics_at(y, _predict_all(predict, _renormalised(xs, intensity)), t)
            for name, xs in shifted_versions(x_raw.astype(np.float32)[..., None] / 255.0).items()
        }
    return result


def _renormalised(x: np.ndarray, intensity: str) -> np.ndarray:
    """Float images in [0, 1] through the model's intensity normalisation (if any)."""
    if intensity == "none":
        return x
    from pneumo.app.pipeline.preprocess import normalize_intensity

    u8 = np.clip(np.round(x[..., 0] * 255.0), 0, 255).astype(np.uint8)
    return normalize_intensity(u8, intensity)
