"""Debian's Chromium, headless, driven by Playwright for Python (no browser download): the
UI tests open the pages as a user's browser does. ``.ci/install-servers.sh`` installs
``/usr/bin/chromium`` (``apt-get install chromium``)."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
"""Without the background-networking flags Chromium keeps dialling Google's hosts."""


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A fresh page in a fresh headless Chromium (own empty profile directory)."""
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: run .ci/install-servers.sh (apt-get install -y chromium)"
        )
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sk-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": width, "height": height},
        )  # fmt: skip
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {got!r})")
        time.sleep(0.2)


def field(page: Any, name: str) -> str:
    """The text of the page's ``[data-field=name]``."""
    return str(page.locator(f'[data-field="{name}"]').inner_text()).strip()


def number(text: str) -> float:
    """A number as the page writes it (``1,234.5``)."""
    if not re.fullmatch(r"-?[\d,]+(\.\d+)?", text):
        raise AssertionError(f"not a number on the page: {text!r}")
    return float(text.replace(",", ""))


def points(page: Any, chart: str) -> dict[str, int]:
    """Points drawn per series of chart ``#chart``."""
    paths = page.locator(f"#{chart} path.sk-series")
    return {
        str(paths.nth(i).get_attribute("data-name")): int(
            paths.nth(i).get_attribute("data-points") or 0
        )
        for i in range(paths.count())
    }


def table(page: Any, table_id: str) -> list[list[str]]:
    """The body cells of table ``#table_id``."""
    rows: list[list[str]] = page.eval_on_selector_all(
        f"#{table_id} tbody tr",
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))",
    )
    return rows
