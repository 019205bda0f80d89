"""Headless Chromium for tests: Debian's own binary driven by Playwright's Python package.

Never `playwright install`: the tests use the system's chromium (apt-get install chromium),
so nothing is downloaded from outside a package registry. A test that needs a browser skips,
saying why, only when Playwright is not importable or no chromium binary is found.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Quiet and offline: no sync, no component updates, no background requests, no GPU in CI.
# /dev/shm in containers is often tiny, so the renderer uses /tmp instead.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    """The system chromium's path, or None."""
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium `Browser`; skips the test when no browser can be driven."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium binary found (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(path: Path, width: int = 1200, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """(page, requested URLs) for a local file opened via file://, loaded and idle."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(Path(path).resolve().as_uri(), wait_until="load")
        yield page, requests


def image_states(page: Any) -> list[dict[str, Any]]:
    """Every <img> on the page: its alt text and whether it decoded (complete, non-zero natural width)."""
    return page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0}))")
