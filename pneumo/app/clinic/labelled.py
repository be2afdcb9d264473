"""Labelled image sets (a folder with NORMAL/ and PNEUMONIA/, or a CSV of file,label) and
their scores through the app's own pipeline: for site thresholds and reference statistics."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from pneumo.app.config import DEFAULT_SETTING
from pneumo.app.pipeline.files import iter_inputs, predict_file
from pneumo.app.pipeline.predictor import Predictor

log = logging.getLogger(__name__)

LABELS = {"normal": 0, "0": 0, "negative": 0, "pneumonia": 1, "1": 1, "positive": 1}
"""Accepted label spellings (case-insensitive) -> 0 NORMAL, 1 PNEUMONIA."""


@dataclass
class Scored:
    """The pipeline's answers for a labelled set (refused and failed images kept apart)."""

    files: list[Path]
    labels: list[int]
    results: list[dict]  # batch.predict_file answers, in file order

    def answered(self) -> tuple[list[int], list[dict]]:
        """Labels and results of the images the model answered (not refused, not failed)."""
        pairs = [(y, r) for y, r in zip(self.labels, self.results, strict=True)
                 if r["status"] == "ok"]
        return [y for y, _ in pairs], [r for _, r in pairs]

    def refused(self) -> int:
        """How many images were refused as not a chest X-ray."""
        return sum(1 for r in self.results
                   if r["status"] == "error" and r["error"]["code"] == "not_a_chest_xray")


def labelled_folder(folder: str | Path) -> list[tuple[Path, int]]:
    """Images under NORMAL/ (0) and PNEUMONIA/ (1) of a folder (any letter case)."""
    root = Path(folder)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = LABELS.get(sub.name.lower())
        if label is not None:
            out.extend((f, label) for f in iter_inputs([sub]))
    if not out:
        raise FileNotFoundError(f"{root} has no images in NORMAL/ or PNEUMONIA/ sub-folders")
    return out


def labelled_csv(path: str | Path) -> list[tuple[Path, int]]:
    """Rows 'file,label' of a CSV (file relative to the CSV's folder; a header is optional)."""
    path = Path(path)
    out = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{n}: expected 'file,label'")
            name, raw = row[0].strip(), row[1].strip().lower()
            if n == 1 and raw not in LABELS:
                continue  # a header
            if raw not in LABELS:
                raise ValueError(f"{path}:{n}: label {row[1]!r} is not normal or pneumonia")
            f = Path(name)
            out.append((f if f.is_absolute() else path.parent / f, LABELS[raw]))
    if not out:
        raise ValueError(f"{path} lists no images")
    return out


def score(predictor: Predictor, items: list[tuple[Path, int]], mode: str = DEFAULT_SETTING
          ) -> Scored:
    """Run every image through the app's pipeline (progress logged every 50 files)."""
    predictor.check_mode(mode)  # once, before the files (BadMode for an unknown one)
    results = []
    for i, (f, _) in enumerate(items, start=1):
        results.append(predict_file(predictor, f, mode))
        if i % 50 == 0 or i == len(items):
            log.info("scored %d/%d images", i, len(items))
    return Scored([f for f, _ in items], [y for _, y in items], results)
