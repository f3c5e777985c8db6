"""Headless Chromium for the playground's browser tests, driven by Playwright.

The browser is Debian's ``chromium`` package (``.ci/run`` installs it), never one
Playwright downloads: ``executable_path`` points at it. The flags keep it off the
network it would otherwise call home to (closed here, and every refused connection
costs time) and give it a fresh profile.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium (Playwright gives each launch a fresh temp profile)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y "
            "chromium), as .ci/run does; Playwright never downloads one here"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What the page reported: console errors and uncaught exceptions."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} @ {message.location}")


def open_page(browser: Browser, url: str) -> tuple[Page, PageLog]:
    """A fresh context (empty sessionStorage) with a phone-to-desktop-ish viewport."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    log = PageLog()
    page.on("console", log.on_console)
    page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    page.goto(url)
    return page, log


def image_pixels(page: Page, selector: str) -> Image.Image:
    """The pixels an ``<img>`` shows, read back through a canvas in the page.

    The page's CSP (``connect-src 'self'``) forbids fetching its own ``blob:`` URLs,
    so the test reads what the browser decoded instead; PNG keeps it lossless.
    """
    data_url = page.eval_on_selector(
        selector,
        """(img) => {
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            canvas.getContext("2d").drawImage(img, 0, 0);
            return canvas.toDataURL("image/png");
        }""",
    )
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    image.load()
    return image.convert("RGB")
