"""The console's browser tests: Debian's chromium (Playwright) and the API served to it."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import serve_api
from tests.support.browser import BROWSER_ARGS, CHROMIUM


@pytest.fixture
async def served(settings, client, api):  # type: ignore[no-untyped-def]
    """The API under uvicorn for the browser (`api`, in-process, sets things up; its worker runs them)."""
    async with serve_api(settings, client) as url:
        yield url


@pytest.fixture
async def browser():  # type: ignore[no-untyped-def]
    from playwright.async_api import async_playwright

    assert shutil.which("chromium") or CHROMIUM, "chromium is missing: ./dev test installs it (apt-get install chromium)"
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
