"""Verify stage: every citation must name a source that was given and quote text that occurs in it.

Runs for every composer. A citation survives when its number refers to a given source and its quote occurs in
that source's chunk (compared with normalised whitespace, case, quotes, dashes and Markdown emphasis); the shown
quote is then the exact span of the chunk. Sentences left without a valid citation are removed. A public answer
citing anything internal is blocked outright (defence in depth over the retrieval filter).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from bot.answer.compose import Draft, DraftSentence, Source
from bot.answer.safety import looks_like_injection
from bot.core.text import analyze
from bot.core.models import Audience, Citation, Filters

log = logging.getLogger(__name__)

MIN_QUOTE_CHARS = 12  # a quote must say something: "the" occurs everywhere
_FOLD = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "\u00a0": " ",
                       "\u2011": "-", "\u2212": "-"})
_LINK_RE = re.compile(r"\[([^\]\n]+)\]\([^)\s]+\)")
_SKIP = set("*`")


def normalise(text: str) -> tuple[str, list[int]]:
    """Lower-case text with folded punctuation, no Markdown emphasis/link targets, single spaces; and for each
    character of the result its offset in the original (so a match maps back to an exact span)."""
    # link targets are dropped: [label](url) -> label
    keep = [True] * len(text)
    for m in _LINK_RE.finditer(text):
        keep[m.start()] = False  # '['
        for i in range(m.end(1), m.end()):
            keep[i] = False  # '](url)'
    out: list[str] = []
    offsets: list[int] = []
    space = True
    for i, ch in enumerate(text):
        if not keep[i] or ch in _SKIP:
            continue
        ch = ch.translate(_FOLD)
        if ch.isspace() or ch == "<":
            # <br> tags count as whitespace
            if ch == "<" and text[i:i + 3].lower() == "<br":
                end = text.find(">", i)
                if end != -1 and end - i <= 5:
                    for j in range(i, end + 1):
                        keep[j] = False
                    ch = " "
            if ch.isspace():
                if not space:
                    out.append(" ")
                    offsets.append(i)
                space = True
                continue
        out.append(ch.lower())
        offsets.append(i)
        space = False
    while out and out[-1] == " ":
        out.pop()
        offsets.pop()
    return "".join(out), offsets


def locate_quote(quote: str, text: str) -> tuple[int, int] | None:
    """(start, end) of the quote in text, exact or after normalisation; None when it does not occur."""
    q = quote.strip()
    if not q:
        return None
    pos = text.find(q)
    if pos != -1:
        return pos, pos + len(q)
    nq, _ = normalise(q)
    nq = nq.strip().strip('"').strip()
    nq_trim = nq.rstrip(".,;:")  # models often add or drop the final full stop
    if len(nq_trim) < 3:
        return None
    nt, offsets = normalise(text)
    for needle in (nq, nq_trim):
        pos = nt.find(needle)
        if pos != -1:
            start = offsets[pos]
            end = offsets[pos + len(needle) - 1] + 1
            return start, end
    return None


@dataclass
class VerifiedSentence:
    """A sentence that kept at least one valid citation, with its final citation numbers."""

    text: str
    numbers: list[int]
    kind: str = "sentence"
    marker: str = ""


@dataclass
class Verified:
    """Outcome of verification: kept sentences, their citations, and what was rejected and why."""

    sentences: list[VerifiedSentence]
    citations: list[Citation]
    removed: int = 0
    problems: list[str] = field(default_factory=list)
    blocked: bool = False  # a public answer tried to cite internal content
    checked: int = 0  # citations checked
    valid: int = 0  # citations that verified

    @property
    def text(self) -> str:
        """The answer text with [n] markers."""
        return render(self.sentences)


def render(sentences: list[VerifiedSentence]) -> str:
    """Sentences as paragraphs, steps and items as lines; markers placed before a sentence's final stop."""
    parts: list[str] = []
    para: list[str] = []

    def marks(numbers: list[int]) -> str:
        return "".join(f"[{n}]" for n in numbers)

    for s in sentences:
        m = marks(s.numbers)
        if s.kind in ("step", "item"):
            if para:
                parts.append(" ".join(para))
                para = []
            bullet = s.marker if s.kind == "step" and s.marker else "-"
            parts.append(f"{bullet} {s.text} {m}".rstrip())
            continue
        text = s.text.rstrip()
        if text and text[-1] in ".!?:;" and not text.endswith("..."):
            sent = f"{text[:-1]} {m}{text[-1]}"
        else:
            sent = f"{text} {m}."
        if s.kind == "lead":
            para.append(sent)
            parts.append(" ".join(para))
            para = []
        else:
            para.append(sent)
    if para:
        parts.append(" ".join(para))
    return "\n".join(parts)


