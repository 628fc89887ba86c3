"""Agent procedural questions on the real kb/: the main SOP's steps kept together, its deadline when asked, the
SOP ranked above documents that only link to it, and hints (SOP prior, regions) that re-rank but never filter."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from bot.answer.service import AnswerService
from bot.core.models import Audience, Chunk, Filters
from bot.core.profile import PROFILE_FILE, load_profile
from bot.core.text import analyze
from bot.search.intent import asks_timing, is_procedural, question_intent, region_hints
from bot.search.retrieval import HybridSearcher, main_document

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 10, 1)
INTERNAL = Filters(audience=Audience.INTERNAL, as_of=AS_OF)
PUBLIC = Filters(audience=Audience.PUBLIC, as_of=AS_OF)
DSAR = "A user in Germany wants the data we hold on them: what do I do and by when?"
HACKED = "How do I handle a hacked account?"


@pytest.fixture(scope="module")
def kb_service(kb_settings, kb_index) -> AnswerService:
    """A service over the real kb/ (shared session index)."""
    return AnswerService(kb_settings, kb_index)


@pytest.fixture(scope="module")
def searcher(kb_settings, kb_index) -> HybridSearcher:
    """The product's searcher over the real kb/."""
    return HybridSearcher.from_settings(kb_index, kb_settings)


def numbered_lines(text: str) -> list[str]:
    """The answer lines shown as numbered steps."""
    return [ln for ln in text.splitlines() if ln[:1].isdigit() and ". " in ln[:4]]


def assert_verified(answer) -> None:
    """Every citation quotes its chunk verbatim and every answer line carries a marker."""
    assert answer.citations
    for c in answer.citations:
        assert c.quote and c.quote in c.chunk_text, c
    for line in answer.text.splitlines():
        assert "[" in line and "]" in line, line


# ---- question intent -------------------------------------------------------------------------------------


def test_question_intent_reads_procedure_deadline_and_regions():
    kb = load_profile(ROOT / "kb" / PROFILE_FILE)
    assert question_intent(DSAR, kb) == question_intent(DSAR.replace("Germany", "France"), kb)
    intent = question_intent(DSAR, kb)
    assert intent.procedural and intent.timing and intent.regions == ("EU",)
    assert is_procedural(HACKED) and not asks_timing(HACKED)
    assert is_procedural("What's the next step?") and is_procedural("How should we deal with a chargeback?")
    assert not is_procedural("How long does a refund take?") and asks_timing("How long does a refund take?")
    assert asks_timing("What's the deadline for a DSAR?") and asks_timing("How many business days do we have?")
    assert not asks_timing("When can a user change their username?")  # "when" alone asks about a condition
    assert region_hints("A user in the United Kingdom and one in California", kb) == ("UK", "US")
    assert region_hints("Tell us about it", kb) == ()  # the pronoun "us" is not the United States
    assert region_hints("A US creator", kb) == ("US",)
    assert region_hints("The message is in English", kb) == ()
    assert region_hints("A user in the United Kingdom") == ()  # a KB without a profile has no region codes


# ---- retrieval -------------------------------------------------------------------------------------------


def test_link_text_does_not_count_for_the_linking_chunk():
    chunk = Chunk("c", "d", 0, "Handle the reopened ticket under [Hacked account recovery](kb:sop-account-hacked).",
                  ("Decision points",), 20, {"title": "Email change"})
    terms = set(analyze(chunk.lexical_text))
    assert "hack" not in terms and "kb" not in terms and "sop" not in terms
    assert {"handl", "reopen", "ticket", "email", "chang", "decis"} <= terms
    assert "hack" in set(analyze(chunk.embed_text))  # the dense side still reads the whole sentence


def test_the_sop_about_the_topic_outranks_documents_that_link_to_it(searcher):
    hits = searcher.search(HACKED, INTERNAL, k=6)
    assert hits[0].chunk.doc_id == "sop-account-hacked"
    # the same question from the public: no SOP prior, no internal document, the help article first
    public = searcher.search(HACKED, PUBLIC, k=6)
    assert public[0].chunk.doc_id == "help-hacked-account"
    assert all(h.chunk.metadata["audience"] == "public" for h in public)


def test_the_sop_prior_applies_to_procedural_agent_questions_only(searcher, kb_index):
    gen = kb_index.require_generation()
    fused = [(c, 1.0, [1, 1]) for c in gen.chunks if c.doc_id in ("help-hacked-account", "sop-account-hacked")]
    procedural = searcher._rerank_documents({}, fused, INTERNAL, question_intent(HACKED), document_evidence=0.0)
    plain = searcher._rerank_documents({}, fused, INTERNAL, question_intent("Hacked account"),
                                       document_evidence=0.0)
    assert procedural[0][0].doc_id == "sop-account-hacked"
    assert {s for _, s, _ in plain} == {1.0}  # nothing to re-rank on: equal scores stay equal


def test_hints_rerank_but_never_drop_a_chunk(searcher, kb_index):
    gen = kb_index.require_generation()
    fused = [(c, 1.0 - i / 1000, [i + 1, None]) for i, c in enumerate(gen.chunks[:200])]
    out = searcher._rerank_documents(dict.fromkeys(analyze(DSAR), 1.0), fused, INTERNAL,
                                     question_intent(DSAR, searcher.profile))
    assert sorted(c.chunk_id for c, _, _ in out) == sorted(c.chunk_id for c, _, _ in fused)
    # a country is a hint: the US variant stays visible and retrievable for a German user's question
    hits = searcher.search("US privacy requests deadline for a user in Germany", INTERNAL, k=10)
    assert "sop-us-privacy-requests" in {h.chunk.doc_id for h in hits}


