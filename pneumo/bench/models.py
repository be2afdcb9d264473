"""The set of models one benchmark run times: ONNX files, and Keras models where TensorFlow is.

Sources, in the order `prepare_models` looks at them:

- ``--export-dir DIR``: its ``model.fp32.onnx`` / ``model.int8.onnx`` (what `pneumo export`
  writes); the Keras model from ``--keras PATH``, or else the same architecture with fresh
  weights (latency does not depend on the weight values).
- otherwise the default model's architecture (arch/input_size from the shipped model's
  metadata, else cnn/224) -- from ``--keras PATH`` if given, else fresh Keras weights --
  exported to fp32 ONNX and statically quantised to int8 (QDQ) in a temporary folder,
  calibrated on the real fixture X-rays.
- always: the seed paper's small network (``build_seed(148)``, fresh weights) as Keras and
  fp32 ONNX, and the shipped int8 default model when the file exists.

Without TensorFlow only the ONNX files that already exist are timed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo.app.updates.model_store import REFERENCE_DIR

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_XRAYS = REFERENCE_DIR
SEED_SIZE = 148
FALLBACK_ARCH = ("cnn", 224)


@dataclass
class OnnxEntry:
    """One ONNX file to time."""

    key: str
    label: str
    path: Path
    precision: str
    arch: str
    input_size: int
    source: str


@dataclass
class KerasEntry:
    """One in-memory Keras model to time (fp32); `twin` is the key of its ONNX export."""

    key: str
    label: str
    model: object
    arch: str
    input_size: int
    source: str
    twin: str | None = None


@dataclass
class ModelSet:
    """Everything `model_latency` and `roofline` need, plus notes for the report."""

    onnx: list[OnnxEntry] = field(default_factory=list)
    keras: list[KerasEntry] = field(default_factory=list)
    tensorflow: bool = False
    notes: list[str] = field(default_factory=list)

    def onnx_by_key(self, key: str) -> OnnxEntry | None:
        """The ONNX entry with this key, if any."""
        return next((e for e in self.onnx if e.key == key), None)


def tensorflow_available() -> bool:
    """True when TensorFlow, Keras and tf2onnx can be imported."""
    try:
        if any(importlib.util.find_spec(n) is None for n in ("tensorflow", "keras", "tf2onnx")):
            return False
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except Exception:  # a broken TensorFlow install counts as absent
        return False
    return True


def onnx_input_size(path: str | Path) -> int:
    """Side S of the model's [N, S, S, 1] input, read by ONNX Runtime (no `onnx` needed)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return int(sess.get_inputs()[0].shape[1])


def onnx_arch(path: str | Path) -> tuple[str, int]:
    """(arch, input_size) from a pneumo model's metadata, falling back to the graph."""
    from pneumo.app.pipeline.onnx_model import read_metadata

    try:
        meta, _ = read_metadata(path)
        return str(meta.get("arch", "cnn")), int(meta["input_size"])
    except (ValueError, KeyError):
        return "unknown", onnx_input_size(path)


