"""Is it a chest X-ray? Cheap image checks before the model, and the model's OOD score after.

The model must only judge pediatric frontal chest X-rays. Two gates:

1. Cheap checks (`cheap_checks`), on the decoded 8-bit image squashed to 224 x 224 exactly as
   for the model, in a few milliseconds: colour photos, blank or near-constant images, noise,
   documents / screenshots / drawings, extreme aspect ratios, tiny images, and a coarse
   "chest layout" score (correlation with the mean frontal chest X-ray at 16 x 16): refused
   when nothing of a chest layout is there, when inverted, or when the film fits the template
   turned by 90 degrees better than upright (on its side); an atypical but upright layout
   (tight crop, zoom) is only warned. Each rule either rejects (HTTP 422 ``not_a_chest_xray``)
   or adds a quality warning.
2. The model's embedding distance (`ood_findings`): squared Mahalanobis distance to the
   training embeddings, compared with ``ood.reject_distance`` / ``ood.warn_distance`` from the
   model file's metadata.

Before both, a DICOM file's header is judged (`dicom_header_checks`) before any pixel is
decoded: only CR and DX radiographs, frontal views, the chest, single frames.

Refusal budget (reports/refusals/, `python reports/refusals/scan.py --out reports/refusals`):
every real X-ray of the training set (5216) and of external validation (312) goes through the
app's whole pipeline; none is refused (the budget: 0 of external validation, <= 0.1 % of
training), while every non-X-ray the tests refuse stays refused
(tests/app/pipeline/test_refusal_budget.py: scikit-image pictures, noise, blank, documents,
inverted films, 90-degree rotations, DICOM header rules). The thresholds below were chosen from
the distribution of each feature over the real X-rays (see the notes on each constant) with a
wide margin, and checked against degraded X-rays (contrast x0.3, Gaussian noise sigma 20,
64-px originals, blur, JPEG quality 5, under/over-exposure) which must pass with warnings.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

from pneumo.app.i18n import N_
from pneumo.app.pipeline.decoded import (  # noqa: F401 - Finding, NotAChestXray, SCOPE: here too
    DATASET_SIZE,
    SCOPE,
    DecodedImage,
    Finding,
    ImageError,
    NotAChestXray,
)

# --- rejection thresholds (feature ranges over 1000 real training X-rays in brackets) ---
MIN_SIDE = 32
"""Smaller images cannot show a chest (pixels on the shorter side)."""
MAX_ASPECT = 4.0
"""Long side / short side above this is not a chest film (real originals: up to 3.18)."""
MAX_COLORFULNESS = 20.0
"""Hasler-Suesstrunk colourfulness; X-rays are 0, colour photos 30-130."""
MIN_STD = 4.0
"""Pixel standard deviation below this is a blank image [X-rays: 20-85]."""
MIN_RANGE = 12.0
"""1st-99th percentile spread below this is a blank image [X-rays: 92-255]."""
MIN_COARSE_CORR = 0.5
"""Neighbour-pixel correlation at 56 x 56 below this is noise/texture [X-rays: 0.80-0.98]."""
MAX_MODE_FRACTION = 0.45
"""Share of the single most common grey level above this: flat graphics [X-rays: <= 0.28]."""
MAX_EXTREME_FRACTION = 0.6
"""Share of pure-black plus pure-white pixels above this: drawings/documents [X-rays: <= 0.4]."""
MAX_EDGE_FRACTION = 0.035
"""Share of sharp (> 80 grey levels) neighbour steps at 112 px: text, line art [X-rays: <= 0.017]."""
MIN_LAYOUT = 0.15
"""Correlation with the mean chest X-ray below this: nothing of a chest layout [X-rays: >= 0.238].

