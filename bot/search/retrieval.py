"""Hybrid retrieval: dense (Chroma) + BM25 fused, always under the requester's Filters.

How a search runs (every step measured on ../shared/corpora; benchmarks/retrieval.py and
docs/benchmarks.md have the figures):
1. The question alone is searched densely and with BM25 (BM25 counts each chunk's title and section path twice:
   Chunk.lexical_text).
2. With a conversation, a second pair of searches uses the question plus the recent user turns: a blended
   vector and a BM25 query whose history terms weigh less than the question's. Each turn counts by its recency
   and by how much it says (idf mass), so "yes, thanks" adds next to nothing. Searching the question alone as
   well keeps a conversation that changed topic from dragging in the previous topic's documents.
3. The lists are fused by a weighted sum of min-max normalised scores (or by reciprocal rank, if configured).
4. Document-level signals re-rank the fused list, so the document *about* a topic outranks documents that only
   mention or link to it: the share of the question's terms in the document's title, how strongly a second chunk
   of the same document matches, links to it from other top chunks whose link text has the question's words
   (link text itself is left out of BM25: Chunk.lexical_text), and two hints read from the question (bot.answer.condense.question_intent): for an
   agent's procedural question ("what do I do", "how do I handle") a prior for SOPs, the agent's authoritative
   procedure; and the regions of the places it names ("a user in Germany" -> EU, or the condensed question's
   regions) favour documents for those regions, and among regional variants of one procedure the requester's
   region's variant ranks first (bot/search/ranking.py). Hints only re-rank: they never hide a chunk the filters
   allow.
5. Chunks whose text nearly repeats a better-ranked chunk of another document (the same paragraph copied into
   several articles) move behind the distinct ones, so the top k are not several copies of one passage.
`companions` then offers the answer stage the main document's numbered steps and deadline passages when a
procedural or timing question's top k left them out.
Filters go to both searches through the index (Chroma `where` + the same rule as a BM25 mask), so dense and
lexical candidates are always drawn from the same visible set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from bot.core.config import Settings
from bot.core.models import Audience, Chunk, Filters, ScoredChunk
from bot.core.profile import DEFAULT_PROFILE, KBProfile
from bot.core.text import analyze
from bot.core.units import DEADLINE_WORDS_RE, DURATION_RE
from bot.ingest.index import KnowledgeIndex, matches
from bot.ingest.metadata import doc_regions
from bot.search.intent import QuestionIntent, question_intent
from bot.search.ranking import prefer_regional_variants

# History handling. Measured on doc2dial (follow-ups that stay on one page) and mtrag (conversations that drift
# between passages); the values sit inside a plateau where neighbours score within a question or two.
HISTORY_DECAY = 0.7  # weight of each earlier user turn relative to the next one
HISTORY_INFO_SATURATION = 15.0  # idf mass at which a turn counts fully (a topical sentence); "yes" is ~0
HISTORY_VECTOR_WEIGHT = 1.0  # the history direction added to the question vector, both unit length
HISTORY_SMALL_TALK = 0.2  # a history weighing less than this says next to nothing ("hi", "ok, thanks!")
HISTORY_TERM_WEIGHT = 0.6  # a history term's BM25 weight relative to a question term (times the turn's weight)
SHINGLE = 5  # words per shingle for near-duplicate detection

# Document-level re-ranking, each a share of the best fused score (measured on the kb/ suites, checked on
# ../shared/corpora; docs/benchmarks.md has the figures).
TITLE_WEIGHT = 0.3  # times the idf-weighted share of question terms in the document title
SUPPORT_WEIGHT = 0.3  # times the document's second-best chunk score (several matching chunks: about the topic)
SOP_PRIOR = 0.5  # an agent's procedural question: SOPs are the procedure to follow
REGION_PRIOR = 0.1  # the question names a country in one of the document's regions
ANCHOR_WEIGHT = 0.2  # times the best link to the document from a top chunk whose link text has the question's words

_WORD_RE = re.compile(r"[a-z0-9]+")
_NUMBERED_LINE_RE = re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE)


def deadline_score(chunk: Chunk, profile: KBProfile = DEFAULT_PROFILE) -> int:
    """How much a chunk reads like the statement of a deadline or SLA: a heading that names one (per the KB
    profile), durations, and deadline words."""
    score = 2 * profile.section("deadline", " ".join(chunk.section_path))
    score += min(3, len(DURATION_RE.findall(chunk.text)))
    score += min(2, len(DEADLINE_WORDS_RE.findall(chunk.text)))
    return score


def main_document(chunks: Sequence[Chunk], audience: Audience | str, within: int = 3) -> str:
    """The document an answer is about: for agents the best-ranked SOP among the first `within` chunks (the
    agent's authoritative procedure), else the first chunk's document. The composer uses the same rule."""
    if not chunks:
        return ""
    if Audience(audience) is Audience.INTERNAL:
        for chunk in chunks[:within]:
            if chunk.metadata.get("type") == "sop":
                return chunk.doc_id
    return chunks[0].doc_id


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


def score_fusion(results: Sequence[Sequence[tuple[Chunk, float]]], weights: Sequence[float]
                 ) -> list[tuple[Chunk, float, list[int | None]]]:
    """Fuse scored lists: each list's scores min-max normalised to [0, 1], then a weighted sum per chunk."""
    scores: dict[str, float] = {}
    ranks: dict[str, list[int | None]] = {}
    chunks: dict[str, Chunk] = {}
    for li, (result, w) in enumerate(zip(results, weights)):
        if not result:
            continue
        values = [s for _, s in result]
        hi, lo = max(values), min(values)
        for rank, (chunk, s) in enumerate(result, start=1):
            cid = chunk.chunk_id
            chunks[cid] = chunk
            norm = (s - lo) / (hi - lo) if hi > lo else 1.0
            scores[cid] = scores.get(cid, 0.0) + w * norm
            ranks.setdefault(cid, [None] * len(results))[li] = rank
    order = sorted(scores, key=lambda c: -scores[c])
    return [(chunks[c], scores[c], ranks[c]) for c in order]


def user_turns(history: Sequence[dict[str, str]] | None) -> list[str]:
    """Texts of the user turns of a conversation, oldest first (accepts "text" or "content")."""
    return [(h.get("text") or h.get("content") or "") for h in history or []
            if h.get("role") in ("user", "human")]


def history_text(history: Sequence[dict[str, str]] | None, turns: int = 2) -> str:
    """The last few user turns of a conversation, newest last."""
    return " ".join(user_turns(history)[-turns:]) if history else ""


def shingles(text: str, n: int = SHINGLE) -> frozenset[tuple[str, ...]]:
    """Word n-grams of text (lower-cased), for near-duplicate detection."""
    words = _WORD_RE.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(zip(*(words[i:] for i in range(n))))


def jaccard(a: frozenset, b: frozenset, at_least: float = 0.0) -> float:
    """Jaccard similarity of two sets; 0 without intersecting them when it cannot reach `at_least`."""
    if not a or not b:
        return 0.0
    small, large = sorted((len(a), len(b)))
    if small < at_least * large:  # |a & b| <= small and |a | b| >= large bound the similarity
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True)
class ConversationQuery:
    """The question plus what the conversation adds: a blended vector and weighted BM25 terms."""

    vector: np.ndarray
    terms: dict[str, float]
    weight: float  # 0..1: how much the history says (sum of its turns' weights, capped at 1)


