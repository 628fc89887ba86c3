"""One assessment, three outcomes (issue 11): decide() alone, then through the real chain over kb/, the store,
the eval records and the console marker; and the fixed fit/check split every fitted number relies on."""

from __future__ import annotations

import pytest

from bot.answer import assess
from bot.answer.assess import Signals, decide
from bot.answer.safety import asks_for_person
from bot.answer.service import AnswerService
from bot.core.models import Answer, Audience, Filters
from bot.evaluation.metrics import aggregate
from bot.evaluation.split import group_key, half, select
from bot.evaluation.suites import EvalCase, parse_case
from bot.store.sqlite import Store
from bot.surfaces.console import CAUTION_MARKER, outcome_marker

INTERNAL = Filters(audience=Audience.INTERNAL)
PUBLIC = Filters(audience=Audience.PUBLIC)


def sig(**kw) -> Signals:
    base = {"internal": True, "confidence": 0.6, "answer_threshold": 0.5, "caution_threshold": 0.3}
    return Signals(**{**base, **kw})


# ---- decide(): the one place the outcome is chosen ----------------------------------------------------------


def test_agents_get_caution_between_the_thresholds_and_the_public_never_does():
    assert decide(sig(confidence=0.6)).outcome == assess.ANSWERED
    caution = decide(sig(confidence=0.4, missing="the exact amount"))
    assert caution.outcome == assess.CAUTION and caution.missing == "the exact amount" and not caution.handoff
    low = decide(sig(confidence=0.2))
    assert low.outcome == assess.REFUSED and low.reason == assess.REFUSAL_LOW_CONFIDENCE and not low.handoff
    public = decide(sig(internal=False, confidence=0.4))
    assert public.outcome == assess.REFUSED and public.handoff  # related articles + a person, never caution
    assert decide(sig(internal=False, confidence=0.6)).outcome == assess.ANSWERED


def test_an_agent_gets_caution_when_the_specific_element_asked_is_not_stated():
    # confident guidance that answers a maximum with a minimum: the guidance is there, the detail is not
    a = decide(sig(confidence=0.9, element="the maximum", missing="the maximum"))
    assert a.outcome == assess.CAUTION and a.missing == "the maximum"
    # the public gets answered or refused only
    assert decide(sig(internal=False, confidence=0.9, element="the maximum")).outcome == assess.ANSWERED
    assert decide(sig(confidence=0.2, element="the maximum")).outcome == assess.REFUSED


def test_refusal_reasons_in_order_and_unsupported_guidance_is_not_caution():
    assert decide(sig(has_sources=False)).reason == assess.REFUSAL_NO_SOURCES
    assert decide(sig(blocked=True)).reason == assess.REFUSAL_BLOCKED
    assert decide(sig(confidence=0.4, supported=False)).reason == assess.REFUSAL_NO_SUPPORT
    assert decide(sig(small_talk=True)).reason == assess.REFUSAL_NOT_A_QUESTION


def test_crisis_is_never_refused_for_low_confidence_and_always_offers_a_person():
    for internal in (True, False):
        a = decide(sig(internal=internal, confidence=0.01, crisis=True))
        assert a.outcome == assess.ANSWERED and a.handoff and a.crisis
    # a crisis message that also asks for a person still gets the crisis help first
    assert decide(sig(internal=False, confidence=0.01, crisis=True, person_requested=True)).outcome == "answered"


def test_a_request_for_a_person_goes_straight_to_the_handoff():
    a = decide(sig(internal=False, confidence=0.9, person_requested=True))
    assert a.outcome == assess.REFUSED and a.reason == assess.HANDOFF_REQUESTED and a.handoff


@pytest.mark.parametrize("text, expected", [
    ("can I talk to a human?", True), ("Can I speak to someone please", True), ("human please", True),
    ("connect me with a real person", True), ("How do agents escalate a P1 case?", False),
    ("what do we do when a person is locked out?", False),
])
def test_asks_for_person(text, expected):
    assert asks_for_person(text) is expected


# ---- through the real chain over kb/ ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kb_service(kb_settings, kb_index) -> AnswerService:
    return AnswerService(kb_settings, kb_index)


def test_public_request_for_a_person_gets_the_handoff_offer_not_a_refusal_text(kb_service):
    a = kb_service.ask("can I talk to a human?", [], PUBLIC)
    assert a.handoff_offered and a.outcome == "refused" and a.refusal_reason.startswith("person_requested")
    assert "couldn't find" not in a.text and "person" in a.text and not a.citations and not a.related


def test_an_agent_asking_about_reaching_a_person_gets_an_answer_not_a_handoff(kb_service):
    a = kb_service.ask("can I talk to a human?", [], INTERNAL)
    assert not a.refusal_reason.startswith("person_requested")


