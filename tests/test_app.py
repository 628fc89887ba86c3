"""The Streamlit console driven by streamlit.testing.v1.AppTest over the real kb/ index and a real SQLite file."""

from __future__ import annotations

import re
import shutil
import sqlite3
from datetime import date
from pathlib import Path

import pytest
from conftest import free_port
from streamlit.testing.v1 import AppTest

from bot.core.config import Settings
from bot.core.models import Answer, Audience, Citation, Escalation
from bot.store.sqlite import Store

pytestmark = pytest.mark.slow  # Streamlit/Chromium/corpus runs: minutes; `pytest -m "not slow"` skips them

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TIMEOUT = 300  # generous: the first run loads the embedder and the index on a 2-core machine

# Settings the console must not inherit from the developer's shell.
_ENV = ("POLICYDESK_DATA_DIR", "POLICYDESK_KB_DIR", "POLICYDESK_COMPOSER", "POLICYDESK_OPENAI_API_KEY",
        "POLICYDESK_CHAT_MODEL",
        "POLICYDESK_OPENAI_BASE_URL", "POLICYDESK_CHROMA_HOST", "POLICYDESK_MAX_QUESTION_CHARS",
        "POLICYDESK_USERS_FILE", "POLICYDESK_DATABASE_URL")


@pytest.fixture()
def console_env(monkeypatch, kb_settings, kb_index):
    """Point the app at the session's real kb/ index (already ingested) and its SQLite store."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POLICYDESK_DATA_DIR", str(kb_settings.data_dir))
    monkeypatch.setenv("POLICYDESK_KB_DIR", str(kb_settings.kb_dir))
    return kb_settings


def run(at: AppTest) -> AppTest:
    """Run and fail with the app's own exception text if the script raised."""
    at.run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def assistant_messages(at: AppTest):
    return [m for m in at.chat_message if m.name == "assistant"]


def all_markdown(node) -> list[str]:
    return [m.value for m in node.markdown]


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question)
    return run(at)


