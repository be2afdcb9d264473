"""Results back to the viewer: the Secondary Capture, and a round trip through a real Orthanc.

Orthanc (Debian package) is started with a temporary configuration (its own storage, free
HTTP and DICOM ports, the receiver as the DicomModality "pneumo"); it forwards a study to
the receiver through its REST API and gets the Secondary Capture of the result back.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import pydicom
import pytest
from apptools import XRAY_PNEUMONIA
from dicom_peers import free_port, needs_orthanc, start_orthanc
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from pneumo.app.analysis import analyse
from pneumo.app.dicom.receiver import DicomReceiver
from pneumo.app.dicom.send import (
    DISCLAIMER,
    MIN_WIDTH,
    SendError,
    result_capture,
    send,
)
from pneumo.app.web.state import get_state
from pneumo.bench.dicom_decode import compress, xray_dicom

STUDY = "1.2.826.0.1.3680043.10.3.1"


def _xray() -> bytes:
    return xray_dicom(Image.open(XRAY_PNEUMONIA), patient_id="PID-9", patient_name="Roe^Ann",
                      study_uid=STUDY)


def test_secondary_capture_has_the_result_burned_in_and_joins_the_study(app):
    state = get_state(app)
    data = _xray()
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    _, record = analyse(state, data, source="dicom", study_uid=STUDY,
                        sop_uid=str(header.SOPInstanceUID), patient_ref="PID-9")
    ds = result_capture(state, record, header)
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.Modality == "OT"
    assert ds.StudyInstanceUID == STUDY and ds.PatientID == "PID-9"
    assert ds.PatientName == "Roe^Ann"  # the PACS files it with the patient's study
    assert ds.SeriesInstanceUID != header.SeriesInstanceUID
    assert ds.SOPInstanceUID != header.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert ds.BurnedInAnnotation == "YES" and DISCLAIMER in ds.ImageComments
    assert "PNEUMONIA" in ds.ImageComments
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    arr = pydicom.dcmread(io.BytesIO(buf.getvalue())).pixel_array
    assert arr.shape == (ds.Rows, ds.Columns, 3) and ds.Columns >= MIN_WIDTH
    band = arr[: arr.shape[0] // 8]
    yellow = (band[..., 0] > 200) & (band[..., 1] > 180) & (band[..., 2] < 80)
    white = (band > 200).all(axis=-1)
    assert yellow.sum() > 200 and white.sum() > 200  # the disclaimer and the result, in pixels
    heat = arr[arr.shape[0] // 4:]
    assert np.abs(heat[..., 0].astype(int) - heat[..., 2]).mean() > 5  # the coloured heatmap


def test_send_to_nobody_raises():
    ds = pydicom.dcmread(io.BytesIO(_xray()))
    with pytest.raises(SendError):
        send(ds, f"NOBODY@127.0.0.1:{free_port()}", timeout=5)


@needs_orthanc
@pytest.mark.slow  # about 4 s: Orthanc starts, forwards, receives
def test_orthanc_forwards_a_study_and_gets_the_result_back(app_config, tmp_path, caplog):
    from pneumo.app.web.app import create_app

    caplog.set_level(logging.INFO, logger="pneumo.app")
    port = free_port()
    orthanc = start_orthanc(tmp_path / "orthanc", {"pneumo": ("PNEUMO", "127.0.0.1", port)})
    rx = None
    try:
        app = create_app({**app_config, "dicom_port": port,
                          "dicom_send": f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"})
        rx = DicomReceiver(get_state(app))
        rx.start()
        assert orthanc.rest("POST", "/modalities/pneumo/echo", {}) is not None  # C-ECHO
        uploaded = orthanc.rest("POST", "/instances", compress(_xray(), "jpeg_ls_lossless"))
        study_id = uploaded["ParentStudy"]
        orthanc.rest("POST", "/modalities/pneumo/store",
                     {"Resources": [uploaded["ID"]], "Synchronous": True})
        assert rx.wait_handled(1, timeout=60), caplog.text
        [record] = rx.state.history.recent(5)
        assert record["source"] == "dicom" and record["study_uid"] == STUDY
        assert record["patient_ref"] == "PID-9" and record["label"] == "PNEUMONIA"
        deadline = time.monotonic() + 30
        series = []
        while time.monotonic() < deadline and len(series) < 2:
            series = orthanc.rest("GET", f"/studies/{study_id}/series")
            time.sleep(0.2)
        assert len(series) == 2, caplog.text + orthanc.log()[-2000:]
        [sc] = [s for s in series if s["MainDicomTags"].get("Modality") == "OT"]
        assert sc["MainDicomTags"]["SeriesDescription"].endswith("not a diagnosis")
        tags = orthanc.rest("GET", f"/instances/{sc['Instances'][0]}/simplified-tags")
        assert tags["SOPClassUID"] == SecondaryCaptureImageStorage
        assert tags["StudyInstanceUID"] == STUDY and tags["PatientID"] == "PID-9"
        assert tags["BurnedInAnnotation"] == "YES"
        png = orthanc.rest("GET", f"/instances/{sc['Instances'][0]}/preview")
        assert Image.open(io.BytesIO(png)).width >= MIN_WIDTH  # Orthanc can show it
        assert "as Secondary Capture" in caplog.text
    finally:
        if rx is not None:
            rx.stop()
            rx.state.history.close()
        orthanc.stop()
