"""The index: Chroma vectors + BM25 + a manifest of content hashes, synced incrementally and swapped atomically.

Layout under the data directory:
  chroma/                 embedded Chroma store (absent when a Chroma server is configured)
  embed_cache.sqlite      vectors by (embedder, text hash)
  current.json            pointer to the generation being served (replaced atomically)
  gen/<name>/manifest.json, chunks.jsonl   one complete generation
Vectors live in one Chroma collection per audience: the public collection holds public chunks only, so a public
search never touches an internal vector (and needs no `where` clause on audience, which is Chroma's slow path).
An ingest writes the new chunks to Chroma, then a new generation, then swaps the pointer, then deletes stale
vectors. Killed at any point, the pointer still names a complete generation whose vectors are all in Chroma.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from bot.ingest.chunking import Chunker
from bot.core.audience import audience_of, visible_to
from bot.core.config import Settings, ensure_data_dir
from bot.ingest.loaders import load_paths
from bot.ingest.embeddings import EmbeddingCache, build_embeddings, embed_with_cache, embedder_id
from bot.core.errors import IndexUnavailableError
from bot.ingest.lexical import LexicalIndex
from bot.core.models import Audience, Chunk, Document, Filters, SyncReport

log = logging.getLogger(__name__)

NEVER = 99991231  # superseded_ts of a document nothing replaces
VECTOR_LAYOUT = "by-audience"  # manifest marker: one Chroma collection per audience
Progress = Callable[[str, int, int], None]  # (stage, done, total)


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


def vector_audience(chunk: Chunk) -> str:
    """The collection a chunk's vector lives in: public only when the document says so (fail closed)."""
    return audience_of(chunk.metadata.get("audience")).value


def visible_audiences(filters: Filters) -> tuple[str, ...]:
    """The per-audience collections a requester may search: the public sees the public collection only."""
    return ("public",) if filters.audience is Audience.PUBLIC else ("public", "internal")


def audience_where(filters: Filters) -> dict[str, Any] | None:
    """The part of the Chroma clause that is never left to post-filtering: public sees public only."""
    return {"audience": {"$eq": "public"}} if filters.audience is Audience.PUBLIC else None


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
    if not filters.include_superseded and meta.get("superseded_ts", NEVER) <= as_of:
        return False
    return True


def _register_chroma_ef():
    """A Chroma embedding function that wraps ours, registered so reopening a collection never needs Chroma's."""
    from chromadb.api.types import Documents, EmbeddingFunction
    from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

    if "policydesk" in known_embedding_functions:
        return known_embedding_functions["policydesk"]

    class PolicyDeskEF(EmbeddingFunction[Documents]):
        """Delegates to the configured LangChain Embeddings; built lazily."""

        def __init__(self, embedder=None, embedder_name: str = ""):
            self._embedder = embedder
            self._name = embedder_name

        def __call__(self, input: Documents):
            if self._embedder is None:
                raise IndexUnavailableError("This collection is queried with precomputed PolicyDesk vectors only.")
            return [np.asarray(v, dtype=np.float32) for v in self._embedder.embed_documents(list(input))]

        @staticmethod
        def name() -> str:
            return "policydesk"

        def get_config(self) -> dict[str, Any]:
            return {"embedder": self._name}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> PolicyDeskEF:
            return PolicyDeskEF(None, config.get("embedder", ""))

        def default_space(self):
            return "cosine"

    register_embedding_function(PolicyDeskEF)
    return PolicyDeskEF