Robust statistics over the 5216 training X-rays, in Fisher z (atanh of the correlation):
median 1.331, robust SD (1.4826 x MAD) 0.262; 0.15 is 4.5 robust SDs below the median, the
lowest training X-ray (0.238) 4.2 (external validation: >= 0.259). Tightly cropped or zoomed
real films score 0.24-0.45 (warned as ``unusual_layout``, not refused); the grayscale pictures
that only this rule refuses score at most 0.03 (clock 0.03, cell 0.02, microaneurysms -0.05,
moon -0.45). reports/refusals/README.md has the numbers."""
INVERTED_LAYOUT = -0.5
"""Correlation below this: most likely an inverted (negative) chest X-ray."""
# Orientation: the image is compared with the chest template upright and turned by 90 degrees
# either way. A film that fits a sideways chest better than an upright one is on its side: no
# threshold to tune [upright real X-rays: sideways - upright <= -0.051 (all 5528); the same
# X-rays turned by 90 degrees: >= +0.051 (all 11056)].
ROTATED_LAYOUT = 0.45
"""The refusal says "rotated" when the sideways fit is at least this good (a typical chest once
turned) and beats the upright fit by ROTATED_MARGIN; other sideways best fits (round or
orientation-free pictures: retina 0.56 vs 0.45, colour wheel) are refused as
``not_chest_layout``."""
ROTATED_MARGIN = 0.2
"""[real X-rays turned by 90 degrees: sideways - upright median 1.05, >= 0.2 for 99.9 %; 99.5 % of
them are refused as ``rotated_image``, the rest as ``not_chest_layout``]."""

# --- warning thresholds (the image is used, with a note) ---
WARN_MIN_SIDE = DATASET_SIZE
WARN_ASPECT = 2.0
WARN_STD = 25.0
WARN_RANGE = 90.0
WARN_NOISE = 5.0
"""Estimated noise sigma in grey levels at 224 px [X-rays: 0.5-2.8]."""
WARN_DARK_MEAN = 55.0
WARN_BRIGHT_MEAN = 200.0
WARN_LAYOUT = 0.45

# Mean of 2000 training X-rays (seeded sample), 16 x 16 box-filtered, mirrored left-right
# and averaged so that a flipped film scores the same. Regenerate with
# tests/app/pipeline/test_checks_calibration.py::build_template.
CHEST_TEMPLATE = np.array([
    63, 83, 92, 97, 107, 131, 154, 166, 166, 154, 131, 107, 97, 92, 83, 63,
    68, 91, 106, 118, 129, 141, 152, 161, 161, 152, 141, 129, 118, 106, 91, 68,
    67, 91, 115, 134, 143, 141, 148, 162, 162, 148, 141, 143, 134, 115, 91, 67,
    60, 86, 120, 143, 140, 127, 141, 166, 166, 141, 127, 140, 143, 120, 86, 60,
    52, 81, 122, 145, 130, 117, 137, 170, 170, 137, 117, 130, 145, 122, 81, 52,
    44, 77, 124, 139, 120, 117, 143, 174, 174, 143, 117, 120, 139, 124, 77, 44,
    36, 75, 127, 131, 114, 123, 153, 179, 179, 153, 123, 114, 131, 127, 75, 36,
    32, 75, 127, 122, 111, 130, 160, 184, 184, 160, 130, 111, 122, 127, 75, 32,
    28, 76, 124, 115, 114, 140, 165, 187, 187, 165, 140, 114, 115, 124, 76, 28,
    25, 76, 119, 110, 119, 144, 167, 188, 188, 167, 144, 119, 110, 119, 76, 25,
    23, 76, 113, 107, 122, 143, 165, 188, 188, 165, 143, 122, 107, 113, 76, 23,
    22, 76, 108, 107, 126, 145, 164, 188, 188, 164, 145, 126, 107, 108, 76, 22,
    22, 77, 108, 120, 143, 158, 170, 190, 190, 170, 158, 143, 120, 108, 77, 22,
    23, 80, 122, 145, 165, 175, 180, 194, 194, 180, 175, 165, 145, 122, 80, 23,
    24, 85, 138, 164, 178, 184, 187, 197, 197, 187, 184, 178, 164, 138, 85, 24,
    27, 89, 148, 171, 182, 187, 190, 197, 197, 190, 187, 182, 171, 148, 89, 27,
], dtype=np.float64).reshape(16, 16)

SIDEWAYS_TEMPLATES = (np.rot90(CHEST_TEMPLATE, 1), np.rot90(CHEST_TEMPLATE, -1))
"""The chest template turned by 90 degrees each way (a film lying on its side)."""

@dataclass
class CheckResult:
    """Rejections (any one refuses the image), warnings, and the measured features."""

    rejections: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no rule rejected the image."""
        return not self.rejections


# --- DICOM header rules (decided before any pixel is decoded) ---

XRAY_MODALITIES = ("CR", "DX")
"""Projection radiography: the only modalities the model may judge."""

