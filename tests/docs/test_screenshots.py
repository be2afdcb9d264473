"""The pictures of docs/clinic-staff.md: the page with each outcome, the heatmap, the report.

The default run checks that every committed picture in docs/img/ exists, is a small PNG and is
shown on the clinic staff page. The slow tests take them again from a real server (the bundled
model) in Debian's chromium, headless, driven by Playwright (tests/browsertools.py), and check
what each one shows; they write into docs/img/ only with

    PNEUMO_WRITE_SCREENSHOTS=1 python -m pytest -m slow tests/docs/test_screenshots.py

(otherwise into a temporary folder). Each is cut to the part of the page it is about and saved
with a 256-colour palette (`save`), so a picture stays a few tens of kB. The review-band picture needs
a real X-ray the bundled model puts in the review band: the first one (by name) of the
external validation images in ../shared/data/external_val; it is skipped without them.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
from browsertools import BROWSER_MARKS

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"
PAGE = ROOT / "docs" / "clinic-staff.md"
WRITE_ENV = "PNEUMO_WRITE_SCREENSHOTS"
EXTERNAL_VAL = ROOT.parent / "shared" / "data" / "external_val"
MAX_BYTES = 100_000
"""A committed picture's size limit (a few tens of kB each)."""
GREYS, COLOURS = 96, 160
"""The palette of a saved picture: greys for the X-ray, colours for the heatmap and the page."""

