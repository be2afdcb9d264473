"""`pneumo evaluate`: metrics with bootstrap CIs at the model's own operating thresholds.

Accepts a Keras run (``model.keras`` with ``model.json`` beside it) or an exported ``.onnx``
file (fp32 or int8). Images go through the one shared preprocessing (`pneumo.app.pipeline.preprocess`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pneumo.train.data import (
    EXTERNAL_LABEL,
    Sample,
    Split,
    list_class_folder,
    load_arrays,
    resolve_split_dirs,
)
from pneumo.train.evaluation import Evaluation, format_table
from pneumo.train.metrics import bootstrap_ci, metrics_at
from pneumo.train.report import write_report

PredictFn = Callable[[np.ndarray], np.ndarray]

log = logging.getLogger(__name__)


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

    model = keras.models.load_model(path)

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


def evaluate_cli(model: str, data: str, *, json_path: str | None = None,
                 report_dir: str | None = None, split: str = "auto", shifts: bool = False,
                 external_val: str | None = None) -> int:
    """Run `pneumo evaluate`; print the table, optionally write JSON and a report.

    With `external_val` (a labelled folder), the same model is also judged there and both
    sets are reported side by side, the external one named as such.
    """
    predict, meta = load_predictor(model)
    samples, source = resolve_eval_samples(model, data, split)
    if not samples:
        log.error("no images found in %s", source)
        return 2
    log.info("evaluating %s on %d images from %s", model, len(samples), source)
    result = evaluate(predict, meta, samples, shifts=shifts)
    result.data = source
    result.label = ("internal validation" if source.startswith("validation split")
                    else EXTERNAL_LABEL if Path(source).name == "external_val"
                    else f"evaluation data ({source})")
    if external_val:
        ext_samples = list_class_folder(Path(external_val))
        if not ext_samples:
            log.error("no images found in %s/NORMAL or /PNEUMONIA", external_val)
            return 2
        log.info("and on %d images of %s from %s", len(ext_samples), EXTERNAL_LABEL,
                 external_val)
        ext = evaluate(predict, meta, ext_samples, shifts=False)
        ext.data, ext.label = str(external_val), EXTERNAL_LABEL
        result.external = ext
    print(format_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result.to_json(), indent=2))
    if report_dir:
        history = Path(model).resolve().parent / "history.csv"
        write_report(result, Path(report_dir), model_path=model,
                     history_csv=history if history.exists() else None)
        log.info("report written to %s/report.md", report_dir)
    return 0
