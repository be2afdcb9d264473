"""Fixtures of the page tests in a real browser."""

from __future__ import annotations

import pytest
from browsertools import chromium


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the test module."""
    with chromium() as b:
        yield b
