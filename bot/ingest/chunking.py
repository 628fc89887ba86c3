"""Heading-aware, token-bounded chunking that keeps numbered steps and tables whole where possible."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from bot.core.models import Chunk, Document
from bot.core.tokens import get_encoding

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_NUMBERED_RE = re.compile(r"^\s*\d+[.)]\s+")
_BULLET_RE = re.compile(r"^\s*[-*+]\s+")
_TABLE_RE = re.compile(r"^\s*\|")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Block:
    """A paragraph, list or table inside one section."""

    kind: str  # para | list | table
    text: str
    section_path: tuple[str, ...]


# why: a line-oriented block splitter; the state (current block kind, buffer) is shared
def split_blocks(text: str) -> list[Block]:
    """Split Markdown into blocks, tracking the heading path (H1 is the title and not part of the path)."""
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    kind = "para"

    def flush() -> None:
        nonlocal buf, kind
        body = "\n".join(buf).strip()
        if body:
            blocks.append(Block(kind, body, tuple(t for _, t in path)))
        buf, kind = [], "para"

    for line in text.splitlines():
        m = _HEADING_RE.match(line)
        if m:
            flush()
            level = len(m.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            if level > 1:
                path.append((level, m.group(2).strip()))
            continue
        if not line.strip():
            # a blank line ends a paragraph but not a list or table whose next line continues it
            if kind == "para":
                flush()
            else:
                buf.append("")
            continue
        line_kind = "table" if _TABLE_RE.match(line) else "list" if (
            _NUMBERED_RE.match(line) or _BULLET_RE.match(line)) else None
        # a list directly after its lead-in sentence stays with it ("To reset 2FA:\n1. ...")
        lead_in = line_kind == "list" and kind == "para" and bool(buf) and buf[-1].rstrip().endswith(":")
        if line_kind and kind != line_kind and buf and any(b.strip() for b in buf) and not lead_in:
            flush()
        if line_kind:
            kind = line_kind
        elif kind != "para" and buf and not buf[-1].strip() and not line.startswith((" ", "\t")):
            flush()
        buf.append(line)
    flush()
    return blocks


class Chunker:
    """Packs blocks of one section into chunks of at most `max_tokens` tokens."""

    def __init__(self, max_tokens: int = 256, overlap_tokens: int = 32, encoding: str = "cl100k_base",
                 structured_slack: float = 2.0):
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.structured_limit = int(max_tokens * structured_slack)  # lists and tables may run longer
        self._enc = get_encoding(encoding)

    def _count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def run(self, doc: Document, base_metadata: dict) -> list[Chunk]:
        """Chunk one document; chunk ids are stable for the same document content."""
        pieces: list[tuple[tuple[str, ...], str]] = []
        current: list[str] = []
        current_tokens = 0
        current_path: tuple[str, ...] | None = None
        for block in split_blocks(doc.text):
            for part in self._split_block(block):
                n = self._count(part)
                if current and (block.section_path != current_path or current_tokens + n > self.max_tokens):
                    pieces.append((current_path or (), "\n\n".join(current)))
                    current, current_tokens = [], 0
                current.append(part)
                current_tokens += n
                current_path = block.section_path
        if current:
            pieces.append((current_path or (), "\n\n".join(current)))
        chunks = []
        for ordinal, (path, body) in enumerate(pieces):
            digest = hashlib.sha1(f"{doc.content_hash}:{ordinal}:{body}".encode()).hexdigest()[:12]
            meta = dict(base_metadata, ordinal=ordinal, section=" > ".join(path))
            chunks.append(Chunk(f"{doc.id}#{ordinal}-{digest}", doc.id, ordinal, body, path, self._count(body), meta))
        return chunks

    def _split_block(self, block: Block) -> list[str]:
        text = block.text
        n = self._count(text)
        limit = self.structured_limit if block.kind in ("list", "table") else self.max_tokens
        if n <= limit:
            return [text]
        if block.kind in ("list", "table"):
            units = _split_items(text, block.kind)
        else:
            units = [s for s in _SENTENCE_RE.split(text) if s.strip()]
        return self._pack_units(units, joiner="\n" if block.kind != "para" else " ")

    def _pack_units(self, units: list[str], joiner: str) -> list[str]:
        out: list[str] = []
        cur: list[str] = []
        cur_n = 0
        for unit in units:
            n = self._count(unit)
            if n > self.max_tokens:  # one enormous sentence: hard split on tokens with overlap
                if cur:
                    out.append(joiner.join(cur))
                    cur, cur_n = [], 0
                ids = self._enc.encode_ordinary(unit)
                step = max(1, self.max_tokens - self.overlap_tokens)
                out.extend(self._enc.decode(ids[i : i + self.max_tokens]) for i in range(0, len(ids), step))
                continue
            if cur and cur_n + n > self.max_tokens:
                out.append(joiner.join(cur))
                # carry the last unit over when it is short, so a split keeps some context
                tail = cur[-1] if self._count(cur[-1]) <= self.overlap_tokens else None
                cur, cur_n = ([tail], self._count(tail)) if tail else ([], 0)
            cur.append(unit)
            cur_n += n
        if cur:
            out.append(joiner.join(cur))
        return out


def _split_items(text: str, kind: str) -> list[str]:
    """List items (with their continuation lines) or table rows, header row repeated for tables."""
    lines = text.splitlines()
    if kind == "table":
        header = [l for l in lines[:2] if _TABLE_RE.match(l)]
        rows = lines[len(header):]
        return ["\n".join(header + [r]) if i == 0 else r for i, r in enumerate(rows)] or [text]
    items: list[str] = []
    for line in lines:
        if (_NUMBERED_RE.match(line) or _BULLET_RE.match(line)) or not items:
            items.append(line)
        else:
            items[-1] += "\n" + line
    return items
