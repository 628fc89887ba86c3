"""Compose stage: turn numbered sources into a draft answer whose every sentence names its source and quote.

Two composers share one interface (`Composer.run` does the shared work, subclasses implement `_compose`):
- ExtractiveComposer (offline default): picks the sentences, list items, steps and table rows that answer the
  question, scored by idf-weighted lexical overlap plus the MiniLM cosine of their chunk (optionally their own),
  with MMR-style redundancy control; keeps numbered steps together for how-to questions. For an agent's
  procedural question ("what do I do", "how do I handle") it answers with the main SOP's numbered steps, kept
  together, led by the one unit that fits the question's particular case better than any step; when the question
  asks by when ("by when", "how long", "deadline") it adds the sentence of that document stating the deadline.
  Its quotes are the exact source spans it picked.
- ChatComposer: an OpenAI-compatible chat model (langchain-openai ChatOpenAI) asked for [n] markers and one exact
  quote per cited source; the verify stage checks every marker and quote it returns.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from bot.answer.condense import Condensed
from bot.core.models import Chunk
from bot.core.profile import KBProfile
from bot.core.text import TermWeights, analyze
from bot.core.units import STATED_TIME_RE, named_codes
from bot.search.intent import is_procedural, region_hints

log = logging.getLogger(__name__)

TokenSink = Callable[[str], None]

# What kind of answer a question wants, and what a unit that gives it contains (a small ranking bonus).
_ANSWER_TYPES: list[tuple[re.Pattern, re.Pattern]] = [
    (re.compile(r"\bhow (long|quickly|fast|soon)\b|\bdeadline\b|\bwhen\b|\bwithin\b|\bhow much time\b|"
                r"\bwindow\b|\bhow many (days|hours|weeks)\b|\bsla\b|\btime limit\b", re.IGNORECASE),
     STATED_TIME_RE),
    (re.compile(r"\bhow much\b|\bcost\b|\bfees?\b|\bprice\b|\bthreshold\b|\bamount\b|\brate\b", re.IGNORECASE),
     re.compile(r"(USD|EUR|GBP|\$|€|£)\s?\d|\d\s?(USD|EUR|GBP|%|percent)|\bfree\b|\bno (fee|charge)\b", re.IGNORECASE)),
    (re.compile(r"\bwho\b|\bwhich (team|queue)\b|\bpriority\b|\bescalat|\broute\b|\bpage\b|\bqueue\b", re.IGNORECASE),
     re.compile(r"`[a-z0-9]+(-[a-z0-9]+)+`|\bP[1-4]\b|\bteam\b|\bqueue\b|\brotation\b")),
    (re.compile(r"\bhow old\b|\bage\b|\bminimum age\b", re.IGNORECASE),
     re.compile(r"\b\d{1,2}\b[^.]{0,30}\b(old|older|younger|age)\b|\bunder \d{1,2}\b|\baged? \d{1,2}\b", re.IGNORECASE)),
    # a limit ("the min withdrawal", "the most I can send") is a number, whatever it counts
    (re.compile(r"\b(?:min|minimum|max|maximum|most|least|lowest|highest|limit|cap)\b", re.IGNORECASE),
     re.compile(r"\d")),
    # a yes/no question opens a sentence or clause ("... veripass matched. can my TL waive the hold?")
    (re.compile(r"(?:^|[.?!;:,]\s+|\b(?:so|and|but|or)\s+)(can|could|may|is it|are we|do we|does|is there|am i|"
                r"should)\b|\ballowed\b|\bpossible\b", re.IGNORECASE),
     re.compile(r"\b(can't|cannot|can not|never|only|must|do not|don't|not allowed|may not|no one|always|"
                r"is not|are not|isn't|aren't|won't)\b", re.IGNORECASE)),
]


EXTENSION_RE = re.compile(r"\bextend(?:ed|s|able)?\b|\bextension\b", re.IGNORECASE)
SCOPE_SECTION_RE = re.compile(r"\b(?:when this applies|scope|applies to|purpose|overview)\b", re.IGNORECASE)


_COUNT_ASK_RE = re.compile(r"\bhow many ([a-z]{3,})", re.IGNORECASE)
_NUMBER = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten)"


def _counted(question: str) -> re.Pattern | None:
    """For "how many <things>", a pattern for a number of those things ("Three copyright strikes"); a bare number
    is no count of anything, so only the thing asked about, up to two words after the number, counts."""
    m = _COUNT_ASK_RE.search(question)
    if m is None:
        return None
    stem = re.escape(m.group(1).lower()[:5])
    return re.compile(rf"\b{_NUMBER}\b(?:\s+[\w-]+){{0,2}}?\s+{stem}", re.IGNORECASE)


def answer_type_bonus(question: str, text: str) -> float:
    """1.0 when the unit contains the kind of thing the question asks for (a duration, an amount, a queue, a
    count of the things asked about...)."""
    counted = None if _ANSWER_TYPES[0][0].search(question) else _counted(question)
    if counted is not None:
        return 1.0 if counted.search(text) else 0.0
    for asks, gives in _ANSWER_TYPES:
        if asks.search(question):
            return 1.0 if gives.search(text) else 0.0
    return 0.0


def asks_value(question: str) -> bool:
    """Whether the question asks for a value an answer must contain (a duration, an amount, a team or queue, an
    age), as opposed to a yes/no rule or an open question: its answer without such a value is incomplete."""
    if _counted(question) is not None:
        return True
    for asks, _ in _ANSWER_TYPES[:-1]:  # the last type is the yes/no rule, which any 'must'/'only' states
        if asks.search(question):
            return True
    return False


@dataclass(frozen=True)
class Source:
    """A retrieved chunk as it is offered to a composer, with its 1-based number."""

    number: int
    chunk: Chunk
    score: float = 0.0  # fused retrieval score
    similarity: float = 0.0  # cosine of the query and the chunk (0 when the dense retriever did not return it)


@dataclass(frozen=True)
class DraftCitation:
    """A [n] marker the composer put on a sentence and the quote it claims supports it."""

    number: int
    quote: str


@dataclass
class DraftSentence:
    """One sentence, step or list item of a draft with the citations its composer attached."""

    text: str
    citations: list[DraftCitation]
    kind: str = "sentence"  # sentence | lead | step | item | row
    marker: str = ""  # list marker ("3.") kept for steps shown as a list


@dataclass
class Draft:
    """A composer's answer before verification."""

    sentences: list[DraftSentence]
    sources: list[Source]
    composer: str
    no_answer: bool = False
    support: float = 0.0  # the composer's own evidence score in [0, 1] (extractive: best unit score)
    raw: str = ""  # the raw model output (chat), kept for debugging and the audit log


