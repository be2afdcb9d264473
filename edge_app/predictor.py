"""One prediction, start to end: bytes -> checks -> model -> OOD -> label -> heatmap.

Shared by the HTTP API and the batch command so both give the same answer for a file.
Everything happens in memory; nothing about the model is hard-coded (it all comes from
the `OnnxModel`'s metadata: input size, intensity normalisation, calibration, thresholds).
The probability in an answer is the calibrated one; ``confidence`` is "borderline" when it
lies between the screening and balanced thresholds (the two modes disagree), else "clear".
The plain words say what the number is: an "estimated chance" only when the model file
carries a calibration, else a "model score" (never read as a chance of disease).
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

from edge_app import heatmap as hm
from edge_app.calibration import confidence as confidence_band
from edge_app.checks import (
    Finding,
    NotAChestXray,
    cheap_checks,
    dicom_header_checks,
    ood_findings,
)
from edge_app.config import DEFAULTS
from edge_app.i18n import N_, _, english, number, percent, translate
from edge_app.imaging import DEFAULT_MAX_PIXELS, DecodeGate, decode_image
from edge_app.onnx_model import OnnxModel

INTENDED_USE = N_(
    "Decision support for pediatric frontal chest X-rays. Not a diagnosis: a clinician must "
    "read the image and decide."
)

BORDERLINE_NOTE = N_(
    "Borderline result: the screening and balanced settings disagree on this image, so the "
    "answer is uncertain."
)
"""Shown in plain words (page, printed report) when ``confidence`` is "borderline"."""

GUIDANCE_LABEL = N_("What to do next (guidance, not a protocol)")
"""Heading of the next-steps lines: they support local clinical protocols, never replace them."""

NEXT_STEP_POSITIVE = N_("Assess the child clinically and consider referral using the criteria of "
                      "your local protocol.")
NEXT_STEP_NEGATIVE = N_("Clinical judgement still applies: an X-ray without signs of pneumonia "
                      "does not rule it out.")
NEXT_STEP_BORDERLINE = N_("A clinician should review the X-ray and the child before deciding.")
NEXT_STEP_RETAKE = N_("Consider retaking the X-ray: the image quality warnings make the result "
                    "less reliable.")

RETAKE_WARNINGS = frozenset({
    "low_resolution", "unusual_aspect_ratio", "low_contrast", "noisy", "underexposed",
    "overexposed", "unusual_layout", "unusual_image",
})
"""Image quality warnings that a new X-ray may cure (others only note how it was read)."""

HEATMAP_NOTE = {
    "positive": N_("Shows where the model looked; red marks the areas that weighed most towards "
                   "pneumonia. Not an outline of a lesion."),
    "negative": N_("Shows where the model looked. On a NORMAL result it does not mark disease."),
}
"""Caption of the heatmap, by outcome."""


class BadMode(ValueError):
    """An operating mode the model does not define (the message English; ``localized``)."""

    def __init__(self, message: str, **params: object):
        super().__init__(message % params if params else message)
        self.template = message
        self.params = params

    def localized(self) -> str:
        """The message in the request's language (English outside a request)."""
        return translate(self.template, self.params)


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
    calibrated_on: str | None = None  # where the probability was calibrated; None: a score
    positive: str = "PNEUMONIA"  # the model's positive class name
    threshold_source: str = "model"  # "model": the model file's thresholds; "site": this clinic's

    @property
    def calibrated(self) -> bool:
        """True when `probability` is a calibrated probability (else a model score)."""
        return self.calibrated_on is not None

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
            "threshold_source": self.threshold_source,
            "confidence": self.confidence,
            "message": plain_message(self.label, self.probability, self.threshold, self.positive,
                                     self.calibrated_on, self.confidence),
            "headline": headline(self.label, self.positive, self.confidence),
            "probability_text": probability_text(self.probability, self.threshold,
                                                 self.calibrated_on),
            "calibrated": self.calibrated,
            "calibrated_on": self.calibrated_on,
            "next_steps": next_steps(self.label, self.confidence,
                                     [w.code for w in self.quality], self.positive),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "sha256": self.sha256,
            "input": {"format": self.format, "width": self.width, "height": self.height,
                      "bit_depth": self.bit_depth},
            "quality": [w.to_json() for w in self.quality],  # messages in the request's language
            "ood_distance": None if self.ood_distance is None else round(self.ood_distance, 3),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "intended_use": _(INTENDED_USE),
        }

    def history_record(self) -> dict:
        """The fields stored in the history database (texts in English)."""
        with english():
            return self._history_record()

    def _history_record(self) -> dict:
        return {
            "sha256": self.sha256, "label": self.label, "probability": self.probability,
            "threshold": self.threshold, "mode": self.mode, "confidence": self.confidence,
            "threshold_source": self.threshold_source,
            "model_name": self.model_name,
            "model_version": self.model_version, "model_sha256": self.model_sha256,
            "width": self.width, "height": self.height, "format": self.format,
            "bit_depth": self.bit_depth, "calibrated": self.calibrated,
            "calibrated_on": self.calibrated_on,
            "ood_distance": self.ood_distance, "message": self.message,
            "warnings": [w.to_json() for w in self.quality],
        }

    def preview_data_url(self) -> str | None:
        """The grayscale preview as a data: URL (for the page), if it was made."""
        if self.preview_png is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.preview_png).decode()


