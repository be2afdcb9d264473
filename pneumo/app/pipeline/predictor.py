"""One prediction, start to end: bytes -> checks -> model -> OOD -> outcome -> heatmap.

Shared by the HTTP API and the batch command so both give the same answer for a file.
Everything happens in memory; nothing about the model is hard-coded (it all comes from
the `OnnxModel`'s metadata: input size, intensity normalisation, calibration, thresholds).
The probability in an answer is the calibrated one; the outcome (pneumonia / review /
no signs) is decided once by `pneumo.app.pipeline.outcome.decide`, and its words come from
`pneumo.app.pipeline.wording`: an "estimated chance" only when the model file carries a calibration,
else a "model score" (never read as a chance of disease).
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

from pneumo.app.config import DEFAULT_MAX_PIXELS, DEFAULT_SETTING, DEFAULTS
from pneumo.app.i18n import N_, _, english, translate
from pneumo.app.pipeline import heatmap as hm
from pneumo.app.pipeline import wording
from pneumo.app.pipeline.checks import (
    Finding,
    NotAChestXray,
    cheap_checks,
    dicom_header_checks,
    ood_findings,
)
from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.memory import DecodeGate
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.orientation import (
    TRANSFORM_NOTES,
    OrientationCheck,
    apply_transform,
    features,
)
from pneumo.app.pipeline.outcome import decide

LAYOUT_CODES = frozenset({"not_chest_layout"})
"""Refusals an upside-down film may cause: held until the orientation heads have spoken."""
TURNED_LEAD = N_("This chest X-ray cannot be analysed the way it is turned:")
UPSIDE_DOWN = N_("it appears to be upside down (rotated 180 degrees or flipped top to "
                 "bottom). Use \"Rotate and analyse\", or correct the image and send it again.")
MIRRORED = N_("The image appears mirrored (left and right swapped, the heart on the wrong "
              "side). Check the film's side marker; if the film was read from the wrong side, "
              "mirror it and analyse it again.")


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
    outcome: str  # "pneumonia" | "review" | "no_signs" (pneumo.app.pipeline.outcome)
    confidence: str  # "clear" | "borderline" (the review band; kept for API compatibility)
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
    site_thresholds_at: str | None = None  # when this clinic's thresholds were set
    drift: bool = False  # the drift check warned when this answer was given
    calibration_share: float | None = None  # pneumonia share of the calibration images
    clinic_share: float | None = None  # this clinic's pneumonia share, as its lead entered it
    orientation: dict = field(default_factory=lambda: {"checked": False})  # the heads' verdict

    @property
    def calibrated(self) -> bool:
        """True when `probability` is a calibrated probability (else a model score)."""
        return self.calibrated_on is not None

    @property
    def heatmap_png(self) -> bytes | None:
        """The heatmap overlay as PNG (rendered now from the packed source), if made."""
        return None if self.heatmap_source is None else hm.render(self.heatmap_source)

    def words(self) -> dict:
        """What a person reads about this answer (pneumo.app.pipeline.wording), in the current language."""
        return wording.answer(self._record(), self.positive)

    def to_json(self) -> dict:
        """The public fields (same for the API and the batch command, minus URLs/ids)."""
        words = self.words()
        return {
            "label": self.label,
            "outcome": self.outcome,
            "probability": round(self.probability, 6),
            "threshold": round(self.threshold, 6),
            "mode": self.mode,
            "threshold_source": self.threshold_source,
            "site_thresholds_at": self.site_thresholds_at,
            "drift": self.drift,
            "confidence": self.confidence,
            "message": words["message"],
            "headline": words["headline"],
            "icon": words["icon"],
            "probability_text": words["probability_text"],
            "notes": words["notes"],
            "heatmap_shown": words["heatmap_shown"],
            "calibrated": self.calibrated,
            "calibrated_on": self.calibrated_on,
            "next_steps": words["next_steps"],
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "sha256": self.sha256,
            "input": {"format": self.format, "width": self.width, "height": self.height,
                      "bit_depth": self.bit_depth},
            "quality": [w.to_json() for w in self.quality],  # messages in the request's language
            "ood_distance": None if self.ood_distance is None else round(self.ood_distance, 3),
            "orientation": self.orientation,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "intended_use": _(wording.INTENDED_USE),
            **self._clinic_chance(),
        }

    def _clinic_chance(self) -> dict:
        """The same image's chance at this clinic's pneumonia share, when its lead entered
        one (technical details: the main number stays the calibrated one)."""
        if not (self.calibrated and self.calibration_share and self.clinic_share):
            return {}
        chance = wording.chance_at_share(self.probability, self.clinic_share,
                                         self.calibration_share)
        return {"clinic_chance": round(chance, 6),
                "clinic_chance_text": wording.clinic_chance_text(chance, self.clinic_share)}

    def history_record(self) -> dict:
        """The fields stored in the history database (texts in English)."""
        with english():
            record = self._record()
            if not self.message:  # worded once per prediction (predict sets it)
                self.message = wording.answer(record, self.positive)["message"]
            record["message"] = self.message
            return record

    def _record(self) -> dict:
        return {
            "sha256": self.sha256, "label": self.label, "outcome": self.outcome,
            "probability": self.probability, "threshold": self.threshold, "mode": self.mode,
            "confidence": self.confidence, "threshold_source": self.threshold_source,
            "site_thresholds_at": self.site_thresholds_at, "drift": self.drift,
            "model_name": self.model_name,
            "model_version": self.model_version, "model_sha256": self.model_sha256,
            "width": self.width, "height": self.height, "format": self.format,
            "bit_depth": self.bit_depth, "calibrated": self.calibrated,
            "calibrated_on": self.calibrated_on,
            "ood_distance": self.ood_distance, "message": self.message,
            "warnings": [w.to_json() for w in self.quality],
            "orientation": self.orientation,
        }

    def preview_data_url(self) -> str | None:
        """The grayscale preview as a data: URL (for the page), if it was made."""
        if self.preview_png is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.preview_png).decode()


CALIBRATION_SOURCES = (N_("external validation images"), N_("validation images"))
"""Where a model's probabilities were calibrated, in words (translated where shown)."""


