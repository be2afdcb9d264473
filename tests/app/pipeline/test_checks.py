"""Cheap "is it a chest X-ray?" checks and the OOD decision."""

import numpy as np
import pytest
from apptools import (
    SKIMAGE_PICTURES,
    XRAY_NORMAL,
    all_fixture_xrays,
    blank_png,
    document_png,
    encode,
    gray_array,
    noise_png,
    skimage_png,
)
from PIL import Image, ImageFilter
from tinydata import SHARED_DATA

from pneumo.app.pipeline.checks import (
    MIN_LAYOUT,
    ROTATED_LAYOUT,
    Finding,
    _layout_rejection,
    cheap_checks,
    measure,
    ood_findings,
)
from pneumo.app.pipeline.decode import decode_image

SHARED = SHARED_DATA.parent  # shared/data: chest_xray/train and external_val


def _check(data: bytes):
    return cheap_checks(decode_image(data))


def _codes(findings):
    return {f.code for f in findings}


@pytest.mark.parametrize("path", all_fixture_xrays(), ids=lambda p: p.name)
def test_real_xrays_pass(path):
    res = _check(path.read_bytes())
    assert res.ok, res.rejections


def _skimage_or_skip(name):
    try:
        return skimage_png(name)
    except Exception as exc:  # a sample that needs a download in this install
        pytest.skip(f"skimage.data.{name} not available offline: {exc}")


@pytest.mark.parametrize("name", SKIMAGE_PICTURES)
def test_skimage_pictures_rejected(name):
    res = _check(_skimage_or_skip(name))
    assert not res.ok, f"{name} passed the checks: {res.features}"


@pytest.mark.parametrize("data,code", [
    (noise_png(), "noise_image"),
    (blank_png(), "blank_image"),
    (blank_png(0), "blank_image"),
    (document_png(), "document_or_graphic"),
], ids=["noise", "blank", "black", "document"])
def test_synthetic_non_xrays(data, code):
    res = _check(data)
    assert code in _codes(res.rejections)


def test_colour_photo_rejected_as_colour():
    assert "colour_image" in _codes(_check(skimage_png("astronaut")).rejections)


def test_colour_tinted_xray_rejected_only_when_strongly_coloured():
    g = gray_array().astype(np.float32)
    faint = np.stack([g, g * 0.98, g * 0.95], axis=-1).clip(0, 255).astype(np.uint8)
    assert _check(encode(Image.fromarray(faint), "PNG")).ok


def test_extreme_aspect_ratio():
    img = Image.fromarray(gray_array()).resize((1200, 200))
    assert "extreme_aspect_ratio" in _codes(_check(encode(img, "PNG")).rejections)


def test_too_small():
    img = Image.fromarray(gray_array()).resize((20, 20))
    assert "image_too_small" in _codes(_check(encode(img, "PNG")).rejections)


def test_inverted_xray_rejected():
    inv = 255 - gray_array()
    res = _check(encode(Image.fromarray(inv), "PNG"))
    assert _codes(res.rejections) & {"inverted_image", "not_chest_layout"}


@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270],
                         ids=["rot90", "rot270"])
@pytest.mark.parametrize("path", all_fixture_xrays(), ids=lambda p: p.name)
def test_xray_on_its_side_refused_as_rotated(path, turn):
    res = _check(encode(Image.open(path).convert("L").transpose(turn), "PNG"))
    assert _codes(res.rejections) == {"rotated_image"}, res.features
    assert "on its side" in res.rejections[0].message


@pytest.mark.parametrize("layout,sideways,code", [
    (0.87, -0.15, None),  # a typical frontal chest
    (0.24, 0.19, None),  # the lowest real X-ray (tightly cropped): warned, not refused
    (MIN_LAYOUT - 0.01, -0.2, "not_chest_layout"),  # nothing of a chest layout
    (0.30, 0.35, "not_chest_layout"),  # fits sideways better, but weakly: no clear rotation
    (0.45, 0.56, "not_chest_layout"),  # round picture: sideways only slightly better
    (-0.10, 0.89, "rotated_image"),  # a chest on its side
    (0.20, ROTATED_LAYOUT, "rotated_image"),
    (-0.60, 0.10, "inverted_image"),
])
def test_layout_rules(layout, sideways, code):
    found = _layout_rejection({"layout": layout, "layout_sideways": sideways})
    assert (found.code if found else None) == code


@pytest.mark.slow
@pytest.mark.parametrize("rel", [
    "external_val/NORMAL/IM-0021-0001.jpeg",
    "chest_xray/train/PNEUMONIA/person26_bacteria_132.jpeg",
    "chest_xray/train/PNEUMONIA/person276_bacteria_1296.jpeg",
])
def test_tightly_cropped_real_xrays_warned_not_refused(rel):
    """The three real X-rays the old layout rule (< 0.3) refused (reports/refusals)."""
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"no shared data at {path}")
    res = _check(path.read_bytes())
    assert res.ok, res.rejections
    assert "unusual_layout" in _codes(res.warnings)
    assert MIN_LAYOUT < res.features["layout"] < 0.3


def _degraded(kind: str) -> bytes:
    g = gray_array().astype(np.float64)
    if kind == "low_contrast":
        g = (g - g.mean()) * 0.3 + g.mean()
    elif kind == "noisy":
        g = g + np.random.default_rng(1).normal(0, 25, g.shape)
    elif kind == "dark":
        g = g * 0.35
    elif kind == "small":
        return encode(Image.fromarray(gray_array()).resize((96, 80), Image.BICUBIC), "PNG")
    elif kind == "blurred":
        return encode(Image.fromarray(gray_array()).filter(ImageFilter.GaussianBlur(3)), "PNG")
    elif kind == "wide":
        return encode(Image.fromarray(gray_array()).resize((700, 300), Image.BICUBIC), "PNG")
    return encode(Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)), "PNG")


@pytest.mark.parametrize("kind,warning", [
    ("low_contrast", "low_contrast"),
    ("noisy", "noisy"),
    ("dark", "underexposed"),
    ("small", "low_resolution"),
    ("wide", "unusual_aspect_ratio"),
    ("blurred", None),
])
def test_low_quality_xrays_pass_with_warning(kind, warning):
    res = _check(_degraded(kind))
    assert res.ok, (kind, res.rejections, res.features)
    if warning:
        assert warning in _codes(res.warnings)


def test_sixteen_bit_noted():
    from apptools import png16_bytes

    res = _check(png16_bytes())
    assert res.ok and "rescaled_bit_depth" in _codes(res.warnings)


def test_measure_is_fast_and_complete():
    import time

    decoded = decode_image(XRAY_NORMAL.read_bytes())
    t = time.perf_counter()
    f = measure(decoded)
    assert time.perf_counter() - t < 0.5
    assert f["layout"] > 0.6 and f["colorfulness"] == 0.0


def test_ood_findings():
    ood = {"reject_distance": 100.0, "warn_distance": 50.0}
    assert ood_findings(10.0, ood) == (None, None)
    rej, warn = ood_findings(70.0, ood)
    assert rej is None and isinstance(warn, Finding) and warn.code == "unusual_image"
    rej, warn = ood_findings(170.0, ood)
    assert rej.code == "out_of_distribution" and warn is None
    assert ood_findings(1e9, {}) == (None, None)
