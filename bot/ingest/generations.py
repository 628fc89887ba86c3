"""Generation files under the data directory: write one complete generation, swap the pointer, collect the rest.

  current.json            pointer to the generation being served (replaced atomically)
  gen/<name>/manifest.json, chunks.jsonl   one complete generation
  gen/<name>/offsets.npy, state.json, ...  its serving state, memory-mapped by readers (bot/ingest/state.py)
A generation is written to gen/.tmp-*, fsynced and renamed; the pointer is written to .current-*, fsynced and
renamed over current.json. A process killed at any point leaves the pointer naming a complete generation; what it
leaves behind (other generations, .tmp-* folders, .current-* files) is collected by the next sync.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bot.core.models import Chunk
from bot.ingest.columns import chunk_from_json


def read_pointer(data_dir: Path) -> tuple[int, str] | None:
    """(change stamp, name) of the generation being served, or None before the first ingest."""
    pointer = data_dir / "current.json"
    try:
        stamp = pointer.stat().st_mtime_ns
        return stamp, json.loads(pointer.read_text())["generation"]
    except FileNotFoundError:
        return None


def pointer_stamp(data_dir: Path) -> tuple[int, int, int] | None:
    """(inode, change time, size) of current.json, or None before the first ingest: one stat, no read. A swap
    renames a new file over the pointer, so the inode changes even when the clock's resolution hides the time."""
    try:
        st = (data_dir / "current.json").stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def load_generation_files(data_dir: Path, name: str) -> tuple[dict[str, Any], list[Chunk]]:
    """The manifest and chunks of one generation."""
    gdir = data_dir / "gen" / name
    manifest = json.loads((gdir / "manifest.json").read_text())
    with (gdir / "chunks.jsonl").open() as fh:
        chunks = [chunk_from_json(line) for line in fh]
    return manifest, chunks


def write_generation(data_dir: Path, manifest: dict[str, Any], chunks: list[Chunk],
                     write_state: Callable[[Path], None] | None = None) -> str:
    """Write a complete generation (fsynced, then renamed into place); returns its name. write_state adds the
    serving state to the folder before it is published, so a reader never sees a generation without it."""
    gen_root = data_dir / "gen"
    gen_root.mkdir(exist_ok=True)
    name = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{time.time_ns() % 1_000_000:06d}"
    tmp = Path(tempfile.mkdtemp(dir=gen_root, prefix=".tmp-"))
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    with (tmp / "chunks.jsonl").open("wb") as fh:
        for i, c in enumerate(chunks):
            line = (json.dumps(asdict(c)) + "\n").encode()
            fh.write(line)
            offsets[i + 1] = offsets[i] + len(line)
    np.save(tmp / "offsets.npy", offsets)
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if write_state is not None:
        write_state(tmp)
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, gen_root / name)
    return name


def swap_pointer(data_dir: Path, name: str) -> None:
    """Point current.json at generation `name`, atomically."""
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".current-")
    with os.fdopen(fd, "w") as fh:
        json.dump({"generation": name}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, data_dir / "current.json")


def collect_garbage(data_dir: Path, keep: str) -> list[str]:
    """Remove every generation but `keep`, and the temporary files of interrupted runs; returns what went."""
    removed: list[str] = []
    gen_root = data_dir / "gen"
    if gen_root.is_dir():
        for d in gen_root.iterdir():
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"gen/{d.name}")
    for f in data_dir.glob(".current-*"):
        f.unlink(missing_ok=True)
        removed.append(f.name)
    return removed
