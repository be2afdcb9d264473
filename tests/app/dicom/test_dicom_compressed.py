"""Compressed DICOM (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE) decodes.

pydicom's own test files (shipped with pydicom) for each syntax it has, and a real fixture
X-ray compressed here in every syntax the receiver accepts (pydicom's RLE encoder,
pylibjpeg-openjpeg for JPEG 2000, dcmtk's dcmcjpeg/dcmcjpls for the JPEG family: those
cases are skipped, with the reason, where dcmtk is not installed). The header rules and the
declared-size limit still come before any compressed pixel is decoded.
"""

import io

import numpy as np
import pydicom
import pytest
from apptools import XRAY_NORMAL, XRAY_PNEUMONIA
from bombs import pydicom_test_file, retag_dicom
from PIL import Image

from pneumo.app.dicom.samples import COMPRESSED_SYNTAXES, decoder_status
from pneumo.app.pipeline.checks import NotAChestXray, dicom_header_checks
from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.decoded import ImageTooLarge
from pneumo.bench.dicom_decode import SYNTAXES, EncoderMissing, compress, xray_dicom

LOSSY = {"jpeg_baseline", "jpeg_extended", "jpeg_ls_near_lossless", "j2k"}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode_image(data).gray, dtype=np.int16)


def test_every_compressed_syntax_has_a_decoder():
    assert decoder_status() == {uid: True for uid in COMPRESSED_SYNTAXES}


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_pydicom_lossless_files_match_the_uncompressed_original(name):
    ts = pydicom.dcmread(io.BytesIO(pydicom_test_file(name))).file_meta.TransferSyntaxUID
    assert ts.is_compressed
    original = pydicom_test_file("MR_small.dcm")
    assert np.array_equal(_pixels(pydicom_test_file(name)), _pixels(original))


@pytest.mark.parametrize("name,size", [
    ("SC_rgb_jpeg_dcmtk.dcm", (100, 100)),  # JPEG baseline, colour
    ("JPGExtended.dcm", (256, 1024)),  # JPEG extended, 12-bit
    ("JPEGLSNearLossless_16.dcm", (10, 50)),  # JPEG-LS near-lossless, 16-bit
    ("JPEG2000.dcm", (256, 1024)),  # JPEG 2000 (lossy), 16-bit
    ("SC_rgb_rle_16bit.dcm", (100, 100)),  # RLE, colour 16-bit
])
def test_pydicom_compressed_files_decode(name, size):
    decoded = decode_image(pydicom_test_file(name))
    assert decoded.format == "DICOM" and decoded.original_size == size
    assert np.asarray(decoded.gray).std() > 1  # a picture, not a blank


@pytest.fixture(scope="module")
def xray_files() -> dict[str, bytes | str]:
    """The NORMAL fixture X-ray as a DX DICOM in every syntax (or why it could not be made)."""
    img = Image.open(XRAY_NORMAL).convert("L")
    out: dict[str, bytes | str] = {}
    for name in SYNTAXES:
        try:
            out[name] = compress(xray_dicom(img, bits=8 if name == "jpeg_baseline" else 12), name)
        except EncoderMissing as exc:
            out[name] = str(exc)
    return out


