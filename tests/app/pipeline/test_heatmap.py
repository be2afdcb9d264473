"""CAM overlay PNGs."""

import io

import numpy as np
import pytest
from PIL import Image

from pneumo.app.pipeline import heatmap as hm


def _gray(w=300, h=200):
    return Image.fromarray(np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1)))


def test_colormap_runs_blue_to_red():
    lut = hm.colormap_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0, 2] > 100 and lut[0, 0] == 0  # dark blue
    assert lut[-1, 0] > 100 and lut[-1, 2] == 0  # dark red


def test_overlay_keeps_size_and_marks_hot_region():
    gray = _gray()
    cam = np.zeros((4, 4), np.float32)
    cam[0, 3] = 5.0  # top-right cell is the hottest
    out = hm.overlay(gray, cam)
    assert out.size == gray.size and out.mode == "RGB"
    a = np.asarray(out, dtype=np.int16)
    top_right, bottom_left = a[:30, -40:], a[-30:, :40]
    assert (top_right[..., 0] - top_right[..., 2]).mean() > 30  # reddish
    base = np.asarray(gray, dtype=np.int16)[-30:, :40]
    assert np.abs(bottom_left[..., 0] - base).max() <= 2  # cold regions stay plain gray


def test_flat_cam_leaves_image_readable():
    out = hm.overlay(_gray(), np.ones((7, 7), np.float32))
    assert out.size == (300, 200)


def test_rendered_heatmap_display_size_keeps_aspect():
    gray = _gray(1200, 900)
    png = hm.render(hm.pack(gray, (1200, 900), np.random.default_rng(0).normal(size=(7, 7))))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    assert max(img.size) == hm.DISPLAY_MAX_SIDE
    assert abs(img.size[0] / img.size[1] - 1200 / 900) < 0.01


def test_display_uses_original_aspect_even_if_decoded_smaller():
    shown = hm.display_image(_gray(300, 250), (3000, 1500))
    assert shown.size == (448, 224)



def test_packed_heatmap_renders_like_the_direct_overlay():
    gray = _gray(300, 250)
    cam = np.random.default_rng(1).normal(size=(14, 14)).astype(np.float32)
    blob = hm.pack(gray, (1200, 1000), cam)
    assert len(blob) < 300 * 250  # compact: CAM + compressed small grayscale
    direct = hm.png_bytes(hm.overlay(hm.display_image(gray, (1200, 1000)), cam))
    rendered = hm.render(blob)
    a = np.asarray(Image.open(io.BytesIO(rendered)))
    b = np.asarray(Image.open(io.BytesIO(direct)))
    assert a.shape == b.shape == (373, 448, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert hm.render(rendered) == rendered  # PNGs of older histories pass through
    with pytest.raises(ValueError):
        hm.render(b"junk")
