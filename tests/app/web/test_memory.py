"""A real Waitress server stays under 400 MB with the worst uploads known (slow: subprocess).

Each upload fits the limits (30 MB, 50 megapixels) but used to cost far more memory than its
size: a 1 MB deflated DICOM declaring 1 x 1 pixels (4.4 GB before), a 16-bit PNG and a float
TIFF of 7000 x 7000 (0.8-1.6 GB; four TIFFs at once 3.5-5.9 GB), a 27 MB DICOM header of
3.5 million empty elements (1.1 GB). The server's peak RSS (VmHWM) is read from /proc after
all of them.
"""

import sys
import threading
from pathlib import Path

import bombs
import pytest
from apptools import XRAY_NORMAL, dicom_bytes, http, post_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

PEAK_LIMIT_MB = 400
"""The target: no upload within the limits makes the server's RSS exceed this."""

SETTLE_MARGIN_MB = 60
"""RSS after the bombs may exceed the warmed-up RSS by at most this."""


def _mb(pid: int, key: str) -> float:
    """VmHWM (peak) or VmRSS of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _all_at_once(url: str, data: bytes, n: int) -> list[int]:
    """POST the same upload n times concurrently; the statuses."""
    statuses: list[int] = []

    def send():
        statuses.append(post_image(url, data, filename="upload").status)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_worst_uploads_stay_under_400_mb(live_server):
    url, pid = live_server.url, live_server.proc.pid
    for warm in (XRAY_NORMAL.read_bytes(), dicom_bytes()):  # loads the decoders once
        assert post_image(url, warm).status == 200
    base = _mb(pid, "VmRSS")

    cases = {  # name: (upload, expected statuses)
        "deflated 1 MB declaring 1x1": (bombs.deflated_dicom_bomb(1000), {413}),
        "deflated header bomb": (bombs.deflated_dicom_bomb(200, where="private"), {413}),
        "deflated 7000x7000 16-bit": (bombs.deflated_dicom_bomb(0, rows=7000, cols=7000),
                                      {200, 422}),
        "png16 7000x7000": (bombs.png16_bomb(), {200, 422}),
        "x-ray RGBA png 7000x7000": (bombs.big_xray(7000, "RGBA"), {200, 422}),
        "RGBA png 7000x7000, 29 MB": (bombs.max_size_rgba_png(), {200, 422}),
        "DICOM header of 3.5 M tiny elements": (bombs.element_bomb(), {413}),
        "WindowWidth 0": (bombs.window_width_dicom(0.0), {200}),
    }
    for name, (data, expected) in cases.items():
        assert len(data) < 30 * 2**20
        r = post_image(url, data, filename="upload")
        assert r.status in expected, (name, r.status, r.body[:300])
    tiff = bombs.float_tiff_bomb()
    statuses = _all_at_once(url, tiff, 4)
    assert set(statuses) <= {200, 422}, statuses
    # four maximum-size uploads at once: the bodies wait on disk for a large-upload slot
    statuses = _all_at_once(url, bombs.max_size_rgba_png(), 4)
    assert set(statuses) <= {200, 422}, statuses

    peak = _mb(pid, "VmHWM")
    assert peak <= PEAK_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    assert http("GET", url + "healthz").status == 200
    assert post_image(url, XRAY_NORMAL.read_bytes()).status == 200
    after = _mb(pid, "VmRSS")
    assert after <= base + SETTLE_MARGIN_MB, f"RSS {base:.0f} -> {after:.0f} MB"
