"""The help-center widget in real headless Chromium on the demo page served by the real API (127.0.0.1)."""

from __future__ import annotations

import re

import pytest
from conftest import CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Records every text the streaming answer bubble shows before the final answer replaces it.
RECORD_DRAFTS = """
() => {
  // Record text as it is added under a message that is still streaming. Mutation callbacks are batched (on a
  // fast machine the whole stream can land in one callback, after the answer is final), so decide from the
  // records in order: text added under a bot message before the record that removed its pd-streaming class.
  const root = document.querySelector('#policydesk-widget').shadowRoot;
  const done = new WeakSet();
  // The final render empties the bubble, detaching the draft's element: remember removed nodes' old parents.
  const parentOf = new WeakMap();
  const owner = (node) => {
    for (let n = node; n; n = n.parentNode || parentOf.get(n)) {
      if (n.nodeType === 1 && n.classList.contains('pd-bot')) return n;
    }
    return null;
  };
  window.__drafts = [];
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.removedNodes) parentOf.set(n, r.target);
    for (const r of records) {
      const msg = owner(r.target);
      if (!msg) continue;
      if (r.type === 'attributes') {
        if ((r.oldValue || '').includes('pd-streaming')) done.add(msg);
        continue;
      }
      if (done.has(msg)) continue;
      for (const n of r.addedNodes) {
        if (n.textContent) window.__drafts.push(n.textContent);
      }
      if (r.type === 'characterData' && r.target.textContent) window.__drafts.push(r.target.textContent);
    }
  }).observe(root, {subtree: true, childList: true, characterData: true,
                    attributes: true, attributeFilter: ['class'], attributeOldValue: true});
}
"""


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _only_loopback(page) -> list[str]:
    """Abort (and record) any request that would leave 127.0.0.1."""
    outside: list[str] = []

    def route(r):
        if re.match(r"https?://127\.0\.0\.1[:/]", r.request.url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return outside


def test_widget_asks_streams_cites_and_hands_off(browser, api_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    outside = _only_loopback(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(api_server.base_url + "/")

    launcher = page.get_by_role("button", name="Open help chat")
    assert launcher.get_attribute("aria-expanded") == "false"
    launcher.click()
    dialog = page.get_by_role("dialog", name="Loopline Help")
    dialog.wait_for(state="visible")
    question = page.get_by_label("Your question")
    assert question.evaluate("el => el.getRootNode().activeElement === el")  # focus moved into the panel

    page.evaluate(RECORD_DRAFTS)
    with page.expect_response(lambda r: r.url.endswith("/v1/ask/stream")) as resp_info:
        question.fill("How do I turn on two-factor authentication?")
        question.press("Enter")
    resp = resp_info.value
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")

    source = page.locator(".pd-sources a").first
    source.wait_for(timeout=60_000)
    assert source.get_attribute("href") == "https://help.loopline.example/articles/help-2fa"
    assert source.get_attribute("rel") == "noopener noreferrer"
    answer = page.locator(".pd-bot .pd-text").last.inner_text()
    assert "Two-factor authentication" in answer and "[1]" in answer
    drafts = page.evaluate("window.__drafts")
    # text reached the page while the answer was still streaming (tests/test_api.py checks the SSE wire order)
    assert any("Two-factor authentication" in d for d in drafts)
    log = page.get_by_role("log", name="Conversation")
    assert log.get_attribute("aria-live") == "polite"

    # Esc closes and gives focus back to the bubble; the conversation survives a reload (sessionStorage).
    question.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate("document.querySelector('#policydesk-widget').shadowRoot.activeElement.className")\
        .startswith("pd-launcher")
    assert page.get_by_role("button", name="Open help chat").get_attribute("aria-expanded") == "false"
    page.reload()
    page.get_by_role("button", name="Open help chat").click()
    assert "How do I turn on two-factor authentication?" in page.locator(".pd-user").first.inner_text()
    assert page.locator(".pd-sources a").count() >= 1

    # Talk to a person: the transcript lands in the handoff queue with the contact.
    page.get_by_role("button", name="Talk to a person").first.click()
    contact = page.get_by_label("Email or phone so we can reply (optional)")
    assert contact.evaluate("el => el.getRootNode().activeElement === el")
    contact.fill("reader@example.org")
    with page.expect_response(lambda r: r.url.endswith("/v1/handoff")) as handoff_info:
        page.get_by_role("button", name="Send to support").click()
    handoff = handoff_info.value.json()
    note = page.locator(".pd-note").last
    note.wait_for()
    assert f"#{handoff['handoff_id']}" in note.inner_text()
    stored = api_server.store.get_handoff(handoff["handoff_id"])
    assert stored.contact == "reader@example.org"
    assert stored.transcript[0] == {"role": "user", "text": "How do I turn on two-factor authentication?"}
    assert stored.transcript[1]["role"] == "assistant"
    assert "Two-factor authentication" in stored.transcript[1]["text"]

    assert errors == [] and outside == []
    context.close()


def test_refusal_shows_suggested_articles_and_feedback_is_stored(browser, api_server):
    context = browser.new_context()
    page = context.new_page()
    _only_loopback(page)
    page.goto(api_server.base_url + "/demo")
    page.get_by_role("button", name="Open help chat").click()
    question = page.get_by_label("Your question")
    question.fill("Which queue handles refund requests over the internal threshold?")
    page.get_by_role("button", name="Send", exact=True).click()
    suggest = page.locator(".pd-suggest a").first
    suggest.wait_for(timeout=60_000)
    assert suggest.get_attribute("href").startswith("https://help.loopline.example/articles/")
    text = page.locator(".pd-bot .pd-text").last.inner_text()
    assert "fraud-review" not in text
    assert page.locator(".pd-talk").count() == 1  # a refusal offers a person

    with page.expect_response(lambda r: r.url.endswith("/v1/feedback")) as fb:
        page.get_by_role("button", name="Not helpful").last.click()
    assert fb.value.status == 200
    page.locator(".pd-fb[aria-pressed='true']").wait_for()
    cid = page.evaluate("Object.values(sessionStorage).map(JSON.parse)[0].cid")
    stored = api_server.store.conversation_messages(cid)
    assert stored[-1]["refused"] and stored[-1]["rating"] == -1
    context.close()


def test_widget_fills_a_phone_screen(browser, api_server):
    context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    page = context.new_page()
    _only_loopback(page)
    page.goto(api_server.base_url + "/")
    page.get_by_role("button", name="Open help chat").tap()
    dialog = page.get_by_role("dialog", name="Loopline Help")
    dialog.wait_for(state="visible")
    box = dialog.bounding_box()
    assert box["width"] == 375 and box["height"] == 667
    send = page.get_by_role("button", name="Send", exact=True).bounding_box()
    assert send["height"] >= 44  # touch-sized targets
    page.get_by_role("button", name="Close help chat").tap()
    dialog.wait_for(state="hidden")
    context.close()
