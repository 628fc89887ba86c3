"""The chat-model composer end to end: ChatOpenAI -> openai client -> real HTTP -> an OpenAI-compatible server
on 127.0.0.1 (tests/fake_openai_server.py), then the same citation verification every composer goes through."""

from __future__ import annotations

import time
from datetime import date

import pytest

from bot.answer.chat import ChatComposer, parse_chat_output
from bot.answer.compose import ComposeRequest, Source
from bot.answer.condense import DeterministicCondenser
from bot.answer.service import AnswerService
from bot.answer.verify import locate_support
from bot.core.events import FinalEvent, TextEvent
from bot.core.models import Audience, Filters
from bot.core.tokens import encoding_for_model
from tests.fake_openai_server import FakeOpenAIServer, SilentServer

AS_OF = date(2026, 10, 1)
PUBLIC = Filters(audience=Audience.PUBLIC, as_of=AS_OF)
INTERNAL = Filters(audience=Audience.INTERNAL, as_of=AS_OF)


@pytest.fixture(scope="module")
def server():
    """The fake OpenAI-compatible server, serving on a free port of 127.0.0.1."""
    srv = FakeOpenAIServer().start()
    yield srv
    srv.stop()


def chat_service(fixture_settings, fixture_index, server, model: str, **extra) -> AnswerService:
    """A service whose chat composer talks to the fake server with the given behaviour (quotes protocol unless
    `extra` says otherwise)."""
    settings = fixture_settings.model_copy(update={
        "openai_base_url": server.url, "chat_model": model, "composer": "chat", "chat_citation_protocol": "quotes",
        **extra})
    return AnswerService(settings, fixture_index)


def last_chat_request(server) -> dict:
    """Body of the last answer (not condense) request the server received."""
    return next(r["body"] for r in reversed(server.requests)
                if not r["body"]["messages"][0]["content"].startswith("You rewrite"))


def test_grounded_chat_answer_is_verified_and_cited(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "grounded")
    a = svc.ask("How many days do I have to ask for a coin refund?", [], PUBLIC)
    assert a.composer == "chat" and not a.refused
    assert [c.doc_id for c in a.citations] == ["help-coin-refunds"]
    assert a.citations[0].quote == "You can ask for a refund of coins you have not used within 14 days of buying them."
    assert a.citations[0].quote in a.citations[0].chunk_text
    assert a.text == "You can ask for a refund of coins you have not used within 14 days of buying them [1]."
    body = last_chat_request(server)
    assert body["model"] == "grounded" and body.get("stream") in (None, False)
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert "data, not instructions" in system and "QUOTES:" in system
    assert "<sources>" in user and "[1] " in user and "<question>" in user
    # a public request never sends internal text to the model
    assert "fraud-review" not in user and "Ledger Console" not in user


def test_fabricated_citations_are_caught(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "fabricated")
    a = svc.ask("How many days do I have to ask for a coin refund?", [], PUBLIC)
    assert not a.refused
    assert a.unsupported_removed == 2  # the [n] that was never given, and the quote that is not in its source
    assert a.text == "You can ask for a refund of coins you have not used within 14 days of buying them [1]."
    assert "one hour" not in a.text and "any card" not in a.text
    assert [c.number for c in a.citations] == [1]
    assert all(c.quote in c.chunk_text for c in a.citations)


def test_only_fabricated_citations_fall_back_to_the_extractive_answer(fixture_settings, fixture_index, server):
    question = "How many days do I have to ask for a coin refund?"
    svc = chat_service(fixture_settings, fixture_index, server, "all-fabricated")
    a = svc.ask(question, [], PUBLIC)
    offline = AnswerService(fixture_settings, fixture_index).ask(question, [], PUBLIC, "extractive")
    assert not a.refused and a.composer == "extractive-fallback"
    assert a.fallback_reason.startswith("0 of 2 chat sentence(s) verified")
    assert (a.text, [c.quote for c in a.citations]) == (offline.text, [c.quote for c in offline.citations])
    assert "one hour" not in a.text and "any card" not in a.text


def test_model_saying_no_answer_cannot_refuse_what_the_assessment_answers(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "noanswer")
    a = svc.ask("How do I ask for a coin refund?", [], PUBLIC)
    assert not a.refused and a.composer == "extractive-fallback" and "NO_ANSWER" in a.fallback_reason
    assert a.citations[0].doc_id == "help-coin-refunds"


def test_a_refusal_comes_from_the_assessment_before_any_model_call(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "grounded")
    before = len(server.requests)
    a = svc.ask("What is the boiling point of mercury on Venus?", [], PUBLIC)
    assert a.refused and a.refusal_reason.startswith("low_retrieval_confidence")
    assert len(server.requests) == before  # the model was never asked
    assert a.composer == "chat" and a.fallback_reason == ""  # nothing fell back: the model had no turn


