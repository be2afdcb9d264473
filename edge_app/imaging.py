"""The one preprocessing definition: any input image -> the model's input tensor.

Training, export, evaluation and the app all call this module, so that a model sees
exactly the same pixels in the clinic as it saw in training. It needs Pillow and numpy
(pydicom only for DICOM), never TensorFlow.

The recipe mirrors how the training data was made (see shared/data/PROVENANCE.md):
grayscale, the whole image squashed to 224 x 224 with bicubic resampling (aspect ratio not
kept, no crop), then -- only if the model's input is smaller -- squashed again to the
model's input size, and scaled to float32 in [0, 1].
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DATASET_SIZE = 224
"""Side of the square every training image was squashed to."""

DEFAULT_MAX_PIXELS = 80_000_000
"""Refuse images with more pixels than this (decompression bombs)."""

RECIPE = (
    "grayscale (ITU-R 601 luma; 16-bit and DICOM rescaled to 8-bit), EXIF orientation applied, "
    f"whole image squashed to {DATASET_SIZE}x{DATASET_SIZE} bicubic (aspect ratio not kept, no crop), "
    "then squashed bicubic to the model input size, float32 = uint8 / 255"
)


class ImageError(ValueError):
    """An input image that cannot be used; carries an HTTP status and a stable code."""

    status = 415
    code = "unsupported_image"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class UnsupportedImage(ImageError):
    """The bytes are not an image format we can decode (HTTP 415)."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (HTTP 413)."""

    status = 413
    code = "image_too_large"


@dataclass
class DecodedImage:
    """A decoded input: 8-bit grayscale pixels plus what we learnt while decoding."""

    gray: Image.Image
    format: str
    original_size: tuple[int, int]
    colorfulness: float = 0.0
    bit_depth: int = 8
    notes: list[str] = field(default_factory=list)


_MAGIC = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
]


