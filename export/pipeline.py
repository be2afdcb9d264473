"""`pneumo export`: Keras run -> fp32 ONNX -> int8 ONNX, metadata, parity report."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from train.data import Sample, Split, list_class_folder, load_arrays, resolve_split_dirs
from train.metrics import bootstrap_ci, choose_thresholds, metrics_at


class ParityError(RuntimeError):
    """int8 and fp32 disagree more than the gates allow."""


def log(msg: str) -> None:
    """Progress to stderr."""
    print(f"[export {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _floats(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32)[..., None] / 255.0


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


def _onnx_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list] = {n: [] for n in names}
    for i in range(0, len(x), 64):
        for n, v in zip(names, sess.run(None, {"image": _floats(x[i:i + 64])}), strict=True):
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


def export_model(model_path: str | Path, calib_data: str | Path, out: str | Path, *,
                 n_calib: int = 300, n_ood_train: int = 1500, min_agreement: float = 0.99,
                 max_auc_drop: float = 0.005) -> dict:
    """Export a trained run to fp32 + int8 ONNX with metadata; write the parity report."""
    import keras
    import onnxruntime as ort

    from edge_app.model import file_sha256
    from export.metadata import (
        acquisition_variants,
        build_metadata,
        model_card,
        ood_statistics,
        write_metadata,
    )
    from export.onnx_export import check_matches_keras, check_ops, convert
    from export.quantize import quantize_int8

    model_path = Path(model_path)
    if model_path.is_dir():
        model_path = model_path / "model.keras"
    run_dir = model_path.parent
    train_meta = json.loads((run_dir / "model.json").read_text())
    split_path = run_dir / "split.json"
    if not split_path.exists():
        raise FileNotFoundError(f"{split_path} is missing: export needs the run's validation split")
    split = Split.from_json(json.loads(split_path.read_text()))
    size = int(train_meta["input_size"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    log(f"loading {model_path} ({size} px) and {len(split.val)} validation images")
    model = keras.models.load_model(model_path)
    x_val, y_val = load_arrays(split.val, size, progress=False)
    calib = calibration_samples(calib_data, split, n_calib)
    x_cal, _ = load_arrays(calib, size, progress=False)
    ood_pool = [s for s in split.train if Path(s.path).exists()]
    random.Random(1).shuffle(ood_pool)
    x_ood, _ = load_arrays(ood_pool[:n_ood_train], size, progress=False)

    fp32 = convert(model, out / "model.fp32.onnx")
    ops_fp32 = check_ops(fp32)
    delta = check_matches_keras(model, fp32, _floats(x_val[:32]))
    log(f"fp32 ONNX written; ops {sorted(ops_fp32)}; max |p_keras - p_onnx| {delta:.2e}")

    int8 = quantize_int8(fp32, out / "model.int8.onnx", _floats(x_cal))
    ops_int8 = check_ops(int8)
    log(f"int8 ONNX written (calibrated on {len(x_cal)} training images)")

    p_keras = np.concatenate([np.asarray(model(_floats(x_val[i:i + 64]), training=False)).ravel()
                              for i in range(0, len(x_val), 64)])
    results: dict[str, dict] = {}
    shifted = acquisition_variants(_floats(x_val[:: max(1, len(x_val) // 400)]))
    shifted_u8 = np.round(shifted[..., 0] * 255).astype(np.uint8)
    for name, path in (("fp32", fp32), ("int8", int8)):
        o_val = _onnx_outputs(path, x_val)
        thresholds = choose_thresholds(y_val, o_val["probability"])
        val_metrics = {}
        for mode, t in thresholds.items():
            m = metrics_at(y_val, o_val["probability"], t)
            m["ci95"] = bootstrap_ci(y_val, o_val["probability"], t)
            val_metrics[mode] = m
        ood = {}
        if "embedding" in o_val:
            ood = ood_statistics(_onnx_outputs(path, x_ood)["embedding"], o_val["embedding"],
                                 _onnx_outputs(path, shifted_u8)["embedding"])
        meta = build_metadata(train_meta, precision=name, thresholds=thresholds,
                              val_metrics=val_metrics, ood=ood,
                              source_sha256=file_sha256(model_path))
        card = model_card(meta)
        write_metadata(path, meta, card)
        if name == "int8":  # the shipped file's card, also as Markdown beside it
            (out / "MODEL_CARD.md").write_text(card + "\n")
        results[name] = {"p": o_val["probability"], "meta": meta}
        log(f"{name}: thresholds {thresholds}; val AUC {val_metrics['balanced']['auc']:.4f}")

    # Parity: the same threshold (Keras' balanced one, from training) for all three.
    t_ref = float(train_meta["thresholds"]["balanced"])
    probs = {"keras": p_keras, "fp32": results["fp32"]["p"], "int8": results["int8"]["p"]}
    table = {k: metrics_at(y_val, p, t_ref) for k, p in probs.items()}
    agree = float(np.mean((probs["int8"] >= t_ref) == (probs["fp32"] >= t_ref)))
    d = np.abs(probs["int8"] - probs["fp32"])
    x1 = _floats(x_val[:1])
    sessions = {n: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for n, p in (("fp32", fp32), ("int8", int8))}
    latency = {"keras": _latency_ms(lambda x: model(x, training=False), x1)}
    for n, s in sessions.items():
        latency[n] = _latency_ms(lambda x, s=s: s.run(None, {"image": x}), x1)
    parity = {
        "n_val": int(len(y_val)),
        "threshold": t_ref,
        "metrics": table,
        "int8_vs_fp32_label_agreement": agree,
        "int8_vs_fp32_abs_delta_p": {"max": float(d.max()), "mean": float(d.mean())},
        "fp32_vs_keras_abs_delta_p_max": float(np.max(np.abs(probs["fp32"] - p_keras))),
        "auc_drop_int8": float(table["fp32"]["auc"] - table["int8"]["auc"]),
        "size_bytes": {"keras": model_path.stat().st_size, "fp32": fp32.stat().st_size,
                       "int8": int8.stat().st_size},
        "latency_ms_batch1_median": latency,
        "ops": {"fp32": sorted(ops_fp32), "int8": sorted(ops_int8)},
        "gates": {"min_agreement": min_agreement, "max_auc_drop": max_auc_drop},
        "ood": {k: v for k, v in results["int8"]["meta"]["ood"].items()
                if k not in ("mean", "precision")},
    }
    parity["passed"] = bool(agree >= min_agreement and parity["auc_drop_int8"] <= max_auc_drop)
    from export.parity_report import write_parity_report

    write_parity_report(parity, probs, y_val, out)
    log(f"parity: agreement {agree:.4f}, AUC drop {parity['auc_drop_int8']:+.4f}, "
        f"sizes {parity['size_bytes']}; report {out / 'parity.md'}")
    if not parity["passed"]:
        raise ParityError(
            f"int8 model fails the parity gates: label agreement {agree:.4f} "
            f"(need >= {min_agreement}), AUC drop {parity['auc_drop_int8']:.4f} "
            f"(allowed <= {max_auc_drop}). See {out / 'parity.md'}."
        )
    return parity
