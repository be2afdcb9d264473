"""The app under a real Waitress server process (slow: subprocesses)."""

import hashlib
import threading

import numpy as np
import pytest
from apptools import XRAY_NORMAL, all_fixture_xrays, encode, gray_array, http, post_image
from PIL import Image

pytestmark = pytest.mark.slow


def test_serves_and_reports_where(live_server):
    out = "".join(live_server.lines)
    assert live_server.url.startswith("http://127.0.0.1:")
    assert f"history: {live_server.data_dir / 'history.sqlite3'}" in out
    r = http("GET", live_server.url + "healthz")
    assert r.status == 200 and r.json()["status"] == "ok"
    assert r.headers["Server"] == "pneumo"  # Waitress (our ident), not Werkzeug
    assert r.headers["X-Frame-Options"] == "DENY"
    page = http("GET", live_server.url)
    assert page.status == 200 and b"Intended use" in page.body


def test_predict_and_errors_over_http(live_server):
    r = post_image(live_server.url, XRAY_NORMAL.read_bytes(), fields={"mode": "screening"})
    assert r.status == 200, r.body
    b = r.json()
    assert b["mode"] == "screening"
    heat = http("GET", live_server.url.rstrip("/") + b["heatmap_url"])
    assert heat.status == 200 and heat.body[:8] == b"\x89PNG\r\n\x1a\n"
    bad = post_image(live_server.url, b"not an image")
    assert bad.status == 415 and bad.json()["error"]["code"] == "unsupported_image"


def test_oversized_upload_is_a_json_413(live_server):
    r = post_image(live_server.url, b"\xff\xd8\xff" + b"\0" * (31 * 1024 * 1024))
    assert r.status == 413
    assert r.json()["error"]["code"] == "file_too_large"


def test_history_survives_sigkill(server_factory, tmp_path):
    data_dir = tmp_path / "durable"
    srv = server_factory(data_dir)
    data = XRAY_NORMAL.read_bytes()
    r = post_image(srv.url, data, fields={"patient_ref": "KILL-1"})
    assert r.status == 200
    rid = r.json()["id"]
    srv.kill()  # SIGKILL right after the answer: no clean shutdown, no checkpoint
    assert srv.proc.returncode == -9
    again = server_factory(data_dir)
    rec = http("GET", f"{again.url}api/v1/history/{rid}")
    assert rec.status == 200, rec.body
    assert rec.json()["patient_ref"] == "KILL-1"
    assert rec.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_concurrent_uploads_get_their_own_answers(live_server):
    # 8 different images: the 6 fixtures plus two shifted variants
    images = [p.read_bytes() for p in all_fixture_xrays()]
    g = gray_array()
    images.append(encode(Image.fromarray(np.roll(g, 7, axis=1)), "PNG"))
    images.append(encode(Image.fromarray(np.clip(g.astype(int) + 12, 0, 255).astype(np.uint8)),
                         "PNG"))
    images = images[:8]
    results: dict[int, object] = {}
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        results[i] = post_image(live_server.url, images[i], fields={"patient_ref": f"T{i}"})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = set()
    for i, img in enumerate(images):
        r = results[i]
        assert r.status in (200, 422), r.body
        if r.status != 200:
            continue
        b = r.json()
        assert b["sha256"] == hashlib.sha256(img).hexdigest()
        assert b["patient_ref"] == f"T{i}"
        ids.add(b["id"])
        rec = http("GET", f"{live_server.url}api/v1/history/{b['id']}").json()
        assert rec["sha256"] == b["sha256"] and rec["patient_ref"] == f"T{i}"
        assert rec["probability"] == pytest.approx(b["probability"], abs=1e-6)
    ok = sum(1 for r in results.values() if r.status == 200)
    assert ok >= 6 and len(ids) == ok
