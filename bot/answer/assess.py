"""Answerability: how likely the knowledge base answers a question, from retrieval and the extracted evidence.

One small logistic scorer over explicit features (docs/quality.md "Answerability"), each built to mean the same
for a terse question in the KB's own words and a chatty one full of typos:

    top_similarity      cosine of the question and the closest of the first three chunks
    chunk_coverage      idf-weighted share of the question's informative terms that the best of the first three
                        chunks holds; a word the index has never seen is fuzzy-matched to the index vocabulary
                        (rapidfuzz: "refnud" -> refund) or, failing that, weighs as much as the question's
                        average known word, so a typo, a name or slang cannot take the highest idf and dominate
                        the denominator; filler weighs little by its idf
    sentence_coverage   the same share for the best single evidence sentence (what an answer would quote)
    rank_agreement      whether the dense and the BM25 searches put the top document first: the mean of
                        1/rank of its best chunk in each list (1.0 = both lists rank it first)
    top_share           the top document's share of the fused score over the distinct documents retrieved
    specific_missing    1 when the question's most specific element is not what the evidence states: a maximum
                        answered with a minimum (or the reverse), an amount in a currency the evidence never
                        names (an adjacent-pair check, "gift card" whose words the evidence holds only apart,
                        was tried and fired more often on answerable questions: not used)
    type_missing        1 when the question asks for a kind of thing (a duration, an amount, a count of the
                        things asked about, an age, a team, a yes/no rule) and no evidence sentence states it

The evidence sentences are the extractive composer's selection (the offline default's answer; for the chat
composer the same extractive selection is computed as a cheap probe before any model call), so the score keeps
one meaning whichever composer writes the answer. The weights below were fitted by
`benchmarks/answerability_fit.py` on the fit halves of the project's own eval suites (eval/suites/kb_agent,
kb_public and kb_typed, the realistic-phrasing suite written from kb/ alone); the
check halves, ../shared/eval-dev and the third-party corpora only measure the result. They are constants:
nothing is trained or downloaded at run time. Computing the features costs well under a millisecond (set
look-ups, a cached fuzzy look-up per unknown word, a few regexes over the evidence sentences). The cosine of the
question and the best evidence sentence was tried as a feature: fitted next to these it did not raise ROC AUC on
any check half (kb_agent 0.900 with it, 0.899 without; kb_public 0.907 / 0.921; kb_typed 0.726 / 0.734) and
embedding one sentence cost about 50 ms a question on the shared 2 cores, so it is not computed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from bot.answer.condense import Condensed
from bot.core.models import ScoredChunk
from bot.core.text import TermWeights, analyze
from bot.core.units import STATED_TIME_RE

# Fitted by benchmarks/answerability_fit.py on the FIT halves of the eval suites (bot/evaluation/split.py;
# L2-regularised logistic regression, answerable = 1) and reported on the check halves and ../shared/eval-dev
# (docs/quality.md). Re-run the script and paste its output here when the pipeline changes.
WEIGHTS: dict[str, float] = {
    "top_similarity": 10.566,
    "chunk_coverage": 2.754,
    "sentence_coverage": 1.466,
    "rank_agreement": -0.161,
    "top_share": 1.404,
    "specific_missing": -2.703,
    "type_missing": -1.478,
}
INTERCEPT = -6.709

# What kind of answer a question wants, and what a sentence that gives it contains. Generic English patterns:
# nothing here names a product, a team or an eval question.
_NUMBER = r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|" \
          r"forty|fifty|sixty|hundred|thousand|million|once|twice|half|a few|several)\b"
_ASKS_DURATION = re.compile(r"\bhow (long|quickly|fast|soon)\b|\bdeadline\b|\bhow much time\b|\btime limit\b|"
                            r"\bwhen\b|\bwithin\b|\bwindow\b|"
                            r"\bhow many (seconds|minutes|hours|days|weeks|months|years)\b", re.IGNORECASE)
_GIVES_DURATION = STATED_TIME_RE  # the one duration pattern (bot.core.units)
_ASKS_AMOUNT = re.compile(r"\bhow much\b|\bcosts?\b|\bfees?\b|\bprices?\b|\bpercent(age)?\b|\bthreshold\b|"
                          r"\b(exchange )?rate\b|\bamount\b|\bcommission\b",
                          re.IGNORECASE)
_GIVES_AMOUNT = re.compile(r"[$€£¥]\s?\d|\d\s?(%|percent)|\b(USD|EUR|GBP|JPY|INR|dollars?|euros?|pounds?)\b|"
                           r"\bfree\b|\bno (fee|charge|cost)\b|\bat no (extra )?cost\b|\bdoes ?n[o']t charge\b",
                           re.IGNORECASE)
_ASKS_AGE = re.compile(r"\bhow old\b|\b(minimum|maximum) age\b|\bage limit\b", re.IGNORECASE)
_GIVES_AGE = re.compile(r"\b\d{1,2}\b", re.IGNORECASE)
_ASKS_YES_NO = re.compile(r"^\W*(can|could|may|is it|is there|are there|are we|do we|do i|does|am i|should|"
                          r"will)\b|\b(allowed|possible|permitted)\b", re.IGNORECASE)
_GIVES_YES_NO = re.compile(r"\b(cannot|can't|can not|may not|must|never|only|always|do not|don't|does not|doesn't|"
                           r"is not|isn't|are not|aren't|won't|will not|not allowed|no one)\b", re.IGNORECASE)
_ASKS_WHO = re.compile(r"\bwho\b|\bwhich (team|department|queue|group)\b|\bescalat|\bpriority\b", re.IGNORECASE)
_GIVES_WHO = re.compile(r"\b(team|department|queue|specialists?|desk|group|lead|manager|P[1-4])\b|`[a-z0-9]+(-[a-z0-9]+)+`")
_TYPES: tuple[tuple[re.Pattern, re.Pattern, str], ...] = (  # asks, gives, what a caution answer calls it
    (_ASKS_DURATION, _GIVES_DURATION, "the exact time or deadline"),
    (_ASKS_AMOUNT, _GIVES_AMOUNT, "the exact amount"),
    (_ASKS_AGE, _GIVES_AGE, "the age limit"),
    (_ASKS_WHO, _GIVES_WHO, "which team or queue handles it"),
    (_ASKS_YES_NO, _GIVES_YES_NO, "a yes/no rule for this case"),
)
# "how many <things>": a count of those things (a number up to two words before the thing), not any number
_ASKS_COUNT = re.compile(r"\bhow many ([a-z]{3,})|\b(?:maximum|minimum) number of ([a-z]{3,})", re.IGNORECASE)
_COUNT_NUMBER = r"(?:\d[\d,.]*k?|one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|fifty|hundred|no|unlimited)"
# a maximum is not a minimum: "the most I can withdraw" is unanswered by "the minimum withdrawal is $50"
_ASKS_MAX = re.compile(r"\b(max(imum)?|highest|largest|biggest|upper limit|at most|cap|ceiling|how high)\b|"
                       r"\bmost (i|you|we|they|he|she|someone|one|a user|users?|creators?) (can|could|may|is allowed)\b",
                       re.IGNORECASE)
_GIVES_MAX = re.compile(r"\b(max(imum)?|up to|at most|no more than|not more than|capped|limit(ed)? (of|to))\b",
                        re.IGNORECASE)
_ASKS_MIN = re.compile(r"\b(min(imum)?|lowest|smallest|how low)\b|"
                       r"\bleast (i|you|we|they|he|she|someone|one|a user|users?|creators?) (can|could|may|must|need)\b",
                       re.IGNORECASE)
_GIVES_MIN = re.compile(r"\b(min(imum)?|at least|no less than|not less than)\b", re.IGNORECASE)
# currencies a question can ask an amount in, by how they are written
_CURRENCIES: dict[str, re.Pattern] = {
    "GBP": re.compile(r"£|\b(gbp|pounds?( sterling)?|sterling|quid)\b", re.IGNORECASE),
    "EUR": re.compile(r"€|\b(eur|euros?)\b", re.IGNORECASE),
    "USD": re.compile(r"\$|\b(usd|dollars?|bucks)\b", re.IGNORECASE),
    "JPY": re.compile(r"¥|\b(jpy|yen)\b", re.IGNORECASE),
    "INR": re.compile(r"₹|\b(inr|rupees?)\b", re.IGNORECASE),
    "CAD": re.compile(r"\b(cad|canadian dollars?)\b", re.IGNORECASE),
    "AUD": re.compile(r"\b(aud|australian dollars?)\b", re.IGNORECASE),
}
_ASKS_IN_CURRENCY = re.compile(r"\b(in|into)\s+(the\s+)?(£|€|\$|¥|₹|[a-z]+( [a-z]+)?)\s*(\?|$|\b)", re.IGNORECASE)
_WORD_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
UNKNOWN_PREFIX = "?"  # QuestionTerms.weights key of a word the index lacks: no text term ever equals it


@dataclass(frozen=True)
class Features:
    """The answerability features of one question (docs/quality.md "Answerability")."""

    top_similarity: float
    chunk_coverage: float
    sentence_coverage: float
    rank_agreement: float = 0.0
    top_share: float = 0.0
    specific_missing: float = 0.0
    type_missing: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Feature name -> value."""
        return asdict(self)


