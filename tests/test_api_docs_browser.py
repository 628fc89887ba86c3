"""/docs (Swagger UI) and /redoc render in real headless Chromium with every non-loopback request blocked:
the API documentation needs no CDN."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_browser import launch

pytestmark = pytest.mark.slow  # a served API + Chromium; `pytest -m "not slow"` skips it


def offline_page(browser, base_url: str):
    """A page whose requests outside base_url are aborted and recorded (what a machine without internet sees).

    Recorded as (resource type, url): ReDoc's footer asks for the Redocly logo image from its CDN, which only
    leaves a missing picture; a script, stylesheet or data request going out would leave the page blank."""
    page = browser.new_page()
    blocked: list[tuple[str, str]] = []

    def route(r):
        if r.request.url.startswith(base_url):
            r.continue_()
        else:
            blocked.append((r.request.resource_type, r.request.url))
            r.abort()

    page.route("**/*", route)
    return page, blocked


@pytest.mark.browser
def test_swagger_ui_and_redoc_render_without_network(api_server, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    base = api_server.base_url
    with sync_playwright() as p:
        browser = launch(p, chromium_path)
        try:
            page, blocked = offline_page(browser, base)
            page.goto(base + "/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("PolicyDesk API", timeout=60_000)
            expect(page.locator(".opblock-summary-path", has_text="/v1/ask").first).to_be_visible()
            assert blocked == []

            page, blocked = offline_page(browser, base)
            page.goto(base + "/redoc")
            expect(page.locator("h1", has_text="PolicyDesk API").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("/v1/ask").first).to_be_attached()
            assert [url for kind, url in blocked if kind != "image"] == []
        finally:
            browser.close()
