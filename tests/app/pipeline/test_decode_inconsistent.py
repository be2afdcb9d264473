"""Files whose header disagrees with their pixels, and files with more than one image
(issue 25's decision table: refuse, or normalise with a warning). Real files: the fixture
X-ray written as DICOM with pydicom, TIFF and animated PNG with Pillow."""

import io
import logging

import numpy as np
import pydicom
import pytest
from apptools import XRAY_NORMAL, multipart
from bombs import retag_dicom, xray_dicom
from PIL import Image

from pneumo.app.pipeline.checks import dicom_header_checks
from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.decoded import NotAChestXray, UnsupportedImage


def _decode(data: bytes):
    return decode_image(data, dicom_header_check=dicom_header_checks)


def _codes(decoded) -> list[str]:
    return [code for code, _ in decoded.warnings]


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_photometric_on_one_sample_is_read_as_gray_with_a_warning(photometric):
    plain = np.asarray(_decode(xray_dicom()).gray)
    decoded = _decode(xray_dicom(PhotometricInterpretation=photometric))
    assert "dicom_photometric_mismatch" in _codes(decoded)
    assert np.array_equal(np.asarray(decoded.gray), plain)


def test_palette_colour_is_refused():
    with pytest.raises(NotAChestXray) as exc:
        _decode(xray_dicom(PhotometricInterpretation="PALETTE COLOR"))
    assert [r.code for r in exc.value.reasons] == ["palette_color"]


def test_zero_frames_is_read_as_its_one_frame_with_a_warning():
    decoded = _decode(xray_dicom(NumberOfFrames=0))
    assert "dicom_frames_mismatch" in _codes(decoded)
    assert decoded.original_size == Image.open(XRAY_NORMAL).size


def test_pixel_data_longer_than_declared_is_refused():
    ds = pydicom.dcmread(io.BytesIO(xray_dicom()))
    ds.PixelData = ds.PixelData * 3
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(UnsupportedImage) as exc:
        _decode(buf.getvalue())
    assert exc.value.status == 415 and exc.value.code == "dicom_pixel_mismatch"


def test_a_dicomdir_class_is_refused():
    data = retag_dicom(xray_dicom(), SOPClassUID=pydicom.uid.MediaStorageDirectoryStorage)
    with pytest.raises(NotAChestXray) as exc:
        _decode(data)
    assert "dicomdir" in [r.code for r in exc.value.reasons]


def _tiff(*pages: Image.Image) -> bytes:
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=list(pages[1:]))
    return buf.getvalue()


def test_a_tiff_with_a_thumbnail_page_is_read_from_its_large_page():
    img = Image.open(XRAY_NORMAL).convert("L").resize((600, 500))
    for order in ((img, img.resize((100, 80))), (img.resize((100, 80)), img)):
        decoded = _decode(_tiff(*order))
        assert decoded.original_size == (600, 500)
        assert any("thumbnails" in n for n in decoded.notes)


def test_a_tiff_with_two_images_and_an_animated_png_are_refused_like_multi_frame_dicom():
    img = Image.open(XRAY_NORMAL).convert("L")
    apng = io.BytesIO()
    img.save(apng, format="PNG", save_all=True, append_images=[img.rotate(5)])
    for data in (_tiff(img, img.rotate(5)), apng.getvalue(),
                 retag_dicom(xray_dicom(), NumberOfFrames=2)):
        with pytest.raises(NotAChestXray) as exc:
            _decode(data)
        assert [r.code for r in exc.value.reasons] == ["multi_frame"]


def test_damaged_compressed_dicom_says_damaged_and_logs_one_warning(caplog):
    from pneumo.bench.dicom_decode import compress
    from pneumo.bench.dicom_decode import xray_dicom as dx

    data = bytearray(compress(dx(Image.open(XRAY_NORMAL)), "rle"))
    data[-3000:-100] = bytes(2900)
    with caplog.at_level(logging.INFO), pytest.raises(UnsupportedImage) as exc:
        _decode(bytes(data))
    assert exc.value.code == "undecodable_image" and "damaged" in exc.value.message
    noisy = [r for r in caplog.records if r.name.startswith("pydicom")]
    ours = [r for r in caplog.records if r.name == "pneumo.app.pipeline.dicom_decode"
            and r.levelno == logging.WARNING]
    assert noisy == [] and len(ours) == 1 and "\n" not in ours[0].getMessage()


def test_a_file_name_that_is_not_utf8_gets_a_message_that_fits(client):
    body, ctype = multipart({}, {"image": ("x.jpeg", XRAY_NORMAL.read_bytes())})
    bad = body.replace(b'filename="x.jpeg"', b'filename="\xff\xfe\xc3.jpeg"')
    assert bad != body
    r = client.post("/api/v1/predict", data=bad, content_type=ctype)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "unreadable_upload"
    r = client.post("/api/v1/predict", data=body, content_type=ctype)
    assert r.status_code == 200
