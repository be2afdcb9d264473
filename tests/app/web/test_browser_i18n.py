"""The page in the clinic's language, right to left, accessible (slow: a real chromium).

Screenshots of each language go to ``artefacts/browser/`` (gitignored; PNEUMO_ARTEFACTS moves
it) as test artefacts. The accessibility audit injects axe-core (MPL-2.0, Deque Systems),
installed by ``.ci/run`` with npm into ``.ci/axe`` (or named by PNEUMO_AXE); without it the
audit is skipped with the reason. axe is injected into a context that bypasses the page's CSP
(``script-src 'self'``), for the audit only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apptools import REPO, XRAY_NORMAL, XRAY_PNEUMONIA, start_server
from browsertools import BROWSER_MARKS, expect

AXE = Path(os.environ.get("PNEUMO_AXE")
           or REPO / ".ci" / "axe" / "node_modules" / "axe-core" / "axe.min.js")
ARTEFACTS = Path(os.environ.get("PNEUMO_ARTEFACTS") or REPO / "artefacts") / "browser"
ZONE = "Africa/Nairobi"
WORDS = {  # the verdict of XRAY_PNEUMONIA / the "Next patient" button, per language
    "en": ("Signs of pneumonia", "Next patient", "History"),
    "fr": ("Signes de pneumonie", "Patient suivant", "Historique"),
    "ar": ("علامات التهاب رئوي", "المريض التالي", "السجل"),
}

pytestmark = BROWSER_MARKS


@pytest.fixture
def open_page(new_page):
    """open_page(lang, **context options) -> a page whose browser prefers `lang`."""
    def make(lang: str, **options):
        return new_page(locale=lang, timezone_id=ZONE,
                        extra_http_headers={"Accept-Language": lang}, **options)

    return make


def _analyse(page, path):
    page.set_input_files("#image-input", str(path))
    page.click("#submit")
    expect(page.locator("#result")).to_be_visible()


def _shot(page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def _overflow(page) -> list[str]:
    """Elements whose text is cut off or that stick out of the page horizontally."""
    return page.evaluate("""() => {
      const out = [];
      const width = document.documentElement.clientWidth;
      if (document.documentElement.scrollWidth > width + 1) { out.push('page scrolls sideways'); }
      for (const el of document.querySelectorAll('body *')) {
        if (!el.offsetParent || el.closest('.table-wrap, svg, .skip, .sr-only')) { continue; }
        const r = el.getBoundingClientRect();
        if (r.width && (r.left < -1 || r.right > width + 1)) { out.push((el.id || el.tagName) + ' outside'); }
        const s = getComputedStyle(el);
        if (s.overflowX === 'hidden' && el.scrollWidth > el.clientWidth + 1 && s.textOverflow !== 'clip') {
          out.push((el.id || el.tagName) + ' clipped');
        }
      }
      return out.slice(0, 10);
    }""")


@pytest.mark.parametrize("lang", ["en", "fr", "ar"])
def test_page_and_report_in_the_language(open_page, server, lang):
    page = open_page(lang)
    page.goto(server.url + "/")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", lang)
    expect(html).to_have_attribute("dir", "rtl" if lang == "ar" else "ltr")
    verdict, next_patient, history = WORDS[lang]
    expect(page.locator("#history-title")).to_have_text(history)
    _analyse(page, XRAY_PNEUMONIA)
    expect(page.locator("#result-text")).to_contain_text(verdict)
    expect(page.locator("#next-patient")).to_have_text(next_patient)
    # local time in the language, the zone shown
    assert "Z" not in page.locator("#r-time").inner_text()
    assert ZONE in page.locator("#r-time").get_attribute("title")
    assert page.locator("#h-zone").inner_text() == f"({ZONE})"
    expect(page.locator("#history-body tr").first).to_contain_text(
        {"en": "Signs of pneumonia likely", "fr": "Signes de pneumonie probables",
         "ar": "علامات التهاب رئوي مرجّحة"}[lang])
    if lang == "ar":  # mirrored: the upload card is on the right of the result card
        up = page.locator("section.upload").bounding_box()
        res = page.locator("#result-card").bounding_box()
        assert up["x"] > res["x"]
    _shot(page, f"page-{lang}")
    assert not page.problems, page.problems

    with page.context.expect_page() as popup:
        page.click("#r-report")
    report = popup.value
    report.wait_for_load_state()
    expect(report.locator("html")).to_have_attribute("lang", lang)
    expect(report.locator(".verdict")).to_contain_text(verdict)
    assert "Z" not in report.locator("time.local-time").first.inner_text()
    _shot(report, f"report-{lang}")


@pytest.mark.parametrize("size", [(1366, 768), (800, 600)])
@pytest.mark.parametrize("lang", ["ar", "fr"])
def test_no_clipped_text(open_page, server, lang, size):
    page = open_page(lang, viewport={"width": size[0], "height": size[1]})
    page.goto(server.url + "/")
    _analyse(page, XRAY_NORMAL)
    expect(page.locator("#result-text")).to_be_in_viewport()
    assert _overflow(page) == []
    _shot(page, f"page-{lang}-{size[0]}x{size[1]}")


def test_language_picker_remembered_for_the_report(open_page, server):
    page = open_page("en")
    page.goto(server.url + "/")
    page.select_option("#lang-select", "fr")
    page.click(".lang-form button")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    _analyse(page, XRAY_NORMAL)
    page.goto(server.url + page.locator("#r-report").get_attribute("href"))
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("#report-title")).to_have_text("Résultat du dépistage sur radiographie "
                                                       "thoracique")


def _axe(page) -> list[dict]:
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    return page.evaluate("""async () => {
      const r = await axe.run(document, { runOnly: { type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
      return r.violations.map(v => ({ id: v.id, impact: v.impact, nodes: v.nodes.length,
                                      where: v.nodes.slice(0, 3).map(n => n.target.join(' ')) }));
    }""")


@pytest.mark.skipif(not AXE.is_file(), reason=f"axe-core is absent ({AXE}); .ci/run installs it "
                                              "with npm (or set PNEUMO_AXE)")
@pytest.mark.parametrize("lang", ["en", "ar"])
def test_axe_no_serious_or_critical(open_page, server, lang):
    """axe-core on the empty page, the result (with the history) and the report."""
    page = open_page(lang, bypass_csp=True)  # for injecting axe only
    page.goto(server.url + "/")
    expect(page.locator("#history-body tr").first).to_be_visible()
    found = {"page": _axe(page)}
    page.goto(server.url + "/")
    _analyse(page, XRAY_PNEUMONIA)
    expect(page.locator("#history-body a").first).to_be_visible()
    page.locator("details.tech summary").click()
    found["result and history"] = _axe(page)
    page.goto(server.url + page.locator("#r-report").get_attribute("href"))
    found["report"] = _axe(page)
    summary = {where: {v["impact"]: [x["id"] for x in vs if x["impact"] == v["impact"]]
                       for v in vs} for where, vs in found.items()}
    print(f"axe-core {lang}:", summary)
    bad = {where: [v for v in vs if v["impact"] in ("serious", "critical")]
           for where, vs in found.items()}
    assert not any(bad.values()), bad


def _tab_to(page, predicate: str, limit: int = 80) -> int:
    """Press Tab until `predicate` (a function of the focused element) holds; returns presses."""
    for n in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return {predicate}; }})()"):
            return n
    raise AssertionError(f"never reached by Tab: {predicate}")


def test_keyboard_only_flow(open_page, server):
    """Choose a file, analyse, read the result and reach the history with the keyboard only."""
    page = open_page("en", viewport={"width": 800, "height": 600})
    page.on("filechooser", lambda _chooser: None)  # file dialogs intercepted from the start
    page.goto(server.url + "/")
    _tab_to(page, "el.id === 'image-input'")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    timeout_error = pytest.importorskip("playwright.sync_api").TimeoutError
    chooser = None
    for _ in range(3):  # a busy machine may drop the first key press's dialog
        try:
            with page.expect_file_chooser(timeout=10_000) as info:
                page.keyboard.press("Space")
            chooser = info.value
            break
        except timeout_error:
            assert page.evaluate("document.activeElement.id") == "image-input"
    assert chooser is not None, "Space on the focused file input opened no file chooser"
    chooser.set_files(str(XRAY_PNEUMONIA))
    expect(page.locator("#file-name")).to_contain_text(XRAY_PNEUMONIA.name)
    _tab_to(page, "el.id === 'submit'")
    page.keyboard.press("Enter")
    expect(page.locator("#result-text")).to_be_focused()
    expect(page.locator("#result-text")).to_contain_text("Signs of pneumonia")
    assert page.locator("#result-live").get_attribute("aria-live") == "polite"
    _tab_to(page, "el.id === 'next-patient'")
    _tab_to(page, "!!el.closest('.history')")
    expect(page.locator("#history-body a").first).to_be_visible()
    _tab_to(page, "el.matches('#history-body a')")
    href = page.evaluate("document.activeElement.getAttribute('href')")
    assert href.startswith("/report/")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    assert not page.problems, page.problems


def test_stop_the_app_from_the_page(open_page, test_model_path, tmp_path):
    """Issue 15: "Stop the app" asks first (Cancel keeps it running); confirmed, the server
    stops (exit 0) and the page says so in its language."""
    srv = start_server(test_model_path, tmp_path / "stop-data")
    try:
        page = open_page("fr")
        page.goto(srv.url)
        expect(page.locator("#stop-confirm")).to_be_hidden()
        page.click("#stop-ask")
        expect(page.locator("#stop-confirm")).to_be_visible()
        expect(page.locator("#stop-yes")).to_be_focused()
        page.click("#stop-no")
        expect(page.locator("#stop-confirm")).to_be_hidden()
        expect(page.locator("#stop-ask")).to_be_focused()
        assert srv.proc.poll() is None  # cancelled: still running
        page.click("#stop-ask")
        page.click("#stop-yes")
        expect(page.locator("#stopped-banner")).to_be_visible()
        expect(page.locator("#stopped-banner")).to_be_focused()
        expect(page.locator("#stopped-banner")).to_have_text(
            "L’application est arrêtée. Vous pouvez fermer cet onglet.")
        expect(page.locator("#upload-title")).to_be_hidden()
        assert srv.proc.wait(timeout=15) == 0
        _shot(page, "stopped-fr")
        assert not page.problems, page.problems
    finally:
        srv.stop()
