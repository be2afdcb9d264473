"""One prediction, start to end: bytes -> checks -> model -> OOD -> label -> heatmap.

Shared by the HTTP API and the batch command so both give the same answer for a file.
Everything happens in memory; nothing about the model is hard-coded (it all comes from
the `OnnxModel`'s metadata: input size, intensity normalisation, calibration, thresholds).
The probability in an answer is the calibrated one; ``confidence`` is "borderline" when it
lies between the screening and balanced thresholds (the two modes disagree), else "clear".
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

from edge_app import heatmap as hm
from edge_app.checks import Finding, NotAChestXray, cheap_checks, ood_findings
from edge_app.imaging import DEFAULT_MAX_PIXELS, decode_image
from edge_app.model import OnnxModel

INTENDED_USE = (
    "Decision support for pediatric frontal chest X-rays. Not a diagnosis: a clinician must "
    "read the image and decide."
)

BORDERLINE_NOTE = (
    "Borderline result: the image is between the two operating points (screening and "
    "balanced). A clinician's review is recommended."
)
"""Shown in plain words (page, printed report) when ``confidence`` is "borderline"."""


class BadMode(ValueError):
    """An operating mode the model does not define."""


@dataclass
class Prediction:
    """The answer for one image, plus the images made along the way."""

    label: str
    probability: float  # calibrated
    threshold: float
    mode: str
    confidence: str  # "clear" | "borderline"
    model_name: str
    model_version: str
    model_sha256: str
    sha256: str
    width: int
    height: int
    format: str
    bit_depth: int
    ood_distance: float | None
    quality: list[Finding]
    message: str
    timings_ms: dict[str, float]
    heatmap_source: bytes | None = field(default=None, repr=False)
    preview_png: bytes | None = field(default=None, repr=False)
    raw_probability: float | None = None  # the network's own output, before calibration

    @property
    def heatmap_png(self) -> bytes | None:
        """The heatmap overlay as PNG (rendered now from the packed source), if made."""
        return None if self.heatmap_source is None else hm.render(self.heatmap_source)

    def to_json(self) -> dict:
        """The public fields (same for the API and the batch command, minus URLs/ids)."""
        return {
            "label": self.label,
            "probability": round(self.probability, 6),
            "threshold": round(self.threshold, 6),
            "mode": self.mode,
            "confidence": self.confidence,
            "message": self.message,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "sha256": self.sha256,
            "input": {"format": self.format, "width": self.width, "height": self.height,
                      "bit_depth": self.bit_depth},
            "quality": [w.to_json() for w in self.quality],
            "ood_distance": None if self.ood_distance is None else round(self.ood_distance, 3),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "intended_use": INTENDED_USE,
        }

    def history_record(self) -> dict:
        """The fields stored in the history database."""
        return {
            "sha256": self.sha256, "label": self.label, "probability": self.probability,
            "threshold": self.threshold, "mode": self.mode, "confidence": self.confidence,
            "model_name": self.model_name,
            "model_version": self.model_version, "model_sha256": self.model_sha256,
            "width": self.width, "height": self.height, "format": self.format,
            "ood_distance": self.ood_distance, "message": self.message,
            "warnings": [w.to_json() for w in self.quality],
        }

    def preview_data_url(self) -> str | None:
        """The grayscale preview as a data: URL (for the page), if it was made."""
        if self.preview_png is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.preview_png).decode()


def _percent(p: float, digits: int) -> str:
    """A probability in words that never claims certainty ("over 99%", "under 1%")."""
    if 100 * p >= 99.5:
        return "over 99%"
    if 100 * p < 0.5:
        return "under 1%"
    return f"{100 * p:.{digits}f}%"


def plain_message(label: str, probability: float, threshold: float, positive: str) -> str:
    """The result in plain words."""
    digits = 0 if round(100 * probability) != round(100 * threshold) else 1
    pct = _percent(probability, digits)
    thr = f"{100 * threshold:.{digits}f}%"
    if label == positive:
        return f"Signs of pneumonia likely \u2014 {pct} (threshold {thr}). A clinician must confirm."
    return (f"No signs of pneumonia detected \u2014 pneumonia score {pct}, below the {thr} "
            "threshold. This does not rule out disease.")


class Predictor:
    """Runs the whole pipeline for one image with a shared, thread-safe model."""

    def __init__(self, model: OnnxModel, *, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.model = model
        self.max_pixels = int(max_pixels)

    @property
    def modes(self) -> list[str]:
        """Operating modes the model defines (e.g. balanced, screening)."""
        return list(self.model.thresholds)

    def check_mode(self, mode: str) -> str:
        """Validate an operating mode name; raises BadMode."""
        if mode not in self.model.thresholds:
            raise BadMode(f"Unknown mode '{mode}'. Use one of: {', '.join(self.modes)}.")
        return mode

    def predict(self, data: bytes, mode: str = "balanced", *, heatmap: bool = True,
                preview: bool = False) -> Prediction:
        """Analyse image bytes; raises ImageError (415/413), NotAChestXray (422) or BadMode."""
        self.check_mode(mode)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str, since: float) -> float:
            """Record the milliseconds since `since` under `name`; returns now."""
            now = time.perf_counter()
            timings[name] = (now - since) * 1000.0
            return now

        sha = hashlib.sha256(data).hexdigest()
        decoded = decode_image(data, max_pixels=self.max_pixels)
        t = lap("decode", t0)
        checks = cheap_checks(decoded)
        if not checks.ok:
            raise NotAChestXray(checks.rejections)
        t = lap("checks", t)
        x = self.model.model_input(decoded.gray)  # the model's size and intensity step
        t = lap("preprocess", t)
        out = self.model.run(x[None])
        t = lap("inference", t)
        quality = list(checks.warnings)
        ood_distance = None
        if out.embedding.size and self.model.ood:
            ood_distance = float(self.model.ood_distance(out.embedding)[0])
            reject, warn = ood_findings(ood_distance, self.model.ood)
            if reject:
                raise NotAChestXray([reject])
            if warn:
                quality.append(warn)
        prob = float(out.probability[0])  # calibrated: the thresholds' scale
        label, threshold = self.model.label_for(prob, mode)
        confidence = self.model.confidence(prob)
        t = lap("ood_and_label", t)
        heat_src = preview_png = None
        if heatmap:  # packed now, drawn when the heatmap URL is fetched
            heat_src = hm.pack(decoded.gray, decoded.original_size, out.cam[0])
            t = lap("heatmap", t)
        if preview:
            preview_png = hm.png_bytes(hm.display_image(decoded.gray, decoded.original_size))
            t = lap("preview", t)
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        w, h = decoded.original_size
        return Prediction(
            label=label, probability=prob, threshold=float(threshold), mode=mode,
            confidence=confidence,
            model_name=self.model.name, model_version=self.model.version,
            model_sha256=self.model.sha256, sha256=sha, width=int(w), height=int(h),
            format=decoded.format, bit_depth=int(decoded.bit_depth), ood_distance=ood_distance,
            quality=quality,
            message=plain_message(label, prob, float(threshold), self.model.class_names[1]),
            timings_ms=timings, heatmap_source=heat_src, preview_png=preview_png,
            raw_probability=float(out.raw_probability[0]),
        )