def default_arch() -> tuple[str, int, str]:
    """(arch, input_size, where it came from) of the default model."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL

    if DEFAULT_MODEL.exists():
        try:
            arch, size = onnx_arch(DEFAULT_MODEL)
            if arch in ("cnn", "seed"):
                return arch, size, f"metadata of {DEFAULT_MODEL.name}"
        except Exception:  # unreadable shipped model: fall back
            pass
    return FALLBACK_ARCH[0], FALLBACK_ARCH[1], "default (no shipped model)"


def fixture_images(size: int, n: int | None = None) -> np.ndarray:
    """Real fixture X-rays preprocessed to (n, size, size, 1); random pixels if none exist."""
    from pneumo.app.pipeline.preprocess import preprocess_path

    files = sorted(FIXTURE_XRAYS.glob("*/*.jpeg"))
    if files:
        x = np.stack([preprocess_path(p, size) for p in files])
    else:
        x = np.random.default_rng(0).random((6, size, size, 1), dtype=np.float32)
    if n is not None:
        x = np.concatenate([x] * (n // len(x) + 1))[:n]
    return x.astype(np.float32)


def _export(model: object, fp32: Path, int8: Path | None, size: int) -> None:
    """Keras model -> fp32 ONNX (and int8 QDQ calibrated on the fixtures)."""
    from pneumo.export.onnx_export import convert

    convert(model, fp32)
    if int8 is not None:
        from pneumo.export.quantize import quantize_int8

        quantize_int8(fp32, int8, fixture_images(size))


def keras_model(keras_path: str | Path | None, arch: str, size: int,
                fresh: str = "fresh weights") -> tuple[object, str]:
    """(Keras model, where it came from): KERAS_PATH loaded, else `arch`/`size` built fresh."""
    import keras

    from pneumo.train.model import build_model

    if keras_path:
        return keras.models.load_model(keras_path, compile=False), str(keras_path)
    return build_model(arch if arch in ("cnn", "seed") else "cnn", size), fresh


def _add_export_dir(ms: ModelSet, export_dir: Path, keras_path: str | Path | None,
                    include_keras: bool) -> None:
    """The export folder's fp32/int8 files, and their Keras twin (loaded or fresh)."""
    arch, size = None, None
    for prec in ("fp32", "int8"):
        p = export_dir / f"model.{prec}.onnx"
        if p.exists():
            arch, size = onnx_arch(p)
            ms.onnx.append(OnnxEntry(f"model-{prec}", f"{arch}/{size} {prec} ONNX", p, prec,
                                     arch, size, f"export dir {export_dir}"))
        else:
            ms.notes.append(f"{p} not found: skipped.")
    if not (ms.tensorflow and include_keras and size):
        return
    model, src = keras_model(keras_path, arch, size, "fresh weights (same architecture)")
    if not keras_path:
        ms.notes.append(f"No --keras given: Keras timings use {arch}/{size} with fresh "
                        "weights (latency does not depend on weight values).")
    ms.keras.append(KerasEntry("model-keras", f"{arch}/{size} Keras", model, arch, size, src,
                               twin="model-fp32"))


def _add_default_export(ms: ModelSet, tmp: Path, keras_path: str | Path | None,
                        include_keras: bool) -> None:
    """The default architecture (or --keras) exported here to fp32 + int8 ONNX."""
    if keras_path:
        model, src = keras_model(keras_path, "cnn", 0)
        size = int(model.input_shape[1])
        arch = "seed" if model.name == "seed_cnn" else "cnn"
    else:
        arch, size, why = default_arch()
        model, src = keras_model(None, arch, size)
        ms.notes.append(f"Default architecture {arch}/{size} ({why}) built with fresh Keras "
                        "weights and exported here: latency does not depend on weight "
                        "values. int8 calibrated on the fixture X-rays.")
    log.info(f"exporting {arch}/{size} to fp32 + int8 ONNX")
    fp32, int8 = tmp / "model.fp32.onnx", tmp / "model.int8.onnx"
    _export(model, fp32, int8, size)
    ms.onnx.append(OnnxEntry("model-fp32", f"{arch}/{size} fp32 ONNX", fp32, "fp32", arch,
                             size, src))
    ms.onnx.append(OnnxEntry("model-int8", f"{arch}/{size} int8 ONNX", int8, "int8", arch,
                             size, src))
    if include_keras:
        ms.keras.append(KerasEntry("model-keras", f"{arch}/{size} Keras", model, arch, size,
                                   src, twin="model-fp32"))