PICTURES = {
    "outcome-pneumonia.png": "the result card: signs of pneumonia likely (heatmap shown)",
    "outcome-review.png": "the result card: unclear, a clinician should review",
    "outcome-no-signs.png": "the result card: no signs of pneumonia detected",
    "heatmap.png": "the heatmap with its caption (as the report shows it)",
    "report.png": "the printable report of the pneumonia result",
    "refused-upside-down.png": "an upside-down film refused, with Rotate and analyse",
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_committed_pictures_are_small_pngs():
    for name in PICTURES:
        path = IMG / name
        assert path.is_file(), f"docs/img/{name} is missing ({WRITE_ENV}=1 pytest -m slow ...)"
        data = path.read_bytes()
        width, height = png_size(data)
        assert 200 <= width <= 1200 and 150 <= height <= 1400, (name, width, height)
        assert len(data) <= MAX_BYTES, f"docs/img/{name} is {len(data)} bytes"
    strays = sorted(p.name for p in IMG.iterdir() if p.name not in PICTURES)
    assert not strays, f"pictures in docs/img/ no test takes: {strays}"


def test_every_picture_is_shown_on_the_clinic_staff_page():
    text = PAGE.read_text(encoding="utf-8")
    for name in PICTURES:
        assert f"](img/{name})" in text, f"docs/clinic-staff.md does not show img/{name}"


# --- taking them (slow: a real server and a real browser) ------------------------------


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    if os.environ.get(WRITE_ENV) == "1":
        IMG.mkdir(parents=True, exist_ok=True)
        return IMG
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real server with the bundled model and a clinic name, and one chromium page."""
    from apptools import start_server
    from browsertools import chromium

    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL

    srv = start_server(DEFAULT_MODEL, tmp_path_factory.mktemp("shots-data"),
                       "--clinic-name", "Kibera Health Centre")
    try:
        with chromium() as browser:
            ctx = browser.new_context(viewport={"width": 900, "height": 800},
                                      device_scale_factor=1, locale="en-GB",
                                      timezone_id="Africa/Nairobi")
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            page.goto(srv.url + "?lang=en")
            yield srv, page
            ctx.close()
    finally:
        srv.stop()


def save(png: bytes, path: Path) -> Path:
    """A screenshot with a 256-colour palette, optimised: 96 evenly spaced greys for the X-ray
    (no banding) and 160 colours chosen from the coloured pixels alone (the heatmap keeps its
    colours, the page's white does not crowd them out); no dithering, so flat areas stay
    small."""
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    rgb = np.asarray(img)
    coloured = rgb[rgb.max(axis=2).astype(int) - rgb.min(axis=2) > 12]
    palette: list[int] = []
    if len(coloured):
        strip = Image.fromarray(np.ascontiguousarray(coloured.reshape(1, -1, 3)))
        palette = strip.quantize(colors=COLOURS,
                                 method=Image.Quantize.FASTOCTREE).getpalette()[:3 * COLOURS]
    for i in range(GREYS):
        palette += [round(i * 255 / (GREYS - 1))] * 3
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette + [0] * (768 - len(palette)))
    img.quantize(palette=holder, dither=Image.Dither.NONE).save(path, optimize=True)
    assert path.stat().st_size <= MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    return path


def analyse(page, path: Path) -> None:
    """Choose a file, type a patient reference, analyse it, wait for the answer."""
    page.set_input_files("#image-input", str(path))
    page.fill("#patient-ref", "CHILD-0042")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")
    page.wait_for_load_state("networkidle")


def review_xray() -> Path:
    """The first external validation X-ray the bundled model puts in the review band."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel
    from pneumo.app.pipeline.outcome import REVIEW
    from pneumo.app.pipeline.predictor import Predictor

    model = OnnxModel(DEFAULT_MODEL)
    predictor = Predictor(model)
    for path in sorted(EXTERNAL_VAL.glob("*/*.jpeg")):
        try:
            p = predictor.predict(path.read_bytes(), heatmap=False).probability
        except Exception:  # refused: not a candidate
            continue
        if model.outcome(p) == REVIEW:
            return path
    pytest.skip(f"no review-band X-ray in {EXTERNAL_VAL}")


def outcome_class(page) -> str:
    return page.get_attribute("#result-text", "class") or ""


class TestTakeThePictures:
    pytestmark = BROWSER_MARKS  # slow; skipped without Debian's chromium

    def test_pneumonia_heatmap_and_report(self, live, out_dir):
        from apptools import XRAY_PNEUMONIA

        srv, page = live
        analyse(page, XRAY_PNEUMONIA)
        assert "outcome-pneumonia" in outcome_class(page)
        assert page.is_visible("#r-heatmap")  # shown at once with signs of pneumonia
        save(page.locator("#result-card").screenshot(), out_dir / "outcome-pneumonia.png")
        rid = page.text_content("#r-id")
        page.goto(f"{srv.url}report/{rid}?lang=en")
        page.wait_for_load_state("networkidle")
        assert "Signs of pneumonia likely" in page.inner_text("section.report")
        heat = page.locator("section.report figure", has=page.locator("img[src$='heatmap.png']"))
        save(heat.screenshot(), out_dir / "heatmap.png")  # the report's, larger than the page's
        save(page.locator("section.report").screenshot(), out_dir / "report.png")
        page.goto(srv.url + "?lang=en")

    def test_no_signs(self, live, out_dir):
        from apptools import XRAY_NORMAL

        _, page = live
        analyse(page, XRAY_NORMAL)
        assert "outcome-no_signs" in outcome_class(page)
        assert not page.is_visible("#r-heatmap")  # on request only
        save(page.locator("#result-card").screenshot(), out_dir / "outcome-no-signs.png")

    def test_review(self, live, out_dir):
        xray = review_xray()
        _, page = live
        analyse(page, xray)
        assert "outcome-review" in outcome_class(page)
        assert "Unclear: a clinician should review this X-ray" in page.inner_text("#result-text")
        save(page.locator("#result-card").screenshot(), out_dir / "outcome-review.png")

    def test_upside_down_is_refused_with_the_fix(self, live, out_dir, tmp_path):
        from apptools import XRAY_NORMAL
        from PIL import Image

        _, page = live
        turned = tmp_path / "upside-down.jpeg"
        Image.open(XRAY_NORMAL).rotate(180).save(turned)
        analyse(page, turned)
        assert page.is_visible("#error")
        assert "upside down" in page.inner_text("#error")
        assert page.get_by_role("button", name="Rotate and analyse").is_visible()
        save(page.locator("#error").screenshot(), out_dir / "refused-upside-down.png")
