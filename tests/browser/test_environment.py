"""The browser tests' tools are installed (they fail, never skip, without them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

#: Debian's chromium (helpers.CHROMIUM; not imported from there, which needs playwright).
CHROMIUM = Path("/usr/bin/chromium")


def test_playwright_and_chromium_are_installed() -> None:
    if importlib.util.find_spec("playwright") is None:
        pytest.fail(
            "Python package 'playwright' is missing: pip install playwright. The browser"
            " tests drive Debian's chromium; never run `playwright install`."
        )
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian package 'chromium' (apt-get install chromium);"
            " the browser tests never run `playwright install`."
        )