class HybridSearcher:
    """Dense + BM25 retrieval, fused, with conversation-aware follow-ups; the work behind the LangChain retriever.

    dense_weight and lexical_weight weigh the two kinds of list in the fusion (0.3 / 0.7 measured best with
    score fusion: BM25 is the sharper signal on support articles, the dense list rescues paraphrases).
    """

    def __init__(self, index: KnowledgeIndex, fetch_k: int = 40, rrf_k: int = 60,
                 dense_weight: float = 0.3, lexical_weight: float = 0.7, *,
                 fusion: Literal["score", "rrf"] = "score", history_turns: int = 4, history_weight: float = 1.5,
                 near_duplicate_jaccard: float = 0.6, title_weight: float = TITLE_WEIGHT,
                 support_weight: float = SUPPORT_WEIGHT, sop_prior: float = SOP_PRIOR,
                 region_prior: float = REGION_PRIOR, anchor_weight: float = ANCHOR_WEIGHT,
                 profile: KBProfile = DEFAULT_PROFILE, adaptive: bool = False):
        self.index = index
        self.adaptive = adaptive  # per-question dense/BM25 split (adaptive_weights)
        self.profile = profile  # the KB's region names and link syntax
        self.fetch_k = fetch_k
        self.rrf_k = rrf_k
        self.weights = (dense_weight, lexical_weight)
        self.fusion = fusion
        self.history_turns = history_turns
        self.history_weight = history_weight
        self.near_duplicate_jaccard = near_duplicate_jaccard
        self.title_weight, self.support_weight = title_weight, support_weight
        self.sop_prior, self.region_prior = sop_prior, region_prior
        self.anchor_weight = anchor_weight
        self._titles: tuple[str, dict[str, frozenset[str]]] = ("", {})  # generation name -> doc title terms

    @classmethod
    def from_settings(cls, index: KnowledgeIndex, settings: Settings) -> HybridSearcher:
        """A searcher configured from Settings (fetch_k, fusion, weights, history, near-duplicates)."""
        return cls(index, settings.fetch_k, settings.rrf_k, settings.dense_weight, settings.lexical_weight,
                   fusion=settings.fusion, history_turns=settings.history_turns,
                   history_weight=settings.history_weight,
                   near_duplicate_jaccard=settings.near_duplicate_jaccard, profile=settings.profile,
                   adaptive=settings.adaptive_fusion)

    # ---- conversation ----------------------------------------------------------------------------------
    # why: builds the search text from the question and history; each branch is one rule
    def conversation_query(self, query: str, qvec: np.ndarray,
                           history: Sequence[dict[str, str]] | None) -> ConversationQuery | None:
        """The question blended with its recent user turns, or None when the history adds nothing."""
        turns = [t for t in user_turns(history)[-self.history_turns:] if t.strip()] if self.history_turns else []
        if not turns:
            return None
        lexical = self.index.require_generation().lexical
        weights = []
        for age, text in enumerate(reversed(turns)):
            informative = min(1.0, lexical.information(text) / HISTORY_INFO_SATURATION)
            weights.append(HISTORY_DECAY ** age * informative)
        weights.reverse()  # back to oldest-first, matching turns
        kept = [(t, w) for t, w in zip(turns, weights) if w > 0]
        if not kept:
            return None
        vectors = self.index.embedder.embed_array([t for t, _ in kept])
        mix = sum(w * v for (_, w), v in zip(kept, vectors))
        norm = float(np.linalg.norm(mix))
        if norm == 0.0:
            return None
        # a history of small talk pulls (and weighs in the fusion) as little as it says
        weight = min(1.0, sum(w for _, w in kept))
        vec = qvec + HISTORY_VECTOR_WEIGHT * weight * mix / norm
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        terms: dict[str, float] = {}
        for t in analyze(query):
            terms[t] = terms.get(t, 0.0) + 1.0
        for text, w in kept:
            for t in analyze(text):
                terms[t] = terms.get(t, 0.0) + HISTORY_TERM_WEIGHT * w
        return ConversationQuery(vec, terms, weight)

    def adaptive_weights(self, query: str, lexical: list[tuple[Chunk, float]]) -> tuple[float, float]:
        """Dense and BM25 weights for this question: BM25 keeps its weight in the share of the question's idf mass
        that its best chunk contains, and the rest moves to the dense list. A paraphrase shares few words with
        the passage that answers it, so its BM25 list is noise and the dense list decides; a question in the
        KB's own words keeps the fixed split. No fitted number: the split itself is the fixed one."""
        dense, lex = self.weights
        terms = set(analyze(query))
        if not lexical or not terms:
            return dense + lex, 0.0
        bm25 = self.index.require_generation().lexical
        mass = {t: bm25.idf(t) for t in terms}
        total = sum(mass.values())
        if total <= 0:
            return dense + lex, 0.0
        have = set(analyze(lexical[0][0].lexical_text))
        share = sum(w for t, w in mass.items() if t in have) / total
        return dense + lex * (1.0 - share), lex * share

    # ---- search ----------------------------------------------------------------------------------------
    # why: dense + BM25 + fusion + filters for one query in the order they apply
    def search(self, query: str, filters: Filters, k: int = 6,
               history: Sequence[dict[str, str]] | None = None,
               regions: Sequence[str] = ()) -> list[ScoredChunk]:
        """Top-k chunks for query under filters; history (earlier turns) steers follow-up questions; regions (the
        condensed question's inferred KB regions) replace the regions the query text names, when given.

        dense_similarity is the cosine between the question itself (not the history blend) and the chunk, when
        the chunk came back from the question's own dense search."""
        qvec = self.index.embedder.embed_array([query])[0]
        lists: list[list[tuple[Chunk, float]]] = [
            self.index.dense_search(qvec, filters, self.fetch_k),
            self.index.lexical_search(query, filters, self.fetch_k),
        ]
        list_weights = [1.0, 1.0]
        conv = self.conversation_query(query, qvec, history)
        if conv is not None:
            lists.append(self.index.dense_search(conv.vector, filters, self.fetch_k))
            # the weighted-term query goes through the same filtered path as a text query
            lists.append(self.index.lexical_search(conv.terms, filters, self.fetch_k))  # type: ignore[arg-type]
            list_weights += [self.history_weight * conv.weight] * 2
        kinds = [0, 1] * (len(lists) // 2)  # 0 = dense, 1 = lexical
        weights = self.adaptive_weights(query, lists[1]) if self.adaptive else self.weights
        if self.fusion == "rrf":
            fused = reciprocal_rank_fusion([[c for c, _ in l] for l in lists],
                                           [w * weights[kd] for w, kd in zip(list_weights, kinds)],
                                           self.rrf_k)
        else:
            fused = score_fusion(lists, [w * weights[kd] for w, kd in zip(list_weights, kinds)])
        # title, link and second-chunk evidence count for a question on its own (or after small talk): in a
        # conversation that drifts between topics they pull the earlier topic's documents up (measured on mtrag:
        # R@5 0.961 -> 0.937 at full weight, 0.953 fading with the history's weight, 0.961 off)
        alone = conv is None or conv.weight < HISTORY_SMALL_TALK
        intent = question_intent(query, self.profile)
        if regions:
            intent = replace(intent, regions=tuple(regions))
        fused = self._rerank_documents(dict.fromkeys(analyze(query), 1.0), fused, filters, intent,
                                       document_evidence=1.0 if alone else 0.0)
        fused = prefer_regional_variants(fused, intent.regions)
        fused = self._demote_near_duplicates(fused, k)
        sims = {c.chunk_id: s for c, s in lists[0]}
        top = fused[:k]
        best = top[0][1] if top else 1.0
        out = []
        for chunk, score, ranks in top:
            dense = [r for r, kd in zip(ranks, kinds) if kd == 0 and r is not None]
            lexical = [r for r, kd in zip(ranks, kinds) if kd == 1 and r is not None]
            out.append(ScoredChunk(chunk=chunk, score=score / best if self.fusion == "score" and best else score,
                                   dense_rank=min(dense) if dense else None,
                                   lexical_rank=min(lexical) if lexical else None,
                                   dense_similarity=sims.get(chunk.chunk_id)))
        return out

    # ---- document-level signals ------------------------------------------------------------------------
    def _title_terms(self, gen_name: str, doc_id: str, title: str) -> frozenset[str]:
        """Analysed terms of a document title, cached per served generation."""
        if self._titles[0] != gen_name:
            self._titles = (gen_name, {})
        cache = self._titles[1]
        terms = cache.get(doc_id)
        if terms is None:
            terms = cache[doc_id] = frozenset(analyze(title))
        return terms

    def _anchor_credit(self, q_terms: dict[str, float], total: float,
                       fused: list[tuple[Chunk, float, list[int | None]]], depth: int = 20) -> dict[str, float]:
        """Credit for documents that well-ranked chunks link to with the question's words as link text.

        "If the user says they did not make the purchase, follow [Unauthorised payments](kb:sop-unauthorised-
        payments-psd2)" says which document handles the case; as in web search, link text describes its target.
        Credit = the linking chunk's score (share of the best) times the idf share of question terms in the link
        text; the best link per target counts."""
        top = fused[0][1] if fused else 0.0
        credit: dict[str, float] = {}
        if top <= 0:
            return credit
        for chunk, score, _ in fused[:depth]:
            for m in self.profile.link.finditer(chunk.text):  # the KB's link syntax: text, target id
                target = m.group(2)
                if target == chunk.doc_id:
                    continue
                link_terms = set(analyze(m.group(1)))
                share = sum(w for t, w in q_terms.items() if t in link_terms) / total
                value = share * score / top
                if value > credit.get(target, 0.0):
                    credit[target] = value
        return credit

    # why: rerank with document-level signals in one loop over the fused hits
    def _rerank_documents(self, terms: dict[str, float], fused: list[tuple[Chunk, float, list[int | None]]],
                          filters: Filters, intent: QuestionIntent, document_evidence: float = 1.0
                          ) -> list[tuple[Chunk, float, list[int | None]]]:
        """Add document-level evidence to every chunk's fused score (same bonus for all chunks of a document).

        A short help section or a cross-reference bullet that names a topic by its link text can out-score the
        long SOP chunks about that topic; the title, a second matching chunk, links to it from other top chunks
        and the question's hints say which document is about it. document_evidence (0..1) scales the first
        three. Bonuses are shares of the best fused score, so score and rank fusion both work; the list is only
        re-ordered, never cut."""
        title_weight = self.title_weight * document_evidence
        support_weight = self.support_weight * document_evidence
        anchor_weight = self.anchor_weight * document_evidence
        if len(fused) < 2 or not (title_weight or support_weight or anchor_weight or self.sop_prior
                                  or self.region_prior):
            return fused
        top = fused[0][1]
        gen = self.index.require_generation()
        lexical = gen.lexical
        q_terms = {t: w * lexical.idf(t) for t, w in terms.items()}
        total = sum(q_terms.values())
        by_doc: dict[str, list[float]] = {}
        for chunk, score, _ in fused:
            by_doc.setdefault(chunk.doc_id, []).append(score)
        procedure = self.sop_prior and intent.procedural and filters.audience is Audience.INTERNAL
        hints = set(intent.regions)
        bonus: dict[str, float] = {}
        anchors = self._anchor_credit(q_terms, total, fused) if anchor_weight and total else {}
        for chunk, _, _ in fused:
            doc = chunk.doc_id
            if doc in bonus:
                continue
            meta = chunk.metadata
            b = 0.0
            if total and title_weight:
                title = self._title_terms(gen.name, doc, str(meta.get("title", "")))
                b += title_weight * sum(w for t, w in q_terms.items() if t in title) / total
            scores = by_doc[doc]
            if support_weight and len(scores) > 1 and top > 0:
                b += support_weight * sorted(scores, reverse=True)[1] / top
            if anchor_weight and doc in anchors:
                b += anchor_weight * anchors[doc]
            if procedure and meta.get("type") == "sop":
                b += self.sop_prior
            if hints and self.region_prior and hints & set(doc_regions(meta)):
                b += self.region_prior
            bonus[doc] = b * top
        reranked = [(c, s + bonus[c.doc_id], r) for c, s, r in fused]
        reranked.sort(key=lambda x: -x[1])
        return reranked

    # why: picks the top document's companion chunks (steps, deadline) in one pass
    def companions(self, scored: Sequence[ScoredChunk], query: str, filters: Filters, limit: int = 2
                   ) -> list[ScoredChunk]:
        """Chunks of the top document that a procedural or timing question needs and the top k left out: those
        holding its numbered steps (procedural; the longest lists first, at most `limit`) and the one that reads
        most like its deadline or SLA (timing).

        The answer stage offers them to the composer after the ranked sources, so "what do I do and by when?"
        can be answered with the SOP's steps and deadline even when the question's words matched its scope
        section best. Every chunk passes the requester's filters again."""
        if not scored:
            return []
        intent = question_intent(query, self.profile)
        if not (intent.procedural or intent.timing):
            return []
        gen = self.index.require_generation()
        main = main_document([s.chunk for s in scored], filters.audience)
        have = {s.chunk.chunk_id for s in scored}
        doc = gen.documents.get(main, {})
        steps: list[tuple[int, Chunk]] = []
        timing: list[tuple[int, Chunk]] = []
        for cid in doc.get("chunk_ids", []):
            pos = gen.by_id.get(cid)
            if pos is None or cid in have:
                continue
            chunk = gen.chunks[pos]
            if not matches(chunk.metadata, filters):
                continue
            numbered = len(_NUMBERED_LINE_RE.findall(chunk.text))
            if intent.procedural and numbered >= 2:
                steps.append((numbered, chunk))
            elif intent.timing and DURATION_RE.search(chunk.text):
                timing.append((deadline_score(chunk, self.profile), chunk))
        steps.sort(key=lambda x: -x[0])  # stable: the longer list first, else document order
        timing.sort(key=lambda x: -x[0])
        wanted = [c for _, c in steps[:limit]] + [c for _, c in timing[:1]]
        return [ScoredChunk(chunk=c, score=0.0) for c in wanted]

    def _demote_near_duplicates(self, fused: list[tuple[Chunk, float, list[int | None]]], k: int
                                ) -> list[tuple[Chunk, float, list[int | None]]]:
        """Move chunks that nearly repeat a better-ranked chunk of another document behind the distinct ones."""
        if not self.near_duplicate_jaccard or self.near_duplicate_jaccard >= 1.0:
            return fused
        kept: list[tuple[Chunk, float, list[int | None]]] = []
        kept_shingles: list[tuple[str, frozenset]] = []
        later: list[tuple[Chunk, float, list[int | None]]] = []
        for pos, item in enumerate(fused):
            if len(kept) >= k:  # the top k are settled; the order of the rest does not matter to the caller
                return kept + later + fused[pos:]
            chunk = item[0]
            sh = shingles(chunk.text)
            limit = self.near_duplicate_jaccard
            if any(doc != chunk.doc_id and jaccard(sh, other, limit) >= limit for doc, other in kept_shingles):
                later.append(item)
                continue
            kept.append(item)
            kept_shingles.append((chunk.doc_id, sh))
        return kept + later


def to_langchain(scored: ScoredChunk) -> LCDocument:
    """A retrieved chunk as a LangChain Document carrying its score and metadata."""
    c = scored.chunk
    meta: dict[str, Any] = dict(c.metadata)
    meta.update(chunk_id=c.chunk_id, score=scored.score, dense_rank=scored.dense_rank,
                lexical_rank=scored.lexical_rank, dense_similarity=scored.dense_similarity,
                section=c.section)
    return LCDocument(page_content=c.text, metadata=meta, id=c.chunk_id)


class HybridRetriever(BaseRetriever):
    """Dense + BM25 retrieval, fused, always under the requester's filters."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: HybridSearcher
    filters: Filters = Filters()
    k: int = 6
    history: list[dict[str, str]] = []  # noqa: RUF012 - a pydantic field: the default is copied per instance

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> list[LCDocument]:
        return [to_langchain(s) for s in self.searcher.search(query, self.filters, self.k, self.history)]