def _add_seed(ms: ModelSet, tmp: Path, include_keras: bool) -> None:
    """The seed paper's network (fresh weights) as Keras and fp32 ONNX."""
    from pneumo.train.model import build_seed

    log.info(f"exporting the seed network seed/{SEED_SIZE}")
    seed = build_seed(SEED_SIZE)
    sp = tmp / "seed.fp32.onnx"
    _export(seed, sp, None, SEED_SIZE)
    ms.onnx.append(OnnxEntry("seed-fp32", f"seed/{SEED_SIZE} fp32 ONNX", sp, "fp32", "seed",
                             SEED_SIZE, "fresh weights"))
    if include_keras:
        ms.keras.append(KerasEntry("seed-keras", f"seed/{SEED_SIZE} Keras", seed, "seed",
                                   SEED_SIZE, "fresh weights", twin="seed-fp32"))


def _add_shipped(ms: ModelSet) -> None:
    """The shipped int8 default model, when the file exists."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        ms.notes.append(f"Shipped default model {DEFAULT_MODEL} not present: not timed.")
        return
    arch, size = onnx_arch(DEFAULT_MODEL)
    ms.onnx.append(OnnxEntry("shipped-int8", f"shipped {arch}/{size} int8 ONNX", DEFAULT_MODEL,
                             "int8", arch, size, "pneumo/app/models"))


def prepare_models(tmp: Path, *, export_dir: str | Path | None = None,
                   keras_path: str | Path | None = None, include_seed: bool = True,
                   include_keras: bool = True) -> ModelSet:
    """Gather (and where needed build and export) the models to time, into `tmp`."""
    ms = ModelSet(tensorflow=tensorflow_available())
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    if not ms.tensorflow:
        ms.notes.append("TensorFlow/tf2onnx not importable: Keras timings and fresh exports "
                        "skipped; only existing ONNX files timed.")
    if export_dir:
        _add_export_dir(ms, Path(export_dir), keras_path, include_keras)
    elif ms.tensorflow:
        _add_default_export(ms, tmp, keras_path, include_keras)
    if ms.tensorflow and include_seed:
        _add_seed(ms, tmp, include_keras)
    _add_shipped(ms)
    return ms


def with_minimal_metadata(src: Path, dst: Path, arch: str, size: int) -> Path:
    """Copy an ONNX file adding the minimal pneumo metadata the app needs to load it."""
    import json

    import onnx

    from pneumo.app.pipeline.onnx_model import METADATA_KEY
    from pneumo.app.pipeline.preprocess import RECIPE

    m = onnx.load(str(src))
    meta = {"name": "benchmark-fresh-weights", "version": "bench", "precision": "int8",
            "arch": arch, "input_size": int(size), "class_names": ["NORMAL", "PNEUMONIA"],
            "thresholds": {"balanced": 0.5, "screening": 0.3}, "preprocessing": RECIPE,
            "note": "untrained weights, for latency measurement only"}
    del m.metadata_props[:]
    m.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    onnx.save(m, str(dst))
    return dst


def servable_model(ms: ModelSet, tmp: Path) -> tuple[Path | None, str]:
    """(ONNX file the app can serve, note): an int8 with pneumo metadata, preferring the
    export dir's, then the shipped default, else the fresh int8 with minimal metadata."""
    from pneumo.app.pipeline.onnx_model import read_metadata

    for key in ("model-int8", "shipped-int8", "model-fp32"):
        e = ms.onnx_by_key(key)
        if e is None:
            continue
        try:
            read_metadata(e.path)
            return e.path, f"{e.label} ({e.source})"
        except ValueError:
            continue
    e = ms.onnx_by_key("model-int8")
    if e is not None and importlib.util.find_spec("onnx") is None:
        return None, (f"{e.label} has no pneumo metadata, and adding it needs the training "
                      "packages (onnx)")
    if e is not None:
        dst = with_minimal_metadata(e.path, Path(tmp) / "serve.int8.onnx", e.arch, e.input_size)
        return dst, (f"{e.label} ({e.source}) with minimal metadata added (no OOD statistics, "
                     "so the OOD step is skipped)")
    return None, "no int8 model available"
