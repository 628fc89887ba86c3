"""Conversation turns on the real kb/: a new question after unrelated turns is answered exactly as if asked
alone; a follow-up keeps the topic and changes what it changes (the region)."""

from __future__ import annotations

import pytest

from bot.answer.condense import DeterministicCondenser, decide_turn
from bot.answer.service import AnswerService
from bot.core.models import Audience, Filters
from bot.core.profile import KBProfile
from bot.core.text import TermWeights

INTERNAL = Filters(audience=Audience.INTERNAL)
HACKED = [{"role": "user", "text": "hacked acct, attacker changed the phone number 2 weeks ago, user no longer has "
                                   "the old number"},
          {"role": "assistant", "text": "Send a VeriPass link; after a Match confirm two ownership signals."},
          {"role": "user", "text": "ok veripass came back match, restoring now"},
          {"role": "assistant", "text": "Restore the original contact and force a password reset."}]
DSAR = [{"role": "user", "text": "customer in berlin wants a copy of all the data we hold on him, what's our deadline"},
        {"role": "assistant", "text": "One month from receipt of the request (GDPR Art. 12(3))."}]


@pytest.fixture(scope="module")
def service(kb_settings, kb_index) -> AnswerService:
    return AnswerService(kb_settings, kb_index)


def test_new_question_after_unrelated_turns_is_answered_as_if_asked_alone(service):
    question = "how do i handle a creator payout that is on hold?"
    alone = service.ask(question, [], INTERNAL)
    after = service.ask(question, HACKED, INTERNAL)
    assert [c.doc_id for c in after.citations] == [c.doc_id for c in alone.citations]
    assert after.text == alone.text and after.refused == alone.refused
    assert after.retrieved_doc_ids == alone.retrieved_doc_ids
    assert after.retrieved_doc_ids[0] == "sop-payout-hold-review"
    assert after.turn_decision.startswith("new")


def test_follow_up_keeps_the_topic_and_switches_the_region(service):
    turn = service._start("and what if they are in the US?", DSAR, INTERNAL, None)
    turn = service.chain.invoke(turn)
    c = turn.condensed
    assert c.decision == "follow-up" and c.is_follow_up
    carried = " ".join(c.carried_terms).lower()
    assert "data" in carried or "copy" in carried  # the DSAR topic is kept ...
    assert "berlin" not in carried  # ... and the earlier place is replaced, not searched alongside
    docs = [s.chunk.doc_id for s in turn.retrieved.sources[:5]]
    assert "sop-us-privacy-requests" in docs


def test_turn_decision_signals():
    weights = TermWeights({"coin": 2, "refund": 3, "payout": 2, "hold": 4, "user": 40, "want": 40}, 50)
    prior = ["A user wants a coin refund"]
    assert decide_turn("And for the UK?", prior, weights)[0] == "follow-up"
    assert decide_turn("how long does the coin refund take to arrive", prior, weights)[0] == "follow-up"
    assert decide_turn("unrelated - why is a creator payout on hold for review", prior, weights)[0] == "new"
    # a pronoun alone does not make a follow-up when the question finds its own document
    own = decide_turn("a creator says her payout is on hold, what should she check", prior, weights,
                      search_docs=lambda text: ["payouts", "payouts", "faq"] if "payout" in text else ["coins"])
    assert own[0] == "new"
    lost = decide_turn("how long is that veripass link valid before it expires", prior, weights,
                       search_docs=lambda text: ["a", "b", "c"] if "link" in text else ["coins"])
    assert lost[0] == "follow-up"


def test_condenser_drops_replaced_places_only():
    cond = DeterministicCondenser(region_words=KBProfile().place_words)  # the gazetteer needs no profile
    weights = TermWeights({"copy": 3, "data": 3, "deadline": 2, "berlin": 1}, 50)
    out = cond.run("and in the US?", DSAR, weights)
    assert "berlin" not in [t.lower() for t in out.carried_terms] and "data" in out.carried_terms
    same = cond.run("and what is the deadline extension?", DSAR, weights)
    assert "berlin" in [t.lower() for t in same.carried_terms]  # no new place named: the region is carried


def test_a_follow_up_naming_its_topic_carries_no_words():
    weights = TermWeights({"vulnerability": 2, "advisor": 2, "version": 5, "steps": 9}, 50)
    prior = ["I currently have Vulnerability Advisor version 3"]
    out = DeterministicCondenser().run("What are the steps to obtain Vulnerability Advisor v4?",
                                       [{"role": "user", "text": prior[0]}], weights)
    assert out.decision == "follow-up" and out.signals[0].startswith("shares terms")
    assert out.carried_terms == () and out.retrieval_query == out.question  # the history still steers the search