@dataclass
class ComposeRequest:
    """What a composer is given: the question, its condensed form, the numbered sources and the requester."""

    question: str
    condensed: Condensed
    sources: list[Source]
    audience: str = "internal"
    history: list[dict[str, str]] = field(default_factory=list)
    weights: TermWeights = field(default_factory=TermWeights.uniform)
    query_vector: np.ndarray | None = None
    # chunks of the top document the retriever added for a procedural or timing question (its steps, its
    # deadline), numbered after `sources`; composers may cite them like any source
    companions: list[Source] = field(default_factory=list)
    regions: tuple[str, ...] = ()  # the requester's region filter (Filters.regions), when they set one

    @property
    def all_sources(self) -> list[Source]:
        """The ranked sources followed by the companions."""
        return self.sources + self.companions


_PHRASE_WORD_RE = re.compile(r"[a-z0-9]+")
_PHRASE_STOP = frozenset(["a", "an", "the", "of", "to", "in", "for", "is", "are", "be", "do", "does", "did", "i", "we", "you", "it", "my", "our", "your", "how", "what", "when", "can", "and", "or"])


def phrases(text: str) -> set[tuple[str, str]]:
    """Adjacent word pairs (lower-case, stop words kept so 'turn on' differs from 'turn off'), minus pairs of
    two stop words."""
    words = _PHRASE_WORD_RE.findall(text.lower())
    return {(a, b) for a, b in pairwise(words) if not (a in _PHRASE_STOP and b in _PHRASE_STOP)}


