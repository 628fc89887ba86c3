"""Answerability: how likely the knowledge base answers a question, from retrieval and the extracted evidence.

One small logistic scorer over five explicit features (docs/answers.md "Calibration of `refusal_threshold`", docs/quality.md):

    top_similarity      cosine of the question and the closest of the first three chunks
    chunk_coverage      idf-weighted share of the question's terms that the best of the first three chunks holds
    sentence_coverage   the same share for the best single evidence sentence (what an answer would quote)
    type_missing        1 when the question asks for a kind of thing (a duration, an amount, a count, an age,
                        a team, a yes/no permission) and no evidence sentence holds that kind of thing
    number_missing      1 when the question asks "how much / how many / how long" and no evidence sentence
                        holds a number at all

A word of the question that the knowledge base never uses is already weighed at the highest idf by both
coverages; a separate flag for it was tried and, fitted next to them, took a positive weight (it only corrected
the coverages' double count), so it is not a feature.

The evidence sentences are the extractive composer's selection (the offline default's answer; for the chat
composer the same extractive selection is computed as a cheap probe before any model call), so the score keeps
one meaning whichever composer writes the answer. The weights below were fitted by
`benchmarks/answerability_fit.py` on the fit halves of the project's own eval suites (eval/suites/kb_agent.jsonl
and kb_public.jsonl); the check halves, ../shared/eval-dev and the third-party corpora only measure the result. They are constants: nothing is
trained or downloaded at run time. Computing the features costs well under a millisecond (set lookups over the
top chunks' terms, a few regexes over at most a dozen sentences).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from bot.answer.condense import Condensed
from bot.core.text import TermWeights, analyze

# Fitted by benchmarks/answerability_fit.py on the FIT halves of eval/suites/kb_agent.jsonl + kb_public.jsonl
# (bot/evaluation/split.py; L2-regularised logistic regression, answerable = 1) and reported on the check halves
# and ../shared/eval-dev (docs/quality.md). Re-run the script and paste its output here when the pipeline changes.
# number_missing fitted to 0.000: next to type_missing it adds nothing on the fit halves; kept as a feature so a
# refit on another pipeline can still use it.
WEIGHTS: dict[str, float] = {
    "top_similarity": 9.360,
    "chunk_coverage": 2.189,
    "sentence_coverage": 3.465,
    "type_missing": -3.162,
    "number_missing": 0.000,
}
INTERCEPT = -5.958

# What kind of answer a question wants, and what a sentence that gives it contains. Generic English patterns:
# nothing here names a product, a team or an eval question.
_NUMBER = r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|" \
          r"forty|fifty|sixty|hundred|thousand|million|once|twice|half|a few|several)\b"
_ASKS_DURATION = re.compile(r"\bhow (long|quickly|fast|soon)\b|\bdeadline\b|\bhow much time\b|\btime limit\b|"
                            r"\bwhen\b|\bwithin\b|\bwindow\b|"
                            r"\bhow many (seconds|minutes|hours|days|weeks|months|years)\b", re.IGNORECASE)
_GIVES_DURATION = re.compile(r"(\d+|\b(a|an|one|two|three|four|five|six|seven|ten|twelve|thirty))\s*-?\s*"
                             r"(business |calendar |working )?(seconds?|minutes?|hours?|days?|weeks?|months?|years?)"
                             r"\b|\bimmediately\b|\bstraight away\b|\bright away\b|\bsame day\b|\bno (time )?limit\b",
                             re.IGNORECASE)
_ASKS_AMOUNT = re.compile(r"\bhow much\b|\bcosts?\b|\bfees?\b|\bprices?\b|\bpercent(age)?\b|\bthreshold\b|"
                          r"\b(exchange )?rate\b|\bamount\b",
                          re.IGNORECASE)
_GIVES_AMOUNT = re.compile(r"[$€£¥]\s?\d|\d\s?(%|percent)|\b(USD|EUR|GBP|JPY|INR|dollars?|euros?|pounds?)\b|"
                           r"\bfree\b|\bno (fee|charge|cost)\b|\bat no (extra )?cost\b|\bdoes ?n[o']t charge\b",
                           re.IGNORECASE)
_ASKS_COUNT = re.compile(r"\bhow many\b|\bwhat number of\b|\bmaximum number\b|\blimit on the number\b",
                         re.IGNORECASE)
_GIVES_COUNT = re.compile(_NUMBER + r"|\bno limit\b|\bunlimited\b", re.IGNORECASE)
_ASKS_AGE = re.compile(r"\bhow old\b|\b(minimum|maximum) age\b|\bage limit\b", re.IGNORECASE)
_GIVES_AGE = re.compile(r"\b\d{1,2}\b", re.IGNORECASE)
_ASKS_YES_NO = re.compile(r"^\W*(can|could|may|is it|is there|are there|are we|do we|do i|does|am i|should|"
                          r"will)\b|\b(allowed|possible|permitted)\b", re.IGNORECASE)
_GIVES_YES_NO = re.compile(r"\b(cannot|can't|can not|may not|must|never|only|always|do not|don't|does not|doesn't|"
                           r"is not|isn't|are not|aren't|won't|will not|not allowed|no one)\b", re.IGNORECASE)
_ASKS_WHO = re.compile(r"\bwho\b|\bwhich (team|department|queue|group)\b|\bescalat|\bpriority\b", re.IGNORECASE)
_GIVES_WHO = re.compile(r"\b(team|department|queue|specialists?|desk|group|lead|manager|P[1-4])\b|`[a-z0-9]+(-[a-z0-9]+)+`")
_TYPES: tuple[tuple[re.Pattern, re.Pattern], ...] = (
    (_ASKS_DURATION, _GIVES_DURATION),
    (_ASKS_AMOUNT, _GIVES_AMOUNT),
    (_ASKS_COUNT, _GIVES_COUNT),
    (_ASKS_AGE, _GIVES_AGE),
    (_ASKS_WHO, _GIVES_WHO),
    (_ASKS_YES_NO, _GIVES_YES_NO),
)
# what each kind is called when a caution answer says the knowledge base does not state it (same order as _TYPES)
_KIND_NAMES = ("the exact time or deadline", "the exact amount", "the exact number", "the age limit",
               "which team or queue handles it", "a yes/no rule for this case")
_ASKS_NUMBER = re.compile(r"\bhow (much|many|long|often|old|far)\b", re.IGNORECASE)
_GIVES_NUMBER = re.compile(_NUMBER, re.IGNORECASE)


@dataclass(frozen=True)
class Features:
    """The answerability features of one question (docs/answers.md "Calibration of `refusal_threshold`", docs/quality.md)."""

    top_similarity: float
    chunk_coverage: float
    sentence_coverage: float
    type_missing: float
    number_missing: float

    def as_dict(self) -> dict[str, float]:
        """Feature name -> value."""
        return asdict(self)


def question_weights(condensed: Condensed, weights: TermWeights) -> dict[str, float]:
    """Stemmed question terms weighted by idf; terms carried over from earlier turns weigh half."""
    q = {t: weights.idf(t) for t in analyze(condensed.question)}
    for t in analyze(" ".join(condensed.carried_terms)):
        q.setdefault(t, 0.5 * weights.idf(t))
    return q


def _coverage(q: dict[str, float], total: float, terms: set[str]) -> float:
    return sum(w for t, w in q.items() if t in terms) / total if total else 0.0


def missing_kind(question: str, evidence: Sequence[str]) -> str:
    """The kind of detail the question asks for that no evidence sentence holds ('' when none is missing);
    the first kind asked wins."""
    for (asks, gives), name in zip(_TYPES, _KIND_NAMES):
        if asks.search(question):
            return "" if any(gives.search(s) for s in evidence) else name
    return ""


def type_missing(question: str, evidence: Sequence[str]) -> float:
    """1.0 when the question asks for a kind of thing that no evidence sentence holds (first kind asked wins)."""
    return 1.0 if missing_kind(question, evidence) else 0.0


def number_missing(question: str, evidence: Sequence[str]) -> float:
    """1.0 when a how-much/how-many/how-long question meets evidence without any number in it."""
    if not _ASKS_NUMBER.search(question):
        return 0.0
    return 0.0 if any(_GIVES_NUMBER.search(s) for s in evidence) else 1.0


def features(condensed: Condensed, similarities: Sequence[float], chunk_texts: Sequence[str],
             evidence: Iterable[str], weights: TermWeights) -> Features:
    """Features of one question from its retrieved chunks (best first) and the evidence sentences chosen from
    them. similarities are the question's own cosine to each chunk; chunk_texts what was embedded for each."""
    evidence = [s for s in evidence if s.strip()]
    q = question_weights(condensed, weights)
    total = sum(q.values())
    chunk_cov = max((_coverage(q, total, set(analyze(t))) for t in chunk_texts[:3]), default=0.0)
    sent_cov = max((_coverage(q, total, set(analyze(s))) for s in evidence), default=0.0)
    return Features(
        top_similarity=max((float(s) for s in similarities[:3]), default=0.0),
        chunk_coverage=chunk_cov,
        sentence_coverage=sent_cov,
        type_missing=type_missing(condensed.question, evidence),
        number_missing=number_missing(condensed.question, evidence),
    )


