"""Split a chunk into answerable units (sentences, list items, steps, table rows) with exact character spans.

Every unit keeps the offsets of its raw text in the chunk, so a quote taken from a unit is always an exact
substring of the chunk, while `display` is a cleaned form for the answer (links and emphasis removed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.core.profile import DEFAULT_PROFILE, KBProfile
from bot.core.text import analyze

_NUMBERED_RE = re.compile(r"^\s*(\d+)[.)]\s+")
_BULLET_RE = re.compile(r"^\s*[-*+•]\s+")
_TABLE_RE = re.compile(r"^\s*\|")
_TABLE_SEP_RE = re.compile(r"^\s*\|?\s*:?-{2,}")
_HEADING_RE = re.compile(r"^\s*#{1,6}\s+")
_LINK_RE = re.compile(r"\[([^\]\n]+)\]\((?:[^)\s]+)\)")
_EMPH_RE = re.compile(r"(\*\*|__)(.+?)\1")
_LONE_EMPH_RE = re.compile(r"\*\*|(?<!\w)__|__(?!\w)")  # half of a pair a sentence split cut in two
# A code written in capitals with inner hyphens or underscores (HOLD-RISK, RF-UNAUTH-PSD2, ON_HOLD) names one
# thing; word tokens would split it into parts its siblings share (hold + risk vs hold + age).
_TYPED_CODE_RE = re.compile(r"(?<![\w-])[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)+(?![\w-])")
CODE_RE = re.compile(r"(?<![\w-])[A-Z][A-Z0-9]*(?:[-_][A-Z0-9]+)+(?![\w-])")
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)
# residue of converted web pages and Markdown that an answer must not show (general text hygiene, no KB words):
_CODE_RE = re.compile(r"`([^`\n]+)`")  # inline code: the name stays, the backticks go
_REF_RESIDUE_RE = re.compile(r"\s*\[\s*\d{0,3}\s*\](?!\()")  # "see a sample [1]", "[4 ]", "[ ]": dead link numbers
_SPACE_PUNCT_RE = re.compile(r"(?<=\w)\s+([,.;:!?])(?=\s|$)")  # "However , it" (tokenised text)
_LOST_APOSTROPHE_RE = re.compile(r"\b(don|doesn|didn|can|isn|won|aren|wasn|weren|couldn|shouldn|wouldn|haven|"
                                 r"hasn|hadn|mustn) t\b", re.IGNORECASE)  # "don t" where a converter dropped it
_INLINE_PIPE_RE = re.compile(r"\s*\|\s*")  # a table or navigation bar flattened into one line
_INLINE_BULLET_RE = re.compile(r"(^|(?<=[.:;!?]))\s*[*•]\s+")  # a list marker left inside a sentence
# a sentence ends at . ! ? (optionally closed by a quote or bracket) followed by space and an opening character
_BOUNDARY_RE = re.compile(r"[.!?][\"'”’)\]]*(\s+)(?=[A-Z0-9\"'“‘(\[]|v\d)")  # "v2.0 ..." starts a sentence
# what a unit states about time: a duration or deadline ("within one month", "end of the following business
# day"), deadline words, and headings that name a deadline section; read by retrieval (which chunk states the
# deadline) and the extractive composer (which unit does)
# The one duration pattern (issue 10: retrieval, the composer and the assessment each had their own, with
# different number words): "14 days", "5-10 business days", "one month", "two further months", "an hour".
_DURATION = (r"(?:\d+|\b(?:an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fourteen|fifteen|"
             r"twenty|thirty|forty|sixty|ninety))\s*-?\s*(?:further |more )?(?:business |calendar |working )?"
             r"(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b"
             r"|\bend of the (?:following|next) (?:business |working )?day\b")
DURATION_RE = re.compile(_DURATION, re.IGNORECASE)
# a sentence that answers "how long / by when": a duration, or no wait or no limit at all
STATED_TIME_RE = re.compile(_DURATION + r"|\bimmediately\b|\bstraight away\b|\bright away\b|\bsame day\b|"
                            r"\bno (?:time )?limit\b", re.IGNORECASE)
DEADLINE_WORDS_RE = re.compile(r"\b(deadline|due|within|no later than|respond|extend(ed)?|extension|sla)\b",
                               re.IGNORECASE)
DEADLINE_HEAD_RE = DEFAULT_PROFILE.sections["deadline"]  # the default; a KB profile may say otherwise


def code_terms(text: str) -> frozenset[str]:
    """Code-like identifiers of text as single lower-case terms ("HOLD-RISK" -> "hold-risk")."""
    return frozenset(m.group(0).lower() for m in CODE_RE.finditer(text))


def term_overlap(a: Unit, b: Unit) -> float:
    """Share of the smaller unit's terms the other one has too (1.0: one repeats the other)."""
    if not a.terms or not b.terms:
        return 0.0
    return len(a.terms & b.terms) / min(len(a.terms), len(b.terms))


