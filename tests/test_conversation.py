"""Conversation turns on the real kb/: a new question after unrelated turns is answered exactly as if asked
alone; a follow-up keeps the topic and changes what it changes (the region)."""

from __future__ import annotations

import pytest

from bot.answer.condense import DeterministicCondenser, decide_turn, strip_opener
from bot.answer.service import AnswerService
from bot.core.models import Audience, Chunk, Filters
from bot.core.profile import KBProfile
from bot.core.text import TermWeights
from bot.search.ranking import prefer_regional_variants
from bot.search.retrieval import HybridSearcher

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
    cond = DeterministicCondenser(profile=KBProfile())  # the gazetteer needs no profile file
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


def test_an_opener_that_names_no_topic_is_left_out_of_the_question():
    weights = TermWeights({"creator": 5, "withdraw": 3, "minimum": 4, "ticket": 9, "coin": 2, "refund": 3,
                           "card": 4}, 50)
    docs = {"different ticket": ["tickets", "sla"], "coin refunds": ["coins", "refunds"]}
    search = lambda text: docs.get(text, ["payouts"] if "withdraw" in text else ["coins", "refunds"])
    rest, opener = strip_opener("thx. different ticket - creator asks about the minimum withdrawal", weights,
                                search)
    assert rest == "creator asks about the minimum withdrawal" and opener == "thx. different ticket -"
    # a leading segment whose words find the rest's documents is the topic, not an opener
    same = "coin refunds - how long until the money shows up on the card"
    assert strip_opener(same, weights, search) == (same, "")
    # without a search only a segment of no KB word is an opener; a short rest is no question of its own
    assert strip_opener("switching gears: creator asks about the minimum withdrawal", weights)[1] == "switching gears:"
    assert strip_opener("new q: how long?", weights)[1] == ""


def test_a_new_question_after_an_opener_is_answered_as_if_asked_alone(service):
    question = "creator wants to know the minimum amount she can withdraw"
    alone = service.ask(question, [], INTERNAL)
    after = service.ask(f"different ticket - {question}", DSAR, INTERNAL)
    assert after.turn_decision.startswith("new")
    assert (after.text, after.confidence, after.outcome) == (alone.text, alone.confidence, alone.outcome)
    assert after.retrieved_doc_ids == alone.retrieved_doc_ids


def _chunk(doc: str, title: str, regions: str, kind: str = "sop") -> Chunk:
    return Chunk(f"{doc}#0", doc, 0, title, (), 10, {"title": title, "regions": regions, "type": kind})


def test_the_requesters_regional_variant_wins_the_tie_break():
    fused = [(_chunk("returns-row", "Shop returns outside the EU, UK and US", "ROW"), 1.0, [1]),
             (_chunk("returns-help", "Return a shop order", "global", "help_article"), 0.9, [2]),
             (_chunk("returns-eu", "Shop returns in the EU and UK", "EU,UK"), 0.8, [3]),
             (_chunk("payouts-us", "Creator payouts in the US", "US"), 0.7, [4])]
    order = [c.doc_id for c, _, _ in prefer_regional_variants(fused, ("EU",))]
    assert order == ["returns-eu", "returns-row", "returns-help", "payouts-us"]
    # no variant of another procedure is moved: the US question's payouts SOP shares no title word with returns
    assert [c.doc_id for c, _, _ in prefer_regional_variants(fused, ("US",))] == [c.doc_id for c, _, _ in fused]
    assert prefer_regional_variants(fused, ()) == fused


def test_a_city_steers_to_its_regional_sop_and_a_follow_up_keeps_the_region(service):
    first = "buyer in madrid changed her mind about a jacket, how long does she have to send it back?"
    answer = service.ask(first, [], INTERNAL)
    sops = [d for d in answer.retrieved_doc_ids if d.startswith("sop-shop-returns")]
    assert sops[0] == "sop-shop-returns-eu-uk"
    history = [{"role": "user", "text": first}, {"role": "assistant", "text": "14 days from delivery."}]
    turn = service.chain.invoke(service._start("what if it has been 16 days since delivery?", history, INTERNAL,
                                               None))
    assert turn.condensed.decision == "follow-up" and turn.condensed.regions == ("EU",)
    sops = [s.chunk.doc_id for s in turn.retrieved.sources if s.chunk.doc_id.startswith("sop-shop-returns")]
    assert sops[0] == "sop-shop-returns-eu-uk"


def test_a_paraphrase_with_a_polysemous_word_reaches_the_data_access_sop(service):
    # "everything we hold on her" shares "hold" with the payout-hold and security-hold SOPs; BM25 alone follows
    # the word, the adaptive split lets the dense list decide when the best BM25 chunk holds little of the question
    question = "she wants everything we hold on her, what's our deadline"
    access = {"macro-dsr-extension-notice", "sop-gdpr-access-request", "help-data-rights-eu-uk",
              "help-download-your-data", "macro-dsar-acknowledgement", "help-privacy-rights"}
    top = [s.chunk.doc_id for s in service.searcher.search(question, INTERNAL, k=6)]
    assert service.settings.adaptive_fusion and top[0] in access and "hold" not in top[0]
    fixed = HybridSearcher.from_settings(service.index, service.settings.model_copy(update={"adaptive_fusion": False}))
    assert fixed.search(question, INTERNAL, k=6)[0].chunk.doc_id == "sop-payout-hold-review"
