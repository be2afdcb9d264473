"""Answers a nurse cannot misread, in a real browser (Debian's chromium, headless; slow).

A model whose thresholds put a real X-ray in the review band (between the screening and the
balanced threshold): the page, the history list and the printed report say "review" with
their own sign, in English, French and Arabic, in both settings and with this clinic's
thresholds; at 800 x 600 the verdict, the chance, the first next step and the drift note are
on screen without scrolling; and the report prints on one page, A4 and Letter, for every
outcome in all six languages with worst-case content.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from apptools import XRAY_NORMAL, XRAY_PNEUMONIA, http, post_image, rewrite_model, start_server
from browsertools import BROWSER_MARKS

from pneumo.app import i18n
from pneumo.app.clinic.site_profile import SiteProfile
from pneumo.app.history.schema import DB_NAME, new_id, utc_now_iso
from pneumo.app.history.store import HistoryStore
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.outcome import NO_SIGNS, OUTCOMES, PNEUMONIA, REVIEW
from pneumo.app.pipeline.predictor import Predictor
from pneumo.app.pipeline.wording import HEADLINE, ICON, SHORT

pytestmark = BROWSER_MARKS

SMALL_SCREEN = {"width": 800, "height": 600}
LANGS = ("en", "fr", "ar")
ALL_LANGS = ("en", "fr", "es", "pt", "sw", "ar")
LONG_CLINIC = ("Centre de santé communautaire de Kibera — Service de pédiatrie, radiologie "
               "et soins d'urgence")
LONG_REF = "REF-" + "7" * 30 + "-" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ01234"[:29]


@pytest.fixture(scope="module")
def band_model(test_model_path, tmp_path_factory) -> Path:
    """The test model with thresholds around XRAY_NORMAL's probability, and a drift
    reference no real image matches (so the drift check warns once 50 images are in)."""
    base = OnnxModel(test_model_path)
    p = Predictor(base).predict(XRAY_NORMAL.read_bytes(), heatmap=False).probability
    ref = dict(base.metadata.get("drift_reference") or {})
    ref.update(ood_quantiles_by_label={"NORMAL": [1e6] * 101, "PNEUMONIA": [1e6] * 101},
               n_by_label={"NORMAL": 100, "PNEUMONIA": 100}, n=200,
               refusal_rate=ref.get("refusal_rate", 0.0),
               borderline_rate=ref.get("borderline_rate", 0.05))
    path = rewrite_model(test_model_path, tmp_path_factory.mktemp("band") / "band.onnx",
                         thresholds={"balanced": p + (1 - p) / 2, "screening": p / 2},
                         drift_reference=ref)
    assert OnnxModel(path).outcome(p) == REVIEW
    return path


@pytest.fixture(scope="module")
def band_server(band_model, tmp_path_factory):
    srv = start_server(band_model, tmp_path_factory.mktemp("band-data"),
                       "--clinic-name", LONG_CLINIC)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def site_server(band_model, tmp_path_factory):
    """This clinic's thresholds in use (the same band), set on a known day."""
    data = tmp_path_factory.mktemp("site-data")
    model = OnnxModel(band_model)
    SiteProfile(data).save({"thresholds": dict(model.thresholds), "rule": "test",
                            "n": {"normal": 30, "pneumonia": 30},
                            "created_at": "2026-11-30T09:00:00Z", "by": "QA",
                            "model_sha256": model.sha256, "model_version": model.version})
    srv = start_server(band_model, data)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def drift_server(band_model, tmp_path_factory):
    """A server whose drift check warns: 50 answers that do not look like the reference."""
    srv = start_server(band_model, tmp_path_factory.mktemp("drift-data"))
    data = XRAY_NORMAL.read_bytes()
    for _ in range(50):
        assert post_image(srv.url, data).status == 200
    assert http("GET", srv.url + "api/v1/status").json()["drift"]["status"] == "drift"
    yield srv
    srv.stop()


def words(lang: str, text: str, **params) -> str:
    """A message id in a language, as the page shows it."""
    return i18n.in_language(lang, text, **params)


def never_no_signs(lang: str, shown: str) -> None:
    """What a person reads in the review band never looks negative."""
    for negative in (HEADLINE[NO_SIGNS], SHORT[NO_SIGNS]):
        assert words(lang, negative) not in shown, (lang, shown)
    assert ICON[NO_SIGNS] not in shown, (lang, shown)


