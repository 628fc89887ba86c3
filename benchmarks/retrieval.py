"""Retrieval benchmarks: ingestion throughput, unchanged re-sync, query latency at scale, peak RSS, and retrieval
quality on ../shared/corpora against two baselines (the plain LangChain recipe and BM25 alone).

    uv run python benchmarks/retrieval.py               # everything: ~30 min on 2 cores the first time
                                                        # (100k-chunk build, corpus indexes), ~10 min after
    uv run python benchmarks/retrieval.py --quality     # only the quality tables
    uv run python benchmarks/retrieval.py --latency --ingest --quick

Indexes are cached under --workdir (default: a folder in the system temp dir) so a second run only pays for
what it measures; --fresh starts over. Ingestion is always measured on a fresh data directory with an empty
embedding cache. Nothing here downloads anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.core.config import Settings
from bot.core.models import Audience, Filters

console = Console(width=None if sys.stdout.isatty() else 170)  # tables stay readable when piped
CORPORA = ROOT.parent / "shared" / "corpora"
QUALITY_CORPORA = {"doc2dial": "doc2dial", "mtrag_ibmcloud": "mtrag_ibmcloud"}
TARGETS = {"doc2dial": {"R@5": 0.92, "MRR@10": 0.78}, "mtrag_ibmcloud": {"R@5": 0.95}}


# ---- shared helpers ------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run fn(*args) in a fresh spawned process, so its peak RSS is its own; returns fn's dict."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def machine_caveat() -> str:
    """The one-line description of where these numbers come from."""
    load = os.getloadavg()
    return (f"Machine: {os.cpu_count()} cores, no GPU, {platform.python_implementation()} "
            f"{platform.python_version()}; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
            "(other processes share the CPU, so timings are indicative).")


def load_embedder():
    """The local MiniLM embedder the product uses by default."""
    from bot.ingest.embeddings import build_embeddings

    return build_embeddings(Settings())


# ---- quality -------------------------------------------------------------------------------------------


@dataclass
class QualityRow:
    """Doc-level retrieval quality of one system on one corpus."""

    corpus: str
    system: str
    n: int
    r1: float
    r5: float
    r10: float
    mrr10: float
    ms_per_query: float
    note: str = ""


def load_questions(corpus: str) -> list[dict[str, Any]]:
    """Questions with gold documents: all of doc2dial; the answerable (and partial) ones of mtrag."""
    rows = [json.loads(line) for line in (CORPORA / corpus / "qa.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("gold_doc_ids") and r.get("answerable", True)]


def distinct(ids: list[str], limit: int = 10) -> list[str]:
    """The first `limit` distinct ids, in order."""
    out: list[str] = []
    for i in ids:
        if i not in out:
            out.append(i)
            if len(out) == limit:
                break
    return out


def score_rankings(rankings: list[list[str]], questions: list[dict[str, Any]]) -> tuple[float, ...]:
    """Recall@1/5/10 and MRR@10: a hit is any gold doc id among the top-k distinct documents."""
    hits = {1: 0, 5: 0, 10: 0}
    rr = 0.0
    for ranked, q in zip(rankings, questions):
        gold = set(q["gold_doc_ids"])
        pos = next((i for i, d in enumerate(ranked[:10]) if d in gold), None)
        if pos is None:
            continue
        for k in hits:
            hits[k] += pos < k
        rr += 1.0 / (pos + 1)
    n = max(1, len(questions))
    return hits[1] / n, hits[5] / n, hits[10] / n, rr / n


class CachedEmbeddings:
    """LangChain Embeddings around the product embedder, caching vectors by text hash on disk (same vectors)."""

    def __init__(self, embedder, path: Path):
        from bot.ingest.embeddings import EmbeddingCache

        self._embedder = embedder
        self._cache = EmbeddingCache(path, "benchmark-minilm")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages, reusing cached vectors."""
        from bot.ingest.embeddings import embed_with_cache

        vectors, _ = embed_with_cache(self._embedder, self._cache, texts)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (not cached: it is what a query costs)."""
        return self._embedder.embed_array([text])[0].tolist()


def product_index(corpus: str, workdir: Path, embedder):
    """A PolicyDesk index of the corpus with the product's default Settings (cached under workdir)."""
    from bot.ingest.index import KnowledgeIndex

    s = Settings(data_dir=workdir / f"quality-{corpus}-{Settings().chunk_tokens}", kb_dir=CORPORA / corpus / "docs")
    index = KnowledgeIndex(s, embedder=embedder)
    with console.status(f"[dim]Indexing {corpus} with PolicyDesk (cached after the first run)..."):
        report = index.sync([CORPORA / corpus / "docs"])
    if report.failed:
        raise SystemExit(f"{corpus}: {len(report.failed)} documents failed to load: {report.failed}")
    return index, s


