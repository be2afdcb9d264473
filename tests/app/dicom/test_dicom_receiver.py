"""The DICOM receiver against real peers: dcmtk's echoscu/storescu and pynetdicom associations.

The receiver runs in this process on a free loopback port (the same DicomReceiver that
`pneumo serve --dicom-port` starts; one test starts the real `pneumo serve`). Images are
a real fixture X-ray as DX DICOM, compressed here in every transfer syntax.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from apptools import REPO, XRAY_NORMAL, XRAY_PNEUMONIA, http, start_server
from bombs import retag_dicom
from dicom_peers import echoscu, needs_dcmtk, storescu
from PIL import Image

from pneumo.app.dicom.receiver import DicomReceiver, patient_ref_from, storage_class_uids
from pneumo.bench.dicom_decode import SYNTAXES, EncoderMissing, compress, xray_dicom

DX = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


def xray(path=XRAY_PNEUMONIA, **attrs) -> bytes:
    """A fixture X-ray as an uncompressed DX DICOM of patient PID-7 (name Doe^Jane)."""
    return xray_dicom(Image.open(path), patient_id="PID-7", patient_name="Doe^Jane", **attrs)


def _records(rx: DicomReceiver) -> list[dict]:
    return rx.state.history.recent(100)


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@needs_dcmtk
def test_echoscu_and_ae_title_rules(receiver, caplog):
    rx = receiver(dicom_allowed_aets="ECHOSCU,XRAY1")
    assert echoscu(rx.port).returncode == 0
    assert echoscu(rx.port, calling="XRAY1").returncode == 0
    wrong_called = echoscu(rx.port, called="OTHER")
    assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stderr
    wrong_calling = echoscu(rx.port, calling="INTRUDER")
    assert wrong_calling.returncode != 0
    assert "Calling AE Title Not Recognized" in wrong_calling.stderr
    assert "refused: the called AE title is not PNEUMO" in caplog.text
    assert "refused: its calling AE title is not among ECHOSCU, XRAY1" in caplog.text


@needs_dcmtk
def test_storescu_every_transfer_syntax_is_analysed(receiver, tmp_path, caplog):
    rx = receiver()
    study = "1.2.826.0.1.3680043.10.2.1"
    base = xray(study_uid=study)
    base8 = xray(bits=8, study_uid=study)
    sent = {}
    for name in SYNTAXES:
        try:
            data = compress(base8 if name == "jpeg_baseline" else base, name)
        except EncoderMissing as exc:
            pytest.fail(f"dcmtk is installed but {name} could not be made: {exc}")
        data = retag_dicom(data, SOPInstanceUID=f"1.2.826.0.1.3680043.10.1.{len(sent) + 1}")
        res = storescu(rx.port, _write(tmp_path, f"{name}.dcm", data), syntax=name)
        assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}"
        sent[name] = f"1.2.826.0.1.3680043.10.1.{len(sent) + 1}"
    assert rx.wait_handled(len(sent), timeout=120)
    by_sop = {r["sop_uid"]: r for r in _records(rx)}
    assert set(by_sop) == set(sent.values()), caplog.text
    assert {r["study_uid"] for r in by_sop.values()} == {study}
    for name, sop in sent.items():
        rec = by_sop[sop]
        assert rec["source"] == "dicom" and rec["format"] == "DICOM", name
        assert rec["patient_ref"] == "PID-7"  # PatientID, never the patient's name
        assert rec["label"] == "PNEUMONIA", (name, rec["probability"])
    assert not any("Doe" in str(v) for r in by_sop.values() for v in r.values())
    assert not list(rx.spool.glob("*.dcm"))  # handled files leave the spool


@needs_dcmtk
def test_same_sop_instance_is_not_analysed_twice(receiver, tmp_path, caplog):
    rx = receiver()
    path = _write(tmp_path, "x.dcm", compress(xray(), "rle"))
    for _ in range(3):
        assert storescu(rx.port, path, syntax="rle").returncode == 0
    assert rx.wait_handled(3)
    assert len(_records(rx)) == 1
    assert caplog.text.count("already analysed: not analysed again") == 2


@needs_dcmtk
@pytest.mark.parametrize("attrs,reason", [
    ({"Modality": "CT"}, "modality_ct"),
    ({"Modality": "NM"}, "modality_nm"),
    ({"ViewPosition": "LL"}, "lateral_view"),
    ({"BodyPartExamined": "KNEE"}, "body_part_not_chest"),
    ({"SOPClassUID": DX_FOR_PROCESSING}, "for_processing_image"),
])
def test_refused_images_are_stored_logged_and_get_no_diagnosis(receiver, tmp_path, caplog,
                                                               attrs, reason):
    rx = receiver()
    data = retag_dicom(compress(xray(XRAY_NORMAL), "j2k_lossless"), **attrs)
    if "SOPClassUID" in attrs:
        from pydicom import dcmread
        from pydicom.filebase import DicomBytesIO

        ds = dcmread(DicomBytesIO(data))
        ds.file_meta.MediaStorageSOPClassUID = attrs["SOPClassUID"]
        buf = DicomBytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
    res = storescu(rx.port, _write(tmp_path, "refused.dcm", data), syntax="j2k_lossless")
    assert res.returncode == 0 and "Store Failed" not in res.stderr  # C-STORE success
    assert rx.wait_handled(1)
    assert _records(rx) == []  # no diagnosis
    assert re.search(rf"refused, no diagnosis \([^)]*{reason}", caplog.text), caplog.text


def _scu_store(port: int, ds, sop_class: str = DX):
    """C-STORE one data set with pynetdicom; (association accepted?, status or None)."""
    from pynetdicom import AE

    ae = AE(ae_title="SCU")
    ae.add_requested_context(sop_class, str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    if not assoc.is_established:
        return False, None
    try:
        status = assoc.send_c_store(ds)
        return True, (int(status.Status) if status else None)
    finally:
        assoc.release()


def _dataset(data: bytes):
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    return dcmread(DicomBytesIO(data))


def test_undecodable_pixels_still_answer_success(receiver, caplog):
    rx = receiver()
    ds = _dataset(xray())
    ds.PixelData = b"\x00" * 10  # far less than 224 x 224 x 2 bytes
    accepted, status = _scu_store(rx.port, ds)
    assert accepted and status == 0x0000
    assert rx.wait_handled(1)
    assert _records(rx) == []
    assert "refused, no diagnosis" in caplog.text


def test_storage_failure_answers_out_of_resources(receiver, caplog):
    rx = receiver()
    rx.spool.rmdir()
    rx.spool.write_bytes(b"")  # the spool folder is now a file: nothing can be stored
    accepted, status = _scu_store(rx.port, _dataset(xray()))
    assert accepted and status == 0xA700
    assert "could not be stored" in caplog.text
    assert _records(rx) == []


def test_other_storage_classes_are_refused_at_association(receiver, caplog):
    rx = receiver()
    ds = _dataset(retag_dicom(xray(), Modality="CT"))
    accepted, status = _scu_store(rx.port, ds, sop_class="1.2.840.10008.5.1.4.1.1.2")
    assert not accepted or status is None
    assert "offers no CR/DX image" in caplog.text and "CT Image Storage" in caplog.text
    assert storage_class_uids() == {CR, DX, DX_FOR_PROCESSING}


def test_cr_storage_class_is_analysed(receiver):
    rx = receiver()
    ds = _dataset(retag_dicom(xray(), SOPClassUID=CR, Modality="CR"))
    ds.file_meta.MediaStorageSOPClassUID = CR
    accepted, status = _scu_store(rx.port, ds, sop_class=CR)
    assert accepted and status == 0x0000
    assert rx.wait_handled(1)
    [rec] = _records(rx)
    assert rec["source"] == "dicom" and rec["sop_uid"] == str(ds.SOPInstanceUID)


def test_spooled_files_from_before_a_stop_are_analysed_at_start(app_config, receiver):
    spool = app_config["data_dir"] / "dicom-inbox"
    spool.mkdir(parents=True)
    (spool / "00000000000000000001-left.dcm").write_bytes(xray())
    rx = receiver()
    assert rx.wait_handled(1)
    assert len(_records(rx)) == 1 and not list(spool.glob("*.dcm"))


def test_patient_ref_is_the_patient_id_never_the_name():
    ds = _dataset(xray())
    assert patient_ref_from(ds) == "PID-7"
    del ds.PatientID
    assert patient_ref_from(ds) is None
    ds.PatientID = "ID\u202e-1\x00"  # bidi override and a NUL are cleaned
    assert patient_ref_from(ds) == "ID-1"


@needs_dcmtk
def test_pneumo_serve_receives_and_stops_cleanly(test_model_path, tmp_path):
    srv = start_server(test_model_path, tmp_path / "data", "--dicom-port", "0",
                       "--ae-title", "CLINIC", "--allowed-aets", "STORESCU,ECHOSCU",
                       "--max-large-decodes", "2")
    try:
        banner = "".join(srv.lines)
        m = re.search(r"DICOM receiver: AE title CLINIC on 127\.0\.0\.1:(\d+), callers "
                      r"STORESCU, ECHOSCU", banner)
        assert m, banner
        port = int(m.group(1))
        assert echoscu(port, called="CLINIC").returncode == 0
        path = _write(tmp_path, "x.dcm", compress(xray(), "jpeg_ls_lossless"))
        res = storescu(port, path, syntax="jpeg_ls_lossless", called="CLINIC")
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 60
        items = []
        while time.monotonic() < deadline and not items:
            items = http("GET", srv.url + "api/v1/history").json()["items"]
            time.sleep(0.2)
        [item] = items
        assert item["source"] == "dicom" and item["patient_ref"] == "PID-7"
        assert item["label"] == "PNEUMONIA" and item["study_uid"] and item["sop_uid"]
    finally:
        code = srv.interrupt()  # Ctrl+C: run_server's clean stop
    out = "".join(srv.lines)
    assert code == 0, out
    assert "DICOM receiver stopped" in out
    assert echoscu(port, called="CLINIC").returncode != 0  # nothing listens any more


def test_busy_dicom_port_is_reported(test_model_path, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        res = subprocess.run(
            [sys.executable, "-m", "pneumo.app", "serve", "--port", "0", "--model",
             str(test_model_path), "--data-dir", str(tmp_path / "d"), "--dicom-port", str(port)],
            capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert res.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (DICOM)" in res.stderr


def test_association_limit_and_idle_timeout(receiver, caplog):
    import socket

    from pynetdicom import AE

    rx = receiver(dicom_max_associations=1, dicom_timeout_s=1.0, dicom_request_timeout_s=1.0)
    ae = AE(ae_title="SCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", rx.port, ae_title="PNEUMO")
    try:
        assert first.is_established
        second = ae.associate("127.0.0.1", rx.port, ae_title="PNEUMO")
        assert second.is_rejected  # one association at a time
        assert "refused: 1 associations are already open" in caplog.text
    finally:
        first.release()
    # a peer that connects and says nothing is dropped after the request timeout
    with socket.create_connection(("127.0.0.1", rx.port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(1024) == b""
        assert time.monotonic() - t0 < 5


def test_oversized_data_set_aborts_the_association_and_leaves_no_file(receiver, tmp_path,
                                                                      monkeypatch, caplog):
    import tempfile

    import numpy as np

    from pneumo.app.dicom.samples import encode_dicom

    spool_tmp = tmp_path / "tmp"
    spool_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_tmp))  # where pynetdicom writes
    rx = receiver(max_upload_bytes=200_000)
    noise = np.random.default_rng(0).integers(0, 4096, (1500, 1500), dtype=np.uint16)
    ds = _dataset(encode_dicom(noise, bits_stored=12, sop_class=DX))  # 4.5 MB of pixels
    accepted, status = _scu_store(rx.port, ds)
    assert accepted and status is None  # no C-STORE answer: the association was aborted
    assert "aborted: it sent more than 200000 bytes for one image" in caplog.text
    deadline = time.monotonic() + 10
    while list(spool_tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(spool_tmp.iterdir()) == [] and _records(rx) == []
    accepted, status = _scu_store(rx.port, _dataset(xray()))  # a normal image still works
    assert accepted and status == 0x0000
