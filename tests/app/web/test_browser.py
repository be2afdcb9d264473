"""The page in a real browser: Debian's chromium driven headless by Playwright (slow).

One server and one browser for the module (each test gets a fresh browser context); the
tests never depend on the model's exact probabilities or on what else is in the history.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from apptools import XRAY_NORMAL, XRAY_PNEUMONIA, http, noise_png, skimage_png
from browsertools import BROWSER_MARKS

pytestmark = BROWSER_MARKS


SMALL_LAPTOP = {"width": 900, "height": 640}


@pytest.fixture
def page(new_page):
    return new_page(viewport=SMALL_LAPTOP)


def _analyse(page, path, ref=None, *, keyboard=False):
    """Choose a file (and reference), analyse, wait for the result or the error."""
    page.set_input_files("#image-input", str(path))
    if ref is not None:
        page.fill("#patient-ref", ref)
    if keyboard:
        page.focus("#submit")
        page.keyboard.press("Enter")
    else:
        page.click("#submit")
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")


def _record(server, record_id):
    return http("GET", f"{server.url}api/v1/history/{record_id}").json()


def _latest(server):
    return http("GET", f"{server.url}api/v1/history?per_page=1").json()


def _result_id(page):
    return page.text_content("#r-id")  # inside the closed "Technical details"


def test_upload_shows_result_and_heatmap(page, server):
    page.goto(server.url)
    assert "Intended use" in page.inner_text("body")
    assert "Kibera Health Centre" in page.inner_text("header")
    assert page.locator("#mode").count() == 0  # no setting on the nurse's form
    _analyse(page, XRAY_NORMAL, "BROWSER-1")
    verdict = page.inner_text("#result-text")
    assert any(words in verdict for words in ("No signs of pneumonia detected",
                                              "Signs of pneumonia likely", "Unclear:"))
    prob = page.inner_text("#r-prob")
    assert ("out of 100 (a score, not a chance of disease)" in prob
            or "estimated chance of pneumonia signs" in prob.lower())
    assert "threshold" not in page.inner_text("#result").lower()  # details closed
    assert "guidance, not a protocol" in page.inner_text("#result")
    assert page.inner_text("#r-next").strip()
    page.click("#result summary")
    assert "balanced" in page.inner_text("#r-mode")
    page.wait_for_function("document.getElementById('r-heatmap').complete && "
                           "document.getElementById('r-heatmap').naturalWidth > 0")
    page.wait_for_function("document.getElementById('r-image').naturalWidth > 0")
    if "No signs" in verdict:  # a NORMAL heatmap: explained, shown only on request
        assert "does not mark disease" in page.inner_text("#r-heat-figure")
        assert page.is_hidden("#r-heatmap")
        page.click("#r-heat-show")
    assert page.is_visible("#r-heatmap")
    page.wait_for_selector("#history-body td:has-text('BROWSER-1')")
    assert XRAY_NORMAL.name in page.inner_text("#history-body")
    page.emulate_media(media="print")
    assert not page.is_visible("#predict-form") and page.is_visible("#result-text")
    page.emulate_media(media="screen")
    assert page.problems == [], page.problems


def test_new_file_clears_the_previous_patient(page, server):
    page.goto(server.url)
    _analyse(page, XRAY_NORMAL, "PATIENT-A")
    assert page.is_visible("#result") and page.input_value("#patient-ref") == "PATIENT-A"
    page.set_input_files("#image-input", str(XRAY_PNEUMONIA))
    # the previous child's verdict, image and reference are gone at once...
    assert page.is_hidden("#result") and page.is_visible("#result-empty")
    assert page.inner_text("#result-text") == ""
    assert page.get_attribute("#r-image", "src") is None
    assert page.input_value("#patient-ref") == ""
    # ...and the page says so, visibly, with a way to keep the reference
    assert page.is_visible("#ref-note") and "PATIENT-A" in page.inner_text("#ref-note")
    page.click("#ref-keep")
    assert page.input_value("#patient-ref") == "PATIENT-A" and page.is_hidden("#ref-note")
    page.fill("#patient-ref", "")
    page.fill("#patient-ref", "PATIENT-B")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    assert _record(server, _result_id(page))["patient_ref"] == "PATIENT-B"
    # the fault: analyse, choose a new file, analyse -> must not be stored as B
    page.set_input_files("#image-input", str(XRAY_NORMAL))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    rec = _record(server, _result_id(page))
    assert rec["patient_ref"] is None and rec["file_name"] == XRAY_NORMAL.name
    assert page.inner_text("#r-patient") == "\u2014"
    assert page.problems == [], page.problems


def test_error_replaces_the_old_result(page, server):
    page.goto(server.url)
    _analyse(page, XRAY_NORMAL, "PATIENT-C")
    assert page.is_visible("#result")
    refusal = {"error": {"code": "not_a_chest_xray", "message": "This does not look like a "
                         "chest X-ray: reason one. This app only judges pediatric frontal chest "
                         "X-rays.", "reasons": [{"code": "a", "message": "reason one."},
                                                {"code": "b", "message": "reason two."},
                                                {"code": "c", "message": "reason two."}]}}
    page.route("**/api/v1/predict", lambda route: route.fulfill(
        status=422, content_type="application/json", body=json.dumps(refusal)))
    page.click("#submit")  # the same file again; the server refuses it this time
    page.wait_for_selector("#error:not([hidden])")
    assert page.is_hidden("#result") and page.inner_text("#result-text") == ""
    assert page.get_attribute("#r-image", "src") is None
    text = page.inner_text("#error")
    assert text.count("reason one.") == 1 and text.count("reason two.") == 1  # no repeats
    assert page.evaluate("document.activeElement.id") == "error"
    page.unroute("**/api/v1/predict")


def test_real_refusal_lists_each_reason_once(page, server, tmp_path):
    photo = tmp_path / "person.png"
    photo.write_bytes(skimage_png("camera"))  # a grayscale photo of a person
    page.goto(server.url)
    _analyse(page, photo)
    text = page.inner_text("#error")
    assert "does not look like a chest X-ray" in text
    assert "document, screenshot or drawing" not in text
    for line in ("sharp, high-contrast edges", "layout of a frontal chest X-ray"):
        assert text.count(line) == 1, text
    noise = tmp_path / "noise.png"
    noise.write_bytes(noise_png())
    _analyse(page, noise)
    assert "looks like noise" in page.inner_text("#error") and page.is_hidden("#result")


@pytest.mark.parametrize("size", [(800, 600), (1366, 768)], ids=["800x600", "1366x768"])
def test_result_in_view_with_focus_after_keyboard_submit(new_page, server, size):
    page = new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(server.url)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # e.g. reading history
    _analyse(page, XRAY_NORMAL, keyboard=True)
    assert page.evaluate("document.activeElement.id") == "result-text"
    box = page.evaluate("""() => ['result-text', 'r-prob', 'r-next'].map(id => {
        const r = document.getElementById(id).getBoundingClientRect();
        return [id, Math.round(r.top), Math.round(r.bottom)]; })""")
    print(f"{size}: result positions (id, top, bottom) in the viewport: {box}")
    for name, top, bottom in box:
        assert 0 <= top and bottom <= size[1], (name, top, bottom, size)
    assert page.problems == [], page.problems


def test_next_patient_resets_everything(page, server):
    page.goto(server.url)
    _analyse(page, XRAY_NORMAL, "PATIENT-D")
    page.click("#next-patient")
    assert page.is_hidden("#result") and page.is_hidden("#error")
    assert page.input_value("#patient-ref") == "" and page.is_hidden("#ref-note")
    assert page.evaluate("document.getElementById('image-input').files.length") == 0
    assert page.inner_text("#file-name") == "No file chosen."
    assert page.is_disabled("#submit")
    assert page.get_attribute("#r-image", "src") is None
    assert page.evaluate("document.activeElement.id") == "image-input"
    assert page.evaluate("window.scrollY") == 0


def test_answer_for_a_previous_file_is_not_shown(page, server):
    page.goto(server.url)
    held = []
    page.route("**/api/v1/predict", lambda route: held.append(route))
    before = _latest(server)["total"]
    page.set_input_files("#image-input", str(XRAY_NORMAL))
    page.click("#submit")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    page.set_input_files("#image-input", str(XRAY_PNEUMONIA))  # next patient's X-ray
    held[0].continue_()
    page.wait_for_function(f"() => fetch('/api/v1/history?per_page=1').then(r => r.json())"
                           f".then(b => b.total > {before})")
    page.wait_for_timeout(300)
    assert page.is_hidden("#result") and XRAY_PNEUMONIA.name in page.inner_text("#file-name")
    page.unroute("**/api/v1/predict")


def test_times_are_local_with_the_zone(new_page, server):
    page = new_page(viewport=SMALL_LAPTOP, timezone_id="Africa/Nairobi", locale="en-GB")
    page.goto(server.url)
    _analyse(page, XRAY_PNEUMONIA, "PATIENT-E")  # signs: the report prints the heatmap too
    rid = _result_id(page)
    created = datetime.fromisoformat(_record(server, rid)["created_at"].replace("Z", "+00:00"))
    local = (created.astimezone(UTC) + timedelta(hours=3)).strftime("%H:%M")
    shown = page.inner_text("#r-time")
    assert local in shown and ("GMT+3" in shown or "EAT" in shown), shown
    assert "(Africa/Nairobi)" in page.inner_text("#history-table thead")
    page.wait_for_selector("#history-body td:has-text('PATIENT-E')")
    report = new_page(viewport=SMALL_LAPTOP, timezone_id="Africa/Nairobi", locale="en-GB")
    report.goto(f"{server.url}report/{rid}")
    text = report.inner_text(".report")
    assert "Kibera Health Centre" in text and "Clinician" in text and "Signature" in text
    stamp = report.inner_text("time.local-time")
    assert local in stamp and ("GMT+3" in stamp or "EAT" in stamp), stamp
    report.wait_for_function("[...document.querySelectorAll('.report-figures img')]"
                             ".every(i => i.complete && i.naturalWidth > 0)")
    boxes = report.evaluate("[...document.querySelectorAll('.report-figures img')]"
                            ".map(i => i.getBoundingClientRect().top)")
    assert len(boxes) == 2 and abs(boxes[0] - boxes[1]) < 2  # X-ray and heatmap side by side
    report.emulate_media(media="print")
    boxes = report.evaluate("[...document.querySelectorAll('.report-figures img')]"
                            ".map(i => i.getBoundingClientRect().top)")
    assert abs(boxes[0] - boxes[1]) < 2
    assert report.problems == [] and page.problems == [], page.problems + report.problems


def test_an_upside_down_film_is_refused_and_rotate_and_analyse_answers_it(page, server,
                                                                         tmp_path):
    """Issue 25: the refusal says what is wrong and its button analyses the turned image."""
    from PIL import Image

    turned = tmp_path / "upside-down.png"
    Image.open(XRAY_PNEUMONIA).convert("L").transpose(Image.Transpose.ROTATE_180).save(turned)
    page.goto(server.url)
    _analyse(page, turned, "TURNED-1")
    assert page.is_visible("#error") and "upside down" in page.inner_text("#error")
    assert page.is_visible("#error-fix") and page.inner_text("#error-fix") == "Rotate and analyse"
    page.click("#error-fix")
    page.wait_for_selector("#result:not([hidden])")
    assert page.is_hidden("#error")
    assert "rotated 180 degrees" in page.inner_text("#r-warnings")
    rec = _latest(server)["items"][0]
    assert rec["patient_ref"] == "TURNED-1"
    assert "orientation_corrected" in [w["code"] for w in rec["warnings"]]
    # the refused upload's 422 is the answer under test; the browser logs it as a failed load
    assert [p for p in page.problems if "status of 422" not in p] == [], page.problems


def test_an_xray_chosen_while_the_page_still_loads_can_be_analysed(page, server):
    """app.js is deferred: a file picked before it runs (a slow laptop) must still count."""
    held = []
    page.route("**/static/app.js*", lambda route: held.append(route))
    page.goto(server.url, wait_until="commit")
    page.wait_for_selector("#image-input", state="attached")
    while not held:  # the browser has asked for the script and is waiting for it
        page.wait_for_timeout(20)
    page.set_input_files("#image-input", str(XRAY_NORMAL))
    assert page.locator("#submit").is_disabled()  # no script yet
    for route in held:
        route.continue_()
    page.wait_for_selector("#submit:not([disabled])")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    assert page.problems == []