def db_rows(settings: Settings, sql: str, *args):
    conn = sqlite3.connect(settings.db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_chat_answers_with_citations_and_keeps_the_conversation(console_env):
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    assert at.title[0].value == "PolicyDesk console"
    ask(at, "How many days does a user have to request a refund of unused coins?")

    replies = assistant_messages(at)
    assert len(replies) == 1
    reply = replies[0]
    text = reply.markdown[0].value
    assert "14 days" in text and "[1]" in text
    chips = [b for b in reply.get("popover")]
    assert chips and chips[0].proto.popover.label.startswith("[1] ")
    # Each chip opens the cited section with the quoted span highlighted and the document's facts.
    marked = [m for m in all_markdown(reply) if '<mark class="pd-quote">' in m]
    assert marked, "no highlighted quote rendered"
    assert any("Version **" in m and "last reviewed" in m for m in all_markdown(reply))
    assert any("Copy answer" == e.label for e in reply.expander)
    copy_box = reply.expander[0].code[0].value
    assert "Sources:" in copy_box and "[1]" in copy_box

    cid = at.session_state["conversation_id"]
    rows = db_rows(console_env, "SELECT question, refused, surface, user FROM messages WHERE conversation_id = ?", cid)
    # No users configured: the loopback identity, never a name typed into the page.
    assert rows == [("How many days does a user have to request a refund of unused coins?", 0, "console", "local")]
    audit = db_rows(console_env, "SELECT documents FROM audit_log WHERE conversation_id = ? AND action = 'answer'",
                    cid)
    assert "sop-coin-refunds" in audit[0][0] or "help-coin-refunds" in audit[0][0]

    # A follow-up is answered in the context of the conversation.
    ask(at, "And what about coins bought through the App Store?")
    replies = assistant_messages(at)
    assert len(replies) == 2 and len(at.chat_message) == 4
    standalone, cited = db_rows(console_env, "SELECT standalone_question, citations FROM messages "
                                             "WHERE conversation_id = ? ORDER BY id", cid)[1]
    assert "coin" in (standalone or "").lower()  # the follow-up carried the topic of the first question
    assert "app-store" in cited, cited
    assert replies[1].get("popover")


def test_as_of_filter_answers_with_the_old_version_and_badges_it_superseded(console_env):
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    at.date_input(key="f_as_of").set_value(date(2026, 3, 1))
    run(at)
    ask(at, "How many days does a user have to request a refund of unused coins?")
    reply = assistant_messages(at)[0]
    assert "7 days" in reply.markdown[0].value  # v1.0's window; v2.0 (14 days) was not yet in force
    cited = db_rows(console_env, "SELECT citations FROM messages WHERE conversation_id = ?",
                    at.session_state["conversation_id"])[0][0]
    assert "sop-coin-refunds-v1" in cited and '"sop-coin-refunds"' not in cited
    badges = [m for m in all_markdown(reply) if "badge[" in m]
    assert any("Superseded by sop-coin-refunds" in b for b in badges), badges
    assert any("⚠" in b.proto.popover.label for b in reply.get("popover"))


def test_feedback_with_reason_is_stored_in_the_sqlite_file(console_env):
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    ask(at, "What does an agent do when an account was hacked and the email was changed?")
    turn = at.session_state["turns"][-1]
    mid = turn["message_id"]
    at.text_input(key=f"reason_{mid}").input("Missing the 48-hour hold; call me on +44 20 7946 0958")
    run(at)
    at.button(key=f"down_{mid}").click()
    run(at)
    rows = db_rows(console_env, "SELECT rating, reason, conversation_id FROM feedback WHERE message_id = ?", mid)
    assert rows == [(-1, "Missing the 48-hour hold; call me on [PHONE]", at.session_state["conversation_id"])]
    assert any("Feedback saved: not helpful" in c.value for c in at.caption)
    # Changing one's mind replaces the rating.
    at.button(key=f"up_{mid}").click()
    run(at)
    assert db_rows(console_env, "SELECT rating FROM feedback WHERE message_id = ?", mid) == [(1,)]


def test_too_long_question_gets_a_message_not_a_traceback(console_env):
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    ask(at, "refund " * 1000)
    warnings = [w.value for w in at.warning]
    assert any("the limit is 2000" in w for w in warnings), warnings
    assert not at.get("popover")
    # The rejected question is recorded as an error, truncated, never as an answer.
    cid = at.session_state["conversation_id"]
    rows = db_rows(console_env, "SELECT error, answer FROM messages WHERE conversation_id = ?", cid)
    assert len(rows) == 1 and "limit" in rows[0][0] and rows[0][1] is None


def test_model_endpoint_down_gets_a_clear_message(console_env, monkeypatch):

    monkeypatch.setenv("POLICYDESK_COMPOSER", "chat")
    monkeypatch.setenv("POLICYDESK_OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("POLICYDESK_OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    ask(at, "How many days does a user have to request a refund of unused coins?")
    reply = assistant_messages(at)[0]
    warnings = [w.value for w in reply.warning]
    assert any("did not respond" in w and "extractively" in w for w in warnings), warnings
    # The agent still gets a cited answer from the knowledge base.
    assert "14 days" in reply.markdown[0].value and reply.get("popover")


def test_chat_model_answers_are_streamed_token_by_token(console_env, monkeypatch):
    from fake_openai_server import FakeOpenAIServer

    server = FakeOpenAIServer().start()
    try:
        monkeypatch.setenv("POLICYDESK_COMPOSER", "chat")
        monkeypatch.setenv("POLICYDESK_CHAT_MODEL", "grounded")
        monkeypatch.setenv("POLICYDESK_OPENAI_API_KEY", "sk-test-not-a-real-key")
        monkeypatch.setenv("POLICYDESK_OPENAI_BASE_URL", server.url)
        at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
        ask(at, "How many days does a user have to request a refund of unused coins?")
    finally:
        server.stop()
    assert any(r["body"].get("stream") for r in server.requests), "the console did not stream from the model"
    reply = assistant_messages(at)[0]
    assert "composer chat" in " ".join(c.value for c in reply.caption)
    assert reply.get("popover") and not reply.warning


def test_empty_knowledge_base_is_explained(tmp_path, monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "kb").mkdir()
    monkeypatch.setenv("POLICYDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POLICYDESK_KB_DIR", str(tmp_path / "kb"))
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    assert any("index is empty" in w.value for w in at.warning)
    assert at.chat_input[0].proto.disabled


def test_first_start_ingests_the_kb_with_progress(tmp_path, monkeypatch, kb_settings, kb_index):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    kb = tmp_path / "kb"
    kb.mkdir()
    for name in ("sops/sop-coin-refunds.md", "help/help-coin-refunds.md", "macros/macro-refund-approved.md"):
        shutil.copy(ROOT / "kb" / name, kb / Path(name).name)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(kb_settings.data_dir / "embed_cache.sqlite", data / "embed_cache.sqlite")  # skip re-embedding
    monkeypatch.setenv("POLICYDESK_DATA_DIR", str(data))
    monkeypatch.setenv("POLICYDESK_KB_DIR", str(kb))
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    status = at.status[0]
    assert status.label.startswith("Knowledge index ready: 3 added") and status.state == "complete"
    assert (data / "current.json").exists()
    assert "Index: 3 documents" in " ".join(c.value for c in at.sidebar.caption)


def test_analytics_page_shows_the_stored_numbers(console_env):
    store = Store(console_env)

    cid = store.new_conversation("widget")
    cite = Citation(1, "sop-appeals-v1", "Appeals v1", "Steps", "quote", "sop-appeals-v1#0", Audience.INTERNAL,
                    version="1.0")
    store.log_answer(cid, "old appeals rule", Answer("q", "text [1]", citations=[cite], timings={"total": 0.5}),
                     "widget")
    store.log_answer(cid, "Can I transfer coins to a friend's account?",
                     Answer("q", "I could not find this.", refused=True, timings={"total": 0.2}), "widget")
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    at.switch_page("pages/analytics.py")
    run(at)
    assert at.title[0].value == "Analytics"
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Questions"]) >= 2 and metrics["Latency p50"].endswith("ms")
    frames = [df.value for df in at.dataframe]
    gaps = [f for f in frames if "gap (most asked wording)" in f.columns]
    assert gaps and "Can I transfer coins to a friend's account?" in set(gaps[0]["gap (most asked wording)"])
    stale = [f for f in frames if "why" in f.columns]
    assert stale and "sop-appeals-v1" in set(stale[0]["document"])
    assert "superseded by sop-appeals-dsa" in " ".join(stale[0]["why"])


def test_knowledge_base_page_lists_documents_with_lint_status(console_env):
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    at.switch_page("pages/knowledge_base.py")
    run(at)
    assert at.title[0].value == "Knowledge base"
    table = at.dataframe[0].value
    assert "sop-coin-refunds" in set(table["id"])
    row = table[table["id"] == "sop-coin-refunds"].iloc[0]
    assert row["version"] == "2.0" and row["lint"] in ("ok", "warning", "error")
    v1 = table[table["id"] == "sop-coin-refunds-v1"].iloc[0]
    assert v1["superseded by"] == "sop-coin-refunds"
    assert {m.label for m in at.metric} >= {"Documents", "Chunks", "Added", "Failed"}
    assert any(c.value.startswith("Lint: ") for c in at.caption)
    # Re-sync with nothing changed reports every document unchanged and keeps the index.
    at.button(key="kb_resync").click()
    run(at)
    assert any("0 added, 0 updated, 0 removed" in s.value for s in at.success)


def test_handoffs_page_lists_the_queue_and_claims(console_env):
    store = Store(console_env)
    hid = store.add_handoff("widget-conv-1", [{"role": "user", "text": "I was charged twice, mail me at a@b.co"},
                                              {"role": "assistant", "text": "Let me get a person."}],
                            contact="a@b.co", reason="double charge")
    at = run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    at.switch_page("pages/handoffs.py")
    run(at)
    assert at.title[0].value == "Handoffs"
    mine = [e for e in at.expander if e.label.startswith(f"#{hid} ")]
    assert mine and "double charge" in mine[0].label
    # Shown literally: user text is escaped so it cannot render links, images or colour directives.
    transcript = [re.sub(r"\\(.)", r"\1", m.markdown[0].value) for m in mine[0].chat_message]
    assert transcript == ["I was charged twice, mail me at [EMAIL]", "Let me get a person."]
    at.button(key=f"ho_claim_{hid}").click()
    run(at)
    h = store.get_handoff(hid)
    assert h.status == "claimed" and h.claimed_by == "local"  # the loopback identity, not a typed name
    at.radio(key="ho_status").set_value("Claimed")
    run(at)
    at.text_input(key=f"ho_note_{hid}").input("refunded the duplicate")
    at.button(key=f"ho_close_{hid}").click()
    run(at)
    assert store.get_handoff(hid).status == "closed" and store.get_handoff(hid).closed_note == "refunded the duplicate"


# ---- pure helpers behind the pages (bot/surfaces/console.py) ---------------------------------------------------------
def test_highlight_marks_the_quote_across_line_breaks_and_escapes_html():
    from bot.surfaces.console import highlight_html

    text = "Intro <b>bold</b>.\nRefund unused coins\nwithin 14 days. Outro."
    html, found = highlight_html(text, "Refund unused coins within 14 days.")
    assert found
    assert '<mark class="pd-quote">Refund unused coins<br>within 14 days.</mark>' in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "\n" not in html
    html, found = highlight_html(text, "not in the text")
    assert not found and "<mark" not in html


def test_citation_card_merges_manifest_metadata_and_badges():
    from bot.surfaces.console import citation_card

    docs = {"sop-a": {"meta": {"title": "Refunds (v2.0, effective 2026-07-01)", "version": "2.0",
                               "regions": "EU,UK", "last_reviewed": "2025-01-01", "review_due": "2025-07-01",
                               "superseded_by": "sop-b", "type": "macro"}}}
    cite = Citation(number=2, doc_id="sop-a", title="", section="Refunds > Decision points", quote="14 days",
                    chunk_id="sop-a#1", audience=Audience.INTERNAL)
    card = citation_card(cite, docs,
                         lambda cid: "Refund within 14 days." if cid == "sop-a#1" else None, today=date(2026, 1, 1))
    assert card.regions == ("EU", "UK") and card.version == "2.0" and card.doc_type == "macro"
    assert card.badges == ("Past review (due 2025-07-01)", "Superseded by sop-b")
    assert card.chip_label == "[2] Refunds › Decision points ⚠"
    assert '<mark class="pd-quote">14 days</mark>' in card.section_html


def test_chain_history_keeps_only_complete_exchanges():
    from bot.surfaces.console import chain_history

    turns = [{"role": "user", "text": "q1"}, {"role": "assistant", "text": "a1"},
             {"role": "user", "text": "too long"}, {"role": "assistant", "error": "rejected"},
             {"role": "user", "text": "q3"}, {"role": "assistant", "text": "a3"}]
    assert chain_history(turns, 20) == [{"role": "user", "text": "q1"}, {"role": "assistant", "text": "a1"},
                                        {"role": "user", "text": "q3"}, {"role": "assistant", "text": "a3"}]
    assert chain_history(turns, 2) == [{"role": "user", "text": "q3"}, {"role": "assistant", "text": "a3"}]


def test_answer_markdown_and_copy_text():
    from bot.surfaces.console import answer_markdown, copy_text, escalation_text

    assert answer_markdown("First.\nSecond.\n- a\n- b\n1. c") == "First.\n\nSecond.\n\n- a\n- b\n1. c"
    cite = Citation(number=1, doc_id="sop-coin", title="Coin refunds", section="Steps", quote="",
                    chunk_id="sop-coin#1", audience=Audience.INTERNAL, version="2.0", url="https://x/y")
    text = copy_text(Answer("q", "Refund it [1].", citations=[cite]))
    assert text == "Refund it [1].\n\nSources:\n[1] Coin refunds v2.0, Steps https://x/y"
    assert escalation_text(Escalation(team="Payments", queue="payments-t2", priority="P3")) == (
        "Suggested escalation: Payments · queue payments-t2 · priority P3")
    assert escalation_text(Escalation()) == "" and escalation_text(None) == ""


def test_user_messages_for_errors_never_show_a_traceback():
    from bot.core.errors import IndexUnavailableError, InputRejectedError, ModelEndpointError
    from bot.surfaces.console import user_message

    assert user_message(InputRejectedError("Too long."))[0] == "warning"
    assert "Re-sync" in user_message(IndexUnavailableError("empty"))[1]
    assert "POLICYDESK_COMPOSER=extractive" in user_message(ModelEndpointError("down"))[1]
    level, text = user_message(KeyError("boom"))
    assert level == "error" and "KeyError" in text and "Traceback" not in text


def test_escape_markdown_shows_user_text_literally():
    from bot.surfaces.console import escape_markdown

    escaped = escape_markdown("see ![x](http://e/p.png) **now** :red[alert] a_b")
    assert "![" not in escaped and "**" not in escaped and ":red[" not in escaped
    assert re.sub(r"\\(.)", r"\1", escaped) == "see ![x](http://e/p.png) **now** :red[alert] a_b"
