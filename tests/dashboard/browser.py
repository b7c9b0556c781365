"""Headless Chromium (Debian's `chromium` package) driven by Playwright from PyPI, for the
dashboard's browser tests. Nothing is downloaded: `playwright install` is never run.

Every page is offline by construction: requests to any host but the server under test are
aborted and recorded, so a test fails if the dashboard or the API docs reach for a CDN.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route

CHROMIUM = os.environ.get("TUNEFORGE_TEST_CHROMIUM", "/usr/bin/chromium")
# Screenshots the lead can look at, besides each test's own tmp dir.
SHOTS = Path(os.environ.get("TUNEFORGE_DASHBOARD_SHOTS", "/tmp/dashboard-shots"))
TIMEOUT_MS = 15_000


def skip_without_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    skip_without_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield browser
        finally:
            await browser.close()


def _share(path: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


@dataclass
class Tab:
    """A page in a fresh context (its own sessionStorage), with what it tried to reach
    outside the server and the errors its scripts hit."""

    page: Page
    context: BrowserContext
    root: str
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def shot(self, directory: Path, name: str, *, share: bool = False) -> Path:
        path = directory / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        if share:
            await asyncio.to_thread(_share, path)
        return path

    async def close(self) -> None:
        await self.context.close()


async def open_tab(browser: Browser, root: str) -> Tab:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    tab = Tab(page=page, context=context, root=root)
    own = urlsplit(root).netloc

    async def only_the_server(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == own or url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            tab.outside.append(url)
            await route.abort()

    await context.route("**/*", only_the_server)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    return tab


async def sign_in(tab: Tab, api_key: str, hash_route: str = "#/jobs") -> None:
    page = tab.page
    await page.goto(f"{tab.root}/{hash_route}")
    await page.fill("#api-key", api_key)
    await page.click("#sign-in")
    await page.wait_for_selector("#sign-out")
