"""Document-level ranking rules applied after fusion (bot/search/retrieval.py calls them in order)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.models import Chunk
from bot.core.text import analyze
from bot.ingest.metadata import doc_regions

REGIONAL_WINDOW = 6  # documents, from the top, among which a regional variant is swapped for the requester's

Fused = list[tuple[Chunk, float, list[int | None]]]  # (chunk, fused score, rank in each list), best first


def _regional_documents(fused: Fused, window: int) -> dict[str, tuple[Chunk, float, set[str]]]:
    """The first `window` documents that are for specific regions (not global): doc id -> (best chunk, score,
    regions)."""
    firsts: dict[str, tuple[Chunk, float]] = {}
    for chunk, score, _ in fused:
        if chunk.doc_id not in firsts:
            firsts[chunk.doc_id] = (chunk, score)
            if len(firsts) == window:
                break
    specific = {d: (c, sc, set(doc_regions(c.metadata))) for d, (c, sc) in firsts.items()}
    return {d: v for d, v in specific.items() if v[2] and "global" not in v[2]}


def prefer_regional_variants(fused: Fused,
                             regions: Sequence[str], window: int = REGIONAL_WINDOW) -> Fused:
    """Rank the requester's regional variant of a procedure above the other regions' variants.

    Variants are documents among the first `window` of the same type, each for specific regions (not
    global), whose titles share a word: "Shop returns in the EU and UK" and "Shop returns in the US". When
    the question's regions (Lyon -> EU) match one variant and a rival variant for other regions ranks above
    it, the matching one moves just above that rival; every other document keeps its place. A tie-break, not
    a prior: the right region's rule is what the agent must quote."""
    wanted = set(regions)
    if not wanted or not fused:
        return fused
    specific = _regional_documents(fused, window)
    lift: dict[str, float] = {}
    for doc, (chunk, score, own) in specific.items():
        if not own & wanted:
            continue
        title = set(analyze(str(chunk.metadata.get("title", ""))))
        rivals = [sc for d, (c, sc, rs) in specific.items()
                  if d != doc and not rs & wanted and sc > score
                  and c.metadata.get("type") == chunk.metadata.get("type")
                  and title & set(analyze(str(c.metadata.get("title", ""))))]
        if rivals:
            lift[doc] = max(rivals) - score + 1e-6 * abs(max(rivals))
    if not lift:
        return fused
    lifted = [(c, s + lift.get(c.doc_id, 0.0), r) for c, s, r in fused]
    lifted.sort(key=lambda x: -x[1])
    return lifted

