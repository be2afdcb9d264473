"""pneumo.app.pipeline.preprocess on odd inputs: every path ends in the same (S, S, 1) float32 tensor."""

import io

import numpy as np
import pytest
from apptools import XRAY_NORMAL, all_fixture_xrays, encode, gray_array, png16_bytes
from PIL import Image

from pneumo.app.pipeline.decode import decode_image, sniff_format
from pneumo.app.pipeline.decoded import DATASET_SIZE, ImageTooLarge, UnsupportedImage
from pneumo.app.pipeline.preprocess import preprocess_bytes, squash, to_model_input
from pneumo.app.web.state import get_state


def _close(a, b, tol):
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    assert diff.max() <= tol, f"max difference {diff.max()}"


@pytest.mark.parametrize("path", all_fixture_xrays(), ids=lambda p: p.name)
def test_training_images_pass_through_unchanged(path):
    data = path.read_bytes()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0
    decoded = decode_image(data)
    assert decoded.format == "JPEG" and decoded.original_size == (224, 224)
    x = to_model_input(decoded.gray, DATASET_SIZE)
    assert x.shape == (224, 224, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], expected)


@pytest.mark.parametrize("size", [224, 64, 148])
def test_output_shape_dtype_range(size):
    x, decoded = preprocess_bytes(XRAY_NORMAL.read_bytes(), size)
    assert x.shape == (size, size, 1)
    assert x.dtype == np.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert decoded.bit_depth == 8 and decoded.colorfulness == 0.0


def test_png_16_bit():
    decoded = decode_image(png16_bytes())
    assert decoded.format == "PNG" and decoded.bit_depth == 16
    g = gray_array().astype(np.float64)
    expected = np.round((g - g.min()) * 255.0 / (g.max() - g.min()))  # rescaled over its range
    _close(decoded.gray, expected, 1)


def test_rgba_flattened_over_black():
    g = gray_array()
    alpha = np.full_like(g, 255)
    alpha[:, :50] = 0
    rgba = Image.merge("RGBA", [Image.fromarray(g)] * 3 + [Image.fromarray(alpha)])
    decoded = decode_image(encode(rgba, "PNG"))
    out = np.asarray(decoded.gray)
    assert out[:, :50].max() == 0
    _close(out[:, 50:], g[:, 50:], 1)
    assert decoded.colorfulness < 1.0


def test_palette_image():
    g = Image.fromarray(gray_array())
    pal = g.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    decoded = decode_image(encode(pal, "PNG"))
    _close(decoded.gray, g, 12)


def test_cmyk_jpeg():
    g = Image.fromarray(gray_array())
    cmyk = g.convert("RGB").convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = decode_image(data)
    assert decoded.gray.mode == "L" and decoded.gray.size == (224, 224)
    _close(decoded.gray, g, 25)


@pytest.mark.parametrize("orientation,expect", [(6, "rot270"), (8, "rot90"), (3, "rot180")])
def test_exif_orientation_applied(orientation, expect):
    a = np.zeros((100, 200), np.uint8)
    a[:30, :60] = 255  # bright block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data)
    want = {"rot270": np.rot90(a, -1), "rot90": np.rot90(a, 1), "rot180": np.rot90(a, 2)}[expect]
    assert decoded.gray.size == (want.shape[1], want.shape[0])
    assert decoded.original_size == decoded.gray.size
    _close(decoded.gray, want, 40)


def test_tiny_image():
    data = encode(Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4), "PNG")
    x, decoded = preprocess_bytes(data, 224)
    assert decoded.original_size == (8, 8)
    assert x.shape == (224, 224, 1) and x.dtype == np.float32