def calibration_source(model: OnnxModel) -> str | None:
    """Where the model's probabilities were calibrated, in words; None when they are not."""
    cal = model.calibration
    if not cal or cal.get("method") == "none":
        return None
    source = str(model.metadata.get("operating_points_source") or cal.get("set") or "")
    return CALIBRATION_SOURCES[0] if "external" in source.lower() else CALIBRATION_SOURCES[1]


class Predictor:
    """Runs the whole pipeline for one image with a shared, thread-safe model."""

    def __init__(self, model: OnnxModel, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 large_decodes: int = DEFAULTS["max_large_decodes"]):
        self.model = model
        self.max_pixels = int(max_pixels)
        self.gate = DecodeGate(int(large_decodes))  # bounds the memory of concurrent decodes
        self.calibrated_on = calibration_source(model)
        self.calibration_share = wording.calibration_share(model.metadata) \
            if self.calibrated_on else None
        self.orientation = OrientationCheck.for_model(model.metadata, model.path,
                                                      model.sha256)  # None: unchecked

    @property
    def modes(self) -> list[str]:
        """Operating modes the model defines (e.g. balanced, screening)."""
        return list(self.model.thresholds)

    def check_mode(self, mode: str) -> str:
        """Validate an operating mode name; raises BadMode."""
        if mode not in self.model.thresholds:
            raise BadMode(N_("Unknown mode '%(mode)s'. Use one of: %(modes)s."), mode=mode,
                          modes=", ".join(self.modes))
        return mode

    def predict(self, data: bytes, mode: str = DEFAULT_SETTING, *, heatmap: bool = True,
                preview: bool = False, site_thresholds: dict[str, float] | None = None,
                site_thresholds_at: str | None = None, clinic_share: float | None = None,
                orient: str | None = None) -> Prediction:
        """Analyse image bytes; raises ImageError (415/413) or NotAChestXray (422).

        ``mode`` is checked once at the edge (`check_mode`); an unknown one here is a caller's
        bug (KeyError from `decide`). ``site_thresholds`` (this clinic's operating points, set
        at ``site_thresholds_at``) replace the model's for the outcome and label.
        ``orient`` (one of orientation.TRANSFORMS, checked at the edge) turns the image first
        ("Rotate and analyse"); the answer says so.
        """
        laps = Laps()
        decoded = laps("decode", decode_image(data, max_pixels=self.max_pixels, gate=self.gate,
                                              dicom_header_check=dicom_header_checks))
        if orient:
            decoded.gray = apply_transform(decoded.gray, orient)
        warnings, held = laps("checks", self._checked(decoded))
        if orient:
            warnings.append(Finding.of("orientation_corrected", TRANSFORM_NOTES[orient]))
        x = laps("preprocess", self.model.model_input(decoded.at_dataset_size()))
        out = laps("inference", self.model.run(x[None]))
        turned = laps("orientation", self._orientation(x, out, warnings, orient))
        if held:  # an odd layout, and not because the film is upside down
            raise NotAChestXray(held)
        ood_distance = self._out_of_distribution(out, warnings)
        decision = laps("ood_and_label", decide(float(out.probability[0]),
                                                site_thresholds or self.model.thresholds,
                                                mode, self.model.class_names))
        heat = laps("heatmap", hm.pack(decoded.gray, decoded.original_size, out.cam[0])
                    ) if heatmap else None  # packed now, drawn when its URL is fetched
        shown = laps("preview", hm.png_bytes(hm.display_image(
            decoded.gray, decoded.original_size))) if preview else None
        return self._prediction(
            data, decoded, out, decision, mode=mode, quality=warnings, ood_distance=ood_distance,
            timings_ms=laps.total(), heatmap_source=heat, preview_png=shown, orientation=turned,
            threshold_source="site" if site_thresholds else "model",
            site_thresholds_at=site_thresholds_at if site_thresholds else None,
            clinic_share=clinic_share)

    def _prediction(self, data: bytes, decoded, out, decision, **facts) -> Prediction:
        """The answer: the decision, the model's and the image's facts, and this request's."""
        prediction = Prediction(
            label=decision.label, probability=float(out.probability[0]),
            threshold=decision.threshold, outcome=decision.outcome,
            confidence=decision.confidence, model_name=self.model.name,
            model_version=self.model.version, model_sha256=self.model.sha256,
            sha256=hashlib.sha256(data).hexdigest(), width=int(decoded.original_size[0]),
            height=int(decoded.original_size[1]), format=decoded.format,
            bit_depth=int(decoded.bit_depth), message="",
            raw_probability=float(out.raw_probability[0]), calibrated_on=self.calibrated_on,
            positive=self.model.class_names[1], calibration_share=self.calibration_share,
            **facts)
        prediction.message = prediction.history_record()["message"]  # English, for the history
        return prediction

    def _checked(self, decoded) -> tuple[list[Finding], list[Finding]]:
        """(the image checks' warnings, a layout refusal held back); NotAChestXray when a
        check refuses the image. A refusal for the chest layout alone waits for the
        orientation heads: an upside-down film is told so (and how to turn it)."""
        checks = cheap_checks(decoded)
        if not checks.ok:
            if self.orientation is None or any(r.code not in LAYOUT_CODES
                                               for r in checks.rejections):
                raise NotAChestXray(checks.rejections)
            return list(checks.warnings), list(checks.rejections)
        return list(checks.warnings), []

    def _orientation(self, x, out, warnings: list[Finding], orient: str | None) -> dict:
        """The orientation heads' verdict (the answer's ``orientation`` block): refuses an
        upside-down film (its fix named), warns on a mirrored one; unchecked without heads.
        With ``orient`` (the image was turned first) the block says so: what was analysed."""
        turned = {"turned": orient} if orient else {}
        if self.orientation is None:
            return {"checked": False, **turned}
        verdict = self.orientation.verdict(features(x, out.cam[0], out.embedding[0]))
        if verdict.upside_down_flagged:
            raise NotAChestXray([Finding.of("upside_down_image", UPSIDE_DOWN)],
                                lead=TURNED_LEAD, fix=verdict.fix)
        if verdict.mirrored_flagged:
            warnings.append(Finding.of("mirrored_image", MIRRORED))
        return {**verdict.to_json(), **turned}

    def _out_of_distribution(self, out, warnings: list[Finding]) -> float | None:
        """The embedding's distance to the training images; refuses or warns (into
        ``warnings``) by the model's own limits; None when the model has no OOD statistics."""
        if not (out.embedding.size and self.model.ood):
            return None
        distance = float(self.model.ood_distance(out.embedding)[0])
        reject, warn = ood_findings(distance, self.model.ood)
        if reject:
            raise NotAChestXray([reject])
        if warn:
            warnings.append(warn)
        return distance


class Laps:
    """Milliseconds per named step of one prediction (``timings_ms``)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def __call__(self, name: str, value):
        """Record the time since the previous step under ``name``; returns ``value``."""
        now = time.perf_counter()
        self.ms[name] = (now - self.last) * 1000.0
        self.last = now
        return value

    def total(self) -> dict[str, float]:
        """The steps and the total."""
        self.ms["total"] = (time.perf_counter() - self.start) * 1000.0
        return self.ms


def add_laps(timings_ms: dict[str, float], **seconds: float) -> None:
    """Add steps timed outside the predictor (in seconds) to an answer's ``timings_ms``; its
    ``total`` stays the last key and counts them."""
    total = timings_ms.pop("total", 0.0)
    for name, s in seconds.items():
        timings_ms[name] = s * 1000.0
        total += s * 1000.0
    timings_ms["total"] = total
