"""One file -> one row, through the app's own pipeline (shared by both engines).

`Scorer.score` runs `pneumo.app.pipeline.files.predict_file` (decode, the DICOM header rules,
the image checks, the model, calibration, the outcome at the MODEL's thresholds: an archive
spans many sites, so no clinic's profile applies) and turns its answer into a row. Before it,
the archive's one rule of its own: a DICOM file whose PatientAge is outside the pediatric range
the model is for is refused (`patient_age_out_of_range`) without being decoded.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from datetime import UTC, datetime

from pneumo.app.config import DEFAULT_SETTING
from pneumo.app.pipeline.decode import sniff_format
from pneumo.app.pipeline.files import predict_file
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.predictor import Predictor
from pneumo.scale.manifest import read_bytes
from pneumo.scale.rows import empty_row, pipeline_version

MAX_AGE_YEARS = 18.0
"""PatientAge at or above this is not a child: refused. The training images are of children
aged one to five (Kermany et al. 2018); the model card's scope is pediatric."""
AGE_PATTERN = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
REFUSED_CODES = frozenset({"not_a_chest_xray", "outside_intended_use"})
"""Error codes of images the model is not for (the rest: files that cannot be used)."""
MODEL_LAPS = ("preprocess", "inference", "orientation", "ood_and_label")


def patient_age_years(data: bytes) -> float | None:
    """A DICOM file's PatientAge in years (None: not DICOM, no age, or unreadable)."""
    if sniff_format(data[:512]) != "DICOM":
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                             specific_tags=["PatientAge"])
        match = AGE_PATTERN.match(str(ds.get("PatientAge") or ""))
    except Exception:  # a damaged header is the app's pipeline's to judge
        return None
    return int(match.group(1)) * AGE_UNIT_YEARS[match.group(2)] if match else None


def age_refusal(data: bytes, path: str) -> dict | None:
    """predict_file's failure record for a DICOM file of an adult (None: no age rule applies)."""
    age = patient_age_years(data)
    if age is None or age < MAX_AGE_YEARS:
        return None
    message = (f"its DICOM header gives a patient age of {MAX_AGE_YEARS:g} years or more; the "
               "model is for children's chest X-rays.")
    return {"file": path, "status": "error", "error": {
        "code": "outside_intended_use", "message": message,
        "reasons": [{"code": "patient_age_out_of_range", "message": message}]}}


class _Source:
    """A file read once: predict_file reads it through `read_bytes`, the age rule and the
    digest reuse the same bytes."""

    def __init__(self, path: str):
        self.path = path
        self._data: bytes | None = None

    def read_bytes(self) -> bytes:
        """The file's bytes (read on the first call; OSError when it cannot be read)."""
        if self._data is None:
            self._data = read_bytes(self.path)
        return self._data

    def __str__(self) -> str:
        return self.path


class Scorer:
    """The app's pipeline with one ONNX Runtime session, for one worker process or actor."""

    def __init__(self, model_path: str, *, mode: str = DEFAULT_SETTING, threads: int = 1,
                 model_bytes: bytes | None = None):
        self.model = OnnxModel(model_path, intra_op_threads=max(1, int(threads)),
                               data=model_bytes)
        self.predictor = Predictor(self.model)
        self.mode = self.predictor.check_mode(mode)
        self.pipeline_version = pipeline_version()

    def facts(self) -> dict:
        """The model and pipeline fields every row carries."""
        return {"model_name": self.model.name, "model_version": self.model.version,
                "model_sha256": self.model.sha256, "pipeline_version": self.pipeline_version}

    def score(self, item: dict) -> dict:
        """One file ({path, size, mtime_ns}) -> its row; never raises for a bad file."""
        start = time.perf_counter()
        source = _Source(str(item["path"]))
        try:
            data = source.read_bytes()
        except OSError:
            data = None  # predict_file reports it (unreadable_file)
        rec = (data is not None and age_refusal(data, source.path)) or predict_file(
            self.predictor, source, self.mode)
        row = empty_row()
        row.update(path=source.path, size=int(item["size"]), mtime_ns=int(item["mtime_ns"]),
                   mode=self.mode, **self.facts())
        if rec["status"] == "ok":
            _scored(row, rec)
        else:
            _refused_or_failed(row, rec["error"])
        if data is not None:
            row["file_sha256"] = rec.get("sha256") or hashlib.sha256(data).hexdigest()
        row["ms_total"] = round((time.perf_counter() - start) * 1000.0, 3)
        row["scored_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return row

    def score_many(self, items: list[dict]) -> list[dict]:
        """Rows for a batch of files, in order."""
        return [self.score(item) for item in items]


def _scored(row: dict, rec: dict) -> None:
    """Fill a row from the app's answer."""
    laps = rec.get("timings_ms") or {}
    row.update(
        status="scored", outcome=rec["outcome"], label=rec["label"],
        probability=float(rec["probability"]), threshold=float(rec["threshold"]),
        confidence=rec["confidence"], calibrated=bool(rec["calibrated"]),
        ood_distance=None if rec["ood_distance"] is None else float(rec["ood_distance"]),
        warnings=";".join(w["code"] for w in rec.get("quality", [])) or None,
        format=rec["input"]["format"], width=int(rec["input"]["width"]),
        height=int(rec["input"]["height"]), bit_depth=int(rec["input"]["bit_depth"]),
        ms_decode=laps.get("decode"), ms_checks=laps.get("checks"),
        ms_model=round(sum(laps.get(k, 0.0) for k in MODEL_LAPS), 3))


def _refused_or_failed(row: dict, error: dict) -> None:
    """Fill a row from the app's refusal or failure."""
    reasons = [r["code"] for r in error.get("reasons", [])] or [error["code"]]
    row.update(status="refused" if error["code"] in REFUSED_CODES else "failed",
               code=reasons[0], reasons=";".join(reasons), message=error.get("message"))