@pytest.mark.parametrize("name", sorted(set(SYNTAXES) - {"explicit_le"}))
def test_real_xray_in_every_syntax_gets_the_same_answer(client, xray_files, name):
    data = xray_files[name]
    if isinstance(data, str):
        pytest.skip(f"cannot make {name}: {data}")
    ts = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts == SYNTAXES[name]
    ref = _pixels(xray_files["explicit_le"])
    got = _pixels(data)
    if name in LOSSY:
        assert float(np.abs(got - ref).mean()) < 3.0
    else:
        assert np.array_equal(got, ref)
    answers = []
    for body in (xray_files["explicit_le"], data):
        resp = client.post("/api/v1/predict", data={"image": (io.BytesIO(body), "x.dcm")},
                           content_type="multipart/form-data")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        answers.append(resp.get_json())
    assert answers[1]["label"] == answers[0]["label"]
    assert answers[1]["input"]["format"] == "DICOM"
    assert abs(answers[1]["probability"] - answers[0]["probability"]) < (
        0.05 if name in LOSSY else 1e-6)


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Make any pixel decoding fail loudly: these refusals must come from the header."""
    import pydicom.pixels

    def boom(*args, **kwargs):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", boom)


@pytest.mark.parametrize("name", ["j2k_lossless", "rle", "jpeg_ls_lossless"])
def test_header_rules_come_before_compressed_pixels(xray_files, no_pixel_decoding, name):
    data = xray_files[name]
    if isinstance(data, str):
        pytest.skip(f"cannot make {name}: {data}")
    with pytest.raises(NotAChestXray) as exc:
        decode_image(retag_dicom(data, Modality="CT"), dicom_header_check=dicom_header_checks)
    assert [r.code for r in exc.value.reasons] == ["modality_ct"]
    with pytest.raises(NotAChestXray):
        decode_image(retag_dicom(data, ViewPosition="LL"), dicom_header_check=dicom_header_checks)
    # 60000 x 60000 declared over a small codestream: refused before decoding (413)
    with pytest.raises(ImageTooLarge):
        decode_image(retag_dicom(data, Rows=60000, Columns=60000))


def test_pneumonia_xray_compressed_keeps_its_label(client):
    img = Image.open(XRAY_PNEUMONIA).convert("L")
    labels = []
    for name in ("explicit_le", "j2k_lossless", "rle"):
        body = compress(xray_dicom(img), name)
        resp = client.post("/api/v1/predict", data={"image": (io.BytesIO(body), "x.dcm")},
                           content_type="multipart/form-data")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        labels.append(resp.get_json()["label"])
    assert labels == ["PNEUMONIA"] * 3


def test_jpeg_lossless_process_14_decodes_exactly(tmp_path):
    import shutil
    import subprocess

    if shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmtk (dcmcjpeg) is not installed: apt-get install dcmtk")
    plain = xray_dicom(Image.open(XRAY_NORMAL).convert("L"))
    (tmp_path / "in.dcm").write_bytes(plain)
    subprocess.run(["dcmcjpeg", "+el", str(tmp_path / "in.dcm"), str(tmp_path / "out.dcm")],
                   check=True, capture_output=True, timeout=60)
    data = (tmp_path / "out.dcm").read_bytes()
    ts = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts == "1.2.840.10008.1.2.4.57" and ts in COMPRESSED_SYNTAXES
    assert np.array_equal(_pixels(data), _pixels(plain))


LOSSLESS = ("explicit_le", "rle", "jpeg_lossless_sv1", "jpeg_ls_lossless", "j2k_lossless")


@pytest.mark.parametrize("name", LOSSLESS)
def test_eight_bit_dicom_keeps_its_values_and_gives_the_png_answer(client, name):
    """8-bit pixels with no window keep their values: one image, one answer (issue 25)."""
    img = Image.open(XRAY_PNEUMONIA).convert("L")
    png = io.BytesIO()
    img.save(png, format="PNG")
    try:
        body = compress(xray_dicom(img, bits=8), name)
    except EncoderMissing as exc:
        pytest.skip(f"cannot make {name}: {exc}")
    assert np.array_equal(_pixels(body), np.asarray(img, dtype=np.int16))  # not stretched
    answers = []
    for data, file in ((png.getvalue(), "x.png"), (body, "x.dcm")):
        resp = client.post("/api/v1/predict", data={"image": (io.BytesIO(data), file)},
                           content_type="multipart/form-data")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        answers.append(resp.get_json())
    assert answers[1]["input"]["format"] == "DICOM" and answers[1]["input"]["bit_depth"] == 8
    assert abs(answers[1]["probability"] - answers[0]["probability"]) < 0.005


def test_six_bit_dicom_is_scaled_over_its_declared_range_not_its_own():
    """Fewer than 8 bits: 0..63 maps to 0..255 by the declared depth, not min..max."""
    from pneumo.app.dicom.samples import encode_dicom

    arr = np.full((64, 64), 10, dtype=np.uint8)
    arr[:, 32:] = 40
    got = _pixels(encode_dicom(arr, bits_stored=6, bits_allocated=8))
    assert set(np.unique(got)) == {round(10 * 255 / 63), round(40 * 255 / 63)}