MODALITY_NAMES = {
    "CT": N_("a CT scan"), "MR": N_("an MRI scan"), "NM": N_("a nuclear medicine image"),
    "US": N_("an ultrasound image"), "PT": N_("a PET scan"), "XA": N_("an angiography image"),
    "RF": N_("a fluoroscopy image"), "SR": N_("a structured report, not an image"),
    "MG": N_("a mammogram"), "IO": N_("an intra-oral dental X-ray"), "PX": N_("a panoramic dental X-ray"),
    "DOC": N_("a document"), "OT": N_("an image of another kind"), "SC": N_("a secondary capture"),
    "XC": N_("a photograph"), "ES": N_("an endoscopy image"), "OP": N_("an eye photograph"),
    "SM": N_("a microscopy slide"), "ECG": N_("an ECG"), "RTIMAGE": N_("a radiotherapy image"),
    "BMD": N_("a bone density scan"), "PR": N_("a presentation state, not an image"),
    "KO": N_("a key-object note, not an image"),
}

SOP_CLASS_MODALITY = {
    "ComputedRadiographyImageStorage": "CR",
    "DigitalXRayImageStorageForPresentation": "DX", "DigitalXRayImageStorageForProcessing": "DX",
    "DigitalMammographyXRayImageStorageForPresentation": "MG",
    "DigitalMammographyXRayImageStorageForProcessing": "MG",
    "DigitalIntraOralXRayImageStorageForPresentation": "IO",
    "DigitalIntraOralXRayImageStorageForProcessing": "IO",
    "CTImageStorage": "CT", "EnhancedCTImageStorage": "CT",
    "LegacyConvertedEnhancedCTImageStorage": "CT",
    "MRImageStorage": "MR", "EnhancedMRImageStorage": "MR", "MRSpectroscopyStorage": "MR",
    "NuclearMedicineImageStorage": "NM",
    "UltrasoundMultiFrameImageStorage": "US", "UltrasoundImageStorage": "US",
    "EnhancedUSVolumeStorage": "US",
    "PositronEmissionTomographyImageStorage": "PT", "EnhancedPETImageStorage": "PT",
    "XRayAngiographicImageStorage": "XA", "EnhancedXAImageStorage": "XA",
    "XRayRadiofluoroscopicImageStorage": "RF", "EnhancedXRFImageStorage": "RF",
    "EncapsulatedPDFStorage": "DOC",
}
"""Storage SOP classes (by their `pydicom.uid` names) that imply a modality (checked as well
as the Modality attribute)."""

FOR_PROCESSING_CLASSES = ("DigitalXRayImageStorageForProcessing",)
"""Digital X-Ray Image Storage - For Processing: raw detector data, not meant for viewing."""


NOT_IMAGE_CLASSES = ("MediaStorageDirectoryStorage",)
"""A DICOMDIR: the index of a disc or folder, never an image."""


@cache
def _sop_classes_by_uid() -> tuple[dict[str, str], frozenset[str], frozenset[str]]:
    """The three tables above by UID (pydicom is loaded by then: only DICOM files have one)."""
    from pydicom import uid

    return ({getattr(uid, name): m for name, m in SOP_CLASS_MODALITY.items()},
            frozenset(getattr(uid, name) for name in FOR_PROCESSING_CLASSES),
            frozenset(getattr(uid, name) for name in NOT_IMAGE_CLASSES))


LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT")
OBLIQUE_VIEWS = ("LLO", "RLO", "LAO", "RAO", "LPO", "RPO", "OBLIQUE")
DECUBITUS_VIEWS = ("LLD", "RLD")

CHEST_WORDS = ("CHEST", "THORAX", "THORAC", "LUNG", "TORAX", "TORACE", "BRUST", "POITRINE",
               "PECHO", "PETTO")
"""A BodyPartExamined containing one of these (spaces and punctuation removed) is the chest."""

