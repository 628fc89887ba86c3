"""The final check of public answers: nothing cited, suggested or said may come from internal documents."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from bot.core.models import Answer, Audience

BLOCKED_TEXT = ("I can't help with that here. You can ask about something else, or talk to a person from our "
                "support team.")



_WORD = re.compile(r"[a-z0-9]+")
_BACKTICK = re.compile(r"`([^`\n]{2,80})`")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"https?://[^\s)>\]\"']+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][-_@./][A-Za-z0-9]|[A-Za-z0-9][-_]$")
SHINGLE = 8  # words; long enough that a shared 8-word run means copied text, not shared vocabulary


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _shingles(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


@dataclass
class _LeakFacts:
    generation: str
    public_docs: frozenset[str]
    markers: tuple[str, ...]  # lower-cased identifiers found only in internal documents
    internal_shingles: frozenset[tuple[str, ...]]


@dataclass
class LeakVerdict:
    """Why a public answer may not be shown (empty = fine)."""

    reasons: list[str] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        """True when anything internal was found."""
        return bool(self.reasons)


class PublicLeakGuard:
    """Final check of public answers against what only internal documents contain (per index generation)."""

    def __init__(self, index: Any):
        self.index = index
        self._facts: _LeakFacts | None = None
        self._lock = threading.Lock()

    def facts(self) -> _LeakFacts:
        """Markers and shingles of the generation being served (computed once per generation)."""
        gen = self.index.generation()
        name = gen.name if gen is not None else ""
        facts = self._facts
        if facts is not None and facts.generation == name:
            return facts
        with self._lock:
            if self._facts is None or self._facts.generation != name:
                self._facts = self._build(gen, name)
            return self._facts

    @staticmethod
    def _build(gen: Any, name: str) -> _LeakFacts:
        if gen is None:
            return _LeakFacts(name, frozenset(), (), frozenset())
        public_docs = set()
        for doc_id, d in gen.documents.items():
            if (d.get("meta") or {}).get("audience") == "public":
                public_docs.add(doc_id)
        public_text_parts, internal_chunks = [], []
        for c in gen.chunks:
            if c.metadata.get("audience") == "public" and c.doc_id in public_docs:
                meta = c.metadata
                public_text_parts.append(f"{meta.get('title', '')}\n{c.text}\n{meta.get('url', '')}")
            else:
                internal_chunks.append(c)
        public_text = "\n".join(public_text_parts).lower()
        public_shingles = _shingles(_words(public_text))
        candidates: set[str] = set()
        internal_shingles: set[tuple[str, ...]] = set()
        for c in internal_chunks:
            # Identifiers: queue and rotation names in backticks, e-mail addresses, wiki links, document ids.
            candidates.update(m.strip() for m in _BACKTICK.findall(c.text))
            candidates.update(_EMAIL.findall(c.text))
            candidates.update(_URL.findall(c.text))
            if c.metadata.get("url"):
                candidates.add(str(c.metadata["url"]))
            candidates.add(c.doc_id)
            internal_shingles |= _shingles(_words(c.text)) - public_shingles
        # Only identifier-shaped strings (fraud-review, lert@..., on_hold, URLs): a plain word that happens
        # to be in backticks ("processed") is vocabulary, and blocking it would refuse honest answers.
        markers = sorted({m.lower() for m in candidates
                          if len(m) >= 4 and _IDENTIFIER.search(m) and m.lower() not in public_text})
        return _LeakFacts(name, frozenset(public_docs), tuple(markers),
                          frozenset(internal_shingles))

    def check_text(self, text: str) -> list[str]:
        """Internal identifiers or copied internal passages in `text`.

        Text the asker typed gets no exemption: echoing "fraud-review" back would confirm an internal name,
        and a blocked answer is only a refusal.
        """
        facts = self.facts()
        low = text.lower()
        reasons = [f"internal identifier {m!r}" for m in facts.markers
                   if m in low and re.search(r"(?<![a-z0-9])" + re.escape(m), low)]
        copied = [s for s in _shingles(_words(text)) if s in facts.internal_shingles]
        if copied:
            example = " ".join(copied[0])
            reasons.append(f"{len(copied)} passage(s) found only in internal documents, e.g. {example!r}")
        return reasons

    def check(self, answer: Answer) -> LeakVerdict:
        """Every cited, related and retrieved document must be public; the text must hold nothing internal."""
        facts = self.facts()
        reasons: list[str] = []
        for c in answer.citations:
            aud = c.audience.value if isinstance(c.audience, Audience) else str(c.audience)
            if aud != "public" or c.doc_id not in facts.public_docs:
                reasons.append(f"citation of non-public document {c.doc_id!r}")
            else:
                reasons += [f"citation quote: {r}" for r in self.check_text(c.quote)]
        for r in answer.related:
            if r.get("doc_id") not in facts.public_docs:
                reasons.append(f"related non-public document {r.get('doc_id')!r}")
        for doc_id in answer.retrieved_doc_ids:
            if doc_id not in facts.public_docs:
                reasons.append(f"retrieved non-public document {doc_id!r}")
        reasons += self.check_text(answer.text)
        return LeakVerdict(reasons)

    def public_related(self, answer: Answer) -> list[dict[str, str]]:
        """The related articles of an answer that are public (used when a blocked answer is replaced)."""
        facts = self.facts()
        return [r for r in answer.related if r.get("doc_id") in facts.public_docs]


def blocked_answer(answer: Answer, related: list[dict[str, str]]) -> Answer:
    """The refusal shown instead of a public answer that failed the leak check."""
    return replace(answer, text=BLOCKED_TEXT, citations=[], refused=True, outcome="refused", refusal_reason="blocked",
                   confidence=0.0, escalation=None, handoff_offered=True, related=related,
                   retrieved_doc_ids=[])