_ASK_SPLIT_RE = re.compile(r"(?<=[.?!])\s+")


def ask_part(question: str) -> str:
    """The part of a question that asks (its sentences ending in '?', else its last sentence): an agent's
    message describes the situation first ("cust lost her phone... veripass matched") and asks last ("can my TL
    waive the hold?"); a unit that only matches the situation restates it."""
    parts = [p for p in _ASK_SPLIT_RE.split(question.strip()) if p.strip()]
    asks = [p for p in parts if p.rstrip().endswith("?")]
    return " ".join(asks) if asks else (parts[-1] if parts else "")


def query_weights(request: ComposeRequest, known_codes: frozenset[str]) -> dict[str, float]:
    """Stemmed question terms weighted by idf, plus the source codes it names (rarer than any word); terms
    carried from earlier turns weigh half."""
    w: dict[str, float] = {}
    for t in analyze(request.condensed.question):
        w[t] = request.weights.idf(t)
    for t in named_codes(request.condensed.question, known_codes):
        w[t] = request.weights.idf(t)  # not in the word index: the highest idf
    for t in analyze(" ".join(request.condensed.carried_terms)):
        w.setdefault(t, 0.5 * request.weights.idf(t))
    return w


def ask_weights(request: ComposeRequest, known_codes: frozenset[str]) -> dict[str, float]:
    """idf of the KB-known terms of the asking sentence, when the question has other sentences too (else {}:
    the whole question is the ask, and the lexical score already measures it)."""
    question = request.condensed.question
    ask = ask_part(question)
    if not ask or len(ask) >= len(question.strip()):
        return {}
    terms = [t for t in analyze(ask) if request.weights.known(t)] + list(named_codes(ask, known_codes))
    return {t: request.weights.idf(t) for t in terms}


def self_referential(profile: KBProfile, display: str, raw: str) -> bool:
    """Whether a unit is about its document ("This article is for...") or mostly link text ("see X")."""
    if profile.self_reference.search(display):
        return True
    linked = sum(len(m.group(1).split()) for m in profile.link.finditer(raw))
    return linked > 0 and linked >= 0.5 * len(display.split())


def requester_regions(request: ComposeRequest, profile: KBProfile) -> tuple[str, ...]:
    """The requester's regions: the conversation stage's (the places the question names, else the region of the
    conversation it continues: "a buyer in Vienna" then "what if it's been 16 days?"), else the places the
    question or its condensed form names, else their region filter."""
    return (tuple(request.condensed.regions) or region_hints(request.condensed.question, profile)
            or region_hints(request.condensed.standalone, profile) or tuple(request.regions))


def is_howto(question: str) -> bool:
    """Whether a question asks how to do something (so numbered steps should be kept together)."""
    return is_procedural(question)


class Composer(ABC):
    """One interface for every composer; `run` handles the shared cases, subclasses implement `_compose`."""

    name = "composer"

    def run(self, request: ComposeRequest) -> Draft:
        """Compose a draft; with no sources the draft is an honest no-answer."""
        if not request.sources:
            return Draft([], [], self.name, no_answer=True)
        draft = self._compose(request)
        draft.sentences = [s for s in draft.sentences if s.text.strip()]
        draft.composer = self.name
        if not draft.sentences:
            draft.no_answer = True
        return draft

    def stream(self, request: ComposeRequest, on_token: TokenSink) -> Draft:
        """Compose, reporting text as it is produced; composers that cannot stream report it at the end."""
        draft = self.run(request)
        for s in draft.sentences:
            on_token(s.text + " ")
        return draft

    @abstractmethod
    def _compose(self, request: ComposeRequest) -> Draft:
        """Subclass hook: the draft for a request with at least one source."""


# ---- extractive ----------------------------------------------------------------------------------------
