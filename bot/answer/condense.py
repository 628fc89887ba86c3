"""Condense stage: turn a follow-up plus its history into a standalone question and a retrieval query.

Offline the rewrite is deterministic: when the question reads like a follow-up ("how long does that take?"),
the most distinctive terms of the earlier user turns (ranked by inverse document frequency in the index) are
carried into the retrieval query. With a chat model configured, the model rewrites the question instead and the
deterministic rewrite is the fallback.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.core.text import STOP_WORDS, analyze

log = logging.getLogger(__name__)

_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-]*")
# words that point back at an earlier turn, so the question alone does not say what it is about
_ANAPHORA = frozenset(
    ["it", "its", "it's", "this", "that", "these", "those", "they", "them", "their", "theirs", "there", "he", "she", "his", "her", "him", "one", "ones", "same", "other", "others", "else", "such", "former", "latter", "above"]
)
_CONTINUATIONS = ("and ", "but ", "so ", "also ", "then ", "what about", "how about", "what if", "ok", "okay",
                  "and?", "why", "anything else", "is there", "are there", "what else", "or ")
# generic words that do not name a topic on their own
_GENERIC = frozenset(
    ["need", "want", "know", "tell", "please", "help", "thanks", "thank", "hi", "hello", "question", "ask", "asked", "get", "got", "make", "use", "used", "way", "thing", "things", "something", "anything", "also", "just", "like", "really", "much", "many", "long", "take", "takes", "time", "still", "yes", "no", "okay", "ok", "sure", "right", "well", "good", "great", "user", "users", "customer", "customers", "person", "people", "someone", "somebody", "agent", "agents"]
)
_GENERIC_STEMS = frozenset(analyze(" ".join(_GENERIC)))


class TermWeights:
    """Inverse document frequency of stemmed terms in the served index (unknown terms weigh the most)."""

    def __init__(self, doc_freq: dict[str, int], num_docs: int):
        self._df = doc_freq
        self._n = max(num_docs, 1)
        self._max = self.idf_from_df(0)

    def idf_from_df(self, df: int) -> float:
        """BM25-style idf, always positive."""
        return math.log(1.0 + (self._n - df + 0.5) / (df + 0.5))

    def is_common(self, stem: str, share: float = 0.5) -> bool:
        """Whether a term occurs in more than `share` of the chunks (too common to name a topic)."""
        return self._df.get(stem, 0) > share * self._n

    def idf(self, stem: str) -> float:
        """idf of one stemmed term."""
        df = self._df.get(stem)
        return self._max if df is None else self.idf_from_df(df)

    @classmethod
    def from_generation(cls, generation) -> TermWeights:
        """Document frequencies read from the generation's BM25 index (column counts of its sparse matrix)."""
        try:
            bm25 = generation.lexical._bm25  # bm25s keeps per-term postings in CSC form: indptr diff = df
            indptr = bm25.scores["indptr"]
            vocab = bm25.vocab_dict
            counts = [int(indptr[i + 1] - indptr[i]) for i in range(len(indptr) - 1)]
            df = {term: counts[i] for term, i in vocab.items() if i < len(counts)}
            return cls(df, int(bm25.scores.get("num_docs", len(generation.chunks))))
        except Exception as exc:  # noqa: BLE001 - an empty index or another BM25 backend: uniform weights
            log.debug("term weights unavailable (%s); using uniform idf", exc)
            return cls({}, 1)

    @classmethod
    def uniform(cls) -> TermWeights:
        """Every term weighs the same."""
        return cls({}, 1)


@dataclass(frozen=True)
class Condensed:
    """The question as asked, what it means on its own, and what retrieval searches for."""

    question: str
    standalone: str
    retrieval_query: str
    is_follow_up: bool = False
    carried_terms: tuple[str, ...] = field(default_factory=tuple)  # topic words taken from earlier turns
    method: str = "none"  # none | deterministic | chat


def user_turns(history: Sequence[dict[str, str]] | None) -> list[str]:
    """Texts of the user turns of a history, oldest first."""
    return [(h.get("text") or h.get("content") or "") for h in history or []
            if str(h.get("role", "")).lower() in ("user", "human")]


