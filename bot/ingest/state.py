"""One index generation as a serving process sees it, and the state ingest persists with it.

Next to manifest.json and chunks.jsonl, ingest writes (bot/ingest/generations.py publishes the folder atomically):
  state.json          format marker and counts (its presence means the files below are complete)
  offsets.npy         byte offset of every line of chunks.jsonl: chunks are decoded on access
  ids.json            chunk ids by position
  columns/            the filter fields as arrays (bot/ingest/columns.py)
  lexical/            the BM25 index (bm25s files + document frequencies)
  vectors.npy         the chunk vectors (float32, row i = chunk i): similarities without asking Chroma
  leak/               the public leak check's facts (bot/core/audience.py LeakFacts)
Every array is loaded memory-mapped, so a new process is ready without parsing or rebuilding anything and the
processes serving one generation share its pages. A generation written before these files existed still loads:
its chunks are parsed and its BM25, columns and leak facts are built in memory, as they always were.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from bot.core.audience import LeakFacts
from bot.core.models import Chunk, Filters
from bot.ingest.columns import ChunkColumns, ChunkTable
from bot.ingest.generations import load_generation_files
from bot.ingest.lexical import LexicalIndex

STATE_FORMAT = 1
VECTOR_LAYOUT = "by-audience"  # manifest marker: one Chroma collection per audience


def write_state(folder: Path, chunks: Sequence[Chunk], vectors: np.ndarray | None,
                documents: dict[str, Any]) -> None:
    """Persist the serving state of a generation into its (not yet published) folder."""
    (folder / "ids.json").write_text(json.dumps([c.chunk_id for c in chunks]))
    ChunkColumns.from_metadata([c.metadata for c in chunks]).save(folder / "columns")
    LexicalIndex([c.lexical_text for c in chunks]).save(folder / "lexical")
    LeakFacts.build(chunks, documents).save(folder / "leak")
    if vectors is not None:
        np.save(folder / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    (folder / "state.json").write_text(json.dumps({"format": STATE_FORMAT, "chunks": len(chunks),
                                                   "vectors": vectors is not None}))


def open_generation(data_dir: Path, name: str) -> Generation:
    """The generation `name` under data_dir: its saved state memory-mapped, or built in memory for an older one."""
    folder = data_dir / "gen" / name
    manifest = json.loads((folder / "manifest.json").read_text())
    try:
        state = json.loads((folder / "state.json").read_text())
    except FileNotFoundError:
        state = None
    if state is None or state.get("format") != STATE_FORMAT:
        _, chunks = load_generation_files(data_dir, name)
        return Generation(name, manifest, chunks)
    table = ChunkTable(folder / "chunks.jsonl", np.load(folder / "offsets.npy", mmap_mode="r"))
    ids = json.loads((folder / "ids.json").read_text())
    vectors = np.load(folder / "vectors.npy", mmap_mode="r") if state.get("vectors") else None
    return Generation(name, manifest, table, ids=ids, folder=folder, vectors=vectors)


class Generation:
    """One complete, immutable view of the index: documents, live chunks, the BM25 over them, filter columns,
    chunk vectors (when saved) and the leak check's facts."""

    def __init__(self, name: str, manifest: dict[str, Any], chunks: Sequence[Chunk], *,
                 ids: list[str] | None = None, folder: Path | None = None, vectors: np.ndarray | None = None):
        self.name = name
        self.manifest = manifest
        self.chunks = chunks
        self.folder = folder  # None: nothing saved, everything is built in memory from the chunks
        self.vectors = vectors
        self.by_id = {cid: i for i, cid in enumerate(ids if ids is not None else (c.chunk_id for c in chunks))}
        self.columns = (ChunkColumns.load(folder / "columns") if folder is not None
                        else ChunkColumns.from_metadata([c.metadata for c in chunks]))
        public = int(np.count_nonzero(self.columns.public))
        self.by_audience: dict[str, int] = {"public": public, "internal": len(chunks) - public}
        self._lexical: LexicalIndex | None = None
        self._facts: LeakFacts | None = None
        self._mask_cache: dict[Filters, np.ndarray] = {}
        self._lock = threading.Lock()  # one BM25 load or build per generation, whichever thread asks first

    @property
    def persisted(self) -> bool:
        """Whether this generation's state was saved at ingest (False: an older generation, built in memory)."""
        return self.folder is not None

    @property
    def split_by_audience(self) -> bool:
        """Whether this generation's vectors are in per-audience collections (older indexes used one)."""
        return self.manifest.get("vectors") == VECTOR_LAYOUT

    @property
    def lexical(self) -> LexicalIndex:
        """BM25 over the chunks: loaded memory-mapped, or built on first search (an unchanged re-sync never
        needs it)."""
        if self._lexical is None:
            with self._lock:
                if self._lexical is None:
                    self._lexical = (LexicalIndex.load(self.folder / "lexical") if self.folder is not None
                                     else LexicalIndex([c.lexical_text for c in self.chunks]))
        return self._lexical

    def leak_facts(self) -> LeakFacts:
        """The public leak check's facts for this generation: saved at ingest, or built once here."""
        if self._facts is None:
            self._facts = (LeakFacts.load(self.folder / "leak", self.name) if self.folder is not None
                           else LeakFacts.build(self.chunks, self.documents, self.name))
        return self._facts

    def mask(self, filters: Filters) -> np.ndarray:
        """1.0 where the chunk is visible under filters, else 0.0 (memoised per generation and date)."""
        # "as of today" is resolved before the cache lookup: keyed on the bare filters, a mask built before
        # midnight would keep a policy that takes effect at midnight hidden until the process restarts.
        if filters.as_of is None:
            filters = dataclasses.replace(filters, as_of=date.today())
        m = self._mask_cache.get(filters)
        if m is None:
            m = self.columns.mask(filters)
            if len(self._mask_cache) > 256:
                self._mask_cache.clear()
            self._mask_cache[filters] = m
        return m

    def chunks_containing(self, *needles: str) -> list[Chunk]:
        """The chunks whose text contains any of the (ASCII) needles, without decoding the others."""
        if isinstance(self.chunks, ChunkTable):
            found = (self.chunks[i] for i in self.chunks.containing(*needles))
        else:
            found = iter(self.chunks)
        return [c for c in found if any(n in c.text for n in needles)]

    @property
    def documents(self) -> dict[str, dict[str, Any]]:
        """Per document: path, hash, chunk ids and display metadata."""
        return self.manifest.get("docs", {})
