"""Debian's headless Chromium driven by Playwright, for the gallery tests and the benchmark.

Never ``playwright install`` (it downloads a browser build): the Makefile installs Debian's
``chromium`` package (``apt-get install -y chromium``) and Playwright drives that executable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path(os.environ.get("BATCHRUNNER_CHROMIUM", "/usr/bin/chromium"))
INSTALL = "apt-get update && apt-get install -y chromium   (make test does this when missing)"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(viewport: tuple[int, int] = (1280, 900)) -> Iterator[BrowserContext]:
    """A fresh browser profile in a temporary folder; closed (and removed) afterwards."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}; install it with: {INSTALL}")
    with (
        tempfile.TemporaryDirectory(prefix="batchrunner-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            yield context
        finally:
            context.close()
