"""End-to-end offline answer latency per stage at 10k and 100k chunks (extractive composer, local MiniLM).

    uv run python benchmarks/answer.py                      # 10k and 100k chunks, 200 questions each
    uv run python benchmarks/answer.py --sizes 10000 --queries 100 --work-dir /tmp/pd-bench   # reuse the build

The index is synthetic but built through the real ingest path (Markdown files -> loader -> chunker -> Chroma +
BM25): every document has 10 sections, each a paragraph of 3-6 sentences drawn from the real kb/, so the text,
vocabulary and term statistics are realistic. Embedding 100k chunks with MiniLM would take about an hour on 2
cores, so chunk vectors are the normalised mean of the real MiniLM vectors of their sentences (each sentence
embedded once); questions are embedded with the real model at query time, as in production. Questions are the
kb/ eval suites (agents and end users, answerable and not), asked under their own audience.
The index is built once per size under --work-dir (a temporary folder by default) and reused when it exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.answer.safety import trim_history
from bot.answer.service import AnswerService
from bot.core.config import Settings
from bot.core.units import split_units
from bot.evaluation.suites import load_suite
from bot.ingest.embeddings import LocalMiniLMEmbeddings
from bot.ingest.index import KnowledgeIndex
from bot.ingest.loaders import load_paths

SECTIONS = ("Overview", "When this applies", "Before you start", "Steps", "Decision points", "Escalation",
            "SLA", "Do not", "Regional rules", "Related")
REGIONS = ("global", "EU", "UK", "US", "ROW")


class PoolEmbedder:
    """Embeds a chunk as the normalised mean of the real MiniLM vectors of the pool sentences it is made of."""

    dimension = 384

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors  # paragraph text -> vector, registered while the documents are written
        self.unknown = 0

    def embed_array(self, texts):
        """Vectors for chunk texts (title/section header line, then the paragraph)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            body = text.split("\n", 1)[-1].strip()
            v = self.vectors.get(body)
            if v is None:  # should not happen: every paragraph is registered
                self.unknown += 1
                seed = int(hashlib.sha1(body.encode()).hexdigest()[:8], 16)
                v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
                v /= np.linalg.norm(v)
            out[i] = v
        return out

    def embed_documents(self, texts):
        """LangChain interface."""
        return self.embed_array(texts).tolist()

    def embed_query(self, text):
        """LangChain interface."""
        return self.embed_array([text])[0].tolist()


def sentence_pool(work: Path) -> tuple[list[str], np.ndarray]:
    """Distinct sentences and list items of kb/ with their MiniLM vectors (cached in the work folder)."""
    cache_txt, cache_vec = work / "pool.json", work / "pool.npy"
    if cache_txt.exists() and cache_vec.exists():
        return json.loads(cache_txt.read_text()), np.load(cache_vec)
    sentences: dict[str, None] = {}
    for doc in load_paths([ROOT / "kb"]).documents:
        for u in split_units(doc.text):
            if u.kind in ("sentence", "step", "item") and 40 <= len(u.display) <= 300 and "{{" not in u.display:
                sentences[u.display] = None
    pool = list(sentences)
    print(f"embedding {len(pool)} kb/ sentences once ...", file=sys.stderr)
    vecs = LocalMiniLMEmbeddings().embed_array(pool)
    cache_txt.write_text(json.dumps(pool))
    np.save(cache_vec, vecs)
    return pool, vecs