@dataclass(frozen=True)
class QuestionTerms:
    """The question's informative stems with their idf, and the words the index does not know."""

    weights: dict[str, float]  # stem -> idf; words the index lacks under UNKNOWN_PREFIX + word
    unknown: tuple[str, ...] = ()  # words neither the index nor a one-edit typo match knows


def _index_stem(word: str, weights: TermWeights) -> str | None:
    """The index term a question word stands for: its stem, the closest index term (a typo), or None."""
    stem = analyze(word)[0]
    if weights.has_vocabulary and not weights.known(stem):
        return weights.closest(stem) or weights.closest(word)
    return stem


def question_terms(condensed: Condensed, weights: TermWeights, places: Iterable[str] = ()) -> QuestionTerms:
    """Stemmed question terms weighted by idf; terms carried over from earlier turns weigh half.

    A word the index has never seen takes its closest index term (a typo) or is left out (a name, slang): an
    unknown word would otherwise carry the highest idf and outweigh every word the KB does use."""
    skip = {p.lower() for p in places}
    q: dict[str, float] = {}
    unknown: list[str] = []
    for word in _WORD_RE.findall(condensed.question.lower()):
        if word in skip or not analyze(word):
            continue
        stem = _index_stem(word, weights)
        if not stem:
            unknown.append(word)
            continue
        q[stem] = weights.idf(stem)
    # An unknown word ("klarna", "oil") still asks about something the KB may lack: it weighs as much as the
    # question's average known word, not the highest idf. Two-letter words ("rn", "ok") and tokens with digits
    # ("5k") say too little to count. (Left out entirely, "how do I change the oil in my car?" was covered by
    # its one known word.)
    average = sum(q.values()) / len(q) if q else 1.0
    for word in unknown:
        if len(word) >= 3 and word.isalpha():
            q.setdefault(UNKNOWN_PREFIX + word, average)
    for t in analyze(" ".join(condensed.carried_terms)):
        if not weights.has_vocabulary or weights.known(t):
            q.setdefault(t, 0.5 * weights.idf(t))
    return QuestionTerms(q, tuple(unknown))


