"""Who may see what: the one audience predicate, and the one check that a public answer holds nothing internal.

Retrieval already keeps internal documents from public requests; the answer service runs `LeakGuard.check` on
every public answer on every surface (CLI, console, API, eval) and replaces a failing one with `blocked_answer`.
The HTTP API checks once more before a response leaves the process, and checks each streamed sentence.

The facts the check needs (which documents are public, identifiers only internal documents hold, 8-word runs
only internal documents hold) are built once per index generation in time and memory linear in the corpus:
identifiers are matched against the public text with one Aho-Corasick pass, and word runs are kept as sorted
64-bit hashes (a numpy array), not as sets of word tuples.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np

from bot.core.models import Answer, Audience, Chunk
from bot.core.text import normalise, split_sentences

SHINGLE = 8  # words in a row: a shared 8-word run means copied text, not shared vocabulary
BLOCKED_TEXT = ("I can't help with that here. You can ask about something else, or talk to a person from our "
                "support team.")
BLOCKED_REASON = "blocked"

_BACKTICK = re.compile(r"`([^`\n]{2,80})`")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"https?://[^\s)>\]\"']+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][-_@./][A-Za-z0-9]|[A-Za-z0-9][-_]$")
_ALNUM = re.compile(r"[a-z0-9]")
_PRIME = np.uint64(1_099_511_628_211)  # FNV prime: mixes word hashes into a run hash


# ---- the audience predicate --------------------------------------------------------------------------------
def audience_of(value: Any) -> Audience:
    """The Audience of a document, chunk metadata value or citation; anything unknown is the restrictive one."""
    if isinstance(value, Audience):
        return value
    return Audience.PUBLIC if str(value or "").strip().lower() == Audience.PUBLIC.value else Audience.INTERNAL


def visible_to(requester: Audience, document_audience: Any) -> bool:
    """May a requester of this audience see a document of that audience? Public requests see public only."""
    return requester is Audience.INTERNAL or audience_of(document_audience) is Audience.PUBLIC


# ---- word-run hashes ---------------------------------------------------------------------------------------
class _WordHasher:
    """Stable 64-bit hashes of words (blake2b, memoised: a KB has tens of thousands of distinct words), so run
    hashes are the same in every process and could be stored with the index generation."""

    def __init__(self) -> None:
        self._memo: dict[str, int] = {}

    def __call__(self, words: list[str]) -> np.ndarray:
        memo = self._memo
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = memo.get(w)
            if h is None:
                h = memo[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            out[i] = h
        return out

    def runs(self, text: str) -> np.ndarray:
        """Hashes of every run of SHINGLE consecutive normalised words of text (empty when it is shorter)."""
        words = normalise(text).split()
        if len(words) < SHINGLE:
            return np.empty(0, dtype=np.uint64)
        wh = self(words)
        n = len(words) - SHINGLE + 1
        acc = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):  # wrap-around multiplication is the hash
            for j in range(SHINGLE):
                acc = acc * _PRIME + wh[j:j + n]
        return acc


# ---- the facts of one generation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LeakFacts:
    """What only internal documents hold, for one index generation.

    A pure function of the generation's chunks and documents, so ingest writes them next to its manifest (`save`:
    the markers as JSON, the sorted run hashes as .npy) and serving processes load them (`load`, memory-mapped)."""

    generation: str
    public_docs: frozenset[str]
    markers: tuple[str, ...]  # lower-cased identifiers found only in internal documents
    internal_runs: np.ndarray = field(repr=False)  # sorted unique uint64 hashes of internal-only word runs
    automaton: Any = field(default=None, repr=False, compare=False)  # the markers, for one pass over a text

    @classmethod
    def build(cls, chunks: Iterable[Chunk], documents: Mapping[str, Mapping[str, Any]],
              generation: str = "") -> LeakFacts:
        """Facts from a generation's chunks and its documents ({doc_id: {"meta": {...}}})."""
        public_docs = {d for d, v in documents.items() if audience_of((v.get("meta") or {}).get("audience"))
                       is Audience.PUBLIC}
        hasher = _WordHasher()
        public_texts: list[str] = []
        public_runs: list[np.ndarray] = []
        internal_runs: list[np.ndarray] = []
        candidates: set[str] = set()
        for c in chunks:
            if audience_of(c.metadata.get("audience")) is Audience.PUBLIC and c.doc_id in public_docs:
                meta = c.metadata
                public_texts.append(f"{meta.get('title', '')}\n{c.text}\n{meta.get('url', '')}".lower())
                public_runs.append(hasher.runs(c.text))
            else:
                candidates.update(_identifiers(c))
                internal_runs.append(hasher.runs(c.text))
        pub = np.unique(np.concatenate(public_runs)) if public_runs else np.empty(0, dtype=np.uint64)
        internal = np.unique(np.concatenate(internal_runs)) if internal_runs else np.empty(0, dtype=np.uint64)
        internal = internal[~np.isin(internal, pub, assume_unique=True)]
        # Only identifier-shaped strings (fraud-review, lert@..., on_hold, URLs): a plain word that happens to
        # be in backticks ("processed") is vocabulary, and blocking it would refuse honest answers.
        shaped = {m.lower() for m in candidates if len(m) >= 4 and _IDENTIFIER.search(m)}
        markers = tuple(sorted(shaped - _found_in(shaped, public_texts)))
        return cls(generation, frozenset(public_docs), markers, internal, _automaton_of(markers))

    def save(self, folder: Path) -> None:
        """Write the facts to folder (leak_facts.json and leak_runs.npy)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "leak_facts.json").write_text(json.dumps({"public_docs": sorted(self.public_docs),
                                                            "markers": list(self.markers)}))
        np.save(folder / "leak_runs.npy", np.ascontiguousarray(self.internal_runs, dtype=np.uint64))

    @classmethod
    def load(cls, folder: Path, generation: str) -> LeakFacts:
        """Facts saved by `save` for this generation (the run hashes memory-mapped, the automaton rebuilt from the
        markers: one pass over a short list)."""
        saved = json.loads((folder / "leak_facts.json").read_text())
        markers = tuple(saved["markers"])
        return cls(generation, frozenset(saved["public_docs"]), markers,
                   np.load(folder / "leak_runs.npy", mmap_mode="r"), _automaton_of(markers))

    def markers_in(self, text: str) -> list[str]:
        """Internal identifiers in text, starting on a word boundary (so 'xfraud-review' is not 'fraud-review')."""
        if self.automaton is None:
            return []
        low = text.lower()
        found = []
        for end, marker in self.automaton.iter(low):
            start = end - len(marker) + 1
            if (start == 0 or not _ALNUM.match(low[start - 1])) and marker not in found:
                found.append(marker)
        return sorted(found)

    def copied_runs(self, text: str) -> list[str]:
        """The 8-word runs of text (sentence by sentence, citation markers left out) only internal text holds."""
        found: list[str] = []
        for sentence, _ in split_sentences(text):
            words = normalise(sentence).split()
            runs = _WordHasher().runs(sentence)
            if not len(runs) or not len(self.internal_runs):
                continue
            pos = np.searchsorted(self.internal_runs, runs)
            hit = (pos < len(self.internal_runs)) & (self.internal_runs[np.minimum(pos, len(self.internal_runs) - 1)]
                                                     == runs)
            found += [" ".join(words[i:i + SHINGLE]) for i in np.flatnonzero(hit)]
        return found


def _identifiers(chunk: Chunk) -> set[str]:
    """Identifier candidates of an internal chunk: backticked names, e-mail addresses, links, its ids."""
    out = {m.strip() for m in _BACKTICK.findall(chunk.text)}
    out.update(_EMAIL.findall(chunk.text))
    out.update(_URL.findall(chunk.text))
    if chunk.metadata.get("url"):
        out.add(str(chunk.metadata["url"]))
    out.add(chunk.doc_id)
    return out


def _automaton_of(words: Iterable[str]) -> Any:
    automaton = ahocorasick.Automaton()
    for w in words:
        automaton.add_word(w, w)
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _found_in(needles: set[str], texts: Iterable[str]) -> set[str]:
    """Which needles occur anywhere in texts: one Aho-Corasick pass over each text (linear, not needles x text)."""
    automaton = _automaton_of(needles)
    found: set[str] = set()
    if automaton is None:
        return found
    for text in texts:
        found.update(m for _, m in automaton.iter(text))
    return found


# ---- the check ---------------------------------------------------------------------------------------------
@dataclass
class LeakVerdict:
    """Why a public answer may not be shown (empty = fine)."""

    reasons: list[str] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        """True when anything internal was found."""
        return bool(self.reasons)


class LeakGuard:
    """The leak check of public answers against the served generation (facts built once per generation)."""

    def __init__(self, index: Any):
        self.index = index
        self._facts: LeakFacts | None = None
        self._lock = threading.Lock()

    def facts(self) -> LeakFacts:
        """The facts of the generation being served (rebuilt when the generation changes)."""
        gen = self.index.generation()
        name = gen.name if gen is not None else ""
        facts = self._facts
        if facts is not None and facts.generation == name:
            return facts
        with self._lock:
            if self._facts is None or self._facts.generation != name:
                if gen is None:
                    self._facts = LeakFacts.build((), {}, name)
                elif hasattr(gen, "leak_facts"):  # an index generation: facts saved at ingest, or built once
                    self._facts = gen.leak_facts()
                else:
                    self._facts = LeakFacts.build(gen.chunks, gen.documents, name)
            return self._facts

    def check_text(self, text: str) -> list[str]:
        """Internal identifiers or copied internal passages in text.

        Text the asker typed gets no exemption: echoing "fraud-review" back would confirm an internal name,
        and a blocked answer is only a refusal."""
        facts = self.facts()
        reasons = [f"internal identifier {m!r}" for m in facts.markers_in(text)]
        copied = facts.copied_runs(text)
        if copied:
            reasons.append(f"{len(copied)} passage(s) found only in internal documents, e.g. {copied[0]!r}")
        return reasons

    def check(self, answer: Answer) -> LeakVerdict:
        """Every cited, related, retrieved and escalation document must be public; the text must hold nothing
        internal."""
        facts = self.facts()
        reasons: list[str] = []
        for c in answer.citations:
            if audience_of(c.audience) is not Audience.PUBLIC or c.doc_id not in facts.public_docs:
                reasons.append(f"citation of non-public document {c.doc_id!r}")
            else:
                reasons += [f"citation quote: {r}" for r in self.check_text(c.quote)]
        for r in answer.related:
            if r.get("doc_id") not in facts.public_docs:
                reasons.append(f"related non-public document {r.get('doc_id')!r}")
        for doc_id in answer.retrieved_doc_ids:
            if doc_id not in facts.public_docs:
                reasons.append(f"retrieved non-public document {doc_id!r}")
        esc = answer.escalation
        if esc is not None and (esc.queue or esc.team) and esc.source_doc_id not in facts.public_docs:
            reasons.append(f"escalation from non-public document {esc.source_doc_id!r} (queue {esc.queue!r})")
        reasons += self.check_text(answer.text)
        return LeakVerdict(reasons)

    def public_related(self, answer: Answer) -> list[dict[str, str]]:
        """The related articles of an answer that are public (kept when a blocked answer is replaced)."""
        facts = self.facts()
        return [r for r in answer.related if r.get("doc_id") in facts.public_docs]


def blocked_answer(answer: Answer, related: list[dict[str, str]], reasons: list[str]) -> Answer:
    """The refusal shown instead of a public answer that failed the leak check; `blocked_reasons` is for the
    audit log and never leaves the process."""
    return replace(answer, text=BLOCKED_TEXT, citations=[], refused=True, outcome="refused", refusal_reason=BLOCKED_REASON,
                   confidence=0.0, escalation=None, handoff_offered=True, related=related,
                   retrieved_doc_ids=[], blocked_reasons=list(reasons))