def test_huge_jpeg_decoded_with_draft():
    big = Image.fromarray(gray_array()).resize((6000, 5000), Image.BILINEAR)
    data = encode(big, "JPEG", quality=80)
    decoded = decode_image(data)
    assert decoded.original_size == (6000, 5000)
    assert decoded.gray.size[0] <= 1500, "JPEG draft mode should decode at reduced scale"
    assert min(decoded.gray.size) >= DATASET_SIZE
    x = to_model_input(decoded.gray, 224)
    ref = to_model_input(Image.fromarray(gray_array()), 224)
    assert float(np.abs(x - ref).mean()) < 0.03


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PNG"])
def test_lossless_formats_exact(fmt):
    g = gray_array()
    decoded = decode_image(encode(Image.fromarray(g), fmt))
    assert decoded.format == fmt
    np.testing.assert_array_equal(np.asarray(decoded.gray), g)


def test_tiff_16_bit():
    g = gray_array()
    data = encode(Image.fromarray(g.astype(np.uint16) * 257), "TIFF")
    decoded = decode_image(data)
    assert decoded.bit_depth == 16
    x = to_model_input(decoded.gray, 224)
    assert x.shape == (224, 224, 1)


def test_rgb_colour_measured():
    import skimage.data

    decoded = decode_image(encode(Image.fromarray(skimage.data.astronaut()), "PNG"))
    assert decoded.colorfulness > 30


def test_type_from_bytes_not_name():
    assert sniff_format(XRAY_NORMAL.read_bytes()) == "JPEG"
    assert sniff_format(b"GIF89a....") == "GIF"
    assert sniff_format(b"hello world") is None


@pytest.mark.parametrize("data,code", [
    (b"", "empty_file"),
    (b"just some text, not an image\n" * 10, "unsupported_image"),
    (b"GIF89a" + b"\0" * 100, "unsupported_image"),
])
def test_unsupported(data, code):
    with pytest.raises(UnsupportedImage) as exc:
        decode_image(data)
    assert exc.value.code == code and exc.value.status == 415


def test_truncated_jpeg():
    data = XRAY_NORMAL.read_bytes()
    with pytest.raises(UnsupportedImage) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.status == 415


def test_pixel_limit():
    bomb = encode(Image.new("L", (12000, 12000), 0), "PNG")
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(bomb, max_pixels=50_000_000)
    assert exc.value.status == 413


def test_dicom_without_preamble_is_still_read():
    from apptools import dicom_bytes

    from pneumo.app.pipeline.decode import decode_image, sniff_format

    full = dicom_bytes()
    assert full[128:132] == b"DICM"
    bare = full[132:]  # the data set as older devices write it: no preamble, no 'DICM'
    assert sniff_format(bare) == "DICOM"
    a = np.asarray(decode_image(full).gray)
    b = np.asarray(decode_image(bare).gray)
    np.testing.assert_array_equal(a, b)


def test_random_bytes_starting_like_a_tag_are_refused():
    from pneumo.app.pipeline.decode import decode_image
    from pneumo.app.pipeline.decoded import ImageError

    with pytest.raises(ImageError):  # a clear 415, never a crash
        decode_image(b"\x08\x00\x05\x00" + bytes(range(256)) * 4)


# --- bounded memory: large images are reduced first, never copied full-size as floats ----

def _reference_gray(a: np.ndarray) -> np.ndarray:
    """What the full-size path gives: min..max to 8 bits, squashed to 224."""
    a = a.astype(np.float64)
    u8 = np.round((a - a.min()) * 255.0 / (a.max() - a.min())).astype(np.uint8)
    return np.asarray(Image.fromarray(u8).resize((DATASET_SIZE, DATASET_SIZE), Image.BICUBIC))


def _big_gray(side: int = 2000) -> np.ndarray:
    return np.asarray(Image.fromarray(gray_array()).resize((side, side), Image.BILINEAR))


