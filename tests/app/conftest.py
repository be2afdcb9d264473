"""Fixtures of the page tests in a real browser (tests/browsertools.py has the browser)."""

from __future__ import annotations

import pytest
from apptools import start_server
from browsertools import chromium

DEFAULT_VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the test module."""
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server(test_model_path, tmp_path_factory):
    """One real Waitress server for the test module, with a clinic name."""
    srv = start_server(test_model_path, tmp_path_factory.mktemp("browser-data"),
                       "--clinic-name", "Kibera Health Centre")
    yield srv
    srv.stop()


@pytest.fixture
def new_page(browser):
    """new_page(**context options) -> a page in a fresh context (1366 x 768 unless a
    viewport is given) that records script errors in ``.problems``; closed at the end."""
    contexts = []

    def make(**options):
        options.setdefault("viewport", DEFAULT_VIEWPORT)
        ctx = browser.new_context(**options)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.problems = []
        pg.on("console", lambda m: m.type == "error" and pg.problems.append(m.text))
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        pg.set_default_timeout(30_000)
        return pg

    yield make
    for ctx in contexts:
        ctx.close()