def _value(p: float, digits: int, as_percent: bool) -> str:
    """A probability as a number of 100 that never claims certainty ("over 99", "under 1")."""
    fmt = percent if as_percent else (lambda f, d=0: number(100 * f, d))
    if 100 * p >= 99.5:
        return _("over %(value)s", value=fmt(0.99))
    if 100 * p < 0.5:
        return _("under %(value)s", value=fmt(0.01))
    return fmt(p, digits)


CALIBRATION_SOURCES = (N_("external validation images"), N_("validation images"))
"""Where a model's probabilities were calibrated, in words (translated where shown)."""


def calibration_source(model: OnnxModel) -> str | None:
    """Where the model's probabilities were calibrated, in words; None when they are not."""
    cal = model.calibration
    if not cal or cal.get("method") == "none":
        return None
    source = str(model.metadata.get("operating_points_source") or cal.get("set") or "")
    return CALIBRATION_SOURCES[0] if "external" in source.lower() else CALIBRATION_SOURCES[1]


def headline(label: str, positive: str, confidence: str | None = None) -> str:
    """The outcome in a few words ("Signs of pneumonia likely")."""
    if label == positive:
        words = _("Signs of pneumonia likely")
    else:
        words = _("No signs of pneumonia detected")
    return _("%(headline)s (borderline)", headline=words) if confidence == "borderline" else words


def probability_text(probability: float, threshold: float, calibrated_on: str | None) -> str:
    """What the number is: a calibrated chance (and where calibrated) or a model score."""
    # One decimal when whole numbers would blur probability and threshold ("64 vs 64").
    digits = 0 if round(100 * probability) != round(100 * threshold) else 1
    if calibrated_on:
        return _("estimated chance of pneumonia signs: %(value)s (calibrated on %(source)s)",
                 value=_value(probability, digits, True), source=_(calibrated_on))
    return _("model score %(value)s out of 100 (a score, not a chance of disease)",
             value=_value(probability, digits, False))


def plain_message(label: str, probability: float, threshold: float, positive: str,
                  calibrated_on: str | None = None, confidence: str | None = None) -> str:
    """The result in plain words: outcome, what the number is, and what it does not mean."""
    tail = (_("A clinician must confirm.") if label == positive
            else _("This does not rule out disease."))
    return _("%(headline)s — %(number)s. %(tail)s",
             headline=headline(label, positive, confidence),
             number=probability_text(probability, threshold, calibrated_on), tail=tail)


def next_steps(label: str, confidence: str | None, warning_codes: list[str],
               positive: str = "PNEUMONIA") -> list[str]:
    """Short guidance lines for this outcome (guidance, not a protocol)."""
    steps = [NEXT_STEP_POSITIVE if label == positive else NEXT_STEP_NEGATIVE]
    if confidence == "borderline":
        steps.insert(0, NEXT_STEP_BORDERLINE)
    if any(code in RETAKE_WARNINGS for code in warning_codes):
        steps.append(NEXT_STEP_RETAKE)
    return [_(step) for step in steps]


class Predictor:
    """Runs the whole pipeline for one image with a shared, thread-safe model."""

    def __init__(self, model: OnnxModel, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 large_decodes: int = DEFAULTS["max_large_decodes"]):
        self.model = model
        self.max_pixels = int(max_pixels)
        self.gate = DecodeGate(int(large_decodes))  # bounds the memory of concurrent decodes
        self.calibrated_on = calibration_source(model)

    @property
    def modes(self) -> list[str]:
        """Operating modes the model defines (e.g. balanced, screening)."""
        return list(self.model.thresholds)

    def _english_message(self, label: str, prob: float, threshold: float, confidence: str) -> str:
        with english():
            return plain_message(label, prob, threshold, self.model.class_names[1],
                                 self.calibrated_on, confidence)

    def check_mode(self, mode: str) -> str:
        """Validate an operating mode name; raises BadMode."""
        if mode not in self.model.thresholds:
            raise BadMode(N_("Unknown mode '%(mode)s'. Use one of: %(modes)s."), mode=mode,
                          modes=", ".join(self.modes))
        return mode

    def predict(self, data: bytes, mode: str = "balanced", *, heatmap: bool = True,
                preview: bool = False, site_thresholds: dict[str, float] | None = None
                ) -> Prediction:
        """Analyse image bytes; raises ImageError (415/413), NotAChestXray (422) or BadMode.

        ``site_thresholds`` (this clinic's operating points, same modes and scale as the
        model's) replace the model's thresholds for the label and the borderline band.
        """
        self.check_mode(mode)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str, since: float) -> float:
            """Record the milliseconds since `since` under `name`; returns now."""
            now = time.perf_counter()
            timings[name] = (now - since) * 1000.0
            return now

        sha = hashlib.sha256(data).hexdigest()
        decoded = decode_image(data, max_pixels=self.max_pixels, gate=self.gate,
                               dicom_header_check=dicom_header_checks)
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
        if site_thresholds:
            threshold = float(site_thresholds[mode])
            label = self.model.class_names[1 if prob >= threshold else 0]
            confidence = confidence_band(prob, site_thresholds)
        else:
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
            message=self._english_message(label, prob, float(threshold), confidence),
            timings_ms=timings, heatmap_source=heat_src, preview_png=preview_png,
            raw_probability=float(out.raw_probability[0]), calibrated_on=self.calibrated_on,
            positive=self.model.class_names[1],
            threshold_source="site" if site_thresholds else "model",
        )
