"""Plain words on the page and the report, the printed report, the CSV export (issue 11, 0b).

Never depends on the bundled model's probabilities: calibrated and uncalibrated variants of
the test model are made with `rewrite_model`.
"""

import csv
import io
import re

import pytest
from apptools import XRAY_NORMAL, XRAY_PNEUMONIA, rewrite_model, skimage_png
from PIL import Image

from pneumo.app.config import DEFAULTS, resolve
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.wording import GUIDANCE_LABEL, HEATMAP_NOTE
from pneumo.app.web.api import CSV_COLUMNS
from pneumo.app.web.app import create_app
from pneumo.app.web.state import get_state

EXTERNAL = "external validation (half of the official test split)"
CALIBRATION = {"method": "platt", "a": 1.5, "b": -0.5}


@pytest.fixture(scope="module")
def calibrated_model(test_model_path, tmp_path_factory) -> OnnxModel:
    """The test model with a calibration chosen on external validation images."""
    pytest.importorskip("onnx")
    return OnnxModel(rewrite_model(test_model_path, tmp_path_factory.mktemp("c") / "c.onnx",
                                   calibration=CALIBRATION, operating_points_source=EXTERNAL))


@pytest.fixture(scope="module")
def score_model(test_model_path, tmp_path_factory) -> OnnxModel:
    """The test model without any calibration (its number is a score)."""
    pytest.importorskip("onnx")
    return OnnxModel(rewrite_model(test_model_path, tmp_path_factory.mktemp("s") / "s.onnx",
                                   calibration=None))


def _app(model, tmp_path, **cfg):
    return create_app({"model": model, "data_dir": tmp_path / "data",
                       "secret_key": "test-secret", **cfg})


def _post(client, data: bytes, filename: str = "x.jpeg", **fields):
    return client.post("/api/v1/predict", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(data), filename), **fields})


def test_calibrated_number_is_called_an_estimated_chance(calibrated_model, tmp_path):
    app = _app(calibrated_model, tmp_path)
    c = app.test_client()
    b = _post(c, XRAY_NORMAL.read_bytes()).get_json()
    assert b["calibrated"] is True and b["calibrated_on"] == "external validation images"
    assert re.search(r"Estimated chance of pneumonia signs: (over |under )?\d+(\.\d)?%",
                     b["message"])
    # plain words for a nurse: no "calibrated", no "external validation" in the answer
    for words in ("threshold", "calibrated", "external validation"):
        assert words not in b["message"] and words not in b["probability_text"]
    report = c.get(f"/report/{b['id']}").get_data(as_text=True)
    assert "Estimated chance of pneumonia signs" in report
    page = c.get("/").get_data(as_text=True)
    tech = page[page.index('<details class="tech">'):page.index("</details>")]
    assert "show pneumonia" in tech  # what the chance is relative to, in the details
    get_state(app).history.close()


def test_uncalibrated_number_is_a_score_not_a_chance(score_model, tmp_path):
    app = _app(score_model, tmp_path)
    c = app.test_client()
    b = _post(c, XRAY_NORMAL.read_bytes()).get_json()
    assert b["calibrated"] is False and b["calibrated_on"] is None
    assert "out of 100 (a score, not a chance of disease)" in b["probability_text"]
    assert "chance of pneumonia" not in b["message"] and "%" not in b["message"]
    report = c.get(f"/report/{b['id']}").get_data(as_text=True)
    assert "Model score" in report and "Estimated chance" not in report
    get_state(app).history.close()


def test_main_view_keeps_thresholds_and_hashes_in_the_details(client, model):
    html = client.get("/").get_data(as_text=True)
    header = html[html.index('<header class="topbar">'):html.index("</header>")]
    assert model.version not in header
    form = html[html.index('<form id="predict-form"'):html.index("</form>")]
    assert "threshold" not in form.lower() and "Operating mode" not in form
    main_result = html[html.index('<div id="result"'):html.index('<details class="tech">')]
    assert "threshold" not in main_result.lower() and "sha256" not in main_result
    tech = html[html.index('<details class="tech">'):html.index("</details>")]
    assert "<summary>Technical details</summary>" in tech and 'id="r-mode"' in tech
    assert 'id="r-model"' in tech
    assert GUIDANCE_LABEL in main_result and "guidance, not a protocol" in GUIDANCE_LABEL
    assert 'id="next-patient"' in html and "Next patient" in html
    assert HEATMAP_NOTE["negative"] == ("Shows where the model looked. On a NORMAL result it "
                                        "does not mark disease.")
    assert 'data-negative="Shows where the model looked. On a NORMAL result it does not mark ' \
           'disease."' in html


def test_printed_report(model, tmp_path):
    app = _app(model, tmp_path, clinic_name="Centre de santé – Kibera\n")
    c = app.test_client()
    b = _post(c, XRAY_NORMAL.read_bytes(), "Radiografía niño.jpeg", patient_ref="P-7").get_json()
    assert b["file_name"] == "Radiografía niño.jpeg"
    html = c.get(f"/report/{b['id']}").get_data(as_text=True)
    assert "Centre de santé – Kibera" in html  # the clinic name, cleaned of the newline
    assert "Radiografía niño.jpeg" in html and "P-7" in html
    figures = html[html.index('class="figures report-figures'):]
    assert f"/api/v1/history/{b['id']}/image.png" in figures
    assert "heatmap.png" not in figures  # no signs: no heatmap on paper (the page's rule)
    assert html.count("Centre de santé – Kibera") == 1  # the clinic's name once
    for words in ("Clinician", "Signature", GUIDANCE_LABEL):
        assert words in html
    assert f'<time class="local-time" datetime="{b["created_at"]}">' in html
    tech = html[html.index('<details class="tech">'):html.index("</details>")]
    assert "sha256" in tech and "threshold" in tech and b["id"] in tech
    main = html[:html.index('<details class="tech">')]
    assert "threshold" not in main.lower() and "sha256" not in main
    for step in b["next_steps"]:
        assert step.replace("'", "&#39;") in html
    heat_png = Image.open(io.BytesIO(c.get(b["heatmap_url"]).data))
    xray_png = Image.open(io.BytesIO(c.get(b["image_url"]).data))
    assert xray_png.mode == "L" and xray_png.size == heat_png.size
    css = c.get("/static/app.css").get_data(as_text=True)
    assert ".figures { grid-template-columns: 1fr 1fr; }" in css.split("@media print")[1]
    get_state(app).history.close()