def test_companions_bring_the_main_sops_steps_and_deadline_under_the_filters(searcher):
    hits = searcher.search(DSAR, INTERNAL, k=6)
    main = main_document([h.chunk for h in hits], Audience.INTERNAL)
    assert main == "sop-gdpr-access-request"
    extra = searcher.companions(hits, DSAR, INTERNAL)
    assert extra and all(c.chunk.doc_id == main for c in extra)
    assert {c.chunk.chunk_id for c in extra}.isdisjoint(h.chunk.chunk_id for h in hits)
    # the SOP's Steps reach the composer: retrieved among the hits, or else brought as a companion
    assert any(c.chunk.doc_id == main and c.chunk.section == "Steps" for c in [*hits, *extra])
    assert any("SLA" in c.chunk.section or "Steps" in c.chunk.section for c in extra)
    public_hits = searcher.search(DSAR, PUBLIC, k=6)
    assert all(c.chunk.metadata["audience"] == "public" for c in searcher.companions(public_hits, DSAR, PUBLIC))
    assert searcher.companions(hits, "Which queue owns data requests?", INTERNAL) == []  # neither how nor when


# ---- answers ---------------------------------------------------------------------------------------------


def test_dsar_answer_gives_the_sop_steps_and_the_deadline(kb_service):
    a = kb_service.ask(DSAR, [], INTERNAL)
    assert not a.refused
    assert a.citations[0].doc_id == "sop-gdpr-access-request" and a.citations[0].section == "Steps"
    steps = numbered_lines(a.text)
    assert len(steps) >= 8 and steps[0].startswith("1. ") and steps[-1].startswith("8. ")
    assert "Full DSAR export" in a.text
    deadline = [c for c in a.citations if "one month" in c.quote.lower()]
    assert deadline and deadline[0].doc_id == "sop-gdpr-access-request"
    assert "Respond within one month of receipt of the request" in a.text
    assert_verified(a)


def test_the_deadline_is_added_only_when_the_question_asks_by_when(kb_service):
    a = kb_service.ask("A user in Germany wants the data we hold on them: what do I do?", [], INTERNAL)
    assert a.citations[0].doc_id == "sop-gdpr-access-request" and len(numbered_lines(a.text)) >= 8
    assert "Respond within one month" not in a.text
    assert_verified(a)


def test_hacked_account_answer_cites_the_sop_steps_first(kb_service):
    a = kb_service.ask(HACKED, [], INTERNAL)
    assert not a.refused
    assert a.citations[0].doc_id == "sop-account-hacked" and a.citations[0].section == "Steps"
    steps = numbered_lines(a.text)
    assert len(steps) == 10 and "Security lock" in steps[1]
    assert "reopened ticket" not in a.text  # no cross-reference sentences of other SOPs
    assert a.escalation is not None and a.escalation.source_doc_id == "sop-account-hacked"
    assert_verified(a)


def test_a_particular_case_is_answered_by_its_decision_not_the_whole_procedure(kb_service):
    a = kb_service.ask("The violating post was made while the account looked compromised. How do I route it?",
                       [], INTERNAL)
    assert "acct-recovery" in a.text and len(numbered_lines(a.text)) == 0
    assert_verified(a)


def test_deadlines_of_other_regions_are_not_quoted():
    from bot.core.units import region_conflict

    kb = load_profile(ROOT / "kb" / PROFILE_FILE)
    assert region_conflict("US: Deadline: 45 calendar days (CCPA/CPRA); Extension: Once, by 45 more days", ("EU",), kb)
    assert not region_conflict("EU/EEA and UK: One month from receipt (GDPR Art. 12(3))", ("EU",), kb)
    assert not region_conflict("Respond within one month of receipt of the request.", ("EU",), kb)  # names none


def test_a_german_users_deadline_is_the_gdpr_one(kb_service):
    a = kb_service.ask("A user in Germany wants the data we hold on them: what do I do and by when?", [],
                       Filters(audience=Audience.INTERNAL))
    assert "one month" in a.text and "45" not in a.text


def test_escalation_reason_is_not_another_regions_rule(kb_service):
    a = kb_service.ask("A user in France says a card payment for coins was unauthorised. What do I do and by when?",
                       [], Filters(audience=Audience.INTERNAL))
    assert a.escalation is not None and a.escalation.source_doc_id == "sop-unauthorised-payments-psd2"
    assert "US and ROW" not in a.escalation.reason


def test_a_question_asking_which_team_is_answered_with_a_queue_the_cited_document_names(kb_service):
    """The composer prefers units holding the kind of value asked for: the SOP's scope line restates the
    situation ("Diamonds are missing from their balance") but names no queue, so it cannot be the whole answer."""
    a = kb_service.ask("A creator says Diamonds are missing from their balance. Which team handles the dispute?",
                       [], INTERNAL)
    assert not a.refused and a.citations and all(c.quote in c.chunk_text for c in a.citations)
    cited = " ".join(c.chunk_text for c in a.citations)
    queues = set(re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", cited))
    assert queues and any(q in a.text for q in queues), a.text