def test_caution_band_answers_agents_with_closest_guidance_and_refuses_the_public(kb_settings, kb_index):
    # every real score is below 0.999: with the caution floor at 0 each in-KB agent question lands in caution
    svc = AnswerService(kb_settings.model_copy(update={"refusal_threshold": 0.999, "caution_threshold": 0.0}),
                        kb_index)
    q = "How do I request a refund for coins I bought by mistake?"
    agent = svc.ask(q, [], INTERNAL)
    assert agent.outcome == "caution" and not agent.refused and agent.citations
    assert agent.text.startswith("Not confirmed: the knowledge base does not state")
    public = svc.ask(q, [], PUBLIC)
    assert public.outcome == "refused" and public.refused and public.handoff_offered and not public.citations
    assert public.to_dict()["outcome"] == "refused"


def test_outcome_matches_refused_on_ordinary_answers(kb_service):
    answered = kb_service.ask("How do I delete my account?", [], PUBLIC)
    assert answered.outcome == "answered" and not answered.refused
    refused = kb_service.ask("Which football team won the 2018 World Cup?", [], INTERNAL)
    assert refused.outcome == "refused" and refused.refused


# ---- store, eval records, console ---------------------------------------------------------------------------


def test_store_records_outcome_and_caution_is_a_content_gap(tmp_path, kb_service):
    # (the upgrade of a store written before `outcome` existed is covered in tests/test_store.py)
    store = Store(tmp_path / "store.db")
    svc = AnswerService(kb_service.settings.model_copy(update={"refusal_threshold": 0.999,
                                                                "caution_threshold": 0.0}), kb_service.index)
    caution = svc.ask("How do I request a refund for coins I bought by mistake?", [], INTERNAL)
    mid = store.log_answer("c2", "coins refund", caution, "console")
    assert store.get_message(mid)["outcome"] == "caution"
    answered = kb_service.ask("How do I delete my account?", [], PUBLIC)
    ok = store.log_answer("c3", "delete account", answered, "api")
    assert store.get_message(ok)["outcome"] == "answered"
    gaps = [r["question"] for r in store.unanswered_questions(days=None)]
    assert "coins refund" in gaps and "delete account" not in gaps  # caution lands in the content-gap report


def test_eval_aggregate_reports_the_outcome_rates():
    def rec(expected_refusal: bool, outcome: str) -> dict:
        return {"expected": {"expected_refusal": expected_refusal}, "refused": outcome == "refused",
                "outcome": outcome, "answer": "x", "metrics": {}, "error": None}

    m = aggregate([rec(False, "answered"), rec(False, "answered"), rec(False, "caution"), rec(False, "refused"),
                   rec(True, "caution"), rec(True, "refused"), rec(True, "answered")])
    assert m["answered_on_answerable"] == 0.5 and m["caution_on_answerable"] == 0.25
    assert m["refused_or_caution_on_unanswerable"] == pytest.approx(0.6667, abs=1e-4)
    assert m["caution_rate"] == pytest.approx(2 / 7, abs=1e-4) and m["answer_rate"] == 0.75


def test_console_marks_caution_answers_only():
    assert outcome_marker(Answer("q", "t", outcome="caution")) == CAUTION_MARKER == "Closest guidance — not confirmed"
    assert outcome_marker(Answer("q", "t")) == ""
    assert outcome_marker(Answer("q", "t", refused=True, outcome="refused")) == ""


# ---- the fit/check split ------------------------------------------------------------------------------------


def case(i: int, **extra) -> EvalCase:
    return parse_case({"id": f"c{i}", "question": f"question {i}?", **extra}, "test", f"c{i}")


def test_split_is_fixed_disjoint_and_complete():
    cases = [case(i) for i in range(200)]
    fit, check = select(cases, "fit"), select(cases, "check")
    assert len(fit) + len(check) == 200 and not {c.id for c in fit} & {c.id for c in check}
    assert 70 <= len(fit) <= 130  # a hash split: roughly half
    # the half of a case depends on its id alone: other cases and their order do not move it
    assert [c.id for c in select(list(reversed(cases[:50])), "fit")] == [c.id for c in reversed(fit) if
                                                                        int(c.id[1:]) < 50]
    assert select(cases, "all") == cases
    with pytest.raises(ValueError):
        select(cases, "train")


def test_split_keeps_a_dialogue_in_one_half():
    turns = [case(i, source_id=f"dlg{i // 4}_{i % 4 + 1}") for i in range(80)]
    assert group_key(turns[0]) == group_key(turns[3]) == "dialogue:dlg0"
    for d in range(20):
        assert len({half(t) for t in turns[d * 4:(d + 1) * 4]}) == 1
    mtrag = [case(i, source_id=f"conv{i // 3}<::>{i % 3 + 2}") for i in range(9)]
    assert len({half(t) for t in mtrag[:3]}) == 1 and group_key(mtrag[4]) == "dialogue:conv1"
