"""Verify stage: every citation must name a source that was given and a span of it that supports the sentence.

Runs for every composer. A citation survives when its number refers to a given source and
- it carries a quote (extractive answers, the chat "quotes" protocol) that occurs in that source's chunk (compared
  with normalised whitespace, case, quotes, dashes and Markdown emphasis) and shares a word with the sentence; or
- it carries no quote (the chat "markers" protocol small models can follow): the verifier finds the sentence of
  that source that supports the answer sentence, and keeps the citation only when that sentence states every
  number the answer sentence states, agrees on negation, and holds at least MARKER_MIN_COVERAGE of its words.
The shown quote is then the exact span of the chunk. Sentences left without a valid citation are removed. A
public answer citing anything internal is blocked outright (defence in depth over the retrieval filter).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from bot.answer.compose import Draft, DraftSentence, Source
from bot.answer.safety import looks_like_injection
from bot.core.models import Audience, Citation, Filters
from bot.core.text import analyze
from bot.ingest.metadata import doc_regions

log = logging.getLogger(__name__)

MIN_QUOTE_CHARS = 12  # a quote must say something: "the" occurs everywhere
# A quote-less sentence must be (nearly) said by one source sentence: the same share of its content words the
# offline faithfulness judge accepts without its embedder (bot/evaluation LEXICAL_ALONE), so what this keeps the
# judge counts as supported. Not fitted on any suite.
MARKER_MIN_COVERAGE = 0.85
_NEGATIONS = frozenset(["not", "no", "never", "cannot", "can't", "don't", "doesn't", "won't", "isn't", "aren't", "without", "neither", "nor"])
_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")
_UNIT_RE = re.compile(r"[^\n]+?(?:[.!?](?=\s+[A-Z\"“(])|$)", re.MULTILINE)  # "Art. 12(3)" ends no sentence
_UNIT_LEAD_RE = re.compile(r"^[\s|>*+-]*(?:\d+[.)]\s+)?")
_FOLD = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "\u00a0": " ",
                       "\u2011": "-", "\u2212": "-"})
_LINK_RE = re.compile(r"\[([^\]\n]+)\]\([^)\s]+\)")
_SKIP = set("*`")


# why: text normalisation is a fixed sequence of replacements, clearer in one place
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


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUM_RE.findall(text)}


def _negated(text: str) -> bool:
    return bool(set(normalise(text)[0].split()) & _NEGATIONS)


def source_units(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, list item or table row of a chunk, without list markers or pipes."""
    spans: list[tuple[int, int]] = []
    for m in _UNIT_RE.finditer(text):
        start = m.start() + len(_UNIT_LEAD_RE.match(m.group(0)).group(0))
        end = m.end()
        while end > start and text[end - 1] in " |\t":
            end -= 1
        if end - start >= MIN_QUOTE_CHARS:
            spans.append((start, end))
    return spans


def locate_support(sentence: str, text: str) -> tuple[tuple[int, int] | None, str]:
    """The span of text (one sentence, item or row) that says what `sentence` says, or None and the reason.

    Supported means: every number of the sentence occurs in the span, both or neither are negated, and the span
    holds at least MARKER_MIN_COVERAGE of the sentence's content words (stemmed, stop words dropped)."""
    terms = set(analyze(sentence))
    if len(terms) < 2:
        return None, "the sentence states too little to check"
    best: tuple[float, int, tuple[int, int]] | None = None
    for start, end in source_units(text):
        unit = text[start:end]
        coverage = len(terms & set(analyze(unit))) / len(terms)
        if best is None or (coverage, -(end - start)) > (best[0], best[1]):
            best = (coverage, -(end - start), (start, end))
    if best is None or best[0] < MARKER_MIN_COVERAGE:
        share = 0.0 if best is None else best[0]
        return None, f"no sentence of the source says it (best holds {share:.0%} of its words)"
    span = best[2]
    unit = text[span[0]:span[1]]
    missing = sorted(_numbers(sentence) - _numbers(unit))
    if missing:
        return None, f"numbers {missing} are not in the closest source sentence"
    if _negated(sentence) != _negated(unit):
        return None, "negation differs from the closest source sentence"
    return span, ""


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
        effective_date=str(m.get("effective_date", "")), url=m.get("url", ""), regions=doc_regions(m),
        chunk_text=c.text, last_reviewed=str(m.get("last_reviewed", "")), review_due=str(m.get("review_due", "")),
        superseded_by=str(m.get("superseded_by", "")),
    )


class CitationVerifier:
    """Checks a draft's citations against the sources it was given and renumbers the survivors."""

    def __init__(self, require_support: bool = True):
        self.require_support = require_support

    # why: one pass over draft sentences; each `continue` is a documented reason to drop one
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
                quoted = len(cite.quote.strip()) >= MIN_QUOTE_CHARS
                if quoted:
                    span = locate_quote(cite.quote, src.chunk.text)
                    why = f"quote does not occur in {src.chunk.doc_id}: {cite.quote[:80]!r}"
                else:  # markers protocol: the model named the source, the verifier finds the span
                    span, why = locate_support(sent.text, src.chunk.text)
                    why = f"{src.chunk.doc_id}: {why}"
                if span is None:
                    problems.append(f"[{cite.number}] {why}")
                    continue
                if looks_like_injection(_paragraph(src.chunk.text, *span)):
                    problems.append(f"[{cite.number}] quotes text addressed to the assistant, not policy content")
                    continue
                if quoted and self.require_support and not _supports(sent.text, src.chunk.text[span[0]:span[1]]):
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
