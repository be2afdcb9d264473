"""The self-describing ONNX model: one session, its metadata, CAM and OOD scoring.

Contract between `export` (which writes the file) and the app (which only reads it):

- input ``image``: float32 [N, S, S, 1], pixels in [0, 1] from `pneumo.app.pipeline.preprocess`.
- outputs ``probability`` [N, 1] (of PNEUMONIA), ``cam`` [N, h, w] (class activation map in
  logit units: its mean is the logit), ``embedding`` [N, C] (the pooled features).
- ``metadata_props["pneumo"]``: a JSON document with name, version, created, git_commit,
  input_size, preprocessing, class_names, thresholds {balanced, screening}, val_metrics,
  train_manifest_sha256, recipe, ood {...}, and optionally calibration {method, a, b} (the
  thresholds are then on the calibrated scale) and intensity ("none" | "equalize" |
  "stretch": the per-image normalisation the input needs); ``metadata_props["model_card"]``:
  Markdown.

`OnnxModel.run` / `predict` give CALIBRATED probabilities (`pneumo.app.pipeline.calibration`); the
network's own output stays available as `ModelOutput.raw_probability` / `predict_raw`.

Nothing about a model is hard-coded in the app: it all comes from this file.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.app import bounded_json
from pneumo.app.config import DEFAULT_MODEL, DEFAULT_SETTING
from pneumo.app.pipeline.calibration import apply_calibration, calibration_params
from pneumo.app.pipeline.outcome import CONFIDENCE, decide
from pneumo.app.pipeline.preprocess import INTENSITY_METHODS, to_model_input

# Offline clinic app: ONNX Runtime's telemetry stays off (it must be set before the import).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

METADATA_KEY = "pneumo"
MODEL_CARD_KEY = "model_card"
INPUT_NAME = "image"
OUTPUTS = ("probability", "cam", "embedding")
MAX_METADATA_BYTES = 64 * 1024 * 1024
"""Characters of the "pneumo" metadata (the bundled model's: 0.8 MB, mostly the OOD arrays)."""

log = logging.getLogger(__name__)


def encode_array(a: np.ndarray) -> dict:
    """A float32 array as compact JSON (base64 of little-endian bytes)."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "b64": base64.b64encode(a).decode()}


def decode_array(d: dict) -> np.ndarray:
    """Inverse of encode_array."""
    return np.frombuffer(base64.b64decode(d["b64"]), dtype="<f4").reshape(d["shape"]).copy()


def read_metadata(path: str | Path) -> tuple[dict, str]:
    """(metadata dict, model card Markdown) stored inside an ONNX file (ONNX Runtime only)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for unreadable files
        raise ValueError(f"{path} cannot be read as an ONNX model: {exc}") from exc
    props = session.get_modelmeta().custom_metadata_map
    return parse_metadata(props, path), props.get(MODEL_CARD_KEY, "")


def parse_metadata(props: dict[str, str], path: str | Path) -> dict:
    """The "pneumo" metadata of a model's properties, parsed within bounds; ValueError if none."""
    if METADATA_KEY not in props:
        raise ValueError(f"{path} carries no '{METADATA_KEY}' metadata: not a pneumo model")
    try:
        return bounded_json.loads(props[METADATA_KEY], max_bytes=MAX_METADATA_BYTES)
    except bounded_json.BadJson as exc:
        raise ValueError(f"{path}: its '{METADATA_KEY}' metadata cannot be read: {exc}") from exc


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class ModelOutput:
    """What one run of the model gives for a batch."""

    probability: np.ndarray  # (N,) calibrated (the thresholds' scale)
    cam: np.ndarray  # (N, h, w) logit units of the RAW output: mean = logit(raw_probability)
    embedding: np.ndarray  # (N, C)
    raw_probability: np.ndarray | None = None  # (N,) the network's own output


class OnnxModel:
    """An ONNX Runtime session over a pneumo model file, with its metadata.

    One instance is shared by the app's worker threads (ORT sessions are thread-safe).
    """

    def __init__(self, path: str | Path = DEFAULT_MODEL, *, intra_op_threads: int = 1,
                 inter_op_threads: int = 1, data: bytes | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        data = self.path.read_bytes() if data is None else data  # `data`: the file, read once
        self.sha256 = hashlib.sha256(data).hexdigest()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict = parse_metadata(props, path)
        self.model_card: str = props.get(MODEL_CARD_KEY, "")
        self.input_size = int(self.metadata["input_size"])
        self.class_names: list[str] = list(self.metadata.get("class_names",
                                                            ["NORMAL", "PNEUMONIA"]))
        self.thresholds: dict[str, float] = {k: float(v) for k, v in
                                             self.metadata["thresholds"].items()}
        calibration_params(self.calibration)  # fail at load, not per image, if malformed
        if self.intensity not in INTENSITY_METHODS:
            raise ValueError(f"{path}: unknown intensity normalisation {self.intensity!r} "
                             f"(this app knows {', '.join(INTENSITY_METHODS)})")
        log.info("model %s %s: calibration %s, intensity %s", self.name, self.version,
                 (self.calibration or {}).get("method", "none"), self.intensity)
        self._outputs = [o.name for o in self.session.get_outputs()]
        ood = self.metadata.get("ood") or {}
        self._ood_mean = decode_array(ood["mean"]) if "mean" in ood else None
        self._ood_precision = decode_array(ood["precision"]) if "precision" in ood else None

    @property
    def name(self) -> str:
        """Model name from the metadata."""
        return str(self.metadata.get("name", self.path.stem))

    @property
    def version(self) -> str:
        """Model version from the metadata."""
        return str(self.metadata.get("version", "unknown"))

    @property
    def calibration(self) -> dict | None:
        """The metadata's calibration block ({"method": "platt", "a", "b"}), or None."""
        return self.metadata.get("calibration") or None

    @property
    def intensity(self) -> str:
        """The per-image intensity normalisation the model's input needs ("none" if absent)."""
        return str(self.metadata.get("intensity") or "none")

    @property
    def ood(self) -> dict:
        """The out-of-distribution settings (thresholds), without the big arrays."""
        return {k: v for k, v in (self.metadata.get("ood") or {}).items()
                if k not in ("mean", "precision")}

    def run(self, batch: np.ndarray) -> ModelOutput:
        """Run the model on (N, S, S, 1) float32 inputs."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        res = dict(zip(self._outputs, self.session.run(None, {INPUT_NAME: batch}), strict=True))
        raw = res["probability"].reshape(len(batch))
        return ModelOutput(
            probability=self.calibrate(raw),
            cam=res.get("cam", np.zeros((len(batch), 1, 1), np.float32)),
            embedding=res.get("embedding", np.zeros((len(batch), 0), np.float32)),
            raw_probability=raw,
        )

    def calibrate(self, p_raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw network outputs (identity without calibration)."""
        return apply_calibration(p_raw, self.calibration).astype(np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated pneumonia probabilities for a batch (the thresholds' scale)."""
        return self.run(batch).probability

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """The network's uncalibrated pneumonia probabilities for a batch."""
        return self.run(batch).raw_probability

    def model_input(self, gray: Image.Image) -> np.ndarray:
        """8-bit grayscale image -> this model's input (S, S, 1), with its intensity step."""
        return to_model_input(gray, self.input_size, intensity=self.intensity)

    def outcome(self, probability: float) -> str:
        """The outcome at the model's thresholds (pneumo.app.pipeline.outcome.decide)."""
        return decide(probability, self.thresholds, next(iter(self.thresholds)),
                      self.class_names).outcome

    def confidence(self, probability: float) -> str:
        """'borderline' in the review band, else 'clear' (the API's older field)."""
        return CONFIDENCE[self.outcome(probability)]

    def ood_distance(self, embedding: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of embeddings (N, C) to the training distribution."""
        if self._ood_mean is None or self._ood_precision is None:
            return np.zeros(len(np.atleast_2d(embedding)))
        d = np.atleast_2d(embedding).astype(np.float64) - self._ood_mean
        return np.einsum("nc,cd,nd->n", d, self._ood_precision, d)

    def label_for(self, probability: float, mode: str = DEFAULT_SETTING) -> tuple[str, float]:
        """(class name, threshold) for a probability at an operating mode (outcome.decide)."""
        d = decide(probability, self.thresholds, mode, self.class_names)
        return d.label, d.threshold
