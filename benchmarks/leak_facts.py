"""Leak-check benchmark: time and peak memory to build the public leak facts (bot/core/audience.py) of a
generation at 1k / 10k / 100k chunks, and the time of one check of an answer.

    uv run python benchmarks/leak_facts.py                 # 1k, 10k, 100k chunks
    uv run python benchmarks/leak_facts.py --sizes 1000 10000

The chunks are kb/'s own, chunked as ingest does and copied with fresh document ids until the size is reached
(a third public, as in kb/), so identifier counts grow with the corpus as they would in a real one. Each size
runs in a fresh process so peak RSS is its own. Nothing is embedded; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic(size: int):
    """(chunks, documents) of `size` chunks built from kb/."""
    from bot.ingest.chunking import Chunker
    from bot.ingest.loaders import load_paths

    docs = load_paths([ROOT / "kb"]).documents
    chunker = Chunker()
    base = [(d, c) for d in docs for c in chunker.run(d, {"audience": d.audience.value, "title": d.title,
                                                          "url": d.url or ""})]
    chunks, documents, copy = [], {}, 0
    while len(chunks) < size:
        for doc, c in base:
            doc_id = f"{doc.id}-{copy}" if copy else doc.id
            text = c.text.replace(doc.id, doc_id) + (f" See `{doc_id}-queue`." if copy else "")
            chunks.append(replace(c, chunk_id=f"{doc_id}#{c.ordinal}", doc_id=doc_id, text=text))
            documents[doc_id] = {"meta": {"audience": doc.audience.value}}
            if len(chunks) == size:
                break
        copy += 1
    return chunks, documents


def measure(size: int) -> dict:
    """Build the facts for one size in this process; returns seconds, peak RSS and one check's time."""
    from bot.core.audience import LeakFacts
    from bot.core.models import Answer

    chunks, documents = synthetic(size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    facts = LeakFacts.build(chunks, documents, "bench")
    build = time.perf_counter() - t
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = Answer("q", " ".join(c.text for c in chunks[:3]))
    t = time.perf_counter()
    for _ in range(20):
        facts.markers_in(answer.text)
        facts.copied_runs(answer.text)
    check_ms = (time.perf_counter() - t) / 20 * 1000
    return {"chunks": size, "build_s": build, "rss_growth_mb": (rss_after - rss_before) / 1024,
            "markers": len(facts.markers), "internal_runs": len(facts.internal_runs), "check_ms": check_ms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size and print JSON
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    table = Table(title="Public leak facts: build once per generation, check per answer")
    for col in ("chunks", "build s", "RSS growth MB", "markers", "internal-only runs", "check ms"):
        table.add_column(col, justify="right")
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        table.add_row(f"{r['chunks']:,}", f"{r['build_s']:.2f}", f"{r['rss_growth_mb']:.0f}", f"{r['markers']:,}",
                      f"{r['internal_runs']:,}", f"{r['check_ms']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
