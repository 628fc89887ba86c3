"""The index: Chroma vectors + BM25 + a manifest of content hashes, synced incrementally and swapped atomically.

Layout under the data directory:
  chroma/                 embedded Chroma store (absent when a Chroma server is configured)
  embed_cache.sqlite      vectors by (embedder, text hash)
  owner.lock, owner.json  the process that owns the embedded store (bot/ingest/chroma.py)
  current.json, gen/      the generation being served and its files (bot/ingest/generations.py)
Vectors live in one Chroma collection per audience: the public collection holds public chunks only, so a public
search never touches an internal vector (and needs no `where` clause on audience, which is Chroma's slow path).
An ingest writes the new chunks to Chroma, then a new generation, then swaps the pointer, then deletes stale
vectors. Killed at any point, the pointer still names a complete generation whose vectors are all in Chroma.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from bot.core.config import Settings, ensure_data_dir
from bot.core.errors import IndexUnavailableError
from bot.core.models import Chunk, Document, Filters, SyncReport
from bot.ingest.chroma import claim_embedded_store, open_chroma, register_chroma_ef
from bot.ingest.chunking import Chunker
from bot.ingest.embeddings import EmbeddingCache, build_embeddings, embed_with_cache, embedder_id
from bot.ingest.generations import collect_garbage, swap_pointer, write_generation
from bot.ingest.loaders import load_paths
from bot.ingest.metadata import (  # re-exported: callers import the filter rule from the index
    NEVER,
    audience_where,
    chroma_metadata,
    chroma_where,
    date_key,
    doc_metadata,
    matches,
    vector_audience,
    visible_audiences,
)
from bot.ingest.served import ServedGeneration
from bot.ingest.state import VECTOR_LAYOUT, Generation, open_generation, write_state

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class KnowledgeIndex:
    """Chroma + BM25 + manifest under one data directory; the one object ingest and retrieval share."""

    def __init__(self, settings: Settings, embedder=None):
        self.settings = settings
        self.data_dir = ensure_data_dir(Path(settings.data_dir))
        self._embedder = embedder
        self._embedder_name = embedder_id(settings)
        self._client = None
        self._owner: Any = None  # the owner lock of an embedded store, held as long as this index lives
        self._collections: dict[str, Any] = {}
        self._open_lock = threading.Lock()  # Chroma's client fails when several threads create it at once
        self.search_failure: str | None = None  # why the last vector search failed; None once one succeeds
        self._served = ServedGeneration(self.data_dir, self._load_generation, lambda gen: gen.name)

    # ---- shared plumbing -------------------------------------------------------------------------------
    @property
    def embedder(self):
        """The embedder, loaded on first use so an unchanged re-sync never pays for it."""
        if self._embedder is None:
            self._embedder = build_embeddings(self.settings)
        return self._embedder

    @embedder.setter
    def embedder(self, value) -> None:
        """Swap in a wrapping embedder (the answer service's memo); the vectors it returns must be the same."""
        self._embedder = value

    @property
    def _collection_base(self) -> str:
        return f"{self.settings.collection}-{hashlib.sha1(self._embedder_name.encode()).hexdigest()[:8]}"

    def collection(self, audience: str | None = None):
        """The Chroma collection of one audience ("public" or "internal"; None: the single collection of indexes
        built before vectors were split by audience), always opened with our embedding function."""
        key = audience or ""
        found = self._collections.get(key)
        if found is not None:
            return found
        with self._open_lock:
            if key in self._collections:
                return self._collections[key]
            ef_cls = register_chroma_ef()
            if self._client is None:
                if not self.settings.chroma_host:
                    self._owner = claim_embedded_store(self.data_dir)
                self._client = open_chroma(self.settings)
            name = f"{self._collection_base}-{audience}" if audience else self._collection_base
            try:
                self._collections[key] = self._client.get_or_create_collection(
                    name,
                    embedding_function=ef_cls(None, self._embedder_name),
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"embedder": self._embedder_name, "audience": audience or "all"},
                )
            except Exception as exc:
                raise IndexUnavailableError(f"Could not open Chroma collection '{name}': {exc}") from exc
            return self._collections[key]

    def open(self) -> None:
        """Open the Chroma client and the collections now (a server's warm-up), not in the first requests."""
        gen = self.generation()
        for aud in ("public", "internal") if gen is None or gen.split_by_audience else (None,):
            self.collection(aud)

    def vector_ids(self) -> set[str]:
        """Ids of every vector stored for this index, across the per-audience collections."""
        return {i for aud in ("public", "internal") for i in self.collection(aud).get(include=[])["ids"]}

    def vector_count(self) -> int:
        """Number of vectors stored for this index."""
        return sum(self.collection(aud).count() for aud in ("public", "internal"))

    def stored_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these chunks of the served generation, by chunk id: rows of the generation's
        mapped vectors.npy, or (a generation written without them) read from Chroma."""
        gen = self.require_generation()
        if gen.vectors is not None:
            return {cid: np.asarray(gen.vectors[gen.by_id[cid]]) for cid in chunk_ids if cid in gen.by_id}
        return self._chroma_vectors(gen, chunk_ids)

    def _chroma_vectors(self, gen: Generation, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        groups: dict[str | None, list[str]] = {}
        for cid in chunk_ids:
            pos = gen.by_id.get(cid)
            if pos is not None:
                aud = vector_audience(gen.chunks[pos]) if gen.split_by_audience else None
                groups.setdefault(aud, []).append(cid)
        out: dict[str, np.ndarray] = {}
        for aud, ids in groups.items():
            for start in range(0, len(ids), 5000):
                got = self.collection(aud).get(ids=ids[start:start + 5000], include=["embeddings"])
                for cid, vec in zip(got["ids"], got["embeddings"]):
                    out[cid] = np.asarray(vec, dtype=np.float32)
        return out

    def generation(self) -> Generation | None:
        """The generation being served, switched without a restart when an ingest in any process published a new
        one; inside pinned(), the one the request started with (bot/ingest/served.py)."""
        return self._served.get()

    def pinned(self) -> AbstractContextManager[None]:
        """Serve one generation to everything inside (one request): it never straddles a switch."""
        return self._served.pinned()

    def _load_generation(self, name: str, switching: bool) -> Generation:
        gen = open_generation(self.data_dir, name)
        if switching:  # while serving: BM25 and the leak facts now, not in the requests that follow, and never
            gen.lexical  # noqa: B018 - from a folder that a later ingest may already have collected
            gen.leak_facts()
        return gen

    def require_generation(self) -> Generation:
        """The served generation, or a clear error when nothing has been ingested yet."""
        gen = self.generation()
        if gen is None or not gen.chunks:
            raise IndexUnavailableError(
                f"The index in {self.data_dir} is empty: run `policydesk ingest` (or start the console, "
                "which ingests kb/ on first start)."
            )
        return gen

    # ---- ingest ----------------------------------------------------------------------------------------
    def sync(self, paths: Iterable[Path] | None = None, rebuild: bool = False,
             progress: Progress | None = None) -> SyncReport:
        """Bring the index in line with the files under paths: add, replace and remove, never losing the old one."""
        started = time.perf_counter()
        paths = list(paths or [self.settings.kb_dir])
        lock = FileLock(str(self.data_dir / "ingest.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise IndexUnavailableError(
                f"Another ingest holds {self.data_dir / 'ingest.lock'}; wait for it to finish."
            ) from exc
        try:
            report = self._sync_locked(paths, rebuild, progress)
        finally:
            lock.release()
        report.seconds = time.perf_counter() - started
        return report

    # why: the sync transaction under the lock: load, diff, embed, write, switch, clean up in order
    def _sync_locked(self, paths: list[Path], rebuild: bool, progress: Progress | None) -> SyncReport:
        report = SyncReport()
        old = self.generation()
        established = {} if old is None else {k: v["path"] for k, v in old.documents.items()}
        loaded = load_paths(paths, max_bytes=self.settings.max_document_bytes,
                            max_chars=self.settings.max_document_chars, established=established)
        report.failed = dict(loaded.failures)
        legacy = old is not None and not old.split_by_audience
        if legacy:
            log.info("Index in %s keeps vectors in one collection; re-indexing into per-audience collections "
                     "(vectors come from the embedding cache).", self.data_dir)
            rebuild = True
        if old is not None and not rebuild and old.split_by_audience and self.vector_count() < len(old.chunks):
            log.info("The Chroma store lacks vectors of the generation in %s (a new Chroma server?); re-indexing "
                     "(vectors come from the embedding cache).", self.data_dir)
            rebuild = True
        old_docs = {} if (old is None or rebuild) else old.documents
        old_by_path = {v["path"]: k for k, v in old_docs.items()}

        docs = {d.id: d for d in loaded.documents}
        superseded: dict[str, tuple[int, str]] = {}
        for d in docs.values():
            if d.supersedes:
                ts = date_key(d.effective_date)
                if d.supersedes not in superseded or ts < superseded[d.supersedes][0]:
                    superseded[d.supersedes] = (ts, d.id)

        # A file that fails to load keeps serving its last good version: a typo must not unpublish a policy.
        kept_failed = {old_by_path[p] for p in report.failed if p in old_by_path}

        plans: dict[str, tuple[Document, str, dict[str, Any]]] = {}
        for d in docs.values():
            sup_ts, sup_by = superseded.get(d.id, (NEVER, None))
            meta = doc_metadata(d, sup_ts, sup_by)
            doc_hash = hashlib.sha256((d.content_hash + json.dumps(meta, sort_keys=True)).encode()).hexdigest()
            plans[d.id] = (d, doc_hash, meta)
            if d.id not in old_docs:
                report.added.append(d.id)
            elif old_docs[d.id]["hash"] != doc_hash:
                report.updated.append(d.id)
            else:
                report.unchanged.append(d.id)
        report.removed = sorted(set(old_docs) - set(docs) - kept_failed)

        if not (report.added or report.updated or report.removed) and old is not None and not rebuild:
            report.chunks_total = len(old.chunks)
            self._finish_interrupted(old)
            if not old.persisted:  # written before generations kept their serving state: add it once
                name = self._publish(old.manifest, list(old.chunks), self._chroma_vectors(old, list(old.by_id)))
                self._served.forget()
                collect_garbage(self.data_dir, keep=name)
            return report

        # Chunk and embed what is new or changed.
        chunker = Chunker(self.settings.chunk_tokens, self.settings.chunk_overlap_tokens,
                          self.settings.tokenizer_encoding)
        new_chunks: list[Chunk] = []
        for doc_id in report.added + report.updated + (report.unchanged if old is None or rebuild else []):
            d, _, meta = plans[doc_id]
            new_chunks.extend(chunker.run(d, meta))
        if old is not None and not rebuild:
            keep_ids = set(report.unchanged) | kept_failed
            kept = [c for c in old.chunks if c.doc_id in keep_ids]
        else:
            kept = []
        live = kept + new_chunks
        report.chunks_total = len(live)

        new_vectors = np.zeros((0, 0), dtype=np.float32)
        if new_chunks:
            report.chunks_embedded, new_vectors = self._upsert(new_chunks, progress)
        vectors = self._live_vectors(old if kept else None, kept, new_vectors)

        # Write the new generation, then swap the pointer atomically.
        manifest_docs: dict[str, Any] = {}
        for doc_id, (d, doc_hash, meta) in plans.items():
            manifest_docs[doc_id] = {"path": d.path, "hash": doc_hash, "meta": meta, "format": d.format}
        for doc_id in kept_failed:
            manifest_docs[doc_id] = old_docs[doc_id]
        for c in live:
            manifest_docs[c.doc_id].setdefault("chunk_ids", []).append(c.chunk_id)
        kb_hash = hashlib.sha256("".join(sorted(v["hash"] for v in manifest_docs.values())).encode()).hexdigest()
        manifest = {
            "created": time.time(),
            "embedder": self._embedder_name,
            "vectors": VECTOR_LAYOUT,
            "kb_hash": kb_hash,
            "docs": manifest_docs,
            "last_sync": {**report.summary(), "failed_files": report.failed},
        }
        name = self._publish(manifest, live, vectors)
        self._served.forget()
        if progress:
            progress("cleanup", 0, 1)
        self._delete_stale(live)
        if legacy:
            self._drop_legacy_collection()
        collect_garbage(self.data_dir, keep=name)
        if progress:
            progress("cleanup", 1, 1)
        return report

    def _publish(self, manifest: dict[str, Any], live: list[Chunk], vectors: np.ndarray | dict[str, np.ndarray]
                 ) -> str:
        """Write a generation with its serving state and point current.json at it; returns its name."""
        if isinstance(vectors, dict):
            vectors = np.stack([vectors[c.chunk_id] for c in live]) if live else None
        name = write_generation(self.data_dir, manifest, live,
                                lambda folder: write_state(folder, live, vectors, manifest["docs"]))
        swap_pointer(self.data_dir, name)
        return name

    def _live_vectors(self, old: Generation | None, kept: list[Chunk], new_vectors: np.ndarray) -> np.ndarray:
        """Vectors of kept + new chunks, in that order: kept ones from the old generation's saved vectors (or,
        for a generation written without them, from Chroma), new ones as just embedded."""
        if not kept:
            return new_vectors
        if old is not None and old.vectors is not None:
            kept_vectors = np.asarray(old.vectors[[old.by_id[c.chunk_id] for c in kept]])
        else:
            got = self._chroma_vectors(old, [c.chunk_id for c in kept]) if old is not None else {}
            kept_vectors = np.stack([got[c.chunk_id] for c in kept])
        return np.concatenate([kept_vectors, new_vectors]) if len(new_vectors) else kept_vectors

    def _upsert(self, chunks: list[Chunk], progress: Progress | None) -> tuple[int, np.ndarray]:
        texts = [c.embed_text for c in chunks]
        cache = EmbeddingCache(self.data_dir / "embed_cache.sqlite", self._embedder_name)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("embed", done, len(texts))

        try:
            vectors, embedded = embed_with_cache(self.embedder, cache, texts, progress=tick)
        finally:
            cache.close()
        batch = 2000
        stored = 0
        for aud in ("public", "internal"):
            rows = [i for i, c in enumerate(chunks) if vector_audience(c) == aud]
            for start in range(0, len(rows), batch):
                part = rows[start : start + batch]
                self.collection(aud).upsert(
                    ids=[chunks[i].chunk_id for i in part],
                    embeddings=vectors[part],
                    metadatas=[chroma_metadata(chunks[i].metadata) for i in part],
                )
                stored += len(part)
                if progress:
                    progress("store", stored, len(chunks))
        return embedded, np.asarray(vectors, dtype=np.float32)

    def _delete_stale(self, live: list[Chunk]) -> None:
        """Remove vectors no generation serves any more (orphans of an interrupted ingest, and a document's old
        vectors in the other collection when its audience changed)."""
        for aud in ("public", "internal"):
            live_ids = {c.chunk_id for c in live if vector_audience(c) == aud}
            existing = self.collection(aud).get(include=[])["ids"]
            stale = [i for i in existing if i not in live_ids]
            for start in range(0, len(stale), 5000):
                self.collection(aud).delete(ids=stale[start : start + 5000])

    def _finish_interrupted(self, gen: Generation) -> None:
        """Clean up after a run killed between the pointer swap and its cleanup: otherwise an unchanged KB
        returns early and its orphan vectors and old generation folder stay for good."""
        leftovers = collect_garbage(self.data_dir, keep=gen.name)
        stale = gen.split_by_audience and self.vector_count() != len(gen.chunks)
        if stale:
            self._delete_stale(gen.chunks)
        if leftovers or stale:
            log.info("Cleaned up after an interrupted ingest in %s: %s%s", self.data_dir, ", ".join(leftovers),
                     " and orphan vectors" if stale else "")

    def _drop_legacy_collection(self) -> None:
        try:
            self.collection(None)  # opens the client and confirms the name
            self._client.delete_collection(self._collection_base)
        except Exception as exc:  # noqa: BLE001 - the new generation serves already; an old collection is only space
            log.warning("Could not delete the old single collection %s: %s", self._collection_base, exc)
        self._collections.pop("", None)

    # ---- search ----------------------------------------------------------------------------------------
    def dense_search(self, query: str | np.ndarray, filters: Filters, k: int) -> list[tuple[Chunk, float]]:
        """Top-k chunks by cosine similarity under filters (only chunks of the served generation).

        The audience rule is structural: a public requester's query runs against the public collection only.
        Chroma's filtered HNSW query is slow (about 180 ms at 100k chunks for a single equality clause, 320 ms
        for the full filter, against 1.4 ms unfiltered), so the narrowing filters (regions, products, dates) are
        applied to an over-fetched candidate list, and the full clause is sent only when that leaves fewer than k.
        """
        gen = self.require_generation()
        vec = self.embedder.embed_array([query])[0] if isinstance(query, str) else query
        if gen.split_by_audience:
            parts = [(aud, gen.by_audience.get(aud, 0)) for aud in visible_audiences(filters)]
        else:  # an index written before the split: one collection, audience in the where clause
            parts = [(None, len(gen.chunks))]
        n = 4 * k + 10
        out = self._dense_query(gen, vec, filters, parts, n, None, k)
        if len(out) < k and any(n < size for _, size in parts):
            out = self._dense_query(gen, vec, filters, parts, k + 10, chroma_where(filters), k)
        return out

    def _dense_query(self, gen: Generation, vec: np.ndarray, filters: Filters, parts: list[tuple[str | None, int]],
                     n: int, where: dict[str, Any] | None, k: int) -> list[tuple[Chunk, float]]:
        hits: list[tuple[float, str]] = []
        for aud, size in parts:
            if size == 0:
                continue
            clause = where if (where is not None or aud is not None) else audience_where(filters)
            try:
                res = self.collection(aud).query(query_embeddings=[vec], n_results=min(n, size), where=clause,
                                                 include=["distances"])
            except IndexUnavailableError as exc:
                self.search_failure = str(exc)
                raise
            except Exception as exc:
                self.search_failure = f"Vector search failed: {exc}"
                raise IndexUnavailableError(self.search_failure) from exc
            self.search_failure = None
            hits.extend((float(d), cid) for cid, d in zip(res["ids"][0], res["distances"][0]))
        hits.sort()
        out: list[tuple[Chunk, float]] = []
        for dist, cid in hits:
            pos = gen.by_id.get(cid)
            if pos is None:  # a vector written by an ingest that has not (yet) been swapped in
                continue
            chunk = gen.chunks[pos]
            if not matches(chunk.metadata, filters):  # every filter, and the audience rule a second time
                continue
            out.append((chunk, 1.0 - dist))
            if len(out) == k:
                break
        return out

    def lexical_search(self, query: str, filters: Filters, k: int) -> list[tuple[Chunk, float]]:
        """Top-k chunks by BM25 under the same filters."""
        gen = self.require_generation()
        hits = gen.lexical.search(query, k, mask=gen.mask(filters))
        return [(gen.chunks[i], s) for i, s in hits]

    def stats(self) -> dict[str, Any]:
        """Counts of documents and chunks by audience and type, and the last sync summary."""
        gen = self.generation()
        if gen is None:
            return {"documents": 0, "chunks": 0, "generation": None}
        by_aud: dict[str, int] = {}
        by_type: dict[str, int] = {}
        for d in gen.documents.values():
            m = d["meta"]
            by_aud[m["audience"]] = by_aud.get(m["audience"], 0) + 1
            by_type[m["type"]] = by_type.get(m["type"], 0) + 1
        return {
            "documents": len(gen.documents), "chunks": len(gen.chunks), "generation": gen.name,
            "by_audience": by_aud, "by_type": by_type, "kb_hash": gen.manifest.get("kb_hash"),
            "embedder": gen.manifest.get("embedder"), "last_sync": gen.manifest.get("last_sync"),
            "vectors": self.vector_count() if gen.split_by_audience else self.collection(None).count(),
        }
