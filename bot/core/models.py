"""Typed data objects passed between pipeline stages."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

REGIONS = ("global", "EU", "UK", "US", "ROW")
_MD_LINK_RE = re.compile(r"!?\[[^\]\n]*\]\([^)\s]*\)")  # [text](target) and ![alt](image)
DOC_TYPES = ("sop", "help_article", "policy", "macro")


def normalise_regions(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Region names in their canonical spelling ("eu" -> "EU"); ValueError names an unknown one."""
    canon = {r.lower(): r for r in REGIONS}
    out = []
    for value in values:
        key = str(value).strip().lower()
        if key not in canon:
            raise ValueError(f"unknown region {value!r}; use one of {', '.join(REGIONS)}")
        out.append(canon[key])
    return tuple(out)


class Audience(str, enum.Enum):
    """Who may see a document: PUBLIC requests never see INTERNAL content."""

    INTERNAL = "internal"
    PUBLIC = "public"


@dataclass(frozen=True)
class Document:
    """One knowledge-base document, loaded from any supported format and validated."""

    id: str
    title: str
    text: str  # Markdown-ish body: headings as '#', lists, tables
    path: str
    audience: Audience = Audience.INTERNAL
    type: str = "sop"
    regions: tuple[str, ...] = ("global",)
    products: tuple[str, ...] = ()
    version: str = "1"
    effective_date: date | None = None
    supersedes: str | None = None
    owner: str | None = None
    last_reviewed: date | None = None
    review_every_days: int | None = None
    url: str | None = None
    format: str = "md"
    content_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def review_due(self) -> date | None:
        """Date the document is next due for review, if it has a review cadence."""
        if self.last_reviewed is None or self.review_every_days is None:
            return None
        from datetime import timedelta

        return self.last_reviewed + timedelta(days=self.review_every_days)


@dataclass(frozen=True)
class Chunk:
    """A token-bounded piece of one document with its section path and inherited metadata."""

    chunk_id: str
    doc_id: str
    ordinal: int
    text: str  # the body as shown and quoted
    section_path: tuple[str, ...]
    token_count: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """Text that is embedded and BM25-indexed: title and section path prepended to the body."""
        head = " > ".join((self.metadata.get("title", ""),) + self.section_path)
        return f"{head}\n{self.text}" if head.strip() else self.text

    @property
    def lexical_text(self) -> str:
        """Text BM25 indexes: the title and section path count twice, since a heading names what the passage is
        about (measured: doc2dial recall@5 +0.013, mtrag unchanged; README.md (Benchmarks)). Markdown links are
        left out: link text describes the page it points to, not this passage, and a cross-reference bullet
        ("handle it under [Hacked account recovery](kb:sop-account-hacked)") otherwise out-scores the SOP it
        names (measured: kb_agent recall@1 +0.02, corpora unchanged or better; README.md (Procedural agent questions))."""
        head = " > ".join((self.metadata.get("title", ""),) + self.section_path)
        body = _MD_LINK_RE.sub(" ", self.text)
        return f"{head}\n{head}\n{body}" if head.strip() else body

    @property
    def section(self) -> str:
        """Human-readable section path."""
        return " > ".join(self.section_path)


@dataclass(frozen=True)
class Filters:
    """What a requester may see and what they asked to narrow to."""

    audience: Audience = Audience.INTERNAL  # PUBLIC requests never see INTERNAL chunks
    regions: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    as_of: date | None = None  # answer with the policy version in force on this date (default: today)
    include_superseded: bool = False


@dataclass(frozen=True)
class ScoredChunk:
    """A retrieved chunk with its fused score and the per-retriever ranks that produced it."""

    chunk: Chunk
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None
    dense_similarity: float | None = None


@dataclass
class SyncReport:
    """What an ingest changed; `failed` maps file path to the problem."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    chunks_embedded: int = 0
    chunks_total: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every file loaded."""
        return not self.failed

    def summary(self) -> dict[str, int]:
        """Counts per outcome, for the CLI and the console."""
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "removed": len(self.removed),
            "unchanged": len(self.unchanged),
            "failed": len(self.failed),
        }


@dataclass(frozen=True)
class Citation:
    """One numbered source of an answer, with the exact quoted span and the chunk it came from."""

    number: int
    doc_id: str
    title: str
    section: str
    quote: str
    chunk_id: str
    audience: Audience
    version: str = ""
    effective_date: str = ""
    url: str = ""
    regions: tuple[str, ...] = ()
    chunk_text: str = ""
    last_reviewed: str = ""
    review_due: str = ""
    superseded_by: str = ""


@dataclass(frozen=True)
class Escalation:
    """Where an agent should send the case, taken from SOP metadata or text."""

    team: str = ""
    queue: str = ""
    priority: str = ""
    source_doc_id: str = ""
    reason: str = ""


@dataclass
class Answer:
    """What every surface shows: the text, its verified citations, or an honest refusal."""

    question: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    refused: bool = False  # kept for compatibility: outcome == "refused"
    refusal_reason: str = ""
    confidence: float = 0.0
    outcome: str = "answered"  # answered | caution (agents: closest guidance, not confirmed) | refused
    escalation: Escalation | None = None
    handoff_offered: bool = False
    related: list[dict[str, str]] = field(default_factory=list)  # closest articles when refusing
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    composer: str = ""
    standalone_question: str = ""
    turn_decision: str = ""  # how the turn was read: "first", "new (...)" or "follow-up (...)" with its signals
    retrieved_doc_ids: list[str] = field(default_factory=list)
    unsupported_removed: int = 0
    blocked_reasons: list[str] = field(default_factory=list)  # why a public answer was withheld (audit only)
    fallback_reason: str = ""  # composer extractive-fallback: why the chat model's answer was not used

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form printed by the CLI (--json); blocked_reasons stays out (it names internal content)."""
        from dataclasses import asdict

        d = asdict(self)
        d["answer"] = d.pop("text")
        d.pop("blocked_reasons")
        for c in d["citations"]:
            c["audience"] = c["audience"].value if isinstance(c["audience"], Audience) else c["audience"]
            c["section_path"] = c["section"]
        return d