def score(f: Features) -> float:
    """Estimated probability, in [0, 1], that the knowledge base answers the question (logistic on WEIGHTS)."""
    z = INTERCEPT + sum(WEIGHTS[name] * value for name, value in f.as_dict().items())
    return 1.0 / (1.0 + math.exp(-z))


# ---- the one decision: answered, caution or refused ------------------------------------------------------

ANSWERED, CAUTION, REFUSED = "answered", "caution", "refused"
OUTCOMES = (ANSWERED, CAUTION, REFUSED)

REFUSAL_LOW_CONFIDENCE = "low_retrieval_confidence"
REFUSAL_NO_SUPPORT = "no_supported_answer"
REFUSAL_NO_SOURCES = "no_matching_documents"
REFUSAL_BLOCKED = "blocked_internal_source"
REFUSAL_NOT_A_QUESTION = "not_a_question"
HANDOFF_REQUESTED = "person_requested"


@dataclass(frozen=True)
class Signals:
    """Everything the decision weighs, gathered by the pipeline before it decides."""

    internal: bool  # an agent (caution is possible) rather than a help-center user
    confidence: float  # score() of the question's Features
    answer_threshold: float  # Settings.refusal_threshold(_internal): at or above, answered
    caution_threshold: float  # Settings.caution_threshold: agents between the two get caution
    missing: str = ""  # missing_kind() of the final evidence: the exact detail asked for is not stated
    crisis: bool = False  # someone may be at risk (bot/answer/safety.py crisis_signal)
    person_requested: bool = False  # "can I talk to a human?" (safety.asks_for_person)
    small_talk: bool = False  # a greeting or thanks, no question
    has_sources: bool = True  # anything visible under the requester's filters
    blocked: bool = False  # the verifier dropped every sentence for citing content the audience may not see
    supported: bool = True  # at least one sentence survived citation verification