def open_chroma(settings: Settings):
    """A Chroma client: HttpClient when a server is configured, else a PersistentClient under the data dir."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_host:
        try:
            return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
        except Exception as exc:
            raise IndexUnavailableError(
                f"Chroma server at {settings.chroma_host}:{settings.chroma_port} is not reachable ({exc}). "
                "Start it with `uv run chroma run --path DIR --host 127.0.0.1 --port PORT` or unset "
                "POLICYDESK_CHROMA_HOST to use the embedded store."
            ) from exc
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


class Generation:
    """One complete, immutable view of the index: documents, live chunks and the BM25 over them."""

    def __init__(self, name: str, manifest: dict[str, Any], chunks: list[Chunk]):
        self.name = name
        self.manifest = manifest
        self.chunks = chunks
        self.by_id = {c.chunk_id: i for i, c in enumerate(chunks)}
        self._lexical: LexicalIndex | None = None
        self._mask_cache: dict[Filters, np.ndarray] = {}
        self.by_audience: dict[str, int] = {}
        for c in chunks:
            aud = vector_audience(c)
            self.by_audience[aud] = self.by_audience.get(aud, 0) + 1

    @property
    def split_by_audience(self) -> bool:
        """Whether this generation's vectors are in per-audience collections (older indexes used one)."""
        return self.manifest.get("vectors") == VECTOR_LAYOUT

    @property
    def lexical(self) -> LexicalIndex:
        """BM25 over the chunks, built on first search (an unchanged re-sync never needs it)."""
        if self._lexical is None:
            self._lexical = LexicalIndex([c.lexical_text for c in self.chunks])
        return self._lexical

    def mask(self, filters: Filters) -> np.ndarray:
        """1.0 where the chunk is visible under filters, else 0.0 (memoised per generation and date)."""
        # "as of today" is resolved before the cache lookup: keyed on the bare filters, a mask built before
        # midnight would keep a policy that takes effect at midnight hidden until the process restarts.
        if filters.as_of is None:
            filters = dataclasses.replace(filters, as_of=date.today())
        m = self._mask_cache.get(filters)
        if m is None:
            m = np.array([1.0 if matches(c.metadata, filters) else 0.0 for c in self.chunks], dtype=np.float32)
            if len(self._mask_cache) > 256:
                self._mask_cache.clear()
            self._mask_cache[filters] = m
        return m

    @property
    def documents(self) -> dict[str, dict[str, Any]]:
        """Per document: path, hash, chunk ids and display metadata."""
        return self.manifest.get("docs", {})