def _supports(sentence: str, quote: str) -> bool:
    """The quote shares at least one content word or number with the sentence it is said to support."""
    s_terms = set(analyze(sentence))
    if not s_terms:
        return True
    return bool(s_terms & set(analyze(quote)))


def _paragraph(text: str, start: int, end: int) -> str:
    """The blank-line separated paragraph(s) around a span."""
    a = text.rfind("\n\n", 0, start)
    b = text.find("\n\n", end)
    return text[a + 2 if a != -1 else 0: b if b != -1 else len(text)]


def _regions(meta: dict) -> tuple[str, ...]:
    r = meta.get("regions", "")
    return tuple(x for x in r.split(",") if x) if isinstance(r, str) else tuple(r or ())


def make_citation(number: int, source: Source, start: int, end: int) -> Citation:
    """A Citation for an exact span of a source chunk."""
    c = source.chunk
    m = c.metadata
    try:
        audience = Audience(m.get("audience", "internal"))
    except ValueError:
        audience = Audience.INTERNAL  # unknown audience is treated as the stricter one
    return Citation(
        number=number, doc_id=c.doc_id, title=m.get("title", c.doc_id), section=c.section,
        quote=c.text[start:end], chunk_id=c.chunk_id, audience=audience, version=str(m.get("version", "")),
        effective_date=str(m.get("effective_date", "")), url=m.get("url", ""), regions=_regions(m),
        chunk_text=c.text, last_reviewed=str(m.get("last_reviewed", "")), review_due=str(m.get("review_due", "")),
        superseded_by=str(m.get("superseded_by", "")),
    )


class CitationVerifier:
    """Checks a draft's citations against the sources it was given and renumbers the survivors."""

    def __init__(self, require_support: bool = True):
        self.require_support = require_support

    def run(self, draft: Draft, filters: Filters) -> Verified:
        """Verified sentences and citations for a draft under the requester's filters."""
        by_number = {s.number: s for s in draft.sources}
        final_numbers: dict[tuple[str, int, int], int] = {}
        citations: list[Citation] = []
        kept: list[VerifiedSentence] = []
        problems: list[str] = []
        removed = checked = valid = 0
        blocked = False
        for sent in draft.sentences:
            numbers: list[int] = []
            for cite in sent.citations:
                checked += 1
                src = by_number.get(cite.number)
                if src is None:
                    problems.append(f"[{cite.number}] names no source that was given")
                    continue
                if len(cite.quote.strip()) < MIN_QUOTE_CHARS:
                    problems.append(f"[{cite.number}] has no usable quote")
                    continue
                span = locate_quote(cite.quote, src.chunk.text)
                if span is None:
                    problems.append(f"[{cite.number}] quote does not occur in {src.chunk.doc_id}: "
                                    f"{cite.quote[:80]!r}")
                    continue
                if looks_like_injection(_paragraph(src.chunk.text, *span)):
                    problems.append(f"[{cite.number}] quotes text addressed to the assistant, not policy content")
                    continue
                if self.require_support and not _supports(sent.text, src.chunk.text[span[0]:span[1]]):
                    problems.append(f"[{cite.number}] quote shares no words with the sentence it supports")
                    continue
                if filters.audience is Audience.PUBLIC and src.chunk.metadata.get("audience") != "public":
                    blocked = True
                    problems.append(f"[{cite.number}] cites internal document {src.chunk.doc_id} in a public answer")
                    continue
                key = (src.chunk.chunk_id, span[0], span[1])
                if key not in final_numbers:
                    final_numbers[key] = len(final_numbers) + 1
                    citations.append(make_citation(final_numbers[key], src, *span))
                valid += 1
                if final_numbers[key] not in numbers:
                    numbers.append(final_numbers[key])
            if numbers:
                kept.append(VerifiedSentence(sent.text, numbers, sent.kind, sent.marker))
            else:
                removed += 1
        _drop_orphan_leads(kept)
        if problems:
            log.info("verification rejected %d citation(s): %s", len(problems), "; ".join(problems[:5]))
        return Verified(kept, citations, removed, problems, blocked, checked, valid)


def _drop_orphan_leads(sentences: list[VerifiedSentence]) -> None:
    """A lead-in ("To reset 2FA:") whose list did not survive would dangle: make it a sentence."""
    for i, s in enumerate(sentences):
        if s.kind == "lead" and (i + 1 >= len(sentences) or sentences[i + 1].kind not in ("step", "item")):
            s.kind = "sentence"


def draft_sentences_text(sentences: list[DraftSentence]) -> str:
    """Plain text of draft sentences (for logs)."""
    return " ".join(s.text for s in sentences)
