"""Console sign-in in real headless Chromium against `streamlit run app.py` on 127.0.0.1 with a users file:
an anonymous visitor sees only the sign-in, each role sees only its pages, and without users a proxied
(non-local) browser is refused."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_browser import CHAT_INPUT, launch, streamlit_server

from bot.surfaces.users import UsersFile

pytestmark = pytest.mark.slow  # Streamlit + Chromium per role: tens of seconds; `pytest -m "not slow"` skips it

PASSWORD = "correct horse battery"
NAV_LINK = '[data-testid="stSidebarNavLink"]'
ROLE_NAV = {
    "alice": ["Console"],
    "lena": ["Console", "Analytics", "Handoffs"],
    "ada": ["Console", "Analytics", "Knowledge base", "Handoffs", "Settings"],
}


def copy_data(kb_settings, target: Path) -> Path:
    """A private copy of the session's ingested data dir (one process per embedded Chroma directory)."""
    shutil.copytree(kb_settings.data_dir, target)
    return target


@pytest.fixture(scope="module")
def team_console(tmp_path_factory, kb_settings, kb_index):
    """The console with a users file of one agent (alice), one lead (lena) and one admin (ada)."""
    root = tmp_path_factory.mktemp("team-console")
    data = copy_data(kb_settings, root / "data")
    users = UsersFile(root / "users.json")
    for name, role in (("alice", "agent"), ("lena", "lead"), ("ada", "admin")):
        users.add(name, role, PASSWORD)
    with streamlit_server(data, kb_settings.kb_dir, root / "streamlit.log",
                          extra_env={"POLICYDESK_USERS_FILE": str(root / "users.json")}) as url:
        yield url


def nav_titles(page) -> list[str]:
    """Sidebar page links, without the material icon's ligature name that precedes each title."""
    return [t.strip().split("\n")[-1].strip() for t in page.locator(NAV_LINK).all_inner_texts()]


@pytest.mark.browser
def test_anonymous_visitor_sees_only_the_sign_in(team_console, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch(p, chromium_path)
        try:
            page = browser.new_page()
            for path in ("", "/analytics", "/knowledge_base", "/settings", "/handoffs"):
                page.goto(team_console + path)
                expect(page.get_by_text("Sign in to PolicyDesk")).to_be_visible(timeout=60_000)
                expect(page.get_by_role("textbox", name="Password")).to_be_visible()
                assert page.locator(CHAT_INPUT).count() == 0
                assert not any(t in ("Console", "Analytics", "Handoffs", "Knowledge base", "Settings")
                               for t in nav_titles(page))
                assert page.get_by_text("Content gaps").count() == 0
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.parametrize("name", list(ROLE_NAV))
def test_each_role_sees_only_its_pages(team_console, chromium_path, name):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch(p, chromium_path)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(team_console)
            page.get_by_role("textbox", name="User name").fill(name)
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.locator(CHAT_INPUT).wait_for(timeout=120_000)
            expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
            expected = ROLE_NAV[name]
            if len(expected) > 1:
                expect(page.locator(NAV_LINK)).to_have_count(len(expected), timeout=30_000)
                assert nav_titles(page) == expected
            else:
                assert [t for t in nav_titles(page) if t != "Console"] == []
            if "Settings" not in expected:
                # Typing another page's address in the same session does not open it.
                page.goto(team_console + "/settings")
                expect(page.get_by_text("Sign in to PolicyDesk")).to_be_visible(timeout=60_000)
                assert page.locator('h1:has-text("Settings")').count() == 0
        finally:
            browser.close()


@pytest.mark.browser
def test_without_users_a_proxied_browser_is_refused(tmp_path, kb_settings, kb_index, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    data = copy_data(kb_settings, tmp_path / "data")
    env = {"POLICYDESK_USERS_FILE": str(tmp_path / "absent.json")}
    with streamlit_server(data, kb_settings.kb_dir, tmp_path / "streamlit.log", extra_env=env) as url, \
            sync_playwright() as p:
        browser = launch(p, chromium_path)
        try:
            local = browser.new_page()
            local.goto(url)
            local.locator(CHAT_INPUT).wait_for(timeout=120_000)
            expect(local.get_by_text("Signed in as local")).to_be_visible()
            # The same browser arriving through a reverse proxy (X-Forwarded-For) is someone else's machine.
            proxied = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.7"}).new_page()
            proxied.goto(url)
            expect(proxied.get_by_text("has no users configured")).to_be_visible(timeout=60_000)
            assert proxied.locator(CHAT_INPUT).count() == 0
        finally:
            browser.close()