@dataclass(frozen=True)
class Assessment:
    """The outcome of one question and why: decided once, recorded on the Answer."""

    outcome: str  # answered | caution | refused
    reason: str = ""  # a REFUSAL_* code when refused (HANDOFF_REQUESTED for a request for a person)
    missing: str = ""  # caution: what the knowledge base does not state
    handoff: bool = False  # offer a person (public refusals, crisis, a request for a person)
    crisis: bool = False


# why: one ordered ladder of refusal rules; split, the order that decides the outcome would be hidden
def decide(sig: Signals) -> Assessment:
    """Answered, caution (agents only) or refused, from the signals; the only place the outcome is decided.

    A crisis is never refused for low confidence and always offers a person; a request for a person goes straight
    to the handoff offer. Agents get `caution` when relevant guidance exists (confidence at or above the caution
    threshold and a verified sentence) but the confidence is below the answer threshold: the score already weighs
    whether the asked-for kind of detail is in the evidence (type_missing), and `missing` names it in the text.
    The public gets answered or refused."""
    if sig.person_requested and not sig.crisis:
        return Assessment(REFUSED, HANDOFF_REQUESTED, handoff=True)
    if sig.small_talk:
        return Assessment(REFUSED, REFUSAL_NOT_A_QUESTION)
    refusal = ""
    if not sig.has_sources:
        refusal = REFUSAL_NO_SOURCES
    elif not sig.crisis and sig.confidence < (sig.caution_threshold if sig.internal else sig.answer_threshold):
        refusal = REFUSAL_LOW_CONFIDENCE
    elif sig.blocked:
        refusal = REFUSAL_BLOCKED
    elif not sig.supported:
        refusal = REFUSAL_NO_SUPPORT
    handoff = sig.crisis or (bool(refusal) and not sig.internal)
    if refusal:
        return Assessment(REFUSED, refusal, handoff=handoff, crisis=sig.crisis)
    if sig.internal and not sig.crisis and sig.confidence < sig.answer_threshold:
        return Assessment(CAUTION, missing=sig.missing or "an exact answer to this question", crisis=sig.crisis)
    return Assessment(ANSWERED, handoff=handoff, crisis=sig.crisis)
