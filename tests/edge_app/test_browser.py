"""The page in a real browser: Debian's chromium driven headless by Playwright (slow)."""

import os

import pytest
from apptools import XRAY_NORMAL, noise_png

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


@pytest.fixture
def page(live_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 900, "height": 640})  # small laptop
        pg = context.new_page()
        pg.problems = []
        pg.on("console", lambda m: m.type == "error" and pg.problems.append(m.text))
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        pg.set_default_timeout(30_000)
        yield pg
        context.close()
        browser.close()


def test_upload_shows_result_and_heatmap(page, live_server, tmp_path):
    page.goto(live_server.url)
    assert "Intended use" in page.inner_text("body")
    page.set_input_files("#image-input", str(XRAY_NORMAL))
    page.fill("#patient-ref", "BROWSER-1")
    page.select_option("#mode", "screening")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    verdict = page.inner_text("#result-text")
    assert "No signs of pneumonia detected" in verdict or "Signs of pneumonia likely" in verdict
    assert "%" in verdict
    assert "screening" in page.inner_text("#r-mode")
    page.wait_for_function("document.getElementById('r-heatmap').complete && "
                           "document.getElementById('r-heatmap').naturalWidth > 0")
    page.wait_for_function("document.getElementById('r-image').naturalWidth > 0")
    page.wait_for_selector("#history-body td:has-text('BROWSER-1')")
    page.emulate_media(media="print")
    assert not page.is_visible("#predict-form") and page.is_visible("#result-text")
    page.emulate_media(media="screen")
    assert page.problems == [], page.problems


def test_refusal_is_shown_in_plain_words(page, live_server, tmp_path):
    noise = tmp_path / "noise.png"
    noise.write_bytes(noise_png())
    page.goto(live_server.url)
    page.set_input_files("#image-input", str(noise))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "does not look like a chest X-ray" in page.inner_text("#error")
    assert page.is_hidden("#result")


def test_keyboard_only_upload(page, live_server):
    page.goto(live_server.url)
    page.focus("#image-input")
    assert page.evaluate("document.activeElement.id") == "image-input"
    page.set_input_files("#image-input", str(XRAY_NORMAL))
    page.focus("#submit")
    page.keyboard.press("Enter")
    page.wait_for_selector("#result:not([hidden])")