def _coverage(q: dict[str, float], total: float, terms: set[str]) -> float:
    return sum(w for t, w in q.items() if t in terms) / total if total else 0.0


def _currency_asked(question: str) -> str:
    """The currency an amount is asked in ("how much in pounds?"), '' when none is named that way."""
    for m in _ASKS_IN_CURRENCY.finditer(question):
        for code, rx in _CURRENCIES.items():
            if rx.search(m.group(3)):
                return code
    return ""


def missing_element(question: str, evidence: Sequence[str]) -> str:
    """The specific element the question asks for that the evidence contradicts or lacks ('' when none): a
    maximum answered only with a minimum (or the reverse), an amount asked in a currency the evidence never
    states. Named for a caution answer ("the maximum", "the amount in GBP")."""
    text = " ".join(evidence)
    asks_max, asks_min = bool(_ASKS_MAX.search(question)), bool(_ASKS_MIN.search(question))
    if asks_max and not asks_min and _GIVES_MIN.search(text) and not _GIVES_MAX.search(text):
        return "the maximum"
    if asks_min and not asks_max and _GIVES_MAX.search(text) and not _GIVES_MIN.search(text):
        return "the minimum"
    code = _currency_asked(question)
    if code and not _CURRENCIES[code].search(text):
        return f"the amount in {code}"
    return ""


def missing_kind(question: str, evidence: Sequence[str]) -> str:
    """What the question asks for that the evidence does not state, for a caution answer to name ('' when
    nothing is missing): a specific element (missing_element) first, else the kind of detail (asked_kind_missing)."""
    return missing_element(question, evidence) or asked_kind_missing(question, evidence)