def named_codes(text: str, known: frozenset[str]) -> set[str]:
    """The known codes (HOLD-RISK) text names however it is typed ("hold-risk"), as code_terms spells them."""
    return {m.group(0).lower() for m in _TYPED_CODE_RE.finditer(text)} & known


def region_conflict(text: str, regions: tuple[str, ...], profile: KBProfile = DEFAULT_PROFILE) -> bool:
    """Whether text is about other regions only: it names some region (as the KB profile spells them), and none
    of the requester's."""
    named = profile.names_regions(text)
    return bool(named) and not named & set(regions)


_ABBREV = frozenset(["e.g", "i.e", "etc", "vs", "no", "art", "approx", "mr", "mrs", "ms", "dr", "st", "u.s", "u.k", "inc", "ltd", "co", "sec", "fig", "p", "pp", "ca", "cf", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"])


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a chunk."""

    start: int  # offsets of the raw text in the chunk: chunk.text[start:end] is the quote
    end: int
    kind: str  # sentence | step | item | row | lead
    display: str  # cleaned text for the answer (no list marker, no link targets)
    position: int  # order within the chunk
    list_id: int | None = None  # units of one list share it
    marker: str = ""  # the original list marker ("3.") of a step
    terms: frozenset[str] = field(default_factory=frozenset)
    block: int = 0  # paragraph, list or table the unit belongs to


def clean_display(text: str) -> str:
    """Text as an answer shows it: Markdown link targets, emphasis, inline-code backticks, <br>, table pipes,
    stray bullets and dead link numbers ("[3 ]") removed, tokeniser spacing ("However , it", "don t") repaired,
    whitespace collapsed. The citation keeps the exact source span; only the shown text is cleaned."""
    text = _BR_RE.sub(" ", text)
    text = _LINK_RE.sub(r"\1", text)
    text = _EMPH_RE.sub(r"\2", text)
    text = _LONE_EMPH_RE.sub("", text)
    text = _CODE_RE.sub(r"\1", text)
    text = _REF_RESIDUE_RE.sub("", text)
    text = _INLINE_PIPE_RE.sub("; ", text.strip().strip("|"))
    text = _INLINE_BULLET_RE.sub(" ", text)
    text = _LOST_APOSTROPHE_RE.sub(lambda m: m.group(1) + "'t", text)
    text = _SPACE_PUNCT_RE.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _sentences(text: str, offset: int) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of a paragraph starting at `offset` in the chunk."""
    spans: list[tuple[int, int]] = []
    pieces: list[tuple[int, int]] = []
    # <br> separated parts are separate sentences (IBM Cloud docs use them as paragraph breaks)
    last = 0
    for m in _BR_RE.finditer(text):
        pieces.append((last, m.start()))
        last = m.end()
    pieces.append((last, len(text)))
    for p_start, p_end in pieces:
        part = text[p_start:p_end]
        start = 0
        for m in _BOUNDARY_RE.finditer(part):
            before = part[start:m.start()].split()
            last_word = before[-1].lower().rstrip(".").lstrip("([\"'") if before else ""
            if last_word in _ABBREV or (len(last_word) == 1 and last_word.isalpha()):
                continue
            end = m.start(1)
            spans.append((p_start + start, p_start + end))
            start = m.end()
        spans.append((p_start + start, p_start + len(part)))
    out = []
    for s, e in spans:
        seg = text[s:e]
        ls = len(seg) - len(seg.lstrip())
        rs = len(seg.rstrip())
        if rs > ls:
            out.append((offset + s + ls, offset + s + rs))
    return out


def _table_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# why: a line-oriented tokenizer of Markdown (headings, lists, tables, prose) with shared state
def split_units(text: str) -> list[Unit]:
    """Units of a chunk's text, in order; paragraphs become sentences, lists items, tables rows."""
    units: list[Unit] = []
    lines: list[tuple[int, str]] = []
    pos = 0
    for line in text.split("\n"):
        lines.append((pos, line))
        pos += len(line) + 1

    list_id = 0
    block = 0
    in_list = False
    header: list[str] | None = None
    para: list[tuple[int, str]] = []
    item: list[tuple[int, str]] = []
    item_kind = ""

    def add(start: int, end: int, kind: str, display: str, lid: int | None = None, marker: str = "") -> None:
        display = clean_display(display)
        if not display:
            return
        terms = frozenset(analyze(display)) | code_terms(display)
        units.append(Unit(start, end, kind, display, len(units), lid, marker, terms, block))

    def flush_para() -> None:
        nonlocal para, block
        if para:
            block += 1
            start = para[0][0]
            end = para[-1][0] + len(para[-1][1])
            body = text[start:end]
            for s, e in _sentences(body, start):
                add(s, e, "sentence", text[s:e])
        para = []

    def flush_item() -> None:
        nonlocal item
        if item:
            start = item[0][0] + (len(item[0][1]) - len(item[0][1].lstrip()))
            end = item[-1][0] + len(item[-1][1].rstrip())
            raw = text[start:end]
            m = _NUMBERED_RE.match(raw) or _BULLET_RE.match(raw)
            marker = raw[: m.end()].strip() if m else ""
            body = raw[m.end():] if m else raw
            add(start, end, item_kind, body, list_id, marker)
        item = []

    for start, line in lines:
        stripped = line.strip()
        if not stripped:
            flush_para()
            flush_item()
            header = None
            continue
        if _HEADING_RE.match(line):
            flush_para()
            flush_item()
            in_list = False
            continue
        if _TABLE_RE.match(line):
            flush_para()
            flush_item()
            in_list = False
            if _TABLE_SEP_RE.match(line.replace("|", "", 1) if line.strip().startswith("|") else line):
                continue
            cells = _table_cells(line)
            if header is None:
                header = cells
                block += 1
                continue
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                continue
            s = start + (len(line) - len(line.lstrip()))
            e = start + len(line.rstrip())
            rest = [f"{h}: {c}" if h else c for h, c in zip(header[1:], cells[1:]) if c]
            if len(cells) == 2 and cells[1]:
                rest = [cells[1]]
            add(s, e, "row", f"{cells[0]}: {'; '.join(rest)}" if rest and cells[0] else "; ".join(rest) or cells[0])
            continue
        header = None
        numbered = _NUMBERED_RE.match(line)
        bullet = _BULLET_RE.match(line)
        if numbered or bullet:
            if not in_list:
                # a paragraph sentence ending with ':' right before the list is its lead-in
                flush_para()
                if units and units[-1].kind == "sentence" and text[units[-1].start:units[-1].end].endswith(":"):
                    u = units[-1]
                    units[-1] = Unit(u.start, u.end, "lead", u.display, u.position, list_id + 1, "", u.terms,
                                     u.block)
                list_id += 1
                block += 1
                in_list = True
            flush_item()
            item_kind = "step" if numbered else "item"
            item = [(start, line)]
            continue
        if item:  # continuation line of a list item
            item.append((start, line))
            continue
        in_list = False
        para.append((start, line))
    flush_para()
    flush_item()
    return units