def test_csv_has_every_field_the_file_name_and_a_bom(client):
    b = _post(client, XRAY_NORMAL.read_bytes(), "Émile – radiographie.jpeg",
              patient_ref="Zoë").get_json()
    r = client.get("/api/v1/history.csv")
    assert r.data.startswith(b"\xef\xbb\xbf") and "charset=utf-8" in r.headers["Content-Type"]
    rows = list(csv.DictReader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    row = rows[0]
    assert row["file_name"] == "Émile – radiographie.jpeg" and row["patient_ref"] == "Zoë"
    links = {"heatmap_url", "image_url", "short", "icon", "heatmap_shown"}  # links, display only
    item = client.get(f"/api/v1/history/{b['id']}").get_json()
    assert set(item) - links <= set(CSV_COLUMNS)
    flattened = {"quality": ("warnings", "warning_messages"),
                 "input": ("format", "width", "height", "bit_depth")}
    per_request = {"timings_ms", "intended_use", "preview"}  # not stored: same for every row
    for key in set(b) - links - per_request:
        for column in flattened.get(key, (key,)):
            assert column in CSV_COLUMNS, column
    assert row["headline"] == b["headline"] and row["probability_text"] == b["probability_text"]
    assert row["next_steps"] == " | ".join(b["next_steps"]) and row["message"] == b["message"]
    assert row["calibrated"] in ("true", "false") and row["bit_depth"] == "8"


def test_file_name_is_the_base_name_without_control_characters(client):
    from pneumo.app.web.api import _file_name

    assert _file_name("C:\\scans\\child\x07 1.jpeg") == "child 1.jpeg"
    assert _file_name("") is None and _file_name(None) is None and _file_name(" / ") is None
    assert len(_file_name("a" * 400 + ".png")) == 255
    b = _post(client, XRAY_NORMAL.read_bytes(), "/scans/child\x07 1.jpeg").get_json()
    assert b["file_name"] == "child 1.jpeg"
    assert client.get(f"/api/v1/history/{b['id']}").get_json()["file_name"] == "child 1.jpeg"


def test_refusal_of_a_grayscale_photo_says_what_was_measured(client):
    r = _post(client, skimage_png("camera"), "person.png")  # a grayscale photo of a person
    err = r.get_json()["error"]
    assert r.status_code == 422
    text = err["message"] + " ".join(x["message"] for x in err["reasons"])
    assert "document, screenshot or drawing" not in text
    graphic = [x["message"] for x in err["reasons"] if x["code"] == "document_or_graphic"]
    assert graphic and "sharp, high-contrast edges" in graphic[0]
    assert err["reasons"][0]["message"] in err["message"]  # the page lists only the others
    js = client.get("/static/app.js").get_data(as_text=True)
    assert "indexOf(m) >= 0" in js and "seen[m]" in js


def test_clinic_name_setting_and_flag():
    assert DEFAULTS["clinic_name"] == ""
    assert resolve({"clinic_name": "  Clinic\tA \n"})["clinic_name"] == "Clinic A"
    with pytest.raises(ValueError):
        resolve({"clinic_name": "x" * 121})
    from pneumo.app.runtime.cli import build_parser

    args = build_parser().parse_args(["serve", "--clinic-name", "Clinique B"])
    assert args.clinic_name == "Clinique B"
    assert build_parser().parse_args(["serve"]).clinic_name == DEFAULTS["clinic_name"]
    from installer.entry import build_parser as launcher

    assert launcher().parse_args([]).clinic_name == DEFAULTS["clinic_name"]
    assert launcher().parse_args(["--clinic-name", "C"]).clinic_name == "C"


def test_chance_at_the_clinic_share_when_its_lead_entered_one(model, tmp_path):
    from pneumo.app.clinic.site_profile import SiteProfile
    from pneumo.app.pipeline.wording import calibration_share, chance_at_share

    share = calibration_share(model.metadata)
    assert share is not None and 0.5 < share < 0.7  # 195 of 312 external validation images
    b0 = _post(_app(model, tmp_path / "a").test_client(), XRAY_PNEUMONIA.read_bytes()).get_json()
    assert "clinic_chance" not in b0  # no share entered: nothing claimed
    data = tmp_path / "b" / "data"
    data.mkdir(parents=True)
    SiteProfile(data).save({"thresholds": dict(model.thresholds), "rule": "test",
                            "n": {"normal": 60, "pneumonia": 60}, "prevalence": 0.2,
                            "created_at": "2026-11-30T09:00:00Z", "model_sha256": model.sha256})
    app = _app(model, tmp_path / "b")
    b = _post(app.test_client(), XRAY_PNEUMONIA.read_bytes()).get_json()
    expected = chance_at_share(b["probability"], 0.2, share)
    assert b["clinic_chance"] == pytest.approx(expected, abs=1e-6)
    assert b["clinic_chance"] < b["probability"]  # fewer children with pneumonia: lower
    assert "At this clinic's share of pneumonia (20%)" in b["clinic_chance_text"]
    get_state(app).history.close()
