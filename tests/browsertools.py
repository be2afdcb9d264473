"""The real browser of the page tests: Debian's chromium, headless, driven by Playwright.

One place for its path, flags and skip rule; the ``browser`` fixture (one chromium per test
module) is in tests/app/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]
"""``pytestmark`` of every browser test module."""


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium (a Playwright Browser), closed on exit."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def expect(locator):
    """Playwright's retrying assertions (no string evaluation: the page's CSP forbids eval)."""
    return pytest.importorskip("playwright.sync_api").expect(locator)