def langchain_recipe(corpus: str, workdir: Path, embedder):
    """The plain recipe: RecursiveCharacterTextSplitter 1000/200 + the same embedder + Chroma similarity search."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from langchain_chroma import Chroma
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    folder = workdir / f"langchain-{corpus}"
    folder.mkdir(parents=True, exist_ok=True)
    client = chromadb.PersistentClient(path=str(folder / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    emb = CachedEmbeddings(embedder, folder / "embed_cache.sqlite")
    store = Chroma(collection_name="recipe", embedding_function=emb, client=client)
    files = sorted((CORPORA / corpus / "docs").glob("*.md"))
    if store._collection.count() == 0:
        splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
        docs = splitter.create_documents([f.read_text() for f in files], metadatas=[{"doc_id": f.stem} for f in files])
        with console.status(f"[dim]Indexing {corpus} with the LangChain recipe ({len(docs)} chunks)..."):
            for start in range(0, len(docs), 2000):
                store.add_documents(docs[start : start + 2000])
    return store


def check_half(corpus: str, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The questions of the corpus's check half (bot/evaluation/split.py): what anything fitted is reported on."""
    from bot.evaluation.split import half
    from bot.evaluation.suites import load_suite

    halves = {c.id: half(c) for c in load_suite(CORPORA / corpus / "qa.jsonl")}
    return [q for q in questions if halves.get(q["id"]) == "check"]


def quality_for(corpus: str, workdir: Path, quick: bool, embedder) -> list[QualityRow]:
    """Doc-level recall@1/5/10 and MRR@10 of PolicyDesk and the baselines on one corpus's check half."""
    from bot.search.retrieval import HybridSearcher

    questions = check_half(corpus, load_questions(corpus))
    if quick:
        questions = questions[::3]
    with_history = sum(1 for q in questions if q.get("history"))
    index, s = product_index(corpus, workdir, embedder)
    gen = index.require_generation()
    searcher = HybridSearcher.from_settings(index, s)
    rrf = HybridSearcher.from_settings(index, s.model_copy(update={"fusion": "rrf"}))
    adaptive = HybridSearcher.from_settings(index, s.model_copy(update={"adaptive_fusion": True}))
    filters = Filters(audience=Audience.INTERNAL)
    depth = max(60, s.fetch_k)  # enough chunks to always reach 10 distinct documents
    store = langchain_recipe(corpus, workdir, embedder)
    embedder.embed_array(["warm up"])
    systems: list[tuple[str, Callable[[dict[str, Any]], list[str]], str]] = [
        ("LangChain recipe", lambda q: distinct(
            [d.metadata["doc_id"] for d in store.similarity_search(q["question"], k=depth)]),
         "1000/200 chars, same MiniLM, Chroma; question only"),
        ("BM25 alone", lambda q: distinct(
            [gen.chunks[i].doc_id for i, _ in gen.lexical.search(q["question"], depth)]),
         f"bm25s over PolicyDesk's {s.chunk_tokens}-token chunks; question only"),
        ("PolicyDesk, no history", lambda q: distinct(
            [r.chunk.doc_id for r in searcher.search(q["question"], filters, depth)]),
         "hybrid, question only"),
        ("RRF", lambda q: distinct(
            [r.chunk.doc_id for r in rrf.search(q["question"], filters, depth, q.get("history") or None)]),
         f"reciprocal-rank fusion (k={s.rrf_k}) of the same lists; history used on {with_history} questions"),
        ("PolicyDesk, adaptive fusion", lambda q: distinct(
            [r.chunk.doc_id for r in adaptive.search(q["question"], filters, depth, q.get("history") or None)]),
         "adaptive_fusion=true: BM25 weight scaled by the idf share of the question its best chunk holds"),
        ("PolicyDesk", lambda q: distinct(
            [r.chunk.doc_id for r in searcher.search(q["question"], filters, depth, q.get("history") or None)]),
         f"product defaults; history used on {with_history} questions"),
    ]
    rows = []
    for name, fn, note in systems:
        started = time.perf_counter()
        ranked = [fn(q) for q in questions]
        ms = (time.perf_counter() - started) * 1000 / max(1, len(questions))
        r1, r5, r10, mrr = score_rankings(ranked, questions)
        rows.append(QualityRow(corpus, name, len(questions), r1, r5, r10, mrr, ms, note))
    return rows