def in_view(page, selector: str) -> bool:
    """Whether the element is wholly inside the viewport (no scrolling needed)."""
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def analyse(page, path: Path, ref: str | None = None) -> None:
    """Choose a file, analyse it, wait for the answer."""
    page.set_input_files("#image-input", str(path))
    if ref:
        page.fill("#patient-ref", ref)
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")


@pytest.mark.parametrize("lang", LANGS)
def test_review_band_reads_review_on_the_page_history_and_report(new_page, band_server, lang):
    page = new_page(viewport=SMALL_SCREEN)
    page.goto(f"{band_server.url}?lang={lang}")
    analyse(page, XRAY_NORMAL, f"BAND-{lang}")
    verdict = page.inner_text("#result-text")
    assert words(lang, HEADLINE[REVIEW]) in verdict
    assert page.get_attribute("#result-text", "class") == "verdict outcome-review"
    assert page.inner_text("#result-text .verdict-icon") == ICON[REVIEW]
    never_no_signs(lang, page.inner_text("#result-live"))
    for selector in ("#result-text", "#r-prob", "#r-next li"):
        assert in_view(page, selector), selector  # at 800 x 600, without scrolling
    # the history list
    row = page.locator("#history-body tr", has_text=f"BAND-{lang}").first
    row.wait_for()
    cell = row.locator("td.outcome-review")
    assert cell.count() == 1 and cell.locator(".verdict-icon").inner_text() == ICON[REVIEW]
    assert words(lang, SHORT[REVIEW]) in cell.inner_text()
    never_no_signs(lang, row.inner_text())
    # the report
    rid = page.text_content("#r-id")
    page.goto(f"{band_server.url}report/{rid}?lang={lang}")
    report = page.locator("section.report")
    assert report.locator(".verdict.outcome-review").count() == 1
    assert words(lang, HEADLINE[REVIEW]) in report.inner_text()
    never_no_signs(lang, report.inner_text())
    assert page.problems == [], page.problems


@pytest.mark.parametrize("setting", ["balanced", "screening"])
def test_both_settings_read_review_and_differ_only_in_the_label(new_page, band_server, setting):
    reply = post_image(band_server.url, XRAY_NORMAL.read_bytes(), fields={"mode": setting},
                       headers={"Accept-Language": "fr"})
    body = reply.json()
    assert body["outcome"] == REVIEW and body["headline"] == words("fr", HEADLINE[REVIEW])
    assert body["label"] == ("NORMAL" if setting == "balanced" else "PNEUMONIA")
    page = new_page(viewport=SMALL_SCREEN)
    page.goto(f"{band_server.url}report/{body['id']}?lang=fr")
    report = page.locator("section.report")
    assert report.locator(".verdict.outcome-review .verdict-icon").inner_text() == ICON[REVIEW]
    never_no_signs("fr", report.inner_text())


def test_clinic_thresholds_are_said_in_the_main_text(new_page, site_server):
    page = new_page(viewport=SMALL_SCREEN)
    page.goto(site_server.url)
    analyse(page, XRAY_NORMAL)
    assert "outcome-review" in page.get_attribute("#result-text", "class")
    notes = page.inner_text("#r-notes")
    assert "Thresholds set for this clinic on" in notes and "2026" in notes
    assert page.is_visible("#r-notes")  # in the answer, not folded in the details
    never_no_signs("en", page.inner_text("#result-live"))
    rid = page.text_content("#r-id")
    page.goto(f"{site_server.url}report/{rid}")
    assert "Thresholds set for this clinic on" in page.inner_text("section.report")


@pytest.mark.parametrize("lang", LANGS)
def test_drift_note_travels_with_the_answer_in_view(new_page, drift_server, lang):
    page = new_page(viewport=SMALL_SCREEN)
    page.goto(f"{drift_server.url}?lang={lang}")
    analyse(page, XRAY_NORMAL)
    note = page.locator("#r-notes .answer-note").first
    expected = i18n.in_language(lang, "Recent images differ from those the model was checked "
                                "on: take extra care with this result, and ask for the X-ray "
                                "unit's settings to be checked.")
    assert note.inner_text() == expected
    for selector in ("#result-text", "#r-next li", "#r-notes .answer-note"):
        assert in_view(page, selector), selector
    rid = page.text_content("#r-id")
    page.goto(f"{drift_server.url}report/{rid}?lang={lang}")
    assert expected in page.inner_text("section.report")
    # the banner says it once, without repeating itself
    banner = http("GET", drift_server.url + "api/v1/status").json()["drift"]["message"]
    assert banner.count("differ") + banner.count("different") == 1, banner


