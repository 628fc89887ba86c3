"""Records the store hands to callers (handoffs, audit entries, analytics) and the helpers that build them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

HANDOFF_STATUSES = ("open", "claimed", "closed")


# ---- records handed to callers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Handoff:
    """A help-center conversation handed to a human, with its (redacted) transcript."""

    id: int
    conversation_id: str
    status: str
    transcript: list[dict[str, str]]
    contact: str | None
    reason: str | None
    created_at: str
    updated_at: str
    claimed_by: str | None = None
    closed_note: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """Who did what, when, and which document versions were cited."""

    id: int
    at: str
    who: str | None
    surface: str | None
    action: str
    conversation_id: str | None
    message_id: int | None
    documents: list[dict[str, Any]]
    detail: str | None


@dataclass(frozen=True)
class Summary:
    """Headline numbers of the Analytics page over a time window."""

    questions: int
    answered: int
    refused: int
    errors: int
    answer_rate: float | None  # answered / questions
    refusal_rate: float | None  # refused / questions
    feedback_count: int
    feedback_score: float | None  # mean rating in [-1, 1]
    positive_share: float | None  # thumbs up / all ratings: the CSAT proxy
    latency_p50_ms: float | None
    latency_p95_ms: float | None


@dataclass
class ContentGap:
    """Unanswered questions that mean the same thing: one missing or weak piece of content."""

    label: str  # the most frequently asked wording
    count: int
    questions: list[str] = field(default_factory=list)
    last_asked: str = ""


@dataclass(frozen=True)
class CitedDocument:
    """How often a document was cited, and which versions."""

    doc_id: str
    title: str
    citations: int
    answers: int
    versions: tuple[str, ...]
    last_cited: str


@dataclass(frozen=True)
class StaleCitation:
    """A document that is still being cited although it is past review or superseded."""

    doc_id: str
    title: str
    citations: int
    last_cited: str
    reasons: tuple[str, ...]
    review_due: str = ""
    superseded_by: str = ""


def message_dict(row: Any) -> dict[str, Any]:
    """A stored message row as a dict with its JSON columns decoded."""
    d = dict(row)
    d["citations"] = json.loads(d["citations"] or "[]")
    d["timings"] = json.loads(d["timings"]) if d.get("timings") else {}
    d["escalation"] = json.loads(d["escalation"]) if d.get("escalation") else None
    d["refused"] = bool(d["refused"])
    return d


def handoff_from_row(row: Any) -> Handoff:
    """A stored handoff row as a Handoff with its transcript decoded."""
    d = dict(row)
    d["transcript"] = json.loads(d["transcript"] or "[]")
    return Handoff(**d)


def now_utc() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def iso(at: datetime | None) -> str:
    """A time (now when None) as an ISO string in UTC with milliseconds: what the store keeps."""
    at = at or now_utc()
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def since_iso(days: int | None, now: datetime | None = None) -> str:
    """ISO lower bound of a window of `days` whole days ending today (all time when None)."""
    if days is None:
        return ""
    start = (now or now_utc()).astimezone(UTC).date() - timedelta(days=days - 1)
    return datetime(start.year, start.month, start.day, tzinfo=UTC).isoformat(timespec="milliseconds")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile of values, None when there are none."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def cluster_questions(items: Sequence[tuple[str, str]], embed: Callable[[list[str]], np.ndarray],
                      threshold: float = 0.72) -> list[ContentGap]:
    """Greedy cosine clustering of (question, asked_at) pairs; each cluster is labelled by its commonest wording."""
    if not items:
        return []
    # Identical wordings are one point with a weight, so repeated questions cost one embedding.
    counts: dict[str, list[str]] = {}
    for q, at in items:
        key = " ".join(q.split())
        counts.setdefault(key, []).append(at)
    texts = sorted(counts, key=lambda t: (-len(counts[t]), t))
    vecs = np.asarray(embed(texts), dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs / np.where(norms == 0, 1, norms)
    centroids: list[np.ndarray] = []
    members: list[list[int]] = []
    for i, v in enumerate(vecs):
        if centroids:
            sims = np.stack(centroids) @ v
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                members[best].append(i)
                c = vecs[members[best]].mean(axis=0)
                centroids[best] = c / (np.linalg.norm(c) or 1.0)
                continue
        centroids.append(v.copy())
        members.append([i])
    gaps = []
    for idx in members:
        qs = [texts[i] for i in idx]
        n = sum(len(counts[t]) for t in qs)
        last = max(max(counts[t]) for t in qs)
        gaps.append(ContentGap(label=qs[0], count=n, questions=qs, last_asked=last))
    gaps.sort(key=lambda g: (-g.count, g.label))
    return gaps