NOT_CHEST_PARTS = frozenset({
    "SKULL", "HEAD", "BRAIN", "FACE", "SINUS", "ORBIT", "NOSE", "JAW", "MANDIBLE", "TMJ",
    "ZYGOMA", "IAC", "NECK", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "CTSPINE", "TLSPINE",
    "LSSPINE", "SPINE", "SACRUM", "COCCYX", "CLAVICLE", "SCAPULA", "SHOULDER", "ARM",
    "HUMERUS", "ELBOW", "FOREARM", "RADIUS", "ULNA", "WRIST", "HAND", "FINGER", "THUMB",
    "ABDOMEN", "ABDOMENPELVIS", "PELVIS", "HIP", "HIPS", "SIJOINT", "LEG", "FEMUR", "KNEE",
    "PATELLA", "TIBIA", "FIBULA", "ANKLE", "HEEL", "CALCANEUS", "FOOT", "TOE", "EXTREMITY",
    "LOWLIMB", "UPRLIMB", "LOWEREXTREMITY", "UPPEREXTREMITY", "BREAST", "KIDNEY", "BLADDER",
    "STOMACH", "COLON", "ESOPHAGUS", "HEART", "WHOLEBODY",
})
"""BodyPartExamined values (DICOM defined terms) that are known not to be the chest."""


def _dicom_text(ds, keyword: str) -> str:
    """A DICOM attribute as upper-case text ('' when absent, empty or unreadable)."""
    try:
        value = ds.get(keyword)
    except Exception:  # a badly encoded value must not stop the checks
        return ""
    if value is None:
        return ""
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().upper()


def _view_code_meaning(ds) -> str:
    """The meaning of the first ViewCodeSequence item, upper case ('' if none)."""
    try:
        seq = ds.get("ViewCodeSequence")
        return str(seq[0].get("CodeMeaning", "")).strip().upper() if seq else ""
    except Exception:
        return ""


def dicom_header_checks(ds) -> list[Finding]:
    """Judge a DICOM header (no pixels): raises NotAChestXray, or returns warnings.

    Accepted: CR and DX (Modality, and their storage classes "for presentation"), frontal
    views, the chest (or no body part given), a single frame. A missing Modality is accepted
    with a warning: the image checks and the model's distance still apply.
    """
    rej: list[Finding] = []
    warn: list[Finding] = []
    modality = _dicom_text(ds, "Modality")
    sop_class = _dicom_text(ds, "SOPClassUID")
    modality_by_uid, for_processing, _ = _sop_classes_by_uid()
    implied = modality_by_uid.get(sop_class)
    for m in dict.fromkeys(x for x in (modality, implied) if x):
        if m not in XRAY_MODALITIES:
            name = MODALITY_NAMES.get(m, N_("an image of another kind"))
            rej.append(Finding.of(f"modality_{m.lower()}",
                                  "its DICOM header says it is %(name)s (modality %(modality)s), "
                                  "not a plain radiograph (CR or DX).", name=name, modality=m))
    if sop_class in for_processing:
        rej.append(Finding.of("for_processing_image",
                           "it is raw detector data (\"for processing\"), not an image meant "
                           "for viewing; send the \"for presentation\" image."))
    if not modality and not implied:
        warn.append(Finding.of("dicom_modality_missing",
                            "The DICOM file does not say which kind of device made it: check "
                            "that it is a chest X-ray."))
    view = _dicom_text(ds, "ViewPosition")
    meaning = _view_code_meaning(ds)
    if view in LATERAL_VIEWS or ("LATERAL" in meaning and "DECUBITUS" not in meaning):
        rej.append(Finding.of("lateral_view",
                              "its DICOM header says it is a lateral view (%(view)s); "
                              "only frontal (PA or AP) views can be judged.", view=view or meaning))
    elif view in OBLIQUE_VIEWS or "OBLIQUE" in meaning:
        rej.append(Finding.of("oblique_view",
                              "its DICOM header says it is an oblique view (%(view)s); "
                              "only frontal (PA or AP) views can be judged.", view=view or meaning))
    elif view in DECUBITUS_VIEWS or "DECUBITUS" in meaning:
        warn.append(Finding.of("decubitus_view", "Decubitus view (the child lying on one side): "
                                              "the model was trained on standard frontal views."))
    part = _dicom_text(ds, "BodyPartExamined")
    squeezed = "".join(ch for ch in unicodedata.normalize("NFKD", part) if ch.isalnum()
                       and not unicodedata.combining(ch))
    if squeezed and not any(w in squeezed for w in CHEST_WORDS):
        if squeezed in NOT_CHEST_PARTS:
            rej.append(Finding.of("body_part_not_chest",
                                  "its DICOM header says the body part is %(part)s, not the chest.",
                                  part=part))
        else:
            warn.append(Finding.of("unknown_body_part",
                                   "The DICOM header names the body part \"%(part)s\": check "
                                   "that this is a chest X-ray.", part=part))
    frames = _dicom_text(ds, "NumberOfFrames")
    try:
        n_frames = int(float(frames)) if frames else 1
    except ValueError:
        n_frames = 1
    if n_frames < 1:  # normalised: the pixel data must then hold exactly one frame
        warn.append(Finding.of("dicom_frames_mismatch",
                               "The DICOM header says it holds %(frames)s frames; its one image "
                               "was read.", frames=frames))
    photometric = _dicom_text(ds, "PhotometricInterpretation")
    samples = _dicom_text(ds, "SamplesPerPixel") or "1"
    if photometric == "PALETTE COLOR":
        rej.append(Finding.of("palette_color",
                              "it is a colour-palette image, not a grayscale radiograph."))
    elif samples == "1" and photometric and not photometric.startswith("MONOCHROME"):
        warn.append(Finding.of("dicom_photometric_mismatch",
                               "The DICOM header says the image is in colour (%(photometric)s) "
                               "but it holds one value per pixel: it was read as grayscale.",
                               photometric=photometric))
    if sop_class in _sop_classes_by_uid()[2]:
        rej.append(Finding.of("dicomdir",
                              "it is a DICOMDIR (the index of a disc or folder), not an image: "
                              "send the image files it lists."))
    if n_frames > 1:
        rej.append(Finding.of("multi_frame",
                              "it holds %(frames)s frames (a series or a moving sequence), not a "
                              "single radiograph.", frames=n_frames))
    if rej:
        raise NotAChestXray(rej, lead=N_("This is not a frontal chest X-ray:"))
    return warn