# --- the printed report: one page, A4 and Letter, every outcome, every language -----------

WARNINGS = [
    {"code": "low_contrast", "message": "Low contrast image: the result is less reliable."},
    {"code": "noisy", "message": "Noisy image: the result is less reliable."},
    {"code": "unusual_aspect_ratio", "message": "Unusual image shape: it is squashed to a "
                                                "square for the model; check the cropping."},
    {"code": "unusual_layout", "message": "The image does not look like a typical frontal "
                                          "chest X-ray: check view, rotation and cropping."},
    {"code": "decubitus_view", "message": "Decubitus view (the child lying on one side): the "
                                          "model was trained on standard frontal views."},
]


@pytest.fixture(scope="module")
def worst_records(band_model, band_server) -> dict[str, str]:
    """One stored record per outcome with everything a report can hold (ids by outcome)."""
    model = OnnxModel(band_model)
    pred = Predictor(model).predict(XRAY_PNEUMONIA.read_bytes(), heatmap=True)
    store = HistoryStore(band_server.data_dir / DB_NAME)
    ids = {}
    try:
        for outcome, p in ((PNEUMONIA, 0.97), (REVIEW, 0.5), (NO_SIGNS, 0.02)):
            rec = pred.history_record()
            rec.update(id=new_id(), created_at=utc_now_iso(), outcome=outcome, probability=p,
                       confidence="borderline" if outcome == REVIEW else "clear",
                       warnings=WARNINGS, drift=True, threshold_source="site",
                       site_thresholds_at="2026-11-30T09:00:00Z", patient_ref=LONG_REF,
                       file_name="radiographie_thorax_face_enfant_" + "x" * 60 + ".dcm",
                       finding="other", finding_by="Dr A. B. Mwangi-Okoth",
                       finding_at=utc_now_iso(),
                       finding_note="Follow-up X-ray in two weeks; compare with the previous "
                                    "film from the district hospital. " * 3)
            ids[outcome] = store.add(rec, heatmap=pred.heatmap_source)["id"]
    finally:
        store.close()
    assert len(LONG_REF) == 64
    return ids


def pdf_pages(pdf: bytes) -> int:
    """Pages in a PDF chromium printed (its /Type /Page objects)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


@pytest.mark.parametrize("lang", ALL_LANGS)
def test_report_prints_on_one_page(new_page, band_server, worst_records, lang):
    page = new_page(viewport={"width": 1000, "height": 800})
    counts = {}
    for outcome in OUTCOMES:
        page.goto(f"{band_server.url}report/{worst_records[outcome]}?lang={lang}")
        page.wait_for_load_state("networkidle")
        page.click("section.report .tech summary")  # printing opens the details too
        text = page.inner_text("section.report")
        assert page.inner_text("body").count(LONG_CLINIC) == 1 and LONG_REF in text
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), "raw ISO time on the report"
        if lang != "en":
            assert "PNEUMONIA" not in text or words(lang, "PNEUMONIA") == "PNEUMONIA"
        assert page.locator("section.report bdi").count() >= 3  # ref, file, clinic isolated
        heat = page.locator("section.report img[src$='heatmap.png']").count()
        assert heat == (1 if outcome == PNEUMONIA else 0)
        for fmt in ("A4", "Letter"):
            pdf = page.pdf(format=fmt, print_background=True)
            counts[(outcome, fmt)] = pdf_pages(pdf)
            if os.environ.get("PNEUMO_REPORT_PDFS"):  # to look at them
                out = Path(os.environ["PNEUMO_REPORT_PDFS"])
                out.mkdir(parents=True, exist_ok=True)
                (out / f"report-{lang}-{outcome}-{fmt}.pdf").write_bytes(pdf)
    assert set(counts.values()) == {1}, json.dumps({f"{o} {f}": n for (o, f), n in
                                                    counts.items()})
