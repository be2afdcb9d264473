"""The server-rendered page and the printable report."""

import io
import re

from apptools import XRAY_NORMAL


def test_page_renders_offline(client, model):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "Intended use" in html and "Not a diagnosis" in html
    assert model.version in html
    for t in model.thresholds.values():
        assert f"{100 * t:.0f}%" in html
    assert 'id="mode"' not in html  # the nurse's form has no setting: the words are the same
    assert '<label for="image-input"' in html and 'id="image-input"' in html and 'type="file"' in html
    assert 'id="patient-ref"' in html and "/api/v1/history.csv" in html
    for src in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert src.startswith("/"), f"external resource {src}"


def test_static_assets(client):
    for name, kind in (("app.js", "javascript"), ("app.css", "css"), ("favicon.svg", "svg")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.mimetype


def test_print_styles_present(client):
    css = client.get("/static/app.css").get_data(as_text=True)
    assert "@media print" in css


def test_report_page(client):
    rid = client.post("/api/v1/predict", data={
        "image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg"), "patient_ref": "<b>P-9</b>",
    }).get_json()["id"]
    r = client.get(f"/report/{rid}")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "&lt;b&gt;P-9&lt;/b&gt;" in html and "<b>P-9</b>" not in html  # escaped
    assert f"/api/v1/history/{rid}/image.png" in html
    assert f"/api/v1/history/{rid}/heatmap.png" not in html  # no heatmap without signs
    assert "Not a diagnosis" in html


def test_report_unknown(client):
    r = client.get("/report/" + "a" * 32)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
