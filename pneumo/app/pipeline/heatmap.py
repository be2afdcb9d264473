"""Class activation map overlay: where the model found the most evidence of pneumonia.

The model's ``cam`` output (logit units on a coarse grid over the squashed input) is
upsampled to the displayed image (original aspect ratio), normalised per image, coloured
with a jet-like colour map built in numpy (no matplotlib at runtime) and blended over the
grayscale X-ray. It shows where the model looked, not an outline of a lesion.

A prediction only `pack`s what the overlay needs (the CAM and a small grayscale copy, about
a millisecond); the PNG is `render`ed when someone asks for it, so drawing heatmaps costs
nothing on the request path.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

DISPLAY_MAX_SIDE = 448
"""Longest side of the preview / overlay images in pixels."""

MAX_ALPHA = 0.55
"""Opacity of the colour where the activation is highest."""

# Jet-like colour map: position -> (r, g, b)
_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_COLORS = np.array([
    [0, 0, 128],
    [0, 0, 255],
    [0, 255, 255],
    [255, 255, 0],
    [255, 0, 0],
    [128, 0, 0],
], dtype=np.float64)


def colormap_lut(n: int = 256) -> np.ndarray:
    """An (n, 3) uint8 colour lookup table from dark blue (low) to dark red (high)."""
    x = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(x, _STOPS, _COLORS[:, c]) for c in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


_LUT = colormap_lut()


def display_image(gray: Image.Image, original_size: tuple[int, int],
                  max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """The grayscale image at display size, with the original aspect ratio."""
    w, h = original_size
    scale = min(1.0, max_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if gray.size == size:
        return gray
    return gray.resize(size, Image.BICUBIC)


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """Scale a CAM to [0, 1] over its own range (all zeros when it is flat)."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32))
    lo, hi = float(cam.min()), float(cam.max())
    if hi - lo < 1e-6:
        return np.zeros_like(cam)
    return (cam - lo) / (hi - lo)


def overlay(gray: Image.Image, cam: np.ndarray) -> Image.Image:
    """Blend the coloured, upsampled CAM over a grayscale image (RGB result, same size)."""
    norm = normalise_cam(cam)
    up = Image.fromarray(norm.astype(np.float32), mode="F").resize(gray.size, Image.BILINEAR)
    a = np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)
    colour = _LUT[np.round(a * 255).astype(np.uint8)].astype(np.float32)
    base = np.asarray(gray.convert("L"), dtype=np.float32)[..., None]
    alpha = (MAX_ALPHA * a)[..., None]
    out = base * (1.0 - alpha) + colour * alpha
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), mode="RGB")


def png_bytes(img: Image.Image) -> bytes:
    """Encode an image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; ~15 % larger than level 6
    return buf.getvalue()


_PACK_MAGIC = b"PNEUMOCAM1"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEADER = struct.Struct("<6I")


def pack(gray: Image.Image, original_size: tuple[int, int], cam: np.ndarray) -> bytes:
    """The inputs of a heatmap overlay, compact, to be rendered later with `render`."""
    w, h = original_size
    scale = min(1.0, DISPLAY_MAX_SIDE / max(w, h))
    shown = (max(1, round(w * scale)), max(1, round(h * scale)))
    src = gray if max(gray.size) <= DISPLAY_MAX_SIDE else gray.resize(shown, Image.BILINEAR)
    cam = np.ascontiguousarray(cam, dtype="<f4")
    header = _HEADER.pack(shown[0], shown[1], src.width, src.height, *cam.shape)
    return _PACK_MAGIC + header + cam.tobytes() + zlib.compress(src.convert("L").tobytes(), 1)


def _unpack(blob: bytes) -> tuple[Image.Image, np.ndarray]:
    """(grayscale image at display size, CAM) from `pack`'s output."""
    if not blob.startswith(_PACK_MAGIC):
        raise ValueError("not a packed heatmap")
    off = len(_PACK_MAGIC)
    sw, sh, gw, gh, ch, cw = _HEADER.unpack_from(blob, off)
    off += _HEADER.size
    cam = np.frombuffer(blob, dtype="<f4", count=ch * cw, offset=off).reshape(ch, cw)
    gray = Image.frombytes("L", (gw, gh), zlib.decompress(blob[off + 4 * ch * cw:]))
    if gray.size != (sw, sh):
        gray = gray.resize((sw, sh), Image.BICUBIC)
    return gray, cam


def render(blob: bytes) -> bytes:
    """The overlay PNG from `pack`'s output.

    A PNG is passed through unchanged: histories written by versions that stored finished
    overlays (before heatmaps were packed) still hold PNGs, served by the heatmap route.
    """
    if blob.startswith(_PNG_MAGIC):
        return blob
    gray, cam = _unpack(blob)
    return png_bytes(overlay(gray, cam))


def render_image(blob: bytes) -> bytes | None:
    """The plain grayscale X-ray PNG (display size) from `pack`'s output; None for old PNGs."""
    if blob.startswith(_PNG_MAGIC):
        return None  # stored before packing existed: only the overlay is there
    return png_bytes(_unpack(blob)[0])
