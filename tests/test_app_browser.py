"""End to end in real headless Chromium: `streamlit run app.py` on 127.0.0.1, first-start ingest, a question,
the answer and an opened citation with its highlighted quote.

Also a script that takes the README screenshots from the real app:
    uv run python tests/test_app_browser.py docs/
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import CHROMIUM_ARGS, free_port, stop_process, wait_until_serving

pytestmark = pytest.mark.slow  # Streamlit/Chromium/corpus runs: minutes; `pytest -m "not slow"` skips them

ROOT = Path(__file__).resolve().parent.parent
CHAT_INPUT = '[data-testid="stChatInputTextArea"]'
CHAT_MESSAGE = '[data-testid="stChatMessage"]'
CHIP = '[data-testid="stPopover"] button'
QUESTION = "How many days does a user have to request a refund of unused coins?"


@contextmanager
def streamlit_server(data_dir: Path, kb_dir: Path, log_path: Path,
                     extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`streamlit run app.py` on a free 127.0.0.1 port with its own data dir; yields the base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYDESK_")}
    env.update(POLICYDESK_DATA_DIR=str(data_dir), POLICYDESK_KB_DIR=str(kb_dir), **(extra_env or {}))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
             "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(f"{url}/_stcore/health", proc, log_path, timeout=120, expect_text="ok")
            yield url
        finally:
            stop_process(proc, grace=15)


def launch(playwright, executable: str):
    """Debian's Chromium, headless, with nothing reaching the network."""
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


def ask(page, question: str, n_before: int, timeout_ms: int = 180_000):
    """Type a question in the chat input and wait for its answer (with its citation chips or a message)."""
    page.locator(CHAT_INPUT).fill(question)
    page.keyboard.press("Enter")
    answer = page.locator(CHAT_MESSAGE).nth(n_before + 1)
    answer.locator('[data-testid="stCaptionContainer"], [data-testid="stAlert"]').first.wait_for(
        timeout=timeout_ms)
    return answer


@pytest.fixture(scope="module")
def console_url(tmp_path_factory, kb_settings, kb_index):
    """The console on a fresh data dir (only the embedding cache is copied, so first start really ingests)."""
    data = tmp_path_factory.mktemp("browser-data")
    shutil.copy(kb_settings.data_dir / "embed_cache.sqlite", data / "embed_cache.sqlite")
    with streamlit_server(data, kb_settings.kb_dir, data / "streamlit.log") as url:
        yield url, data


@pytest.mark.browser
def test_console_answers_and_opens_a_highlighted_citation(console_url, chromium_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, data = console_url
    with sync_playwright() as p:
        browser = launch(p, chromium_path)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            # First start: the index is built from kb/ behind a progress indicator, then the chat opens.
            page.locator(CHAT_INPUT).wait_for(timeout=300_000)
            expect(page.get_by_text("Knowledge index ready", exact=False)).to_be_visible()

            answer = ask(page, QUESTION, 0)
            expect(answer).to_contain_text("14 days")
            chip = answer.locator(CHIP).first
            expect(chip).to_contain_text("[1]")
            chip.click()
            body = page.locator('[data-testid="stPopoverBody"]').first
            mark = body.locator("mark.pd-quote").first
            expect(mark).to_be_visible()
            quote = mark.inner_text().strip()
            assert len(quote) > 20
            expect(body).to_contain_text("Version")
            expect(body).to_contain_text("last reviewed")
            # The highlighted span sits inside the longer section text it was quoted from.
            assert len(body.locator("div.pd-section").inner_text()) > len(quote)
            page.screenshot(path=str(tmp_path / "console.png"))
        finally:
            browser.close()

    conn = sqlite3.connect(data / "policydesk.sqlite3")
    try:
        rows = conn.execute("SELECT question, surface, citations FROM messages").fetchall()
    finally:
        conn.close()
    assert [(q, s) for q, s, _ in rows] == [(QUESTION, "console")]
    assert '"doc_id"' in rows[0][2]


# ---- README screenshots ------------------------------------------------------------------------------------
SCREENSHOT_QUESTIONS = [
    "How many days does a user have to request a refund of unused coins?",
    "How do I handle a hacked account where the email was changed?",
    "Is there a way to move coins between two accounts?",
    "A creator's payout is late, who handles it?",
    "Can I move my coins to my other account?",
    "When must we answer an appeal under the DSA?",
    "Can a user merge two accounts?",
    "How do I handle a report that someone is impersonating a brand?",
    "A family member tells us the account holder has died. What do we do?",
]
CONSOLE_QUESTION = "A user in Germany wants the data we hold on them: what do I do and by when?"


def take_screenshots(out_dir: Path, executable: str = "/usr/bin/chromium") -> None:
    """Drive the real app through a short shift and save docs/console.png and docs/analytics.png."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="policydesk-shots-"))
    with streamlit_server(work, ROOT / "kb", work / "streamlit.log") as url, sync_playwright() as p:
        browser = launch(p, executable)
        page = browser.new_page(viewport={"width": 1440, "height": 1500})
        page.goto(url)
        page.locator(CHAT_INPUT).wait_for(timeout=600_000)
        for i, q in enumerate(SCREENSHOT_QUESTIONS):
            answer = ask(page, q, 2 * i)
            thumb = answer.locator('[class*="st-key-up_"] button' if i % 3 else '[class*="st-key-down_"] button')
            if thumb.count():
                thumb.first.click()
                page.wait_for_timeout(1000)
        page.get_by_role("button", name="New conversation").click()
        page.wait_for_timeout(800)
        answer = ask(page, CONSOLE_QUESTION, 0)
        answer.locator(CHIP).last.click()
        body = page.locator('[data-testid="stPopoverBody"]').last
        body.locator("mark.pd-quote").first.wait_for()
        page.wait_for_timeout(500)
        page.mouse.move(5, 5)  # no hover highlight in the picture
        # Crop to the conversation and the opened source, leaving out the empty page below.
        boxes = [b for b in (body.bounding_box(), answer.bounding_box()) if b]
        bottom = max(b["y"] + b["height"] for b in boxes) + 40
        page.screenshot(path=str(out_dir / "console.png"),
                        clip={"x": 0, "y": 0, "width": 1440, "height": min(bottom, 1500)})
        page.keyboard.press("Escape")
        page.get_by_role("link", name="Analytics").click()
        page.get_by_text("Stale documents still being cited").wait_for(timeout=120_000)
        # Streamlit scrolls inside its own container, so a full-page shot needs a tall viewport instead.
        page.set_viewport_size({"width": 1440, "height": 2000})
        page.wait_for_timeout(2500)  # let the charts draw
        main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
        height = min(2000, int(main["y"] + main["height"] + 40)) if main else 2000
        page.screenshot(path=str(out_dir / "analytics.png"), clip={"x": 0, "y": 0, "width": 1440, "height": height})
        browser.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    take_screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs"))