def build(size: int, work: Path, pool: list[str], vecs: np.ndarray) -> tuple[Settings, dict]:
    """Write size/10 documents of 10 sections and ingest them (skipped when the index already exists)."""
    data = work / f"data-{size}"
    settings = Settings(data_dir=data, kb_dir=work / f"kb-{size}")
    if KnowledgeIndex(settings).generation() is not None:
        return settings, {"reused": True}
    shutil.rmtree(settings.kb_dir, ignore_errors=True)
    settings.kb_dir.mkdir(parents=True)
    rng = random.Random(size)
    vectors: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for d in range(size // len(SECTIONS)):
        words = rng.sample(pool, 1)[0].split()[:6]
        title = " ".join(w.strip(".,:;()`") for w in words).capitalize() or f"Document {d}"
        audience = "public" if d % 2 else "internal"
        regions = ["global"] if d % 3 else [rng.choice(REGIONS[1:])]
        lines = ["---", f"id: syn-{d:06d}", f"title: {json.dumps(title)}",
                 f"type: {'help_article' if audience == 'public' else 'sop'}", f"audience: {audience}",
                 f"regions: [{', '.join(regions)}]", "version: \"1\"", "effective_date: 2026-01-01",
                 f"url: https://example.com/syn-{d:06d}", "---", f"# {title}", ""]
        for section in SECTIONS:
            idx = rng.sample(range(len(pool)), rng.randint(3, 6))
            para = " ".join(pool[i] for i in idx)
            v = vecs[idx].mean(axis=0)
            vectors[para] = v / np.linalg.norm(v)
            lines += [f"## {section}", "", para, ""]
        (settings.kb_dir / f"syn-{d:06d}.md").write_text("\n".join(lines))
    written = time.perf_counter() - started
    embedder = PoolEmbedder(vectors)
    report = KnowledgeIndex(settings, embedder=embedder).sync([settings.kb_dir])
    return settings, {"write_s": round(written, 1), "ingest_s": round(report.seconds, 1),
                      "chunks": report.chunks_total, "unknown_vectors": embedder.unknown}


def pct(values: list[float], q: float) -> float:
    """q-th percentile (0-100)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def measure(settings: Settings, queries: int) -> dict:
    """Answer `queries` suite questions; per-stage p50/p95 in ms."""
    service = AnswerService(settings)
    service.warm()
    cases = load_suite(ROOT / "eval/suites/kb_agent.jsonl") + load_suite(ROOT / "eval/suites/kb_public.jsonl")
    random.Random(7).shuffle(cases)
    cases = cases[:queries]
    for c in cases[:5]:  # warm Chroma's HNSW pages and the filter masks
        service.ask(c.question, trim_history(list(c.history), settings), c.filters)
    timings: dict[str, list[float]] = {}
    refused = 0
    for c in cases:
        # as_of=None: the synthetic documents are all in force today
        filters = c.filters.__class__(audience=c.filters.audience, regions=c.filters.regions)
        a = service.ask(c.question, trim_history(list(c.history), settings), filters)
        refused += a.refused
        for stage, seconds in a.timings.items():
            timings.setdefault(stage, []).append(seconds * 1000)
    chunks = len(service.index.require_generation().chunks)
    return {"chunks": chunks, "queries": len(cases), "refused": refused / len(cases),
            **{f"{s}_p50": pct(v, 50) for s, v in timings.items()},
            **{f"{s}_p95": pct(v, 95) for s, v in timings.items()}}


def main() -> None:
    """Build, measure, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000", help="Comma-separated chunk counts.")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--work-dir", type=Path, default=None, help="Keep and reuse the built indexes here.")
    a = p.parse_args()
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="policydesk-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        pool, vecs = sentence_pool(work)
        rows = []
        for size in (int(s) for s in a.sizes.split(",")):
            settings, info = build(size, work, pool, vecs)
            print(f"{size}: {info}", file=sys.stderr)
            rows.append((size, info, measure(settings, a.queries)))
        stages = ("condense", "retrieve", "compose", "verify", "total")
        head = f"{'chunks':>8} {'queries':>7} " + " ".join(f"{s + ' p50/p95 ms':>22}" for s in stages) + "  refused"
        print("\nEnd-to-end offline answer latency (extractive composer, local MiniLM, embedded Chroma)")
        print(head)
        print("-" * len(head))
        for size, info, m in rows:
            cells = " ".join(f"{m[s + '_p50']:>10.1f} / {m[s + '_p95']:>7.1f}  " for s in stages)
            print(f"{m['chunks']:>8} {m['queries']:>7} {cells} {m['refused']:>6.2f}")
    finally:
        if a.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
