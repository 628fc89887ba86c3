"""The one audience rule and the one public leak check (bot/core/audience.py), in the core and in the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

from bot.answer.service import AnswerService
from bot.core.audience import BLOCKED_REASON, LeakFacts, LeakGuard, audience_of, visible_to
from bot.core.events import FinalEvent
from bot.core.models import Answer, Audience, Chunk, Filters

PUBLIC = Filters(audience=Audience.PUBLIC, as_of=date(2026, 10, 1))
SOP_TEXT = ("Open the purchase in Ledger Console and confirm the coins are unused. If the user made more than 3 "
            "refund requests in 30 days, route the ticket to the `fraud-review` queue or mail "
            "lert@example.internal. Check `payments-t2` too.")
HELP_TEXT = ("You can ask for a refund of coins you have not used within 14 days of buying them. Our team "
             "in `payments-t2` reviews it.")


@dataclass
class Generation:
    """The parts of an index generation the leak check reads."""

    name: str
    chunks: list[Chunk]
    documents: dict[str, dict] = field(default_factory=dict)


@dataclass
class StaticIndex:
    """An index serving one fixed generation."""

    gen: Generation

    def generation(self) -> Generation:
        return self.gen


def chunk(doc_id: str, text: str, audience: str) -> Chunk:
    return Chunk(f"{doc_id}#0", doc_id, 0, text, (), 40, {"audience": audience, "title": doc_id})


def two_doc_generation() -> Generation:
    docs = {"sop-coin": {"meta": {"audience": "internal"}}, "help-coin": {"meta": {"audience": "public"}}}
    return Generation("g1", [chunk("sop-coin", SOP_TEXT, "internal"), chunk("help-coin", HELP_TEXT, "public")], docs)


def test_one_audience_predicate():
    assert visible_to(Audience.PUBLIC, "public") and visible_to(Audience.PUBLIC, Audience.PUBLIC)
    assert not visible_to(Audience.PUBLIC, "internal") and not visible_to(Audience.PUBLIC, None)
    assert not visible_to(Audience.PUBLIC, "Publik")  # unknown values are the restrictive audience
    assert visible_to(Audience.INTERNAL, "internal") and visible_to(Audience.INTERNAL, "public")
    assert audience_of(" PUBLIC ") is Audience.PUBLIC and audience_of("") is Audience.INTERNAL


def test_facts_hold_identifiers_and_word_runs_only_internal_documents_have():
    gen = two_doc_generation()
    facts = LeakFacts.build(gen.chunks, gen.documents, gen.name)
    # payments-t2 is named in a public article too, so it is no secret; the doc id and e-mail are
    assert facts.markers == ("fraud-review", "lert@example.internal", "sop-coin")
    assert facts.public_docs == frozenset({"help-coin"})
    assert facts.internal_runs.dtype == np.uint64 and np.all(np.diff(facts.internal_runs.astype(np.float64)) >= 0)
    assert facts.markers_in("Send it to FRAUD-REVIEW now.") == ["fraud-review"]
    assert facts.markers_in("the antifraud-review team") == []  # not on a word boundary
    copied = facts.copied_runs("Heads up: more than 3 refund requests in 30 days get routed [1].")
    assert copied == ["more than 3 refund requests in 30 days"]
    assert facts.copied_runs(HELP_TEXT) == []  # public text, even when an SOP shares words with it


def test_the_guard_checks_citations_related_retrieved_and_text():
    guard = LeakGuard(StaticIndex(two_doc_generation()))
    assert not guard.check(Answer("q", HELP_TEXT, retrieved_doc_ids=["help-coin"])).leaked
    verdict = guard.check(Answer("q", "Try the fraud-review queue.", related=[{"doc_id": "sop-coin"}],
                                 retrieved_doc_ids=["sop-coin"]))
    assert verdict.reasons == ["related non-public document 'sop-coin'", "retrieved non-public document 'sop-coin'",
                               "internal identifier 'fraud-review'"]


class LeakyComposerService(AnswerService):
    """A regression stand-in for a broken composer: adds a sentence copied from an internal SOP."""

    def _answer(self, turn, started):
        answer = super()._answer(turn, started)
        answer.text += " If the user made more than 3 refund requests in 30 days, route the ticket onward."
        return answer


def test_the_answer_service_blocks_public_leaks_on_every_surface(fixture_settings, fixture_index):
    """ask() (CLI, console, eval) and stream() (console, API) both end in the checked answer."""
    service = LeakyComposerService(fixture_settings, fixture_index)
    answer = service.ask("How do I ask for a coin refund?", [], PUBLIC)
    assert answer.refused and answer.refusal_reason == BLOCKED_REASON and answer.citations == []
    assert "refund requests in 30 days" not in answer.text
    assert any("only in internal documents" in r for r in answer.blocked_reasons)
    final = list(service.stream("How do I ask for a coin refund?", [], PUBLIC))[-1]
    assert isinstance(final, FinalEvent) and final.answer.refusal_reason == BLOCKED_REASON
    internal = service.ask("How do I ask for a coin refund?", [], Filters(as_of=date(2026, 10, 1)))
    assert not internal.refused and not internal.blocked_reasons  # agents may see SOP text
