"""The answerability scorer (bot/answer/assess.py): its features on real text, and refusals on the real kb/."""

from __future__ import annotations

import pytest

from bot.answer import assess
from bot.answer.condense import Condensed
from bot.answer.service import AnswerService, Turn
from bot.core.models import Audience, Filters
from bot.core.text import TermWeights

INTERNAL = Filters(audience=Audience.INTERNAL)
PUBLIC = Filters(audience=Audience.PUBLIC)


@pytest.fixture(scope="module")
def kb_service(kb_settings, kb_index) -> AnswerService:
    """One service over the real kb/ index."""
    return AnswerService(kb_settings, kb_index)


def condensed(question: str) -> Condensed:
    return Condensed(question, question, question)


# ---- features on real text ------------------------------------------------------------------------------


@pytest.mark.parametrize("question, evidence, missing", [
    ("How long do I have to return an item?", ["Send the item back within 14 days of telling us."], 0.0),
    ("How long do I have to return an item?", ["Returns are free for EU customers."], 1.0),
    ("How much does the subscription cost?", ["In the US it costs USD 4.99 a month."], 0.0),
    ("How much does the subscription cost?", ["You can cancel the subscription at any time."], 1.0),
    ("Can I transfer coins to another account?", ["Coins can't be transferred between accounts."], 0.0),
    ("Can I transfer coins to another account?", ["Coins are bought in the app."], 1.0),
    ("Why was my video removed?", ["Videos that break the rules are removed."], 0.0),  # asks no typed thing
])
def test_type_missing_says_whether_the_evidence_holds_what_was_asked_for(question, evidence, missing):
    assert assess.type_missing(question, evidence) == missing


@pytest.mark.parametrize("question, evidence, missing", [
    # a count of the things asked about, not any number
    ("How many strikes lead to a ban?", ["Strikes expire after 90 days."], "the exact number"),
    ("How many strikes lead to a ban?", ["Three strikes lead to a ban."], ""),
    # a maximum is not answered by a minimum, nor the reverse
    ("What's the most I can withdraw in one payout?", ["The minimum withdrawal is USD 50."], "the maximum"),
    ("What's the most I can withdraw in one payout?", ["You can withdraw up to USD 10,000 a week."], ""),
    ("What is the minimum withdrawal?", ["You can withdraw up to USD 10,000 a week."], "the minimum"),
    # an amount asked in a currency is answered in that currency
    ("How much is the subscription in pounds?", ["In the US it costs USD 4.99 a month."], "the amount in GBP"),
    ("How much is the subscription in pounds?", ["In the UK it costs £3.99 a month."], ""),
])
def test_missing_kind_compares_the_kind_asked_not_any_number(question, evidence, missing):
    assert assess.missing_kind(question, evidence) == missing


def test_a_word_the_index_never_saw_does_not_dominate_coverage():
    weights = TermWeights({"refund": 2, "coin": 3, "account": 40, "return": 5}, 50)
    chunk = "How to refund coins."
    # slang/a name the KB lacks weighs as much as an average known word, not the highest idf
    f = assess.features(condensed("refund coins plzzzzz"), [0.5], [chunk], [chunk], weights)
    terms = assess.question_terms(condensed("refund coins plzzzzz"), weights)
    assert terms.unknown == ("plzzzzz",)
    assert terms.weights["?plzzzzz"] == pytest.approx((weights.idf("refund") + weights.idf("coin")) / 2)
    assert f.chunk_coverage == pytest.approx(2 / 3)
    # a typo of an index word counts as that word ("retrun" -> return); short words are never matched
    typo = assess.question_terms(condensed("how do i retrun coins"), weights)
    assert "return" in typo.weights and not typo.unknown
    assert weights.closest("stunt") == "" and weights.closest("coim") == ""


def test_retrieval_shape_rewards_lists_that_agree_on_one_document():
    from bot.core.models import Chunk, ScoredChunk

    def hit(doc: str, score: float, dense: int | None, lexical: int | None) -> ScoredChunk:
        return ScoredChunk(Chunk(f"{doc}#0", doc, 0, "text", (), 1), score, dense, lexical)

    agree, share = assess.retrieval_shape([hit("a", 1.0, 1, 1), hit("b", 0.5, 2, 3)])
    assert agree == 1.0 and share == pytest.approx(1 / 1.5)
    split, flat = assess.retrieval_shape([hit("a", 1.0, 4, 1), hit("b", 1.0, 1, 2), hit("c", 1.0, 2, 5)])
    assert split == pytest.approx((1 / 4 + 1) / 2) and flat == pytest.approx(1 / 3)


