"""The one preprocessing definition: any input image -> the model's input tensor.

Training, export, evaluation and the app all call this module, so that a model sees
exactly the same pixels in the clinic as it saw in training. It needs Pillow and numpy
(pydicom only for DICOM), never TensorFlow.

The recipe mirrors how the training data was made (see shared/data/PROVENANCE.md):
grayscale, the whole image squashed to 224 x 224 with bicubic resampling (aspect ratio not
kept, no crop), then -- only if the model's input is smaller -- squashed again to the
model's input size, and scaled to float32 in [0, 1].

Memory is bounded for every input: sizes are checked before decoding, a large image is
box-reduced by an integer factor right after decoding (to a shorter side of at least 448 px,
in row bands, before any 16-bit/float/palette/alpha conversion), deflated DICOM is inflated
with a cap, and a `DecodeGate` lets only a few large decodes run at once.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.app.config import DEFAULT_MAX_PIXELS
from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.decoded import DATASET_SIZE, DecodedImage, squash

RECIPE = (
    "grayscale (ITU-R 601 luma; 16-bit and DICOM rescaled to 8-bit), EXIF orientation applied, "
    f"whole image squashed to {DATASET_SIZE}x{DATASET_SIZE} bicubic (aspect ratio not kept, no crop), "
    "then squashed bicubic to the model input size, float32 = uint8 / 255"
)


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
    img = squash(gray, DATASET_SIZE)  # the same image when `gray` is DecodedImage.at_dataset_size()
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