def _box(g: np.ndarray, n: int) -> np.ndarray:
    """Box-filter a 2-D float array down to n x n."""
    img = Image.fromarray(np.clip(g, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(img.resize((n, n), Image.BOX), dtype=np.float64)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation, 0 when either side is constant."""
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-9 else 0.0


def measure(decoded: DecodedImage) -> dict[str, float]:
    """The features the checks use, measured on the image squashed to 224 x 224."""
    g = np.asarray(decoded.at_dataset_size(), dtype=np.float64)
    w, h = decoded.original_size
    p1, p99 = np.percentile(g, [1, 99])
    hist = np.bincount(g.astype(np.uint8).ravel(), minlength=256)
    coarse = _box(g, 56)
    coarse_corr = _corr(coarse[:, :-1], coarse[:, 1:]) if coarse.std() > 0.5 else 1.0
    half = _box(g, DATASET_SIZE // 2)  # at half size pixel noise cannot pass for text edges
    edges = float((np.abs(np.diff(half, axis=1)) > 80).mean()
                  + (np.abs(np.diff(half, axis=0)) > 80).mean())
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    noise = float(np.sqrt(np.pi / 2) * np.abs(lap).mean() / 6)  # Immerkaer's estimator
    coarse16 = _box(g, 16)
    return {
        "width": float(w),
        "height": float(h),
        "aspect": float(max(w, h) / max(1, min(w, h))),
        "colorfulness": float(decoded.colorfulness),
        "mean": float(g.mean()),
        "std": float(g.std()),
        "range": float(p99 - p1),
        "mode_fraction": float(hist.max() / g.size),
        "extreme_fraction": float((g <= 20).mean() + (g >= 235).mean()),
        "coarse_corr": coarse_corr,
        "edge_fraction": edges,
        "noise": noise,
        "layout": _corr(coarse16, CHEST_TEMPLATE),
        "layout_sideways": max(_corr(coarse16, t) for t in SIDEWAYS_TEMPLATES),
    }


def _graphic_reason(f: dict[str, float]) -> str | None:
    """Why the image looks drawn or photographed rather than X-rayed (what was measured)."""
    if f["mode_fraction"] > MAX_MODE_FRACTION:
        return N_("large areas are one flat shade, as in graphics and screenshots.")
    if f["extreme_fraction"] > MAX_EXTREME_FRACTION:
        return N_("most of it is pure black or pure white, as in documents and drawings.")
    if f["edge_fraction"] > MAX_EDGE_FRACTION:
        return N_("it has many sharp, high-contrast edges (as in text, line art or photographs); "
                "X-rays have soft edges.")
    return None


def _layout_rejection(f: dict[str, float]) -> Finding | None:
    """Refuse an inverted, sideways or chest-less coarse layout (None: upright chest layout)."""
    if f["layout"] < INVERTED_LAYOUT:
        return Finding.of("inverted_image", "it looks like an inverted (negative) image; "
                                            "bones must appear bright.")
    sideways = f["layout_sideways"] > f["layout"]
    if (f["layout_sideways"] >= ROTATED_LAYOUT
            and f["layout_sideways"] - f["layout"] >= ROTATED_MARGIN):
        return Finding.of("rotated_image", "it looks turned on its side (rotated by 90 "
                                           "degrees): send it upright, with the neck at the top.")
    if sideways or f["layout"] < MIN_LAYOUT:
        return Finding.of("not_chest_layout",
                          "it does not have the layout of a frontal chest X-ray.")
    return None


def cheap_checks(decoded: DecodedImage) -> CheckResult:
    """Run the fast image checks: rejections for non-X-rays, warnings for poor quality."""
    f = measure(decoded)
    rej: list[Finding] = []
    warn: list[Finding] = []
    short = min(f["width"], f["height"])
    if short < MIN_SIDE:
        rej.append(Finding.of("image_too_small", "the image is only %(width)s x %(height)s pixels.",
                              width=int(f["width"]), height=int(f["height"])))
    if f["aspect"] > MAX_ASPECT:
        rej.append(Finding.of("extreme_aspect_ratio",
                              "its shape is far too elongated (%(ratio)s : 1).",
                              ratio=f"{f['aspect']:.1f}"))
    if f["colorfulness"] > MAX_COLORFULNESS:
        rej.append(Finding.of("colour_image", "it is a colour picture, not a grayscale radiograph."))
    blank = f["std"] < MIN_STD or f["range"] < MIN_RANGE
    if blank:
        rej.append(Finding.of("blank_image", "the image is blank or almost uniform."))
    else:
        if f["coarse_corr"] < MIN_COARSE_CORR:
            rej.append(Finding.of("noise_image", "the image looks like noise or a texture."))
        graphic = _graphic_reason(f)
        if graphic:
            rej.append(Finding.of("document_or_graphic", graphic))
        layout = _layout_rejection(f)
        if layout:
            rej.append(layout)
    if rej:
        return CheckResult(rejections=rej, features=f)

    if short < WARN_MIN_SIDE:
        warn.append(Finding.of("low_resolution",
                               "Low resolution (%(width)s x %(height)s pixels): details may be lost.",
                               width=int(f["width"]), height=int(f["height"])))
    if f["aspect"] > WARN_ASPECT:
        warn.append(Finding.of("unusual_aspect_ratio", "Unusual image shape: it is squashed to a "
                                                    "square for the model; check the cropping."))
    if f["std"] < WARN_STD or f["range"] < WARN_RANGE:
        warn.append(Finding.of("low_contrast", "Low contrast image: the result is less reliable."))
    if f["noise"] > WARN_NOISE:
        warn.append(Finding.of("noisy", "Noisy image: the result is less reliable."))
    if f["mean"] < WARN_DARK_MEAN:
        warn.append(Finding.of("underexposed", "Very dark image: the result is less reliable."))
    elif f["mean"] > WARN_BRIGHT_MEAN:
        warn.append(Finding.of("overexposed", "Very bright image: the result is less reliable."))
    if f["layout"] < WARN_LAYOUT:
        warn.append(Finding.of("unusual_layout", "The image does not look like a typical frontal "
                                              "chest X-ray: check view, rotation and cropping."))
    if decoded.bit_depth > 8:
        warn.append(Finding.of("rescaled_bit_depth",
                               "%(bits)s-bit image rescaled to 8 bits for the model.",
                               bits=decoded.bit_depth))
    for note in decoded.notes:
        warn.append(Finding("decoder_note", note[:1].upper() + note[1:] + "."))
    warn.extend(Finding(code, message) for code, message in decoded.warnings)
    return CheckResult(warnings=warn, features=f)


def ood_findings(distance: float, ood: dict) -> tuple[Finding | None, Finding | None]:
    """(rejection, warning) from the model's embedding distance and its OOD settings."""
    reject = ood.get("reject_distance")
    warn = ood.get("warn_distance")
    if reject is not None and distance > float(reject):
        return Finding.of("out_of_distribution", "the model finds it unlike the chest X-rays it "
                                              "was trained on."), None
    if warn is not None and distance > float(warn):
        return None, Finding.of("unusual_image", "The image is unusual compared with the training "
                                              "X-rays: interpret the result with extra care.")
    return None, None
