"""`pneumo export`: Keras run(s) -> fp32 ONNX -> int8 ONNX, metadata, parity report.

One run exports as before. Several runs export as ONE ensemble graph (mean of the members'
logits, mean CAM, concatenated embeddings). With an external labelled folder the exported
files also carry a calibration and operating points chosen there (`train.calibration`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.app.pipeline.preprocess import normalize_intensity
from pneumo.train.data import (
    Sample,
    Split,
    list_class_folder,
    load_arrays,
    refuse_external_val,
    resolve_split_dirs,
)
from pneumo.train.metrics import bootstrap_ci, choose_thresholds, metrics_at

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """int8 and fp32 disagree more than the gates allow."""


def _floats(x: np.ndarray) -> np.ndarray:
    """Raw uint8 (N, S, S) -> float32 (N, S, S, 1) in [0, 1], no intensity step."""
    return x.astype(np.float32)[..., None] / 255.0


def model_input(x_u8: np.ndarray, intensity: str = "none") -> np.ndarray:
    """Raw uint8 (N, S, S) from train.data -> the model's input, as pneumo.app.pipeline.preprocess does it."""
    return _floats(normalize_intensity(np.asarray(x_u8, dtype=np.uint8), intensity))


def calibration_samples(calib_data: str | Path, split: Split | None, n: int, seed: int = 0
                        ) -> list[Sample]:
    """Up to n training images, stratified by class, never from the validation patients."""
    dirs = resolve_split_dirs(calib_data)
    folder = dirs.get("train") or dirs.get("data")
    pool = list_class_folder(folder)
    if split is not None:
        val_names = {s.name for s in split.val}
        pool = [s for s in pool if s.name not in val_names]
    rng = random.Random(seed)
    out: list[Sample] = []
    for label in (0, 1):
        cls = [s for s in pool if s.label == label]
        rng.shuffle(cls)
        out += cls[: max(1, n // 2)]
    return out


def _onnx_outputs(path: Path, x: np.ndarray, intensity: str = "none") -> dict[str, np.ndarray]:
    """Raw outputs of an ONNX file on raw uint8 images (the intensity step applied here)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list] = {n: [] for n in names}
    for i in range(0, len(x), 64):
        batch = model_input(x[i:i + 64], intensity)
        for n, v in zip(names, sess.run(None, {"image": batch}), strict=True):
            parts[n].append(v)
    out = {n: np.concatenate(v) for n, v in parts.items()}
    out["probability"] = out["probability"].reshape(len(x))
    return out


def _latency_ms(fn, x1: np.ndarray, repeats: int = 30) -> float:
    fn(x1)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x1)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


@dataclass
class Run:
    """One trained Keras run: model file, model.json and its patient-grouped split."""

    model_path: Path
    meta: dict
    split: Split

    @classmethod
    def load(cls, model_path: str | Path) -> Run:
        """Read a run from its model.keras (or its folder)."""
        model_path = Path(model_path)
        if model_path.is_dir():
            model_path = model_path / "model.keras"
        run_dir = model_path.parent
        split_path = run_dir / "split.json"
        if not split_path.exists():
            raise FileNotFoundError(
                f"{split_path} is missing: export needs the run's validation split")
        meta = json.loads((run_dir / "model.json").read_text())
        return cls(model_path, meta, Split.from_json(json.loads(split_path.read_text())))

    @property
    def intensity(self) -> str:
        """The run's intensity normalisation ('none' when model.json has none)."""
        return str(self.meta.get("intensity") or "none")


def _sha256_text(parts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def combined_split(runs: Sequence[Run]) -> Split:
    """The split an ensemble is checked on: validation images no member trained on.

    val = images in every member's validation split; train = images every member trained
    on. One run: its own split.
    """
    if len(runs) == 1:
        return runs[0].split
    val_sets = [{s.name for s in r.split.val} for r in runs]
    train_sets = [{s.name for s in r.split.train} for r in runs]
    val_names, train_names = set.intersection(*val_sets), set.intersection(*train_sets)
    val = [s for s in runs[0].split.val if s.name in val_names]
    train = [s for s in runs[0].split.train if s.name in train_names]
    if not val:
        raise ValueError("the ensemble members share no validation images (every validation "
                         "image was trained on by some member): train them with one split "
                         "seed (--split-seed)")
    if any(len(v) != len(val) for v in val_sets):
        log.warning("members' validation splits differ: using the %d images in all of them",
                    len(val))
    return Split(runs[0].split.seed, runs[0].split.val_fraction, train, val)


def _recipe_summary(recipe: dict) -> dict:
    """The scalar settings of a training recipe, lists of names joined (no nested dicts)."""
    out = {}
    for k, v in (recipe or {}).items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            if v:
                out[k] = "/".join(v)
        elif not isinstance(v, (dict, list)):
            out[k] = v
    return out


def ensemble_train_meta(runs: Sequence[Run], source_sha256: Sequence[str]) -> dict:
    """A model.json-like document for an ensemble of runs (members listed)."""
    metas = [r.meta for r in runs]
    first, n = metas[0], len(metas)
    arch = first.get("arch", "cnn")
    seeds = [(m.get("recipe") or {}).get("seed") for m in metas]
    manifests = {m.get("train_manifest_sha256") for m in metas}
    base = str(first.get("name", "pneumo-cnn"))
    return {
        **first,
        "name": f"{base}-ensemble{n}",
        "version": time.strftime("%Y.%m.%d") + f"-ensemble{n}-{arch}{first['input_size']}-s"
                   + ".".join(str(s) for s in seeds),
        "created": max(str(m.get("created", "")) for m in metas),
        "arch": f"ensemble of {n} x {arch}",
        "train_manifest_sha256": (manifests.pop() if len(manifests) == 1 else
                                  _sha256_text(sorted(str(m) for m in manifests))),
        "members": [
            {"name": m.get("name"), "version": m.get("version"), "arch": m.get("arch"),
             "seed": (m.get("recipe") or {}).get("seed"),
             "recipe": _recipe_summary(m.get("recipe") or {}),
             "intensity": str(m.get("intensity") or "none"),
             "train_manifest_sha256": m.get("train_manifest_sha256"),
             "source_model_sha256": sha}
            for m, sha in zip(metas, source_sha256, strict=True)
        ],
    }


def _check_members(runs: Sequence[Run]) -> tuple[int, str]:
    """(input size, intensity) shared by all runs; ValueError when they differ."""
    sizes = sorted({int(r.meta["input_size"]) for r in runs})
    if len(sizes) != 1:
        raise ValueError(f"ensemble members need one input size, got {sizes}")
    intensities = sorted({r.intensity for r in runs})
    if len(intensities) != 1:
        raise ValueError(f"ensemble members need one intensity normalisation, got {intensities}")
    return sizes[0], intensities[0]


def load_external(folder: str | Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A labelled folder (NORMAL/, PNEUMONIA/): raw uint8 images, labels, file names."""
    samples = list_class_folder(Path(folder))
    if len({s.label for s in samples}) < 2:
        raise FileNotFoundError(f"{folder} needs images in both NORMAL/ and PNEUMONIA/")
    x, y = load_arrays(samples, size, progress=False)
    return x, y, [s.name for s in samples]


def external_step(p_raw: np.ndarray, y: np.ndarray, names: Sequence[str], *,
                  method: str = "auto", seed: int = 0, n_boot: int = 1000) -> dict:
    """Calibration, thresholds and cross-fitted figures on external labelled data."""
    from sklearn.metrics import roc_auc_score

    from pneumo.train.calibration import calibrate_and_choose_thresholds

    res = calibrate_and_choose_thresholds(y, p_raw, names, method=method, seed=seed,
                                          n_boot=n_boot)
    res["n_normal"], res["n_pneumonia"] = int((y == 0).sum()), int((y == 1).sum())
    res["raw_auc"] = float(roc_auc_score(y, p_raw))
    return res


@dataclass
class ExportData:
    """What an export works on: the runs, their shared settings and the images it needs."""

    runs: list[Run]
    size: int
    intensity: str
    split: Split
    train_meta: dict
    source_sha: str
    x_val: np.ndarray
    y_val: np.ndarray
    x_cal: np.ndarray
    x_ood: np.ndarray
    x_shifted: np.ndarray
    """Validation images (up to ~400) under every acquisition shift, raw uint8."""
    external: tuple[np.ndarray, np.ndarray, list[str]] | None

    @property
    def ensemble(self) -> bool:
        """True when several runs are exported as one graph."""
        return len(self.runs) > 1


def load_export_data(runs: Sequence[Run], calib_data: str | Path, *, n_calib: int,
                     n_ood_train: int, external_val: str | Path | None) -> ExportData:
    """Step 1: check the members, describe the result and load every image set it needs."""
    from pneumo.app.pipeline.onnx_model import file_sha256
    from pneumo.export.metadata import acquisition_variants

    size, intensity = _check_members(runs)
    split = combined_split(runs)
    shas = [file_sha256(r.model_path) for r in runs]
    if len(runs) > 1:
        train_meta, source_sha = ensemble_train_meta(runs, shas), _sha256_text(shas)
    else:
        train_meta, source_sha = runs[0].meta, shas[0]
    train_meta = {**train_meta, "intensity": intensity, "val_n": len(split.val)}
    log.info("loading %s (%d px, intensity %s) and %d validation images",
             ", ".join(str(r.model_path) for r in runs), size, intensity, len(split.val))
    x_val, y_val = load_arrays(split.val, size, progress=False)
    x_cal, _ = load_arrays(calibration_samples(calib_data, split, n_calib), size, progress=False)
    ood_pool = [s for s in split.train if Path(s.path).exists()]
    random.Random(1).shuffle(ood_pool)
    x_ood, _ = load_arrays(ood_pool[:n_ood_train], size, progress=False)
    # acquisition shifts act on the raw image; the intensity step follows (_onnx_outputs)
    shifted = acquisition_variants(_floats(x_val[:: max(1, len(x_val) // 400)]))
    x_shifted = np.round(shifted[..., 0] * 255).astype(np.uint8)
    return ExportData(list(runs), size, intensity, split, train_meta, source_sha, x_val, y_val,
                      x_cal, x_ood, x_shifted,
                      load_external(external_val, size) if external_val else None)


def convert_and_quantize(target: Any, data: ExportData, out: Path) -> tuple[Path, Path, dict]:
    """Step 2: Keras -> fp32 ONNX (checked against Keras) -> int8 ONNX; (fp32, int8, ops)."""
    from pneumo.export.onnx_export import check_matches_keras, check_ops, convert
    from pneumo.export.quantize import quantize_int8

    fp32 = convert(target, out / "model.fp32.onnx")
    ops_fp32 = check_ops(fp32)
    delta = check_matches_keras(target, fp32, model_input(data.x_val[:32], data.intensity))
    log.info("fp32 ONNX written%s; ops %s; max |p_keras - p_onnx| %.2e",
             f" (ensemble of {len(data.runs)})" if data.ensemble else "", sorted(ops_fp32),
             delta)
    int8 = quantize_int8(fp32, out / "model.int8.onnx", model_input(data.x_cal, data.intensity))
    ops_int8 = check_ops(int8)
    log.info("int8 ONNX written (calibrated on %d training images)", len(data.x_cal))
    return fp32, int8, {"fp32": sorted(ops_fp32), "int8": sorted(ops_int8)}


def describe_model(name: str, path: Path, data: ExportData, out: Path, *, calibration: str,
                   cross_fit_seed: int, n_boot: int) -> dict:
    """Step 3, per precision: thresholds, metrics, OOD statistics -> metadata in the file.

    Returns {"p": validation probabilities, "meta": the metadata, "ext": external results}.
    """
    from pneumo.export.metadata import build_metadata, model_card, ood_statistics, write_metadata
    from pneumo.train.calibration import calibrated, expected_calibration_error

    x_val, y_val, intensity = data.x_val, data.y_val, data.intensity
    o_val = _onnx_outputs(path, x_val, intensity)
    ext = None
    if data.external is not None:
        x_ext, y_ext, names_ext = data.external
        p_ext = _onnx_outputs(path, x_ext, intensity)["probability"]
        ext = external_step(p_ext, y_ext, names_ext, method=calibration, seed=cross_fit_seed,
                            n_boot=n_boot)
        ext["p_raw"] = p_ext
        thresholds = ext["thresholds"]
        p_val = calibrated(o_val["probability"], ext["calibration"])
    else:
        thresholds = choose_thresholds(y_val, o_val["probability"])
        p_val = o_val["probability"]
    val_metrics = {}
    for mode, t in thresholds.items():
        m = metrics_at(y_val, p_val, t)
        m["ci95"] = bootstrap_ci(y_val, p_val, t)
        val_metrics[mode] = m
    val_ece = {"before": expected_calibration_error(y_val, o_val["probability"]),
               "after": expected_calibration_error(y_val, p_val)}
    ood = {}
    if "embedding" in o_val:
        ood = ood_statistics(_onnx_outputs(path, data.x_ood, intensity)["embedding"],
                             o_val["embedding"],
                             _onnx_outputs(path, data.x_shifted, intensity)["embedding"])
    meta = build_metadata(data.train_meta, precision=name, thresholds=thresholds,
                          val_metrics=val_metrics, ood=ood, source_sha256=data.source_sha,
                          external=ext, val_ece=val_ece)
    card = model_card(meta)
    write_metadata(path, meta, card)
    if name == "int8":  # the shipped file's card, also as Markdown beside it
        (out / "MODEL_CARD.md").write_text(card + "\n")
    log.info("%s: thresholds %s; val AUC %.4f", name, thresholds, val_metrics["balanced"]["auc"])
    return {"p": o_val["probability"], "meta": meta, "ext": ext}


def parity_figures(target: Any, data: ExportData, files: dict[str, Path],
                   results: dict[str, dict], ops: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Step 4: Keras, fp32 and int8 side by side at one raw-scale threshold, sizes, latency.

    Returns (parity document without gates' verdict, probabilities per model).
    """
    import onnxruntime as ort

    from pneumo.export.onnx_export import keras_probability

    x_val, y_val, intensity = data.x_val, data.y_val, data.intensity
    p_keras = np.concatenate([keras_probability(target, model_input(x_val[i:i + 64], intensity))
                              for i in range(0, len(x_val), 64)])
    # The same raw-scale threshold for all three (Keras' balanced one from training; for
    # an ensemble, chosen on its Keras validation probabilities).
    t_ref = (float(choose_thresholds(y_val, p_keras)["balanced"]) if data.ensemble
             else float(data.train_meta["thresholds"]["balanced"]))
    probs = {"keras": p_keras, "fp32": results["fp32"]["p"], "int8": results["int8"]["p"]}
    table = {k: metrics_at(y_val, p, t_ref) for k, p in probs.items()}
    d = np.abs(probs["int8"] - probs["fp32"])
    x1 = model_input(x_val[:1], intensity)
    latency = {"keras": _latency_ms(lambda x: keras_probability(target, x), x1)}
    for n, path in files.items():
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        latency[n] = _latency_ms(lambda x, s=s: s.run(None, {"image": x}), x1)
    parity = {
        "n_val": int(len(y_val)),
        "threshold": t_ref,
        "metrics": table,
        "int8_vs_fp32_label_agreement": float(np.mean((probs["int8"] >= t_ref)
                                                      == (probs["fp32"] >= t_ref))),
        "int8_vs_fp32_abs_delta_p": {"max": float(d.max()), "mean": float(d.mean())},
        "fp32_vs_keras_abs_delta_p_max": float(np.max(np.abs(probs["fp32"] - p_keras))),
        "auc_drop_int8": float(table["fp32"]["auc"] - table["int8"]["auc"]),
        "size_bytes": {"keras": sum(r.model_path.stat().st_size for r in data.runs),
                       "fp32": files["fp32"].stat().st_size,
                       "int8": files["int8"].stat().st_size},
        "latency_ms_batch1_median": latency,
        "ops": ops,
        "gates": {},
        "ood": {k: v for k, v in results["int8"]["meta"]["ood"].items()
                if k not in ("mean", "precision")},
        "intensity": intensity,
        "members": len(data.runs),
    }
    return parity, probs


def external_parity(data: ExportData, results: dict[str, dict], out: Path) -> dict:
    """Step 5 (with an external set): fp32/int8 agreement there, calibration, its plots."""
    from pneumo.export.parity_report import write_external_report
    from pneumo.train.calibration import public_cross_fit

    e8, e32 = results["int8"]["ext"], results["fp32"]["ext"]
    y_ext = data.external[1]
    lab8 = e8["p_calibrated"] >= e8["thresholds"]["balanced"]
    lab32 = e32["p_calibrated"] >= e32["thresholds"]["balanced"]
    section = {
        "set": results["int8"]["meta"]["operating_points_source"],
        "n": int(len(y_ext)),
        "raw_auc": {"fp32": e32["raw_auc"], "int8": e8["raw_auc"]},
        "int8_vs_fp32_label_agreement_balanced": float(np.mean(lab8 == lab32)),
        "int8": {"calibration": e8["calibration"], "thresholds": e8["thresholds"],
                 "cross_fit": public_cross_fit(e8["cross_fit"]),
                 "shipped_thresholds_in_sample": e8["full_set"]},
    }
    section["plots"] = write_external_report(e8, y_ext, out)
    log.info("external (%d images): calibration %s, thresholds %s, cross-fitted ECE "
             "%.4f -> %.4f", len(y_ext), e8["calibration"].get("fit"), e8["thresholds"],
             e8["calibration"]["ece_before"], e8["calibration"]["ece_after"])
    return section


DRIFT_SOURCE = "external validation (half of the official test split)"
"""Where the drift reference of a model exported with --external-val comes from."""


def export_model(model_path: str | Path | Sequence[str | Path], calib_data: str | Path,
                 out: str | Path, *, n_calib: int = 300, n_ood_train: int = 1500,
                 min_agreement: float = 0.99, max_auc_drop: float = 0.005,
                 external_val: str | Path | None = None, calibration: str = "auto",
                 cross_fit_seed: int = 0, n_boot: int = 1000) -> dict:
    """Export a trained run (or an ensemble of runs) to fp32 + int8 ONNX with metadata.

    Writes the parity report; with `external_val`, also the calibration, operating points
    and cross-fitted figures from that folder (see train.calibration).
    """
    import keras

    from pneumo.export.drift_reference import add_drift_reference
    from pneumo.export.orientation import add_orientation_check
    from pneumo.export.parity_report import write_parity_report

    # int8 calibration images are fitted on: never the external validation set
    refuse_external_val(calib_data, "int8 calibration data", external=external_val)
    paths = [model_path] if isinstance(model_path, (str, Path)) else list(model_path)
    if not paths:
        raise ValueError("export needs at least one model")
    runs = [Run.load(p) for p in paths]
    data = load_export_data(runs, calib_data, n_calib=n_calib, n_ood_train=n_ood_train,
                            external_val=external_val)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = [keras.models.load_model(r.model_path, compile=False) for r in runs]
    target = models if data.ensemble else models[0]

    fp32, int8, ops = convert_and_quantize(target, data, out)
    files = {"fp32": fp32, "int8": int8}
    results = {name: describe_model(name, path, data, out, calibration=calibration,
                                    cross_fit_seed=cross_fit_seed, n_boot=n_boot)
               for name, path in files.items()}
    parity, probs = parity_figures(target, data, files, results, ops)
    train_dir = resolve_split_dirs(calib_data).get("train") or Path(calib_data)
    parity["orientation"] = {name: add_orientation_check(path, train_dir, external_val)
                             for name, path in files.items()}  # rebuilt at every export
    if external_val:  # the app's drift check compares clinics' images with these
        parity["drift_reference"] = {
            name: {k: v for k, v in add_drift_reference(path, external_val, DRIFT_SOURCE).items()
                   if "quantiles" not in k} for name, path in files.items()}
    parity["gates"] = {"min_agreement": min_agreement, "max_auc_drop": max_auc_drop}
    if data.external is not None:
        parity["external"] = external_parity(data, results, out)
    agree = parity["int8_vs_fp32_label_agreement"]
    parity["passed"] = bool(agree >= min_agreement and parity["auc_drop_int8"] <= max_auc_drop)

    write_parity_report(parity, probs, data.y_val, out)
    log.info("parity: agreement %.4f, AUC drop %+.4f, sizes %s; report %s", agree,
             parity["auc_drop_int8"], parity["size_bytes"], out / "parity.md")
    if not parity["passed"]:
        raise ParityError(
            f"int8 model fails the parity gates: label agreement {agree:.4f} "
            f"(need >= {min_agreement}), AUC drop {parity['auc_drop_int8']:.4f} "
            f"(allowed <= {max_auc_drop}). See {out / 'parity.md'}."
        )
    return parity