def quality(workdir: Path, quick: bool) -> list[QualityRow]:
    """Quality rows for every corpus."""
    embedder = load_embedder()
    return [row for corpus in QUALITY_CORPORA for row in quality_for(corpus, workdir, quick, embedder)]


def _fmt_target(value: float, target: dict[str, float], key: str) -> str:
    if key not in target:
        return f"{value:.3f}"
    ok = value >= target[key]
    return f"[{'green' if ok else 'red'}]{value:.3f}[/] (>= {target[key]})"


def quality_table(rows: list[QualityRow]) -> Table:
    """The quality rows as a rich table, with the targets marked."""
    table = Table(title="Retrieval quality on check halves (bot/evaluation/split.py; doc level: a hit = any gold "
                        "doc among the top-k distinct documents)")
    for col in ("corpus", "system", "n", "R@1", "R@5", "R@10", "MRR@10", "ms/query", "notes"):
        table.add_column(col, justify="right" if col in ("n", "R@1", "R@5", "R@10", "MRR@10", "ms/query") else "left")
    for r in rows:
        target = TARGETS.get(r.corpus, {}) if r.system == "PolicyDesk" else {}
        table.add_row(r.corpus, r.system, str(r.n), f"{r.r1:.3f}", _fmt_target(r.r5, target, "R@5"),
                      f"{r.r10:.3f}", _fmt_target(r.mrr10, target, "MRR@10"), f"{r.ms_per_query:.1f}", r.note)
    return table


# ---- ingestion and re-sync -----------------------------------------------------------------------------