@pytest.mark.parametrize("width,height,factor", [
    (224, 224, 1), (895, 4000, 1), (896, 896, 2), (2000, 2500, 4), (7000, 7000, 15),
    (40000, 1000, 4), (1000, 9000, 2),
])
def test_reduce_factor(width, height, factor):
    from pneumo.app.pipeline.memory import WORK_MAX_PIXELS, reduce_factor

    f = reduce_factor(width, height)
    assert f == factor
    assert (width // f) * (height // f) <= WORK_MAX_PIXELS


@pytest.mark.parametrize("kind", ["png16", "float_tiff", "int32_tiff", "rgba", "palette", "la"])
def test_large_images_are_reduced_first(kind):
    g = _big_gray()
    if kind == "png16":
        data, depth = encode(Image.fromarray(g.astype(np.uint16) * 257), "PNG"), 16
    elif kind == "float_tiff":
        data, depth = encode(Image.fromarray(g.astype(np.float32) / 7.0), "TIFF"), 32
    elif kind == "int32_tiff":
        data, depth = encode(Image.fromarray(g.astype(np.int32) * 100), "TIFF"), 16
    elif kind == "rgba":
        data, depth = encode(Image.fromarray(g).convert("RGBA"), "PNG"), 8
    elif kind == "palette":
        data, depth = encode(Image.fromarray(g).convert("P"), "PNG"), 8
    else:
        data, depth = encode(Image.fromarray(g).convert("LA"), "PNG"), 8
    decoded = decode_image(data)
    assert decoded.original_size == (2000, 2000) and decoded.bit_depth == depth
    assert decoded.gray.size == (500, 500) and decoded.gray.mode == "L"
    got = np.asarray(to_model_input(decoded.gray, DATASET_SIZE)[..., 0] * 255.0)
    diff = np.abs(got - _reference_gray(g).astype(np.float64))
    assert diff.mean() < 1.0 and diff.max() <= 12


def test_reduced_image_keeps_exif_orientation():
    a = np.zeros((1000, 2000), np.uint8)
    a[:300, :600] = 255  # bright block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(Image.fromarray(a), "PNG", exif=exif.tobytes()))
    assert decoded.original_size == (1000, 2000) and decoded.gray.size == (500, 1000)
    want = np.rot90(a, -1)[::2, ::2]
    _close(decoded.gray, want, 1)


def test_large_16_bit_dicom_is_reduced_first():
    from apptools import dicom_bytes

    from pneumo.app.dicom.samples import encode_dicom

    stored = _big_gray().astype(np.uint16) * 16
    decoded = decode_image(encode_dicom(stored, bits_stored=12))
    assert decoded.original_size == (2000, 2000) and decoded.gray.size == (500, 500)
    got = np.asarray(squash(decoded.gray, DATASET_SIZE)).astype(int)
    assert np.abs(got - _reference_gray(stored).astype(int)).mean() < 1.0
    small = decode_image(dicom_bytes())  # at or below 895 px: not reduced
    assert small.gray.size == (224, 224)


def test_decode_gate_serialises_large_decodes():
    import threading
    import time

    from pneumo.app.pipeline.decoded import ImageError
    from pneumo.app.pipeline.memory import LARGE_DECODE_BYTES, DecodeGate

    gate = DecodeGate(1, timeout_s=0.2)
    inside = threading.Event()
    release = threading.Event()

    def hold():
        with gate.hold(LARGE_DECODE_BYTES):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(5)
    with gate.hold(LARGE_DECODE_BYTES - 1):  # small decodes never wait
        pass
    t0 = time.monotonic()
    with pytest.raises(ImageError) as exc, gate.hold(LARGE_DECODE_BYTES):
        pass
    assert time.monotonic() - t0 >= 0.2
    assert exc.value.status == 503 and exc.value.code == "server_busy"
    release.set()
    t.join()
    with gate.hold(10 * LARGE_DECODE_BYTES):  # free again
        pass


def test_large_decode_slots_come_from_the_config(model, tmp_path):
    from pneumo.app.config import DEFAULTS
    from pneumo.app.web.app import create_app

    app = create_app({"model": model, "data_dir": tmp_path})
    assert get_state(app).predictor.gate.slots == DEFAULTS["max_large_decodes"] == 1
    app2 = create_app({"model": model, "data_dir": tmp_path / "b", "max_large_decodes": 3})
    assert get_state(app2).predictor.gate.slots == 3
    with pytest.raises(ValueError):
        create_app({"model": model, "data_dir": tmp_path / "c", "max_large_decodes": 0})
