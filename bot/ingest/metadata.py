"""Chunk metadata and the one filter rule over it: the Chroma `where` clause and `matches` say the same thing."""

from __future__ import annotations

from datetime import date
from typing import Any

from bot.core.audience import audience_of, visible_to
from bot.core.models import Audience, Chunk, Document, Filters

NEVER = 99991231  # superseded_ts of a document nothing replaces


def date_key(d: date | None) -> int:
    """A date as a sortable integer YYYYMMDD (0 for none)."""
    return d.year * 10000 + d.month * 100 + d.day if d else 0


def doc_metadata(doc: Document, superseded_ts: int, superseded_by: str | None) -> dict[str, Any]:
    """Flat, filterable metadata every chunk of a document carries (Chroma accepts scalars only)."""
    meta: dict[str, Any] = {
        "doc_id": doc.id,
        "title": doc.title,
        "audience": doc.audience.value,
        "type": doc.type,
        "version": doc.version,
        "effective_date": doc.effective_date.isoformat() if doc.effective_date else "",
        "effective_ts": date_key(doc.effective_date),
        "superseded_ts": superseded_ts,
        "superseded_by": superseded_by or "",
        "supersedes": doc.supersedes or "",
        "regions": ",".join(doc.regions),
        "products": ",".join(doc.products),
        "url": doc.url or "",
        "owner": doc.owner or "",
        "last_reviewed": doc.last_reviewed.isoformat() if doc.last_reviewed else "",
        "review_due": doc.review_due().isoformat() if doc.review_due() else "",
        "path": doc.path,
    }
    for r in doc.regions:
        meta[f"region_{r}"] = True
    for p in doc.products:
        meta[f"product_{p}"] = True
    if not doc.products:
        meta["product_any"] = True
    return meta


def chroma_where(filters: Filters) -> dict[str, Any] | None:
    """The Chroma `where` clause equivalent to `matches`; the audience rule is always part of it."""
    clauses: list[dict[str, Any]] = []
    if filters.audience is Audience.PUBLIC:
        clauses.append({"audience": {"$eq": "public"}})
    if filters.regions:
        ors = [{f"region_{r}": {"$eq": True}} for r in ("global",) + tuple(filters.regions)]
        clauses.append({"$or": ors})
    if filters.products:
        ors = [{f"product_{p}": {"$eq": True}} for p in ("any",) + tuple(filters.products)]
        clauses.append({"$or": ors})
    as_of = date_key(filters.as_of or date.today())
    clauses.append({"effective_ts": {"$lte": as_of}})
    if not filters.include_superseded:
        clauses.append({"superseded_ts": {"$gt": as_of}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def chroma_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a chunk's metadata Chroma stores: what `chroma_where` filters on, nothing else (titles, paths
    and text are read from the generation; Chroma keeps one metadata row per key and chunk)."""
    return {k: v for k, v in meta.items()
            if k in ("audience", "effective_ts", "superseded_ts") or k.startswith(("region_", "product_"))}


def vector_audience(chunk: Chunk) -> str:
    """The collection a chunk's vector lives in: public only when the document says so (fail closed)."""
    return audience_of(chunk.metadata.get("audience")).value


def visible_audiences(filters: Filters) -> tuple[str, ...]:
    """The per-audience collections a requester may search: the public sees the public collection only."""
    return ("public",) if filters.audience is Audience.PUBLIC else ("public", "internal")


def audience_where(filters: Filters) -> dict[str, Any] | None:
    """The part of the Chroma clause that is never left to post-filtering: public sees public only."""
    return {"audience": {"$eq": "public"}} if filters.audience is Audience.PUBLIC else None


def doc_regions(meta: dict[str, Any]) -> tuple[str, ...]:
    """The region codes a chunk's document is written for ("EU", "UK"; "global" for everyone), from its metadata."""
    r = meta.get("regions", "")
    return tuple(x for x in r.split(",") if x) if isinstance(r, str) else tuple(r or ())


def matches(meta: dict[str, Any], filters: Filters) -> bool:
    """Whether a chunk with this metadata is visible under the filters (same rule as `chroma_where`)."""
    if not visible_to(filters.audience, meta.get("audience")):
        return False
    if filters.regions and not any(meta.get(f"region_{r}") for r in ("global",) + tuple(filters.regions)):
        return False
    if filters.products and not any(meta.get(f"product_{p}") for p in ("any",) + tuple(filters.products)):
        return False
    as_of = date_key(filters.as_of or date.today())
    if meta.get("effective_ts", 0) > as_of:
        return False
    return filters.include_superseded or meta.get("superseded_ts", NEVER) > as_of