def test_coverage_features_weigh_rare_question_terms_most():
    weights = TermWeights({"refund": 2, "coin": 3, "account": 40}, 50)
    chunk = "How to refund coins."
    f = assess.features(condensed("refund coins account"), [0.5], [chunk], [chunk], weights)
    assert 0.5 < f.chunk_coverage < 1.0, "the chunk misses only the common term"
    assert f.sentence_coverage == pytest.approx(f.chunk_coverage)
    g = assess.features(condensed("refund coins account"), [0.5], ["The account page."], [], weights)
    assert g.chunk_coverage < 0.2 and g.sentence_coverage == 0.0


def test_score_rises_with_evidence_and_falls_when_the_asked_kind_is_missing():
    def f(sim: float, cov: float, **kw) -> assess.Features:
        return assess.Features(top_similarity=sim, chunk_coverage=cov, sentence_coverage=cov,
                               rank_agreement=1.0, top_share=0.5, **kw)

    assert assess.score(f(0.75, 0.9)) > 0.9 and assess.score(f(0.2, 0.1)) < 0.1
    assert assess.score(f(0.55, 0.6, type_missing=1.0)) < assess.score(f(0.55, 0.6))
    assert assess.score(f(0.55, 0.6, specific_missing=1.0)) < assess.score(f(0.55, 0.6))


# ---- refusals on the real knowledge base ----------------------------------------------------------------


@pytest.mark.parametrize("question", [
    "What is the weather forecast for Paris tomorrow?",
    "How do I change the oil in my car?",
    "Which football team won the 2018 World Cup?",
])
@pytest.mark.parametrize("filters", [INTERNAL, PUBLIC], ids=["internal", "public"])
def test_out_of_kb_questions_are_refused(kb_service, question, filters):
    a = kb_service.ask(question, [], filters)
    assert a.refused and a.refusal_reason.startswith("low_retrieval_confidence"), a.text
    assert a.citations == [] and a.confidence < kb_service.threshold(filters)


@pytest.mark.parametrize("question", [
    "How do I turn on two-factor authentication?",
    "How long do I have to appeal a removed video?",
    "How do I request a refund for coins I bought by mistake?",
    "How do I delete my account?",
])
def test_in_kb_questions_are_answered_with_citations(kb_service, question):
    a = kb_service.ask(question, [], PUBLIC)
    assert not a.refused, a.refusal_reason
    assert a.citations and a.confidence >= kb_service.threshold(PUBLIC)


def test_the_answer_confidence_is_the_score_of_the_recorded_features(kb_service):
    turn = kb_service.chain.invoke(Turn("How do I delete my account?", [], PUBLIC, "extractive"))
    assert turn.answerability is not None
    assert turn.retrieved.confidence == pytest.approx(assess.score(turn.answerability))
    assert turn.answerability.top_similarity == pytest.approx(
        max(s.similarity for s in turn.retrieved.sources[:3]))


@pytest.mark.parametrize("message", [
    "I don't want to be alive anymore.",
    "my friend said on LIVE he is going to kill himself",
    "someone in the comments says they want to die",
])
def test_a_crisis_message_gets_crisis_help_and_a_person_not_a_refusal(kb_service, message):
    a = kb_service.ask(message, [], PUBLIC)
    assert not a.refused, a.refusal_reason
    assert a.handoff_offered
    assert "help-safety-center" in [c.doc_id for c in a.citations]
    assert "emergency services" in a.text


def test_an_agent_gets_the_crisis_sop_and_its_p1_escalation(kb_service):
    a = kb_service.ask("A creator said on LIVE they want to end their life. What do I do?", [], INTERNAL)
    assert not a.refused
    assert "sop-self-harm-imminent-danger" in [c.doc_id for c in a.citations]
    assert a.escalation is not None and a.escalation.priority == "P1"
    # "what do I do" gets the SOP's steps, not its "when this applies" paragraph restating the situation
    assert "1. Set the ticket to P1" in a.text and "2. Send Crisis resources" in a.text


@pytest.mark.parametrize("message", ["How do I kill a stuck LIVE stream?", "My order is in danger of being late",
                                     "How do I delete my account?"])
def test_ordinary_questions_are_not_crisis_messages(message):
    from bot.answer.safety import crisis_signal

    assert not crisis_signal(message)
    assert crisis_signal("she's in danger right now") and crisis_signal("I keep thinking about self-harm")