class KnowledgeIndex:
    """Chroma + BM25 + manifest under one data directory; the one object ingest and retrieval share."""

    def __init__(self, settings: Settings, embedder=None):
        self.settings = settings
        self.data_dir = ensure_data_dir(Path(settings.data_dir))
        self._embedder = embedder
        self._embedder_name = embedder_id(settings)
        self._client = None
        self._collections: dict[str, Any] = {}
        self._generation: Generation | None = None
        self._pointer_mtime: float | None = None

    # ---- shared plumbing -------------------------------------------------------------------------------
    @property
    def embedder(self):
        """The embedder, loaded on first use so an unchanged re-sync never pays for it."""
        if self._embedder is None:
            self._embedder = build_embeddings(self.settings)
        return self._embedder

    @property
    def _collection_base(self) -> str:
        return f"{self.settings.collection}-{hashlib.sha1(self._embedder_name.encode()).hexdigest()[:8]}"

    def collection(self, audience: str | None = None):
        """The Chroma collection of one audience ("public" or "internal"; None: the single collection of indexes
        built before vectors were split by audience), always opened with our embedding function."""
        key = audience or ""
        if key not in self._collections:
            ef_cls = _register_chroma_ef()
            if self._client is None:
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

    def vector_ids(self) -> set[str]:
        """Ids of every vector stored for this index, across the per-audience collections."""
        return {i for aud in ("public", "internal") for i in self.collection(aud).get(include=[])["ids"]}

    def vector_count(self) -> int:
        """Number of vectors stored for this index."""
        return sum(self.collection(aud).count() for aud in ("public", "internal"))

    def stored_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these chunks of the served generation, by chunk id."""
        gen = self.require_generation()
        groups: dict[str | None, list[str]] = {}
        for cid in chunk_ids:
            pos = gen.by_id.get(cid)
            if pos is not None:
                aud = vector_audience(gen.chunks[pos]) if gen.split_by_audience else None
                groups.setdefault(aud, []).append(cid)
        out: dict[str, np.ndarray] = {}
        for aud, ids in groups.items():
            got = self.collection(aud).get(ids=ids, include=["embeddings"])
            for cid, vec in zip(got["ids"], got["embeddings"]):
                out[cid] = np.asarray(vec, dtype=np.float32)
        return out

    @property
    def _pointer(self) -> Path:
        return self.data_dir / "current.json"

    def generation(self) -> Generation | None:
        """The generation being served, reloaded when another process swapped the pointer."""
        try:
            mtime = self._pointer.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if self._generation is None or mtime != self._pointer_mtime:
            name = json.loads(self._pointer.read_text())["generation"]
            self._generation = self._load_generation(name)
            self._pointer_mtime = mtime
        return self._generation

    def require_generation(self) -> Generation:
        """The served generation, or a clear error when nothing has been ingested yet."""
        gen = self.generation()
        if gen is None or not gen.chunks:
            raise IndexUnavailableError(
                f"The index in {self.data_dir} is empty: run `policydesk ingest` (or start the console, "
                "which ingests kb/ on first start)."
            )
        return gen

    def _load_generation(self, name: str) -> Generation:
        gdir = self.data_dir / "gen" / name
        manifest = json.loads((gdir / "manifest.json").read_text())
        chunks: list[Chunk] = []
        with (gdir / "chunks.jsonl").open() as fh:
            for line in fh:
                d = json.loads(line)
                chunks.append(Chunk(d["chunk_id"], d["doc_id"], d["ordinal"], d["text"],
                                    tuple(d["section_path"]), d["token_count"], d["metadata"]))
        return Generation(name, manifest, chunks)

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

        if new_chunks:
            report.chunks_embedded = self._upsert(new_chunks, progress)

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
        name = self._write_generation(manifest, live)
        self._swap_pointer(name)
        if progress:
            progress("cleanup", 0, 1)
        self._delete_stale(live)
        if legacy:
            self._drop_legacy_collection()
        self._gc_generations(keep=name)
        if progress:
            progress("cleanup", 1, 1)
        return report

    def _upsert(self, chunks: list[Chunk], progress: Progress | None) -> int:
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
                    metadatas=[chunks[i].metadata for i in part],
                    documents=[chunks[i].text for i in part],
                )
                stored += len(part)
                if progress:
                    progress("store", stored, len(chunks))
        return embedded

    def _write_generation(self, manifest: dict[str, Any], chunks: list[Chunk]) -> str:
        gen_root = self.data_dir / "gen"
        gen_root.mkdir(exist_ok=True)
        name = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{time.time_ns() % 1_000_000:06d}"
        tmp = Path(tempfile.mkdtemp(dir=gen_root, prefix=".tmp-"))
        with (tmp / "chunks.jsonl").open("w") as fh:
            for c in chunks:
                fh.write(json.dumps(asdict(c)) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, gen_root / name)
        return name

    def _swap_pointer(self, name: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".current-")
        with os.fdopen(fd, "w") as fh:
            json.dump({"generation": name}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._pointer)
        self._generation = None

    def _delete_stale(self, live: list[Chunk]) -> None:
        """Remove vectors no generation serves any more (orphans of an interrupted ingest, and a document's old
        vectors in the other collection when its audience changed)."""
        for aud in ("public", "internal"):
            live_ids = {c.chunk_id for c in live if vector_audience(c) == aud}
            existing = self.collection(aud).get(include=[])["ids"]
            stale = [i for i in existing if i not in live_ids]
            for start in range(0, len(stale), 5000):
                self.collection(aud).delete(ids=stale[start : start + 5000])

    def _drop_legacy_collection(self) -> None:
        try:
            self.collection(None)  # opens the client and confirms the name
            self._client.delete_collection(self._collection_base)
        except Exception as exc:  # noqa: BLE001 - the new generation serves already; an old collection is only space
            log.warning("Could not delete the old single collection %s: %s", self._collection_base, exc)
        self._collections.pop("", None)

    def _gc_generations(self, keep: str) -> None:
        gen_root = self.data_dir / "gen"
        for d in gen_root.iterdir():
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)

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
            except IndexUnavailableError:
                raise
            except Exception as exc:
                raise IndexUnavailableError(f"Vector search failed: {exc}") from exc
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