def asked_kind_missing(question: str, evidence: Sequence[str]) -> str:
    """The kind of detail the question asks for that no evidence sentence states ('' when none is missing).

    Kinds are compared as asked: a count of the things asked about (a number at most two words before those
    things: "three copyright strikes", not any number), then the first of duration, amount, age, team, yes/no the question asks."""
    m = _ASKS_COUNT.search(question)
    if m:
        thing = re.escape((m.group(1) or m.group(2)).lower()[:5])
        counted = re.compile(rf"\b{_COUNT_NUMBER}\b(?:\s+[\w-]+){{0,2}}?\s+{thing}|\b(no limit|unlimited)\b",
                             re.IGNORECASE)
        if not any(counted.search(s) for s in evidence):
            return "the exact number"
    for asks, gives, name in _TYPES:
        if asks.search(question):
            return "" if any(gives.search(s) for s in evidence) else name
    return ""


def type_missing(question: str, evidence: Sequence[str]) -> float:
    """1.0 when the question asks for a kind of thing that no evidence sentence states (asked_kind_missing)."""
    return 1.0 if asked_kind_missing(question, evidence) else 0.0


def specific_missing(question: str, evidence: Sequence[str]) -> float:
    """1.0 when the question's most specific element is not what the evidence states (missing_element: a
    maximum answered with a minimum or the reverse, an amount in a currency the evidence never names)."""
    return 1.0 if missing_element(question, evidence) else 0.0


def retrieval_shape(scored: Sequence[ScoredChunk]) -> tuple[float, float]:
    """(rank_agreement, top_share) of a fused result list, best first (see the module docstring)."""
    if not scored:
        return 0.0, 0.0
    top = scored[0].chunk.doc_id
    dense = [s.dense_rank for s in scored if s.chunk.doc_id == top and s.dense_rank]
    lexical = [s.lexical_rank for s in scored if s.chunk.doc_id == top and s.lexical_rank]
    agreement = 0.5 * ((1.0 / min(dense) if dense else 0.0) + (1.0 / min(lexical) if lexical else 0.0))
    best: dict[str, float] = {}
    for s in scored:
        best[s.chunk.doc_id] = max(best.get(s.chunk.doc_id, 0.0), max(s.score, 0.0))
    total = sum(best.values())
    return agreement, (best[top] / total if total else 0.0)


# why: one feature vector from every stage's output; each line is one documented feature
def features(condensed: Condensed, similarities: Sequence[float], chunk_texts: Sequence[str],
             evidence: Iterable[str], weights: TermWeights, *, scored: Sequence[ScoredChunk] = (),
             places: Iterable[str] = ()) -> Features:
    """Features of one question from its retrieved chunks (best first) and the evidence sentences chosen from
    them. similarities are the question's own cosine to each chunk; chunk_texts what was embedded for each;
    scored the fused search result (ranks and scores); places the question's place words (left out of the
    question's terms: the region logic handles them)."""
    evidence = [s for s in evidence if s.strip()]
    terms = question_terms(condensed, weights, places)
    q = terms.weights
    total = sum(q.values())
    chunk_cov = max((_coverage(q, total, set(analyze(t))) for t in chunk_texts[:3]), default=0.0)
    sent_cov = max((_coverage(q, total, set(analyze(s))) for s in evidence), default=0.0)
    agreement, share = retrieval_shape(scored)
    return Features(
        top_similarity=max((float(s) for s in similarities[:3]), default=0.0),
        chunk_coverage=chunk_cov,
        sentence_coverage=sent_cov,
        rank_agreement=agreement,
        top_share=share,
        specific_missing=specific_missing(condensed.question, evidence),
        type_missing=type_missing(condensed.question, evidence),
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
    element: str = ""  # missing_element() of the final evidence: the specific element asked is not what it states
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
    threshold and a verified sentence) but the confidence is below the answer threshold, or the evidence does not
    state the specific element asked (a maximum answered with a minimum, an amount in another currency): the
    guidance is there, the exact detail is not confirmed. The score already weighs whether the asked-for kind of
    detail is in the evidence (type_missing); `missing` names what is not stated. The public gets answered or
    refused."""
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
    if sig.internal and not sig.crisis and (sig.confidence < sig.answer_threshold or sig.element):
        return Assessment(CAUTION, missing=sig.element or sig.missing or "an exact answer to this question",
                          crisis=sig.crisis)
    return Assessment(ANSWERED, handoff=handoff, crisis=sig.crisis)
