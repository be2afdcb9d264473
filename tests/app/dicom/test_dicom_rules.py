"""DICOM files that are not frontal chest X-rays are refused from their header, before decoding.

Also: deflate bombs, declared sizes beyond the limit, a compressed frame that does not match
its header, and an unusable display window (WindowWidth 0, negative, NaN).
"""

import io

import numpy as np
import pydicom
import pytest
from apptools import dicom_bytes, encode, gray_array
from bombs import (
    DEFLATED_TS,
    deflated_dicom_bomb,
    element_bomb,
    pydicom_test_file,
    retag_dicom,
    window_width_dicom,
    xray_dicom,
)
from PIL import Image

from pneumo.app.pipeline.checks import NotAChestXray, dicom_header_checks
from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.decoded import ImageTooLarge, UnsupportedImage

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")  # 'Thorax', 'll'

DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def _post(client, data: bytes):
    return client.post("/api/v1/predict", data={"image": (io.BytesIO(data), "image.dcm")},
                       content_type="multipart/form-data")


def _refusal(resp, reason: str) -> dict:
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] == "not_a_chest_xray"
    assert reason in [r["code"] for r in err["reasons"]]
    assert err["message"].startswith("This is not a frontal chest X-ray:")
    return err


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Make any pixel decoding fail loudly: a header refusal must not need it."""
    import pydicom.pixels

    def boom(*args, **kwargs):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", boom)


@pytest.mark.parametrize("modality,words", [
    ("CT", "CT scan"), ("MR", "MRI scan"), ("NM", "nuclear medicine"), ("US", "ultrasound"),
    ("PT", "PET scan"), ("XA", "angiography"), ("SR", "structured report"), ("OT", "another"),
    ("MG", "mammogram"), ("ZZ", "another kind"),
])
def test_other_modalities_are_refused(client, no_pixel_decoding, modality, words):
    err = _refusal(_post(client, xray_dicom(Modality=modality)), f"modality_{modality.lower()}")
    assert words in err["message"] and f"modality {modality}" in err["message"]
    assert client.get("/api/v1/history").get_json()["total"] == 0


@pytest.mark.parametrize("name,reason", [
    ("CT_small.dcm", "modality_ct"), ("MR_small.dcm", "modality_mr"),
    ("JPEG2000.dcm", "modality_nm"),
])
def test_pydicom_test_files_are_refused(client, no_pixel_decoding, name, reason):
    _refusal(_post(client, pydicom_test_file(name)), reason)


@pytest.mark.parametrize("attrs", [
    {"Modality": "DX"},
    {"Modality": "CR", "SOPClassUID": CR_STORAGE},
    {"Modality": "DX", "ViewPosition": "PA", "BodyPartExamined": "CHEST"},
    {"Modality": "CR", "ViewPosition": "AP", "BodyPartExamined": "THORAX"},
], ids=["dx", "cr", "dx-pa-chest", "cr-ap-thorax"])
def test_frontal_chest_radiographs_are_accepted(client, attrs):
    r = _post(client, xray_dicom(**attrs))
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["input"]["format"] == "DICOM"
    assert not {w["code"] for w in body["quality"]} & {"dicom_modality_missing",
                                                       "unknown_body_part"}


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL", "ll"])
def test_lateral_views_are_refused(client, no_pixel_decoding, view):
    err = _refusal(_post(client, xray_dicom(ViewPosition=view)), "lateral_view")
    assert "lateral view" in err["message"] and "frontal" in err["message"]


def test_lateral_from_the_view_code_sequence(no_pixel_decoding):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "399067008", "SCT"
    item.CodeMeaning = "lateral"
    with pytest.raises(NotAChestXray) as exc:
        decode_image(xray_dicom(ViewCodeSequence=[item]), dicom_header_check=dicom_header_checks)
    assert [r.code for r in exc.value.reasons] == ["lateral_view"]


def test_oblique_view_refused_decubitus_warned(client):
    _refusal(_post(client, xray_dicom(ViewPosition="RLO")), "oblique_view")
    d = decode_image(xray_dicom(ViewPosition="LLD"), dicom_header_check=dicom_header_checks)
    assert [c for c, _ in d.warnings] == ["decubitus_view"]


@pytest.mark.parametrize("part", ["KNEE", "SKULL", "ABDOMEN", "HAND", "C SPINE"])
def test_other_body_parts_are_refused(client, no_pixel_decoding, part):
    err = _refusal(_post(client, xray_dicom(BodyPartExamined=part)), "body_part_not_chest")
    assert part in err["message"]


@pytest.mark.parametrize("part", ["CHEST", "Thorax", "LUNG", "CHEST_ABDOMEN", "TÓRAX", "BRUST"])
def test_chest_body_parts_pass(part):
    d = decode_image(xray_dicom(BodyPartExamined=part), dicom_header_check=dicom_header_checks)
    assert d.warnings == []


def test_unknown_body_part_passes_with_a_warning(client):
    r = _post(client, xray_dicom(BodyPartExamined="BODY XR 2"))
    assert r.status_code == 200, r.get_data(as_text=True)
    warn = {w["code"]: w["message"] for w in r.get_json()["quality"]}
    assert "BODY XR 2" in warn["unknown_body_part"]


def test_multi_frame_is_refused(client, no_pixel_decoding):
    err = _refusal(_post(client, xray_dicom(NumberOfFrames=12)), "multi_frame")
    assert "12 frames" in err["message"]


def test_for_processing_images_are_refused(client, no_pixel_decoding):
    _refusal(_post(client, xray_dicom(SOPClassUID=DX_FOR_PROCESSING)), "for_processing_image")


def test_sop_class_of_another_modality_is_refused(no_pixel_decoding):
    with pytest.raises(NotAChestXray) as exc:  # says DX, but is stored as a CT image
        decode_image(xray_dicom(SOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
                     dicom_header_check=dicom_header_checks)
    assert [r.code for r in exc.value.reasons] == ["modality_ct"]


def test_missing_modality_is_accepted_with_a_warning(client):
    r = _post(client, xray_dicom(Modality=None))
    assert r.status_code == 200, r.get_data(as_text=True)
    codes = {w["code"] for w in r.get_json()["quality"]}
    assert "dicom_modality_missing" in codes


def test_rules_are_only_applied_when_asked():
    """decode_image without a header check (training, evaluation) reads any DICOM."""
    assert decode_image(xray_dicom(Modality="CT")).format == "DICOM"


# --- WindowWidth 0 and other unusable windows ------------------------------------------

@pytest.mark.parametrize("width", [0.0, -10.0, float("nan"), 0.5])
def test_unusable_window_is_ignored(client, width):
    r = _post(client, window_width_dicom(width))
    assert r.status_code == 200, r.get_data(as_text=True)
    warn = {w["code"]: w["message"] for w in r.get_json()["quality"]}
    assert "full range" in warn["dicom_window_ignored"]
    shown = np.asarray(decode_image(window_width_dicom(width)).gray)
    np.testing.assert_array_equal(shown, np.asarray(decode_image(dicom_bytes()).gray))


def test_a_usable_window_is_still_applied():
    d = decode_image(xray_dicom(WindowCenter=1020.0, WindowWidth=2041.0),
                     dicom_header_check=dicom_header_checks)
    assert d.warnings == []
    assert np.abs(np.asarray(d.gray).astype(int) - gray_array().astype(int)).max() <= 3


# --- bounded memory -------------------------------------------------------------------

def test_deflated_bomb_is_refused_early(client):
    bomb = deflated_dicom_bomb(100)  # ~100 KB that inflates to 100 MB, declaring 1 x 1
    assert len(bomb) < 200_000
    r = _post(client, bomb)
    assert r.status_code == 413, r.get_data(as_text=True)
    err = r.get_json()["error"]
    assert err["code"] == "image_too_large" and "expand" in err["message"]


def test_deflated_header_bomb_is_refused():
    with pytest.raises(ImageTooLarge, match="header"):
        decode_image(deflated_dicom_bomb(100, where="private"))


def test_deflated_xray_still_decodes():
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    ds.file_meta.TransferSyntaxUID = DEFLATED_TS
    buf = io.BytesIO()
    ds.save_as(buf)
    assert len(buf.getvalue()) < len(dicom_bytes())
    d = decode_image(buf.getvalue(), dicom_header_check=dicom_header_checks)
    np.testing.assert_array_equal(np.asarray(d.gray), np.asarray(decode_image(dicom_bytes()).gray))


def test_header_with_too_many_elements_is_refused_before_parsing(monkeypatch):
    from pneumo.app.pipeline.dicom_elements import MAX_DICOM_ELEMENTS

    def no_parse(*args, **kwargs):
        raise AssertionError("header parsed")

    assert decode_image(element_bomb(1000)).original_size == (64, 64)
    monkeypatch.setattr(pydicom, "dcmread", no_parse)
    with pytest.raises(ImageTooLarge, match="too many elements"):
        decode_image(element_bomb(MAX_DICOM_ELEMENTS + 10))


def test_declared_size_beyond_the_limit_is_refused_before_decoding(no_pixel_decoding):
    data = xray_dicom(Rows=10000, Columns=9000)  # the pixel data stay 224 x 224
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(data, max_pixels=50_000_000, dicom_header_check=dicom_header_checks)
    assert "9000 x 10000" in exc.value.message and exc.value.status == 413


def test_compressed_frame_larger_than_declared_is_refused():
    from pneumo.app.dicom.samples import encode_dicom

    big = encode(Image.fromarray(gray_array()).resize((2000, 2000)), "JPEG", quality=80)
    data = encode_dicom(np.zeros((64, 64)), bits_stored=8, encapsulated=big,
                        transfer_syntax="1.2.840.10008.1.2.4.50")
    with pytest.raises(UnsupportedImage) as exc:
        decode_image(data)
    assert exc.value.code == "undecodable_image" and "2000 x 2000" in exc.value.message


def test_damaged_dicom_is_a_415_not_a_500(client):
    data = dicom_bytes()
    r = _post(client, data[: len(data) // 2])
    assert r.status_code == 415, r.get_data(as_text=True)
    r = _post(client, retag_dicom(dicom_bytes(), BitsAllocated=7))
    assert r.status_code in (415, 422), r.get_data(as_text=True)
