"""/docs and /redoc render in a real browser with no internet: every asset comes from the API
itself (fastapi-offline's packaged Swagger UI and ReDoc), and the page lists custody's operations.
Debian's chromium, driven by Playwright's Python package (`./dev test` installs the browser)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import serve_api
from tests.support.browser import BROWSER_ARGS, CHROMIUM

# ReDoc's footer badge is an <img> that hides itself when it cannot load: the only request the
# bundle makes elsewhere, and nothing the page needs.
BADGES = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}


@pytest.fixture
async def served(settings, client):  # type: ignore[no-untyped-def]
    async with serve_api(settings, client) as url:
        yield url


@pytest.mark.parametrize("page_path, rendered", [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
async def test_the_api_docs_render_offline_in_a_real_browser(served, page_path, rendered):
    from playwright.async_api import async_playwright

    assert shutil.which("chromium") or CHROMIUM, "chromium is missing: ./dev test installs it (apt-get install chromium)"
    requested: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = await browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            # Anything not served by the API is refused, as on a machine without internet.
            await page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(served) else route.abort())
            await page.goto(served + page_path)
            await page.wait_for_selector(rendered, timeout=20_000)
            text = await page.inner_text("body")
        finally:
            await browser.close()
    assert "/v1/withdrawals" in text and "custody" in text
    outside = sorted({u for u in requested if not u.startswith(served) and not u.startswith("data:") and u not in BADGES})
    assert outside == [], f"the page asked for assets elsewhere: {outside}"
