"""How closely a student's heatmap follows its teacher's (issue 27's heatmap criterion).

Both ONNX models read each image of a labelled folder through the app's preprocessing; their
class activation maps (logit units, any grid) are resized to one common grid and compared:

- ``correlation``: Pearson correlation of the two maps over the grid;
- ``top10_iou``: intersection over union of the two maps' hottest 10 % of cells (the part a
  heatmap draws the eye to).

Reported as mean and median over the images, and by the teacher's class. Run it with
``pneumo evaluate --model STUDENT.onnx --data DIR --cam-teacher TEACHER.onnx``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.preprocess import preprocess_path
from pneumo.train.data import CLASS_NAMES, list_class_folder

log = logging.getLogger(__name__)

GRID = 56  # common comparison grid (cells per side); both maps are resized to it
TOP_SHARE = 0.10


def _resize(cam: np.ndarray, grid: int = GRID) -> np.ndarray:
    """A (h, w) map bilinearly resized to (grid, grid)."""
    img = Image.fromarray(np.asarray(cam, np.float32), mode="F")
    return np.asarray(img.resize((grid, grid), Image.BILINEAR), np.float64)


def map_agreement(a: np.ndarray, b: np.ndarray, *, top_share: float = TOP_SHARE
                  ) -> tuple[float, float]:
    """(Pearson correlation, IoU of the top `top_share` cells) of two maps on one grid."""
    a, b = np.ravel(a), np.ravel(b)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    k = max(1, int(round(top_share * a.size)))
    top_a = set(np.argsort(a)[-k:].tolist())
    top_b = set(np.argsort(b)[-k:].tolist())
    return corr, len(top_a & top_b) / len(top_a | top_b)


def _summary(rows: list[tuple[str, float, float]]) -> dict[str, dict[str, float]]:
    """Mean, median and count of each measure over (class, correlation, IoU) rows."""
    out = {}
    for col, measure in ((1, "correlation"), (2, "top10_iou")):
        v = np.asarray([r[col] for r in rows], np.float64)
        out[measure] = {"mean": float(v.mean()), "median": float(np.median(v)), "n": int(v.size)}
    return out


def cam_agreement(student: str | Path, teacher: str | Path, folder: str | Path, *,
                  batch_size: int = 16) -> dict:
    """Agreement of the student's CAM with the teacher's on every image of `folder`."""
    models = {"student": OnnxModel(student, intra_op_threads=2),
              "teacher": OnnxModel(teacher, intra_op_threads=2)}
    samples = list_class_folder(Path(folder))
    rows: list[tuple[str, float, float]] = []  # (class, correlation, IoU) per image
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        inputs: dict[int, np.ndarray] = {}  # one preprocessing per input size
        cams = {}
        for role, model in models.items():
            size = model.input_size
            if size not in inputs:
                inputs[size] = np.stack([preprocess_path(s.path, size) for s in chunk])
            cams[role] = model.run(inputs[size]).cam
        rows += [(CLASS_NAMES[s.label],
                  *map_agreement(_resize(cams["student"][i]), _resize(cams["teacher"][i])))
                 for i, s in enumerate(chunk)]
        log.info("CAM agreement: %d/%d images", len(rows), len(samples))
    return {"student": str(student), "teacher": str(teacher),
            "teacher_version": models["teacher"].version,
            "student_version": models["student"].version, "grid": GRID, "top_share": TOP_SHARE,
            **_summary(rows),
            "by_class": {c: _summary([r for r in rows if r[0] == c])
                         for c in CLASS_NAMES if any(r[0] == c for r in rows)}}