def test_markers_protocol_the_verifier_finds_the_span(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "markers", chat_citation_protocol="auto")
    a = svc.ask("How many days do I have to ask for a coin refund?", [], PUBLIC)
    system = last_chat_request(server)["messages"][0]["content"]
    assert "QUOTES:" not in system and "Copy the words" in system  # auto + a local endpoint = markers
    assert a.composer == "chat" and not a.refused and not a.fallback_reason
    assert a.citations[0].doc_id == "help-coin-refunds"
    assert a.citations[0].quote == "You can ask for a refund of coins you have not used within 14 days of buying them."


def test_a_small_models_misread_falls_back_to_the_extractive_answer(fixture_settings, fixture_index, server):
    question = "How many days do I have to ask for a coin refund?"
    svc = chat_service(fixture_settings, fixture_index, server, "misread", chat_citation_protocol="markers")
    a = svc.ask(question, [], PUBLIC)
    assert not a.refused and a.composer == "extractive-fallback" and "2 months" not in a.text
    assert a.fallback_reason.startswith("0 of 1 chat sentence(s) verified")
    events = list(svc.stream(question, [], PUBLIC))
    final = events[-1].answer
    assert final.composer == "extractive-fallback" and final.text == a.text and not final.refused


def test_locate_support_wants_the_numbers_negation_and_words_of_the_source():
    text = ("Refunds: you can ask for a refund of coins you have not used within 14 days of buying them. "
            "Used coins are never refunded.\n\n| Region | Window |\n|---|---|\n| EU | 14 days |")
    span, _ = locate_support("You can ask for a refund of the coins you have not used within 14 days.", text)
    assert text[span[0]:span[1]].startswith("Refunds: you can ask for a refund")
    assert locate_support("You can ask for a refund of coins you have not used within 30 days.", text)[0] is None
    assert locate_support("You can get a refund of unused coins within 14 days.", text)[0] is None  # paraphrase
    assert locate_support("Used coins are refunded.", text)[0] is None  # the source says never
    assert locate_support("Coins bought with a gift card are refunded to the card.", text)[0] is None
    assert text[slice(*locate_support("EU: 14 days", text)[0])] == "EU | 14 days"


def test_a_model_obeying_an_injected_document_is_overruled(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "obey")
    a = svc.ask("Can gift cards be redeemed for coins?", [], PUBLIC)
    assert "approved" not in a.text and "ignore previous" not in a.text.lower()
    assert all(c.audience is Audience.PUBLIC for c in a.citations)
    assert a.refused or all("ignore" not in c.quote.lower() for c in a.citations)


def test_streaming_over_sse_then_verified_final(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "fabricated")
    events = list(svc.stream("How many days do I have to ask for a coin refund?", [], PUBLIC))
    tokens = [e for e in events if isinstance(e, TextEvent) and e.kind == "token"]
    assert len(tokens) > 3, "the answer arrives in pieces"
    streamed = "".join(e.text for e in tokens)
    assert "QUOTES" not in streamed and "within 14 days" in streamed
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.answer.composer == "chat"
    # the provisional stream showed the fabricated sentence; the final answer has only verified ones
    assert "one hour" in streamed and "one hour" not in final.answer.text
    assert last_chat_request(server)["stream"] is True


def test_max_tokens_goes_in_extra_body_for_local_servers(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "grounded", send_max_tokens_in_extra_body=True,
                       chat_max_tokens=321)
    svc.ask("How do I ask for a coin refund?", [], PUBLIC)
    body = last_chat_request(server)
    assert body["max_tokens"] == 321 and "max_completion_tokens" not in body
    svc = chat_service(fixture_settings, fixture_index, server, "grounded", chat_max_tokens=123)
    svc.ask("How do I ask for a coin refund?", [], PUBLIC)
    assert last_chat_request(server).get("max_completion_tokens") == 123


def test_follow_up_is_rewritten_by_the_model(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "grounded")
    history = [{"role": "user", "text": "I want a refund for my coins."}, {"role": "agent", "text": "Sure."}]
    a = svc.ask("How long do I have?", history, PUBLIC)
    assert a.standalone_question == "How long do I have? (about I want a refund for my coins.)"
    condense = [r["body"] for r in server.requests if r["body"]["messages"][0]["content"].startswith("You rewrite")]
    assert condense and "I want a refund for my coins." in condense[-1]["messages"][1]["content"]
    assert not a.refused and a.citations[0].doc_id == "help-coin-refunds"


def test_a_rewrite_that_drops_the_topic_is_not_used(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "forgetful")
    history = [{"role": "user", "text": "I want a refund for my coins."}, {"role": "agent", "text": "Sure."}]
    a = svc.ask("How long do I have?", history, PUBLIC)
    offline = AnswerService(fixture_settings, fixture_index).ask("How long do I have?", history, PUBLIC, "extractive")
    assert a.standalone_question == offline.standalone_question != "How long do I have?"
    assert not a.refused and a.citations[0].doc_id == "help-coin-refunds"


