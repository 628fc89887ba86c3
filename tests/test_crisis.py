"""Crisis detection: the phrase check backed by the embedding check, on the turn and on the recent user turns of
a follow-up, with the real local embedder (no model download: MiniLM ships with the project)."""

from __future__ import annotations

import pytest

from bot.answer.safety import CRISIS_SIMILARITY, CrisisDetector, clauses, crisis_signal
from bot.answer.service import AnswerService
from bot.core.config import Settings
from bot.core.models import Audience, Filters
from bot.ingest.embeddings import MemoEmbedder, build_embeddings

INTERNAL = Filters(audience=Audience.INTERNAL)
PARAPHRASES = [  # someone at risk, in words the phrase check does not know
    "viewer reports the streamer said he is going to end it after this stream",
    "a user messaged that this is her last goodbye and she will not be around tomorrow",
]
ORDINARY = ["how do I get a refund for coins I bought last week", "my dad passed away, how do we close his account",
            "creator is getting harassed in comments, what priority", "how long until my account is deleted",
            "user wants to take a break from the app for a while", "the payout has been on hold for a week"]


@pytest.fixture(scope="module")
def detector() -> CrisisDetector:
    return CrisisDetector(MemoEmbedder(build_embeddings(Settings())).embed_array)


@pytest.mark.parametrize("message", PARAPHRASES)
def test_a_paraphrased_crisis_is_caught_by_meaning(detector, message):
    assert not crisis_signal(message)  # the phrases alone miss it ...
    assert detector.similarity([message]) >= CRISIS_SIMILARITY and detector.check(message)  # ... the meaning not


@pytest.mark.parametrize("message", ORDINARY)
def test_ordinary_questions_are_no_crisis(detector, message):
    assert not detector.check(message)


def test_a_crisis_said_in_an_earlier_turn_counts_for_its_follow_up(detector):
    follow_up = "she's asking me to keep it secret, what do I tell her?"
    assert not detector.check(follow_up)
    history = [{"role": "user", "text": "user says she wants to end her life tonight"},
               {"role": "assistant", "text": "Set the ticket to P1."}]
    assert detector.check(follow_up, history) and not detector.check(follow_up, history, turns=0)
    # clauses of three words or more: "ok" and "what now" alone say nothing
    assert clauses("ok. she has a plan, and it's tonight - what now") == ["she has a plan", "and it's tonight"]


def test_the_service_takes_the_crisis_path_for_a_follow_up_of_a_crisis(kb_settings, kb_index):
    service = AnswerService(kb_settings, kb_index)
    history = [{"role": "user", "text": PARAPHRASES[0]},
               {"role": "assistant", "text": "Set the ticket to P1 and move it to ts-urgent."}]
    turn = service.chain.invoke(service._start("and what if she asks me not to tell anyone?", history, INTERNAL,
                                               None))
    assert turn.condensed.decision == "follow-up" and turn.crisis
    answer = service.ask("and what if she asks me not to tell anyone?", history, INTERNAL)
    assert not answer.refused and "sop-self-harm-imminent-danger" in answer.retrieved_doc_ids
    # a new question after a crisis conversation is answered as itself, without the crisis path
    other = service.chain.invoke(service._start("how long do web coin refunds take to reach the card?", history,
                                                INTERNAL, None))
    assert other.condensed.decision == "new" and not other.crisis
