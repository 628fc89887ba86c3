"""Faithfulness judges: the offline judge (numbers, negation, lexical and meaning closeness to the cited
chunks) and an LLM judge with the offline one as its fallback."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.core.config import Settings
from bot.core.models import Answer, Citation
from bot.core.text import analyze, normalise, split_sentences
from bot.evaluation.metrics import contains_phrase, source_units

log = logging.getLogger(__name__)

# its negation agrees with the closest source sentence, and it is close to the source both lexically and in
# meaning. LEXICAL_ALONE accepts near-verbatim sentences without the embedder (extractive answers are).
LEXICAL_ALONE = 0.85
LEXICAL_WITH_MEANING = 0.5
MEANING_MIN = 0.72

_NEGATIONS = frozenset(
    ["not", "no", "never", "cannot", "can't", "don't", "doesn't", "won't", "isn't", "aren't", "without", "neither", "nor"]
)
_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass
class SentenceVerdict:
    """Whether one answer sentence is supported by the chunks it cites, and why."""

    sentence: str
    supported: bool
    lexical: float
    similarity: float | None
    reason: str = ""


class OfflineJudge:
    """Entailment-style support check: embedder plus lexical overlap, numbers and negation agreement."""

    name = "offline"

    def __init__(self, embedder):
        self.embedder = embedder
        self._sentence_cache: dict[str, tuple[list[str], np.ndarray, int]] = {}

    def _source_sentences(self, text: str) -> tuple[list[str], np.ndarray, int]:
        """(windows, their vectors, number of single sentences): sentences first, then adjacent pairs."""
        key = hashlib.sha1(text.encode()).hexdigest()
        hit = self._sentence_cache.get(key)
        if hit is None:
            sents = source_units(text) or [text]
            # windows of two sentences catch statements that span a sentence boundary in the source
            windows = sents + [f"{a} {b}" for a, b in itertools.pairwise(sents)]
            hit = (windows, self.embedder.embed_array(windows), len(sents))
            if len(self._sentence_cache) > 4096:
                self._sentence_cache.clear()
            self._sentence_cache[key] = hit
        return hit

    def judge(self, sentences: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[SentenceVerdict]:
        """One verdict per sentence; contexts[i] are the chunk texts sentence i may rely on."""
        return [self._one(sentence, ctx) for sentence, ctx in zip(sentences, contexts)]

    # why: one sentence's verdict: numbers, negation, lexical and meaning checks in order
    def _one(self, sentence: str, ctx: Sequence[str]) -> SentenceVerdict:
        if not ctx:
            return SentenceVerdict(sentence, False, 0.0, None, "no cited source")
        joined = " ".join(ctx)
        if normalise(sentence) and contains_phrase(normalise(joined), sentence):
            return SentenceVerdict(sentence, True, 1.0, 1.0, "verbatim")
        terms = set(analyze(sentence))
        lexical = len(terms & set(analyze(joined))) / len(terms) if terms else 1.0
        singles: list[str] = []
        single_vecs: list[np.ndarray] = []
        all_vecs: list[np.ndarray] = []
        for text in ctx:
            windows, vecs, n = self._source_sentences(text)
            singles += windows[:n]
            single_vecs.append(vecs[:n])
            all_vecs.append(vecs)
        qv = self.embedder.embed_array([sentence])[0]
        single_sims = np.concatenate(single_vecs) @ qv
        # the closest source unit by meaning plus shared words (table rows embed poorly; their words match)
        overlap = np.array([len(terms & set(analyze(u))) / len(terms) if terms else 0.0 for u in singles])
        closest = singles[int(np.argmax(single_sims + overlap))]
        similarity = float(max(float(np.max(v @ qv)) for v in all_vecs))
        # numbers and negation are checked against the closest source sentence, not the whole chunk: "30 days"
        # elsewhere in the chunk must not support a claim that changed "14 days" to "30 days"
        numbers = {n.replace(",", "") for n in _NUM_RE.findall(sentence)}
        missing = sorted(numbers - {n.replace(",", "") for n in _NUM_RE.findall(closest)})
        if missing:
            return SentenceVerdict(
                sentence, False, lexical, similarity, f"numbers {missing} not in the closest source sentence"
            )
        if bool(set(normalise(sentence).split()) & _NEGATIONS) != bool(
            set(normalise(closest).split()) & _NEGATIONS
        ):
            return SentenceVerdict(sentence, False, lexical, similarity, "negation differs from the source")
        if lexical >= LEXICAL_ALONE:
            return SentenceVerdict(sentence, True, lexical, similarity, "lexical")
        if lexical >= LEXICAL_WITH_MEANING and similarity >= MEANING_MIN:
            return SentenceVerdict(sentence, True, lexical, similarity, "lexical+meaning")
        return SentenceVerdict(sentence, False, lexical, similarity, "not supported by the cited text")


class LLMJudge:
    """RAGAS-style faithfulness with a configured chat model: each statement judged against its sources."""

    name = "llm"

    def __init__(self, settings: Settings, fallback: OfflineJudge, llm=None):
        from bot.answer.chat import build_chat_model

        self.model = llm if llm is not None else build_chat_model(settings)
        self.fallback = fallback
        self.failures = 0

    def judge(self, sentences: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[SentenceVerdict]:
        """A 1/0 verdict per statement from the model; the offline judge answers if the model cannot."""
        from bot.answer.chat import message_text
        from bot.answer.prompts import faithfulness_messages

        if not sentences:
            return []
        sources: list[str] = []
        for ctx in contexts:
            for text in ctx:
                if text not in sources:
                    sources.append(text)
        statements = [(s, [sources.index(t) + 1 for t in ctx]) for s, ctx in zip(sentences, contexts)]
        try:
            reply = self.model.invoke(faithfulness_messages(sources, statements))
            verdicts = _parse_verdicts(message_text(reply), len(sentences))
        except Exception as exc:  # noqa: BLE001 - an unreachable or confused judge must not sink the run: fall back
            log.warning("LLM judge failed (%s); using the offline judge for this answer", exc)
            self.failures += 1
            return self.fallback.judge(sentences, contexts)
        return [SentenceVerdict(s, v, 0.0, None, "llm judge") for s, v in zip(sentences, verdicts)]


def _parse_verdicts(text: str, n: int) -> list[bool]:
    """The judge's JSON list of 0/1 verdicts (tolerates prose around it)."""
    lists = re.findall(r"\[\s*(?:(?:[01]|true|false)\s*,\s*)*(?:[01]|true|false)\s*\]", text, re.IGNORECASE)
    if not lists:
        raise ValueError(f"no verdict list in judge reply: {text[:200]!r}")
    items = json.loads(lists[-1].lower())  # the last list: a chatty judge may quote [n] markers before it
    if len(items) != n:
        raise ValueError(f"judge returned {len(items)} verdicts for {n} statements")
    return [str(v).lower() in ("1", "true") for v in items]


def faithfulness_inputs(
    answer: Answer, chunk_text: Callable[[Citation], str | None]
) -> tuple[list[str], list[list[str]]]:
    """Answer sentences with the texts of the chunks each one cites (all cited chunks if it has no marker)."""
    by_number = {c.number: c for c in answer.citations}
    all_ctx = [t for t in (chunk_text(c) for c in answer.citations) if t]
    sentences: list[str] = []
    contexts: list[list[str]] = []
    for sentence, nums in split_sentences(answer.text):
        if len(analyze(sentence)) < 2:  # connective fragments ("Steps:") carry no claim
            continue
        ctx = (
            [t for t in (chunk_text(by_number[n]) for n in nums if n in by_number) if t] if nums else all_ctx
        )
        sentences.append(sentence)
        contexts.append(list(dict.fromkeys(ctx)))
    return sentences, contexts
