"""composer=chat against a real local model: SmolLM2-135M-Instruct served by llama-cpp-python on 127.0.0.1
(tests/local_llm.py), asked through the API (real HTTP, SSE) and the console (Streamlit AppTest) over the real
kb/ index. A model this small rarely writes a sentence the verifier accepts, which is the point: its real output
must go through streaming and verification, and the requester must still get the offline (extractive) answer,
never a refusal the assessment did not make. Timeouts use a real socket that accepts and never answers.

The fake server (tests/fake_openai_server.py, tests/test_chat_model.py) still covers protocol edge cases a real
model cannot be made to produce on demand (fabricated quotes, injected instructions, HTTP 500).
"""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import httpx
import pytest
from api_harness import API_KEY, running_api
from fake_openai_server import SilentServer
from local_llm import MODEL_ALIAS, llama_server, llm_available
from streamlit.testing.v1 import AppTest
from test_api import sse_events

from bot.answer.service import AnswerService
from bot.core.models import Audience, Filters

pytestmark = pytest.mark.slow  # a real llama.cpp server and model calls: tens of seconds; `pytest -m "not slow"` skips it

GDPR = "How long do we have to answer a GDPR data access request from a user in Germany?"
COINS = "How do I get a refund for coins I bought by mistake?"
AS_OF = date(2026, 10, 1)
# Generous: on a 2-core CI machine shared with other jobs one answer from this model measured 15-300 s (the
# prompt is processed on the CPU); the silent-server tests below check the short timeouts.
READ_TIMEOUT_S = 600.0
APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="session")
def llm_url(tmp_path_factory) -> str:
    """Base URL of the real model server; skipped only when the venv .ci/run creates is absent (never in CI)."""
    if not llm_available():
        if os.environ.get("CI") or os.environ.get("POLICYDESK_LLM_VENV"):
            pytest.fail("the llama-cpp-python venv is missing: .ci/run must build it")
        pytest.skip("no local model venv (run .ci/run, or see docs/models.md)")
    with llama_server(tmp_path_factory.mktemp("llm")) as url:
        yield url


def chat_settings(base, url: str, **extra):
    """kb/ settings answering with the real model; the prompt is fitted to a 1024-token window to keep the
    CPU's prompt processing short (the composer trims sources to the window, the best one never)."""
    return base.model_copy(update={
        "composer": "chat", "openai_base_url": url, "chat_model": MODEL_ALIAS, "send_max_tokens_in_extra_body": True,
        "chat_max_tokens": 96, "chat_context_window": 1024, "chat_read_timeout_s": READ_TIMEOUT_S, **extra})


def check_against_offline(final: dict, offline, chunk_text: dict[str, str], public: bool) -> None:
    """The chat answer is verified text, or exactly the offline answer with the reason it replaced the model's
    (the reason is for agents only: it may name the endpoint)."""
    assert not final["refused"], final  # the assessment answers this question; the model cannot refuse it
    assert final["composer"] in ("chat", "extractive-fallback"), final
    if final["composer"] == "extractive-fallback":
        assert (final["fallback_reason"] == "") if public else final["fallback_reason"], final
        assert final["answer"] == offline.text
        assert [c["quote"] for c in final["citations"]] == [c.quote for c in offline.citations]
    assert final["citations"]
    for c in final["citations"]:
        assert c["quote"] in chunk_text[c["chunk_id"]], c  # every shown quote is an exact span of its source


