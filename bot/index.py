"""The index: Chroma vectors + BM25 + a manifest of content hashes, synced incrementally and swapped atomically.

Layout under the data directory:
  chroma/                 embedded Chroma store (absent when a Chroma server is configured)
  embed_cache.sqlite      vectors by (embedder, text hash)
  current.json            pointer to the generation being served (replaced atomically)
  gen/<name>/manifest.json, chunks.jsonl   one complete generation
An ingest writes the new chunks to Chroma, then a new generation, then swaps the pointer, then deletes stale
vectors. Killed at any point, the pointer still names a complete generation whose vectors are all in Chroma.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from filelock import FileLock, Timeout

from bot.chunking import Chunker
from bot.config import Settings
from bot.documents import load_paths
from bot.embeddings import EmbeddingCache, build_embeddings, embed_with_cache, embedder_id
from bot.errors import IndexUnavailableError
from bot.lexical import LexicalIndex
from bot.models import Audience, Chunk, Document, Filters, SyncReport

log = logging.getLogger(__name__)

NEVER = 99991231  # superseded_ts of a document nothing replaces
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


def audience_where(filters: Filters) -> dict[str, Any] | None:
    """The part of the Chroma clause that is never left to post-filtering: public sees public only."""
    return {"audience": {"$eq": "public"}} if filters.audience is Audience.PUBLIC else None


def matches(meta: dict[str, Any], filters: Filters) -> bool:
    """Whether a chunk with this metadata is visible under the filters (same rule as `chroma_where`)."""
    if filters.audience is Audience.PUBLIC and meta.get("audience") != "public":
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
        def build_from_config(config: dict[str, Any]) -> "PolicyDeskEF":
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

    @property
    def lexical(self) -> LexicalIndex:
        """BM25 over the chunks, built on first search (an unchanged re-sync never needs it)."""
        if self._lexical is None:
            self._lexical = LexicalIndex([c.lexical_text for c in self.chunks])
        return self._lexical

    def mask(self, filters: Filters) -> np.ndarray:
        """1.0 where the chunk is visible under filters, else 0.0 (memoised per generation)."""
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
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._embedder = embedder
        self._embedder_name = embedder_id(settings)
        self._client = None
        self._collection = None
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
    def collection(self):
        """The Chroma collection, always opened with our embedding function."""
        if self._collection is None:
            ef_cls = _register_chroma_ef()
            self._client = open_chroma(self.settings)
            name = f"{self.settings.collection}-{hashlib.sha1(self._embedder_name.encode()).hexdigest()[:8]}"
            try:
                self._collection = self._client.get_or_create_collection(
                    name,
                    embedding_function=ef_cls(None, self._embedder_name),
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"embedder": self._embedder_name},
                )
            except Exception as exc:
                raise IndexUnavailableError(f"Could not open Chroma collection '{name}': {exc}") from exc
        return self._collection

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
        loaded = load_paths(paths)
        report.failed = dict(loaded.failures)
        old = self.generation()
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
            "kb_hash": kb_hash,
            "docs": manifest_docs,
            "last_sync": {**report.summary(), "failed_files": report.failed},
        }
        name = self._write_generation(manifest, live)
        self._swap_pointer(name)
        if progress:
            progress("cleanup", 0, 1)
        self._delete_stale({c.chunk_id for c in live})
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
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            self.collection.upsert(
                ids=[c.chunk_id for c in part],
                embeddings=vectors[start : start + batch],
                metadatas=[c.metadata for c in part],
                documents=[c.text for c in part],
            )
            if progress:
                progress("store", min(start + batch, len(chunks)), len(chunks))
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

    def _delete_stale(self, live_ids: set[str]) -> None:
        """Remove vectors no generation serves any more, including orphans of an interrupted ingest."""
        existing = self.collection.get(include=[])["ids"]
        stale = [i for i in existing if i not in live_ids]
        for start in range(0, len(stale), 5000):
            self.collection.delete(ids=stale[start : start + 5000])

    def _gc_generations(self, keep: str) -> None:
        gen_root = self.data_dir / "gen"
        for d in gen_root.iterdir():
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)

    # ---- search ----------------------------------------------------------------------------------------
    def dense_search(self, query: str | np.ndarray, filters: Filters, k: int) -> list[tuple[Chunk, float]]:
        """Top-k chunks by cosine similarity under filters (only chunks of the served generation).

        Chroma's filtered HNSW query gets slow with compound `where` clauses (about 320 ms at 100k chunks against
        180 ms with the audience clause alone), so the audience rule always goes to Chroma and the narrowing
        filters (regions, products, dates) are applied to an over-fetched candidate list; only when that leaves
        fewer than k hits is the full clause sent.
        """
        gen = self.require_generation()
        vec = self.embedder.embed_array([query])[0] if isinstance(query, str) else query
        total = max(1, len(gen.chunks))
        out = self._dense_query(gen, vec, filters, audience_where(filters), min(4 * k + 10, total), k)
        if len(out) < k and 4 * k + 10 < total:
            out = self._dense_query(gen, vec, filters, chroma_where(filters), min(k + 10, total), k)
        return out

    def _dense_query(self, gen: Generation, vec: np.ndarray, filters: Filters, where: dict[str, Any] | None,
                     n: int, k: int) -> list[tuple[Chunk, float]]:
        try:
            res = self.collection.query(query_embeddings=[vec], n_results=n, where=where, include=["distances"])
        except IndexUnavailableError:
            raise
        except Exception as exc:
            raise IndexUnavailableError(f"Vector search failed: {exc}") from exc
        out: list[tuple[Chunk, float]] = []
        for cid, dist in zip(res["ids"][0], res["distances"][0]):
            pos = gen.by_id.get(cid)
            if pos is None:  # a vector written by an ingest that has not (yet) been swapped in
                continue
            chunk = gen.chunks[pos]
            if not matches(chunk.metadata, filters):  # every filter, and the audience rule a second time
                continue
            out.append((chunk, 1.0 - float(dist)))
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
            "vectors": self.collection.count(),
        }