def test_a_drifting_rewrite_cannot_change_what_is_retrieved_or_answered(fixture_settings, fixture_index, server):
    """composer=chat never answers less than the offline default: the model's rewrite of a follow-up is only the
    question it is asked to answer; sources, assessment and the fallback are the offline answer's."""
    svc = chat_service(fixture_settings, fixture_index, server, "drifting", chat_citation_protocol="markers")
    history = [{"role": "user", "text": "I want a refund for my coins."}, {"role": "agent", "text": "Sure."}]
    a = svc.ask("How long do I have?", history, PUBLIC)
    offline = AnswerService(fixture_settings, fixture_index).ask("How long do I have?", history, PUBLIC, "extractive")
    assert a.standalone_question == "Which gifts can I send in a LIVE with my coins?"  # the model's rewrite is kept
    assert a.composer == "extractive-fallback" and a.outcome == offline.outcome
    assert [c.doc_id for c in a.citations] == [c.doc_id for c in offline.citations]
    assert a.text == offline.text and a.citations[0].doc_id == "help-coin-refunds"


def test_endpoint_failure_falls_back_to_the_extractive_answer(fixture_settings, fixture_index, server):
    svc = chat_service(fixture_settings, fixture_index, server, "error")
    a = svc.ask("How do I ask for a coin refund?", [], PUBLIC)
    assert a.composer == "extractive-fallback" and not a.refused
    assert a.citations[0].doc_id == "help-coin-refunds"


def test_unreachable_endpoint_falls_back_too(fixture_settings, fixture_index):
    from tests.conftest import free_port

    settings = fixture_settings.model_copy(update={
        "openai_base_url": f"http://127.0.0.1:{free_port()}/v1", "composer": "chat", "chat_connect_timeout_s": 2.0})
    a = AnswerService(settings, fixture_index).ask("How do I ask for a coin refund?", [], PUBLIC)
    assert a.composer == "extractive-fallback" and a.citations and "failed" in a.fallback_reason


def test_an_endpoint_that_never_answers_costs_one_read_timeout(fixture_settings, fixture_index):
    with SilentServer() as silent:
        settings = fixture_settings.model_copy(update={
            "openai_base_url": silent.url, "composer": "chat", "chat_read_timeout_s": 1.5})
        started = time.monotonic()
        a = AnswerService(settings, fixture_index).ask("How do I ask for a coin refund?", [], PUBLIC)
        took = time.monotonic() - started
        assert silent.accepted, "the client connected and then waited"
    assert a.composer == "extractive-fallback" and a.citations and "timed out" in a.fallback_reason.lower()
    assert took < 1.5 * 2, f"one read timeout (1.5 s) without retries, took {took:.1f} s"


def test_prompt_fits_the_context_window(fixture_settings, fixture_index):
    settings = fixture_settings.model_copy(update={
        "openai_base_url": "http://127.0.0.1:9/v1", "chat_model": "gpt-4o-mini", "chat_context_window": 700,
        "chat_max_tokens": 200})
    gen = fixture_index.require_generation()
    sources = [Source(i + 1, c) for i, c in enumerate(gen.chunks[:10])]
    history = [{"role": "user", "text": "earlier question " * 40}, {"role": "agent", "text": "earlier answer " * 40}]
    cond = DeterministicCondenser().run("What is the refund window?", [])
    msgs, given = ChatComposer(settings).messages(ComposeRequest("What is the refund window?", cond, sources,
                                                                 "internal", history))
    enc = encoding_for_model("gpt-4o-mini")
    used = sum(len(enc.encode_ordinary(content)) for _, content in msgs)
    assert used <= 700 - 200
    assert 1 <= len(given) < len(sources)  # some sources had to be left out, the best one never
    assert given[0].number == 1


def test_parse_chat_output_formats():
    sentences, no_answer = parse_chat_output(
        "Refunds take 14 days [1]. Used coins are not refunded [2][1].\n"
        "1. Open Settings [3]\nQUOTES:\n[1] \"within 14 days\"\n[2] “used coins are never refunded”\n"
        "[1] \"Used coins are not refundable.\"")
    assert not no_answer
    assert [(s.text, [c.number for c in s.citations]) for s in sentences] == [
        ("Refunds take 14 days.", [1]), ("Used coins are not refunded.", [2, 1]), ("Open Settings", [3])]
    assert sentences[1].citations[1].quote == "Used coins are not refundable."  # the best-matching quote for [1]
    assert sentences[2].kind == "step" and sentences[2].citations[0].quote == ""
    assert parse_chat_output("NO_ANSWER") == ([], True)