def looks_like_follow_up(question: str, weights: TermWeights | None = None) -> bool:
    """Whether a question leans on earlier turns: pronouns pointing back, a continuation opener, or no topic."""
    q = question.lower().strip()
    words = [w.lower() for w in _WORD_RE.findall(q)]
    if any(w in _ANAPHORA for w in words):
        return True
    if q.startswith(_CONTINUATIONS):
        return True
    topical = [w for w in words if w not in STOP_WORDS and w not in _GENERIC and len(w) > 2]
    return len(topical) <= 2


class DeterministicCondenser:
    """Carry the distinctive terms of earlier user turns into the retrieval query of a follow-up."""

    def __init__(self, max_terms: int = 6, turns: int = 2, always: bool = False):
        self.max_terms = max_terms
        self.turns = turns
        self.always = always  # carry topic terms even when the question looks self-contained

    def run(self, question: str, history: Sequence[dict[str, str]] | None,
            weights: TermWeights | None = None) -> Condensed:
        """Rewrite one question; with no history the question is its own standalone form."""
        prior = user_turns(history)[-self.turns:]
        if not prior:
            return Condensed(question, question, question)
        follow_up = looks_like_follow_up(question, weights)
        if not (follow_up or self.always):
            return Condensed(question, question, question, is_follow_up=False, method="deterministic")
        terms = self.topic_terms(question, prior, weights or TermWeights.uniform())
        if not terms:
            return Condensed(question, question, question, is_follow_up=follow_up, method="deterministic")
        carried = " ".join(terms)
        standalone = f"{question} (about: {carried})"
        return Condensed(question, standalone, f"{question} {carried}", is_follow_up=follow_up,
                         carried_terms=tuple(terms), method="deterministic")

    def topic_terms(self, question: str, prior: list[str], weights: TermWeights) -> list[str]:
        """The most distinctive words of the earlier turns (newest turn first) not already in the question."""
        have = set(analyze(question))
        scored: dict[str, tuple[float, int, str]] = {}
        order = 0
        for age, turn in enumerate(reversed(prior)):  # age 0 = the turn just before this question
            for word in _WORD_RE.findall(turn):
                low = word.lower()
                if low in STOP_WORDS or low in _GENERIC or low in _ANAPHORA or len(low) < 3:
                    continue
                stems = analyze(low)
                if not stems or stems[0] in have:
                    continue
                stem = stems[0]
                if stem in _GENERIC_STEMS or weights.is_common(stem):
                    continue
                score = weights.idf(stem) * (1.0 if age == 0 else 0.6)
                if stem not in scored or scored[stem][0] < score:
                    scored[stem] = (score, order, word)
                order += 1
        best = sorted(scored.values(), key=lambda x: (-x[0], x[1]))[: self.max_terms]
        return [w for _, _, w in sorted(best, key=lambda x: x[1])]


class ChatCondenser:
    """Ask the chat model for a standalone rewrite; fall back to the deterministic rewrite on any failure."""

    def __init__(self, invoke: Callable[[list[tuple[str, str]]], str], fallback: DeterministicCondenser):
        self._invoke = invoke
        self._fallback = fallback

    def run(self, question: str, history: Sequence[dict[str, str]] | None,
            weights: TermWeights | None = None) -> Condensed:
        """Rewrite with the model when there is history; keep the deterministic carried terms for retrieval."""
        from bot.answer.prompts import condense_messages

        base = self._fallback.run(question, history, weights)
        if not user_turns(history):
            return base
        try:
            text = self._invoke(condense_messages(question, history or []))
        except Exception as exc:  # noqa: BLE001 - the endpoint being down must not stop the answer
            log.warning("chat condense failed (%s); using the deterministic rewrite", exc)
            return base
        line = " ".join(text.strip().splitlines()[:1]).strip().strip('"')
        if not line or len(line) > 4 * max(len(question), 100):
            return base
        return Condensed(question, line, line, is_follow_up=base.is_follow_up,
                         carried_terms=base.carried_terms, method="chat")


# ---- what a question asks for --------------------------------------------------------------------------
# Read by retrieval (a prior for procedure documents, a region hint) and by the extractive composer (keep the
# procedure's steps together, add the deadline). Hints only: nothing here filters what a requester may see.
