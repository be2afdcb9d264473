"""Issue 26, item 4: a DICOM receiver a peer cannot jam.

Before: four idle TCP connections filled all association slots and allowed units were
refused ("Local Limit Exceeded") until ~30 s after those sockets closed. Here idle and
half-sent sockets come from 127.0.0.2 (real sockets) while dcmtk's echoscu/storescu connect
from 127.0.0.1. Also: an image that arrives while another process holds the history locked
is analysed once the lock is gone, not dropped.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from apptools import XRAY_PNEUMONIA
from dicom_peers import echoscu, needs_dcmtk, storescu
from locktools import Locker
from PIL import Image

from pneumo.app.dicom import receiver as receiver_mod
from pneumo.bench.dicom_decode import xray_dicom

OTHER = "127.0.0.2"
"""The jamming peer's address (all of 127/8 is this computer on Linux)."""


def _connect_from(address: str, port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(address, 0))
    return s


def _closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `s` (None if still open after `seconds`)."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    try:
        data = s.recv(1024)
    except TimeoutError:
        return None
    except ConnectionResetError:
        data = b""
    return time.monotonic() - t0 if data == b"" else None


@needs_dcmtk
def test_idle_sockets_from_one_address_do_not_keep_an_allowed_unit_out(receiver, caplog):
    rx = receiver(dicom_max_associations=4, dicom_max_per_address=2,
                  dicom_request_timeout_s=3.0, dicom_allowed_aets="ECHOSCU,STORESCU")
    idle = [_connect_from(OTHER, rx.port) for _ in range(6)]
    try:
        time.sleep(0.3)
        # beyond the cap, closed at once: no thread, no slot
        at_once = [_closed_within(s, 1.0) for s in idle[2:]]
        assert all(t is not None and t < 1.0 for t in at_once), at_once
        # the allowed unit, while the two admitted idle sockets are still open
        for _ in range(3):
            res = echoscu(rx.port)
            assert res.returncode == 0, res.stderr
        # the admitted idle sockets are closed by the request timeout (3 s), not 30 s
        waited = [_closed_within(s, 8.0) for s in idle[:2]]
        assert all(t is not None for t in waited), waited
    finally:
        for s in idle:
            s.close()
    assert f"DICOM connection from {OTHER} refused: it already holds 2 connection(s)" in caplog.text
    assert caplog.text.count(f"DICOM connection from {OTHER} refused") == 1  # once a minute


def test_a_half_sent_association_request_is_closed_by_the_request_timeout(receiver, caplog):
    """A PDU header announcing 256 bytes, then silence: closed after ~2 s (was 50-60 s),
    with one log line and no traceback."""
    rx = receiver(dicom_request_timeout_s=2.0)
    with _connect_from(OTHER, rx.port) as s:
        s.sendall(b"\x01\x00\x00\x00\x01\x00" + b"\x00\x01")  # A-ASSOCIATE-RQ, 8 of 262 bytes
        t0 = time.monotonic()
        closed = _closed_within(s, 15.0)
    assert closed is not None and closed < 6.0, closed
    assert time.monotonic() - t0 < 7.0
    time.sleep(0.2)
    assert "Connection closed before the entire PDU was received" in caplog.text
    assert "Traceback" not in caplog.text


@needs_dcmtk
def test_a_peer_that_reopens_sockets_all_the_time_cannot_keep_the_unit_out(receiver, tmp_path):
    """The threat model's case: a peer reconnects the moment each socket is closed."""
    rx = receiver(dicom_max_associations=4, dicom_max_per_address=2, dicom_request_timeout_s=1.0)
    stop = threading.Event()
    opened = [0]

    def jam() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            held = [s for s in held if s.fileno() != -1]
            try:
                held.append(_connect_from(OTHER, rx.port))
                opened[0] += 1
            except OSError:
                pass
            for s in list(held):
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        s.close()
                except (BlockingIOError, OSError):
                    pass
            time.sleep(0.05)
        for s in held:
            s.close()

    jammers = [threading.Thread(target=jam) for _ in range(2)]
    for t in jammers:
        t.start()
    try:
        time.sleep(1.5)
        path = tmp_path / "xray.dcm"
        path.write_bytes(xray_dicom(Image.open(XRAY_PNEUMONIA), patient_id="JAM-1"))
        for _ in range(4):
            assert echoscu(rx.port).returncode == 0
        res = storescu(rx.port, path)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        stop.set()
        for t in jammers:
            t.join()
    assert opened[0] > 10  # it really kept reconnecting
    assert rx.wait_handled(1, timeout=60)
    assert [r["patient_ref"] for r in rx.state.history.recent(10)] == ["JAM-1"]


def test_the_per_address_cap_is_a_setting_for_units_that_send_in_parallel(receiver):
    from pynetdicom import AE

    rx = receiver(dicom_max_per_address=3, dicom_max_associations=8)
    ae = AE(ae_title="XRAY1")
    ae.add_requested_context("1.2.840.10008.1.1")
    assocs = [ae.associate("127.0.0.1", rx.port, ae_title="PNEUMO") for _ in range(3)]
    try:
        assert all(a.is_established for a in assocs)
        fourth = ae.associate("127.0.0.1", rx.port, ae_title="PNEUMO")
        assert not fourth.is_established  # the fourth from this address: closed at once
    finally:
        for a in assocs:
            a.release()


@needs_dcmtk
def test_an_image_received_while_the_history_is_locked_is_analysed_after_the_lock(
        receiver, tmp_path, caplog, monkeypatch):
    """Before: a busy history made the worker delete the spooled image. After: it waits."""
    monkeypatch.setattr(receiver_mod, "BUSY_RETRY_S", 1.0)
    rx = receiver(history_busy_timeout_s=0.3)
    path = tmp_path / "locked.dcm"
    path.write_bytes(xray_dicom(Image.open(XRAY_PNEUMONIA), patient_id="LOCKED-1"))
    locker = Locker(rx.state.history.path)
    try:
        res = storescu(rx.port, path)
        assert res.returncode == 0, res.stdout + res.stderr  # received and spooled: success
        deadline = time.monotonic() + 20
        while "in use by another program" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "in use by another program; analysed again in 1 s" in caplog.text
        assert list(rx.spool.glob("*.dcm"))  # still spooled, not dropped
    finally:
        locker.release()
    assert rx.wait_handled(1, timeout=60)
    assert [r["patient_ref"] for r in rx.state.history.recent(10)] == ["LOCKED-1"]
    assert not list(rx.spool.glob("*.dcm"))


@pytest.mark.parametrize("setting,value", [("dicom_max_per_address", 0),
                                           ("dicom_request_timeout_s", 0)])
def test_jam_settings_are_checked(app_config, setting, value):
    from pneumo.app.config import resolve

    with pytest.raises(ValueError, match=setting):
        resolve({**app_config, setting: value})