def test_api_streams_the_real_models_tokens_and_answers_at_least_as_well_as_offline(kb_settings, kb_index,
                                                                                     llm_url, tmp_path):
    settings = chat_settings(kb_settings, llm_url)
    service = AnswerService(settings, kb_index)
    chunk_text = {c.chunk_id: c.text for c in kb_index.require_generation().chunks}
    with running_api(settings, kb_index, tmp_path, service=service) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=900.0, trust_env=False) as c:
        health = c.get("/v1/health").json()
        assert health["status"] == "ok" and health["chat_endpoint"] == "ok", health
        for question, headers, audience in ((GDPR, {"X-API-Key": API_KEY}, Audience.INTERNAL),
                                            (COINS, {}, Audience.PUBLIC)):
            events = sse_events(c.post("/v1/ask/stream", json={"question": question, "as_of": AS_OF.isoformat()},
                                       headers=headers))
            kinds = [k for k, _ in events]
            assert kinds[-1] == "final", kinds
            final = events[-1][1]
            offline = service.ask(question, [], Filters(audience=audience, as_of=AS_OF), "extractive")
            assert not offline.refused
            check_against_offline(final, offline, chunk_text, public=audience is Audience.PUBLIC)
            if audience is Audience.INTERNAL:
                # the model's own words arrived token by token before the verified final answer
                tokens = [d["text"] for k, d in events if k == "token"]
                assert len(tokens) > 3 and "".join(tokens).strip(), kinds
            else:
                assert "token" not in kinds  # the public gets whole, leak-checked sentences only


def test_console_asks_the_real_model_and_says_why_it_fell_back(kb_settings, kb_index, llm_url, monkeypatch):
    for name, value in {"POLICYDESK_DATA_DIR": str(kb_settings.data_dir), "POLICYDESK_KB_DIR": str(kb_settings.kb_dir),
                        "POLICYDESK_COMPOSER": "chat", "POLICYDESK_OPENAI_BASE_URL": llm_url,
                        "POLICYDESK_CHAT_MODEL": MODEL_ALIAS, "POLICYDESK_SEND_MAX_TOKENS_IN_EXTRA_BODY": "true",
                        "POLICYDESK_CHAT_MAX_TOKENS": "96", "POLICYDESK_CHAT_CONTEXT_WINDOW": "1024",
                        "POLICYDESK_CHAT_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}.items():
        monkeypatch.setenv(name, value)
    for name in ("POLICYDESK_OPENAI_API_KEY", "POLICYDESK_CHROMA_HOST", "POLICYDESK_USERS_FILE",
                 "POLICYDESK_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(APP, default_timeout=900)
    at.run()
    at.chat_input[0].set_value(GDPR)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    reply = next(m for m in at.chat_message if m.name == "assistant")
    caption = " ".join(c.value for c in reply.caption)
    shown = [e.value for e in (*reply.error, *reply.warning, *reply.markdown)]
    assert "composer chat" in caption or "composer extractive-fallback" in caption, shown
    assert reply.get("popover"), "the answer shows its citations"
    if "extractive-fallback" in caption:
        warnings = [w.value for w in reply.warning]
        assert any("could not be verified" in w for w in warnings), warnings  # the reason, not "endpoint down"
        assert "one month" in reply.markdown[0].value.lower()  # the offline answer (DSAR: one month, extendable)


def test_an_endpoint_that_never_answers_costs_one_read_timeout_over_http(kb_settings, kb_index, tmp_path):
    """Issue 12: a server that accepts and stays silent made every answer wait 131 s; health did not say so."""
    with SilentServer() as silent:
        settings = kb_settings.model_copy(update={
            "composer": "chat", "openai_base_url": silent.url, "chat_model": MODEL_ALIAS,
            "chat_read_timeout_s": 2.0, "chat_connect_timeout_s": 2.0})
        with running_api(settings, kb_index, tmp_path) as srv, srv.client() as c:
            started = time.monotonic()
            r = c.post("/v1/ask", json={"question": COINS}, headers={"X-API-Key": API_KEY})
            took = time.monotonic() - started
            health = c.get("/v1/health").json()
    body = r.json()
    assert r.status_code == 200 and not body["refused"] and body["citations"], body
    assert body["composer"] == "extractive-fallback" and "timed out" in body["fallback_reason"].lower(), body
    assert took < 2.0 * 2 + 10, f"one 2 s read timeout, no retry (plus answering), took {took:.1f} s"
    assert health["status"] == "degraded" and health["chat_endpoint"] == "unreachable", health
    assert "fall back to extractive" in health["detail"]