def sniff_format(data: bytes) -> str | None:
    """Name the file type from its first bytes (never from its file name)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if _looks_like_bare_dicom(data):
        return "DICOM"
    return None


def _looks_like_bare_dicom(data: bytes) -> bool:
    """A DICOM data set written without the 128-byte preamble and 'DICM' (older devices).

    It starts with a little-endian tag of group 0x0002 (file meta) or 0x0008 (identifying),
    followed by an explicit VR (two capital letters) or an implicit 4-byte length.
    """
    if len(data) < 12 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return int.from_bytes(data[4:8], "little") < 1024


SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "DICOM")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linearly rescale any numeric array to 0..255 over its own min..max."""
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip(np.round((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _colorfulness(rgb: Image.Image) -> float:
    """Hasler-Suesstrunk colourfulness of a small copy (0 for a gray image)."""
    small = np.asarray(rgb.convert("RGB").resize((64, 64), Image.BILINEAR), dtype=np.float32)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _decode_dicom(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode a DICOM file: modality LUT, VOI LUT / window, MONOCHROME1 inverted."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as exc:  # pragma: no cover - pydicom is a base dependency
        raise UnsupportedImage("DICOM support is not installed.") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except Exception as exc:
        raise UnsupportedImage(
            "This DICOM file is damaged and could not be read.", code="undecodable_image"
        ) from exc
    if "PixelData" not in ds:
        raise UnsupportedImage("This DICOM file holds no image.", code="undecodable_image")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise ImageTooLarge(f"The image is too large ({cols} x {rows} pixels).")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(tsyntax, "name", str(tsyntax))
        raise UnsupportedImage(
            f"This DICOM file uses a compression this app cannot decode ({name}). "
            "Export it uncompressed or as PNG/JPEG and try again.",
            code="unsupported_dicom_compression",
        ) from exc
    notes = []
    if arr.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        arr = arr[0]  # multi-frame: the first frame
        notes.append("multi-frame DICOM: first frame used")
    elif arr.ndim == 4:
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour DICOM
        rgb = Image.fromarray(_to_uint8(arr)).convert("RGB")
        return DecodedImage(
            gray=rgb.convert("L"),
            format="DICOM",
            original_size=(cols, rows),
            colorfulness=_colorfulness(rgb),
            bit_depth=int(ds.get("BitsStored", 8)),
            notes=notes,
        )
    arr = apply_modality_lut(arr, ds)
    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    if has_voi:
        arr = apply_voi_lut(arr, ds)
    out = _to_uint8(arr)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return DecodedImage(
        gray=Image.fromarray(out, mode="L"),
        format="DICOM",
        original_size=(cols, rows),
        bit_depth=int(ds.get("BitsStored", 8)),
        notes=notes,
    )


def _pil_to_gray(img: Image.Image) -> tuple[Image.Image, float, int]:
    """Any Pillow image -> (8-bit L image, colourfulness, bit depth)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        depth = 16 if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255) else 8
        if depth == 8 and mode != "F":
            return Image.fromarray(arr.astype(np.uint8), mode="L"), 0.0, 8
        return Image.fromarray(_to_uint8(arr), mode="L"), 0.0, depth if mode != "F" else 32
    if mode == "1":
        return img.convert("L"), 0.0, 1
    if mode in ("L", "LA"):
        if mode == "LA":
            img = _flatten_alpha(img.convert("RGBA"))
        return img.convert("L"), 0.0, 8
    if mode == "P":
        img = img.convert("RGBA")
    if mode in ("RGBA", "LA", "PA") or img.mode == "RGBA":
        img = _flatten_alpha(img.convert("RGBA"))
    if img.mode == "CMYK":
        img = img.convert("RGB")
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return img.convert("L"), _colorfulness(img), 8


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    """Composite an RGBA image over black (radiographs have a dark background)."""
    bg = Image.new("RGB", rgba.size, (0, 0, 0))
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes (type detected from the bytes) into 8-bit grayscale."""
    if not data:
        raise UnsupportedImage("The file is empty.", code="empty_file")
    fmt = sniff_format(data)
    if fmt == "DICOM":
        return _decode_dicom(data, max_pixels)
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImage(
            "This file type is not supported. Please upload a chest X-ray as JPEG, PNG, BMP, "
            "TIFF or DICOM.",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The image is too large ({width} x {height} pixels). "
                    "Please upload a smaller export of the X-ray."
                )
            if fmt == "JPEG":
                # Decode at reduced scale: decoding dominates the request time.
                img.draft(img.mode if img.mode in ("L", "RGB") else None,
                          (DATASET_SIZE, DATASET_SIZE))
            # EXIF orientations 5-8 turn the image by 90 degrees: report the shown size.
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            img = ImageOps.exif_transpose(img)
            img.load()
            gray, colour, depth = _pil_to_gray(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("The image has too many pixels to be processed safely.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedImage(
            "The image file is damaged or incomplete and could not be read.",
            code="undecodable_image",
        ) from exc
    return DecodedImage(
        gray=gray,
        format=fmt,
        original_size=(width, height),
        colorfulness=colour,
        bit_depth=depth,
    )


def squash(gray: Image.Image, size: int) -> Image.Image:
    """Resize the whole image to size x size, bicubic, ignoring the aspect ratio."""
    if gray.size == (size, size):
        return gray
    return gray.resize((size, size), Image.BICUBIC)


INTENSITY_METHODS = ("none", "equalize", "stretch")
"""Intensity normalisations a model may ask for (metadata key ``intensity``)."""


def normalize_intensity(u8: np.ndarray, method: str = "none") -> np.ndarray:
    """Per-image intensity normalisation of uint8 pixels (..., H, W) at the model's input size.

    'none' leaves the pixels alone; 'equalize' is histogram equalisation (the cumulative
    histogram mapped onto 0-255), which removes most exposure, contrast and gamma
    differences between X-ray units; 'stretch' maps the 1st-99th percentile onto 0-255.
    """
    if method == "none":
        return u8
    if method not in INTENSITY_METHODS:
        raise ValueError(f"unknown intensity normalisation {method!r}; use {INTENSITY_METHODS}")
    if u8.ndim > 2:  # a batch: each image on its own
        return np.stack([normalize_intensity(im, method) for im in u8])
    if method == "equalize":
        hist = np.bincount(u8.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        lo = cdf[np.flatnonzero(hist)[0]]  # pixels at the darkest level map to 0
        span = max(int(cdf[-1] - lo), 1)
        lut = np.clip(np.round((cdf - lo) * 255.0 / span), 0, 255).astype(np.uint8)
        return lut[u8]
    lo, hi = np.percentile(u8, [1.0, 99.0])
    scaled = (u8.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_model_input(gray: Image.Image, size: int, intensity: str = "none") -> np.ndarray:
    """8-bit grayscale image -> float32 array (size, size, 1) in [0, 1].

    `intensity` is the model's normalisation (its metadata ``intensity``), applied after
    the squash to the input size, exactly as in training.
    """
    img = squash(gray, DATASET_SIZE)
    if size != DATASET_SIZE:
        img = squash(img, size)
    u8 = normalize_intensity(np.asarray(img, dtype=np.uint8), intensity)
    return (u8.astype(np.float32) / 255.0)[..., None]


def preprocess_bytes(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
                     ) -> tuple[np.ndarray, DecodedImage]:
    """Image bytes -> (model input (size, size, 1), decoded image info)."""
    decoded = decode_image(data, max_pixels=max_pixels)
    return to_model_input(decoded.gray, size), decoded


def preprocess_path(path: str | Path, size: int) -> np.ndarray:
    """Image file -> model input (size, size, 1) float32 in [0, 1]."""
    return preprocess_bytes(Path(path).read_bytes(), size)[0]


def load_uint8(path: str | Path, size: int) -> np.ndarray:
    """Image file -> uint8 array (size, size): the training pipeline's cached form."""
    x = preprocess_path(path, size)
    return np.round(x[..., 0] * 255.0).astype(np.uint8)
