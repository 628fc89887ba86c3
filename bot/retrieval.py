"""Hybrid retrieval: dense (Chroma) + BM25 fused by reciprocal rank, always under the requester's Filters."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from bot.index import KnowledgeIndex
from bot.models import Chunk, Filters, ScoredChunk

HISTORY_WEIGHT = 0.35  # how much earlier user turns pull the query vector (measured on doc2dial follow-ups)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Chunk]], weights: Sequence[float], k: int = 60
                           ) -> list[tuple[Chunk, float, list[int | None]]]:
    """Fuse ranked lists: score = sum of weight / (k + rank); returns (chunk, score, rank in each list)."""
    scores: dict[str, float] = {}
    ranks: dict[str, list[int | None]] = {}
    chunks: dict[str, Chunk] = {}
    for li, (ranking, w) in enumerate(zip(rankings, weights)):
        for rank, chunk in enumerate(ranking, start=1):
            cid = chunk.chunk_id
            chunks[cid] = chunk
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
            ranks.setdefault(cid, [None] * len(rankings))[li] = rank
    order = sorted(scores, key=lambda c: -scores[c])
    return [(chunks[c], scores[c], ranks[c]) for c in order]


def history_text(history: Sequence[dict[str, str]] | None, turns: int = 2) -> str:
    """The last few user turns of a conversation, newest last."""
    if not history:
        return ""
    users = [h.get("text") or h.get("content") or "" for h in history if h.get("role") in ("user", "human")]
    return " ".join(users[-turns:])


class HybridSearcher:
    """Dense + BM25 retrieval fused by reciprocal rank; the shared work behind the LangChain retriever."""

    def __init__(self, index: KnowledgeIndex, fetch_k: int = 40, rrf_k: int = 60,
                 dense_weight: float = 1.0, lexical_weight: float = 1.0):
        self.index = index
        self.fetch_k = fetch_k
        self.rrf_k = rrf_k
        self.weights = (dense_weight, lexical_weight)

    def search(self, query: str, filters: Filters, k: int = 6,
               history: Sequence[dict[str, str]] | None = None) -> list[ScoredChunk]:
        """Top-k chunks for query under filters; history (earlier turns) steers follow-up questions."""
        prior = history_text(history)
        embedder = self.index.embedder
        vec = embedder.embed_array([query])[0]
        if prior:
            pvec = embedder.embed_array([prior])[0]
            vec = vec + HISTORY_WEIGHT * pvec
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        dense = self.index.dense_search(vec, filters, self.fetch_k)
        lexical_query = f"{query} {prior}" if prior else query
        lexical = self.index.lexical_search(lexical_query, filters, self.fetch_k)
        fused = reciprocal_rank_fusion([[c for c, _ in dense], [c for c, _ in lexical]], self.weights, self.rrf_k)
        sims = {c.chunk_id: s for c, s in dense}
        return [
            ScoredChunk(chunk=c, score=s, dense_rank=r[0], lexical_rank=r[1], dense_similarity=sims.get(c.chunk_id))
            for c, s, r in fused[:k]
        ]


def to_langchain(scored: ScoredChunk) -> LCDocument:
    """A retrieved chunk as a LangChain Document carrying its score and metadata."""
    c = scored.chunk
    meta: dict[str, Any] = dict(c.metadata)
    meta.update(chunk_id=c.chunk_id, score=scored.score, dense_rank=scored.dense_rank,
                lexical_rank=scored.lexical_rank, dense_similarity=scored.dense_similarity,
                section=c.section)
    return LCDocument(page_content=c.text, metadata=meta, id=c.chunk_id)


class HybridRetriever(BaseRetriever):
    """Dense + BM25 retrieval fused by reciprocal rank, always under the requester's filters."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: HybridSearcher
    filters: Filters = Filters()
    k: int = 6
    history: list[dict[str, str]] = []

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> list[LCDocument]:
        return [to_langchain(s) for s in self.searcher.search(query, self.filters, self.k, self.history)]