def ingest_benchmark(workdir: Path, quick: bool) -> dict[str, Any]:
    """Ingest chunks/s on a fresh data dir vs the raw embedder's chunks/s on the same chunk texts."""
    from bot.ingest.chunking import Chunker
    from bot.ingest.index import KnowledgeIndex, doc_metadata
    from bot.ingest.loaders import load_paths

    embedder = load_embedder()
    src = CORPORA / "doc2dial" / "docs"
    files = sorted(src.glob("*.md"))
    if quick:
        files = files[:60]
    staged = Path(tempfile.mkdtemp(dir=workdir, prefix="ingest-src-"))
    for f in files:
        shutil.copy(f, staged / f.name)
    s = Settings(kb_dir=staged)
    # the exact texts the index will embed
    chunker = Chunker(s.chunk_tokens, s.chunk_overlap_tokens, s.tokenizer_encoding)
    texts = [c.embed_text for d in load_paths([staged]).documents for c in chunker.run(d, doc_metadata(d, 0, None))]
    # warm up the ONNX session on every length it will see, so neither side pays for first-shape setup
    embedder.embed_array(sorted(texts, key=len)[:: max(1, len(texts) // 48)])

    def raw() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        embedder.embed_array(texts)
        return len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu)

    def ingest() -> tuple[float, float, int, float]:
        data = Settings(data_dir=Path(tempfile.mkdtemp(dir=workdir, prefix="ingest-data-")), kb_dir=staged)
        index = KnowledgeIndex(data, embedder=embedder)
        wall, cpu = time.perf_counter(), time.process_time()
        report = index.sync([staged])
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        shutil.rmtree(data.data_dir, ignore_errors=True)
        return report.chunks_total / wall_s, report.chunks_total / cpu_s, report.chunks_total, wall_s

    # raw, ingest, raw, ingest: the machine is shared, so each side keeps its best run (the one least disturbed
    # by other processes); CPU-time rates (all threads of this process) are less sensitive to other processes
    raws, ingests = [], []
    for _ in range(2):
        raws.append(raw())
        ingests.append(ingest())
    shutil.rmtree(staged, ignore_errors=True)
    raw_rate, raw_cpu = max(r[0] for r in raws), max(r[1] for r in raws)
    ingest_rate, ingest_cpu = max(i[0] for i in ingests), max(i[1] for i in ingests)
    return {"docs": len(files), "chunks": ingests[0][2], "raw_runs": [r[0] for r in raws],
            "ingest_runs": [i[0] for i in ingests], "raw": raw_rate, "ingest": ingest_rate,
            "ingest_seconds": min(i[3] for i in ingests), "ratio": ingest_rate / raw_rate,
            "raw_cpu": raw_cpu, "ingest_cpu": ingest_cpu, "ratio_cpu": ingest_cpu / raw_cpu,
            "peak_rss_mb": peak_rss_mb()}


def resync_benchmark(workdir: Path, repeats: int = 5) -> dict[str, Any]:
    """Time a sync of an unchanged kb/ with a fresh KnowledgeIndex each time, and `policydesk ingest` end to end."""
    from bot.ingest.index import KnowledgeIndex

    kb = Settings().kb_dir
    s = Settings(data_dir=workdir / "kb-index", kb_dir=kb)
    first = KnowledgeIndex(s).sync([kb])  # brings the cached index up to date with kb/ as it is now
    times = []
    for _ in range(repeats):
        index = KnowledgeIndex(s)  # a new object: reads the manifest and builds BM25 like a new process
        started = time.perf_counter()
        report = index.sync([kb])
        times.append(time.perf_counter() - started)
        if report.added or report.updated or report.removed:
            raise SystemExit(f"kb/ changed during the benchmark: {report.summary()}")
    started = time.perf_counter()
    proc = subprocess.run(["uv", "run", "policydesk", "--data-dir", str(s.data_dir), "ingest", str(kb), "--json"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    cli_s = time.perf_counter() - started
    return {"docs": len(report.unchanged), "failed": len(report.failed), "chunks": report.chunks_total,
            "first_sync_s": first.seconds, "median_s": statistics.median(times), "max_s": max(times),
            "cli_s": cli_s, "cli_ok": proc.returncode in (0, 1), "peak_rss_mb": peak_rss_mb()}


# ---- latency at scale ----------------------------------------------------------------------------------


class RandomUnitEmbedder:
    """Deterministic random unit vectors per text: builds big synthetic indexes without hours of embedding."""

    dimension = 384

    def embed_array(self, texts) -> np.ndarray:
        """One random unit vector per text, seeded by the text."""
        import hashlib

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """LangChain interface."""
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """LangChain interface."""
        return self.embed_array([text])[0].tolist()


def vocabulary() -> list[str]:
    """Words of the real corpora, most frequent first, so synthetic text has a realistic Zipf shape."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for corpus in QUALITY_CORPORA:
        for f in sorted((CORPORA / corpus / "docs").glob("*.md"))[:150]:
            counts.update(w for w in f.read_text().lower().split() if w.isalpha() and len(w) > 2)
    return [w for w, _ in counts.most_common(20000)]


def write_synthetic_kb(folder: Path, n_chunks: int, seed: int = 7) -> None:
    """Markdown docs with front matter (mixed audiences and regions), ~10 sections of ~150 words each."""
    rng = random.Random(seed)
    words = vocabulary()
    weights = [1.0 / (i + 10) for i in range(len(words))]
    regions = [["global"], ["EU"], ["US"], ["UK"], ["EU", "UK"], ["ROW"]]
    sections = 10
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(max(1, n_chunks // sections)):
        meta = (f"---\nid: synth-{d:06d}\ntitle: Synthetic policy {d}\ntype: {rng.choice(['sop', 'help_article'])}\n"
                f"audience: {rng.choice(['internal', 'public'])}\nregions: {rng.choice(regions)}\n---\n")
        body = [f"# Synthetic policy {d}\n"]
        for s in range(sections):
            heading = " ".join(rng.choices(words[:3000], weights[:3000], k=3))
            text = " ".join(rng.choices(words, weights, k=rng.randint(110, 170)))
            body.append(f"## {s + 1}. {heading}\n\n{text}.\n")
        sub = folder / f"{d // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"synth-{d:06d}.md").write_text(meta + "\n".join(body))


def latency_at(n_chunks: int, workdir: str, queries: int) -> dict[str, Any]:
    """Build (or reuse) a synthetic index of about n_chunks and time queries with the real query embedder."""
    from bot.ingest.index import KnowledgeIndex
    from bot.search.retrieval import HybridSearcher

    root = Path(workdir) / f"synthetic-{n_chunks}"
    kb = root / "kb"
    s = Settings(data_dir=root / "data", kb_dir=kb, collection="synthetic")
    build_s = 0.0
    marker = root / "built.json"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        write_synthetic_kb(kb, n_chunks)
        report = KnowledgeIndex(s, embedder=RandomUnitEmbedder()).sync([kb])
        build_s = time.perf_counter() - started
        marker.write_text(json.dumps({"chunks": report.chunks_total, "build_s": build_s}))
    built = json.loads(marker.read_text())
    embedder = load_embedder()
    started = time.perf_counter()
    index = KnowledgeIndex(s, embedder=embedder)
    gen = index.require_generation()
    open_s = time.perf_counter() - started
    searcher = HybridSearcher.from_settings(index, s)
    rng = random.Random(11)
    words = vocabulary()[:5000]
    qs = [" ".join(rng.sample(words, rng.randint(4, 10))) + "?" for _ in range(queries)]
    history = [{"role": "user", "text": " ".join(rng.sample(words, 9))},
               {"role": "assistant", "text": " ".join(rng.sample(words, 30))},
               {"role": "user", "text": " ".join(rng.sample(words, 7))}]
    cases = {
        "internal": (Filters(audience=Audience.INTERNAL), None),
        "public + EU": (Filters(audience=Audience.PUBLIC, regions=("EU",)), None),
        "internal + history": (Filters(audience=Audience.INTERNAL), history),
    }
    started = time.perf_counter()
    searcher.search(qs[0], Filters(audience=Audience.INTERNAL), s.top_k)  # builds BM25, loads HNSW pages
    first_s = time.perf_counter() - started
    out: dict[str, Any] = {"n_target": n_chunks, "chunks": len(gen.chunks), "build_s": built["build_s"],
                           "open_s": open_s, "first_query_s": first_s, "cases": {}}
    for name, (filters, hist) in cases.items():
        for q in qs[:5]:  # warm-up: filter masks, HNSW pages, ONNX session
            searcher.search(q, filters, s.top_k, hist)
        times = []
        for q in qs:
            started = time.perf_counter()
            searcher.search(q, filters, s.top_k, hist)
            times.append((time.perf_counter() - started) * 1000)
        out["cases"][name] = {"p50": pct(times, 50), "p95": pct(times, 95), "mean": statistics.fmean(times)}
    # where the time goes, without history
    parts: dict[str, list[float]] = {"embed": [], "dense": [], "bm25": []}
    f = Filters(audience=Audience.INTERNAL)
    for q in qs:
        t0 = time.perf_counter()
        v = embedder.embed_array([q])[0]
        t1 = time.perf_counter()
        index.dense_search(v, f, s.fetch_k)
        t2 = time.perf_counter()
        index.lexical_search(q, f, s.fetch_k)
        t3 = time.perf_counter()
        parts["embed"].append((t1 - t0) * 1000)
        parts["dense"].append((t2 - t1) * 1000)
        parts["bm25"].append((t3 - t2) * 1000)
    out["parts_p50"] = {k: pct(v, 50) for k, v in parts.items()}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# ---- output --------------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything a run measured, for --json."""

    caveat: str
    quality: list[dict[str, Any]] = field(default_factory=list)
    ingest: dict[str, Any] | None = None
    resync: dict[str, Any] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the selected parts, print tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", action="store_true", help="retrieval quality on doc2dial and mtrag_ibmcloud")
    p.add_argument("--latency", action="store_true", help="query latency p50/p95 at 1k/10k/100k chunks")
    p.add_argument("--ingest", action="store_true", help="ingestion throughput and unchanged kb/ re-sync")
    p.add_argument("--quick", action="store_true",
                   help="smaller: a third of the questions, 60 docs for ingestion, 1k/10k chunks for latency")
    p.add_argument("--sizes", default=None, help="comma-separated chunk counts for --latency (default 1000,10000,"
                   "100000; --quick 1000,10000)")
    p.add_argument("--queries", type=int, default=None, help="queries per latency case (default 200, quick 60)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "policydesk-bench",
                   help="where cached benchmark indexes live")
    p.add_argument("--fresh", action="store_true", help="delete the workdir first (rebuilds every index)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if not (args.quality or args.latency or args.ingest):
        args.quality = args.latency = args.ingest = True
    if args.fresh:
        shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = Results(caveat=machine_caveat())
    console.print(f"[bold]PolicyDesk retrieval benchmarks[/]  [dim]{results.caveat}[/]")
    defaults = Settings()
    console.print(f"[dim]Settings: chunk_tokens={defaults.chunk_tokens} fetch_k={defaults.fetch_k} "
                  f"fusion={defaults.fusion} dense/lexical={defaults.dense_weight}/{defaults.lexical_weight} "
                  f"history_turns={defaults.history_turns} history_weight={defaults.history_weight} "
                  f"near_duplicate_jaccard={defaults.near_duplicate_jaccard}[/]")

    if args.ingest:
        ing = run_isolated(ingest_benchmark, args.workdir, args.quick)
        results.ingest = ing
        t = Table(title="Ingestion throughput (doc2dial, fresh data dir, empty embedding cache; chunks/s)")
        for col in ("docs", "chunks", "clock", "raw embedder", "ingest", "ingest / raw", "ingest s",
                    "peak RSS MiB"):
            t.add_column(col, justify="right")
        ok = ing["ratio"] >= 0.9
        t.add_row(str(ing["docs"]), str(ing["chunks"]), "wall, best of 2",
                  f"{ing['raw']:.1f} (runs {_runs(ing['raw_runs'])})",
                  f"{ing['ingest']:.1f} (runs {_runs(ing['ingest_runs'])})",
                  f"[{'green' if ok else 'red'}]{ing['ratio']:.0%}[/] (>= 90%)",
                  f"{ing['ingest_seconds']:.1f}", f"{ing['peak_rss_mb']:.0f}")
        ok = ing["ratio_cpu"] >= 0.9
        t.add_row("", "", "CPU time, best of 2", f"{ing['raw_cpu']:.1f}", f"{ing['ingest_cpu']:.1f}",
                  f"[{'green' if ok else 'red'}]{ing['ratio_cpu']:.0%}[/]", "", "")
        console.print(t)
        rs = run_isolated(resync_benchmark, args.workdir)
        results.resync = rs
        t = Table(title="Re-sync of an unchanged kb/ (a new KnowledgeIndex each time: read the manifest, load and "
                        "hash the files)")
        for col in ("docs", "chunks", "failed files", "sync() median s", "sync() max s", "`policydesk ingest` wall s",
                    "peak RSS MiB"):
            t.add_column(col, justify="right")
        ok = rs["median_s"] < 1.0
        t.add_row(str(rs["docs"]), str(rs["chunks"]), str(rs["failed"]),
                  f"[{'green' if ok else 'red'}]{rs['median_s']:.3f}[/] (< 1 s)", f"{rs['max_s']:.3f}",
                  f"{rs['cli_s']:.2f} (incl. interpreter + imports)", f"{rs['peak_rss_mb']:.0f}")
        console.print(t)

    if args.latency:
        sizes = [int(x) for x in (args.sizes or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")]
        queries = args.queries or (60 if args.quick else 200)
        t = Table(title=f"Query latency, HybridSearcher.search top-{defaults.top_k} (synthetic text, random unit "
                        "chunk vectors, real MiniLM query embedding; ms)")
        for col in ("chunks", "case", "p50", "p95", "embed / dense / bm25 p50", "open s / first query s",
                    "build s", "peak RSS MiB"):
            t.add_column(col, justify="right")
        for n in sizes:
            with console.status(f"[dim]{n} chunks: building (first run only) and querying..."):
                lat = run_isolated(latency_at, n, str(args.workdir), queries)
            results.latency.append(lat)
            limit = 50.0 if n <= 10_000 else 150.0
            for i, (case, v) in enumerate(lat["cases"].items()):
                p95 = v["p95"]
                mark = f"[{'green' if p95 < limit else 'red'}]{p95:.1f}[/]" + (f" (< {limit:.0f})" if i == 0 else "")
                parts = lat["parts_p50"]
                t.add_row(f"{lat['chunks']:,}" if i == 0 else "", case, f"{v['p50']:.1f}", mark,
                          f"{parts['embed']:.1f} / {parts['dense']:.1f} / {parts['bm25']:.1f}" if i == 0 else "",
                          f"{lat['open_s']:.1f} / {lat['first_query_s']:.1f}" if i == 0 else "",
                          f"{lat['build_s']:.0f}" if i == 0 and lat["build_s"] else ("cached" if i == 0 else ""),
                          f"{lat['peak_rss_mb']:.0f}" if i == 0 else "")
        console.print(t)

    if args.quality:
        rows = run_isolated(_quality_dicts, args.workdir, args.quick)
        results.quality = rows
        console.print(quality_table([QualityRow(**r) for r in rows]))
        if args.quick:
            console.print("[yellow]--quick: a third of the questions; targets apply to the full sets.[/]")

    console.print(f"[dim]{machine_caveat()}[/]")
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=2))
    return 0


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _quality_dicts(workdir: Path, quick: bool) -> list[dict[str, Any]]:
    return [asdict(r) for r in quality(workdir, quick)]


if __name__ == "__main__":
    raise SystemExit(main())
