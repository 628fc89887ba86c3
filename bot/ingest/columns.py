"""Chunks read in place and chunk metadata in columns: what lets every process map one generation's files.

ChunkTable decodes a chunk from the memory-mapped chunks.jsonl when it is asked for, so a process holds only the
chunks a request touches; ChunkColumns keeps the fields the filter rule reads (bot/ingest/metadata.py `matches`)
as numpy arrays, so a filter mask is a few vectorised comparisons instead of a Python loop over every chunk.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, overload

import numpy as np

from bot.core.audience import audience_of
from bot.core.models import Audience, Chunk, Filters
from bot.ingest.metadata import NEVER, date_key

FLAG_PREFIXES = ("region_", "product_")  # the boolean metadata keys the filter rule reads


def chunk_from_json(line: bytes | str) -> Chunk:
    """A Chunk from one line of chunks.jsonl."""
    d = json.loads(line)
    return Chunk(d["chunk_id"], d["doc_id"], d["ordinal"], d["text"], tuple(d["section_path"]), d["token_count"],
                 d["metadata"])


class ChunkTable(Sequence[Chunk]):
    """The chunks of a generation, decoded from a memory-mapped chunks.jsonl on access (pages shared by every
    process that maps the file; nothing is parsed at load)."""

    def __init__(self, jsonl: Path, offsets: np.ndarray):
        self._offsets = offsets  # n + 1 byte offsets: line i is [offsets[i], offsets[i + 1])
        with jsonl.open("rb") as fh:
            size = jsonl.stat().st_size
            self._data: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, i: int) -> Chunk: ...

    @overload
    def __getitem__(self, i: slice) -> list[Chunk]: ...

    def __getitem__(self, i: int | slice) -> Chunk | list[Chunk]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"chunk position {i} out of range (generation has {n} chunks)")
        return chunk_from_json(self._data[int(self._offsets[i]):int(self._offsets[i + 1])])

    def __iter__(self) -> Iterator[Chunk]:
        for i in range(len(self)):
            yield self[i]

    def containing(self, *needles: str) -> list[int]:
        """Positions of the chunks whose stored line contains any of the (ASCII) needles: a byte scan of the mapped
        file, so finding the few chunks with a table never decodes the rest. Callers re-check the decoded text
        (a needle may also sit in the metadata)."""
        hits: set[int] = set()
        for needle in needles:
            raw = needle.encode("ascii")
            at = self._data.find(raw)
            while at != -1:
                pos = int(np.searchsorted(self._offsets, at, side="right")) - 1
                hits.add(pos)
                at = self._data.find(raw, int(self._offsets[pos + 1]))
        return sorted(hits)


class ChunkColumns:
    """The filter fields of every chunk as arrays (position i = chunk i) and the vectorised filter rule."""

    def __init__(self, public: np.ndarray, effective_ts: np.ndarray, superseded_ts: np.ndarray,
                 flags: np.ndarray, flag_names: Sequence[str]):
        self.public = public  # bool: the document says audience public (anything else is internal: fail closed)
        self.effective_ts = effective_ts  # int32 YYYYMMDD (0: no date)
        self.superseded_ts = superseded_ts  # int32 YYYYMMDD (NEVER: not superseded)
        self.flags = flags  # bool, one column per region_*/product_* key
        self.flag_index = {name: j for j, name in enumerate(flag_names)}

    @classmethod
    def from_metadata(cls, metas: Sequence[dict[str, Any]]) -> ChunkColumns:
        """Columns from the chunks' metadata dicts (at ingest, and for generations written without columns)."""
        names = sorted({k for m in metas for k, v in m.items() if k.startswith(FLAG_PREFIXES) and v})
        index = {k: j for j, k in enumerate(names)}
        flags = np.zeros((len(metas), len(names)), dtype=bool)
        for i, m in enumerate(metas):
            for k, v in m.items():
                if v and k in index:
                    flags[i, index[k]] = True
        return cls(
            np.fromiter((audience_of(m.get("audience")) is Audience.PUBLIC for m in metas), bool, len(metas)),
            np.fromiter((int(m.get("effective_ts", 0) or 0) for m in metas), np.int32, len(metas)),
            np.fromiter((int(m.get("superseded_ts", NEVER)) for m in metas), np.int32, len(metas)),
            flags, names,
        )

    def save(self, folder: Path) -> None:
        """Write the columns as .npy files (loaded memory-mapped) and the flag names as JSON."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("public", "effective_ts", "superseded_ts", "flags"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        (folder / "flags.json").write_text(json.dumps(list(self.flag_index)))

    @classmethod
    def load(cls, folder: Path) -> ChunkColumns:
        """Columns saved by `save`, memory-mapped."""
        arrays = [np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("public", "effective_ts", "superseded_ts",
                                                                         "flags")]
        return cls(*arrays, json.loads((folder / "flags.json").read_text()))

    def _any_flag(self, keys: Sequence[str]) -> np.ndarray:
        cols = [self.flag_index[k] for k in keys if k in self.flag_index]
        if not cols:
            return np.zeros(len(self.public), dtype=bool)
        return self.flags[:, cols].any(axis=1)

    def mask(self, filters: Filters, today: date | None = None) -> np.ndarray:
        """1.0 where a chunk is visible under filters, else 0.0: the rule of `bot.ingest.metadata.matches`."""
        visible = np.ones(len(self.public), dtype=bool)
        if filters.audience is not Audience.INTERNAL:
            visible &= self.public
        if filters.regions:
            visible &= self._any_flag([f"region_{r}" for r in ("global",) + tuple(filters.regions)])
        if filters.products:
            visible &= self._any_flag([f"product_{p}" for p in ("any",) + tuple(filters.products)])
        as_of = date_key(filters.as_of or today or date.today())
        visible &= self.effective_ts <= as_of
        if not filters.include_superseded:
            visible &= self.superseded_ts > as_of
        return visible.astype(np.float32)
