"""Long chunks and the embedder's window: how many chunks exceed MiniLM's 256 word pieces, and dense retrieval
with only their first window embedded (releases before 2026-12) against every window mean-pooled (now).

    uv run python benchmarks/long_chunks.py                     # kb/ counts; doc2dial and mtrag_ibmcloud quality

The chunks are PolicyDesk's own (ingest's Chunker over each corpus), embedded both ways with the local MiniLM;
a text that fits the window gets the same vector both ways, so only the long chunks differ. Quality is dense
search alone (cosine over every chunk, numpy), doc-level recall@1/5/10 and MRR@10 on each corpus's questions
(question only, no history), so the difference is the vectors' and nothing else's. Nothing is fitted here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadavg import LoadSampler
from retrieval import CORPORA, distinct, load_questions, score_rankings


def chunks_of(folder: Path):
    """The chunks ingest would make of a folder."""
    from bot.ingest.chunking import Chunker
    from bot.ingest.loaders import load_paths
    from bot.ingest.metadata import NEVER, doc_metadata

    chunker = Chunker()
    return [c for d in load_paths([folder]).documents for c in chunker.run(d, doc_metadata(d, NEVER, None))]


def main() -> None:
    """Print the table."""
    from bot.ingest.embeddings import MAX_SEQ_TOKENS, LocalMiniLMEmbeddings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="doc2dial,mtrag_ibmcloud")
    args = ap.parse_args()
    first = LocalMiniLMEmbeddings(batch_size=8)
    every = LocalMiniLMEmbeddings(batch_size=8, all_windows=True)
    table = Table(title=f"Chunks over {MAX_SEQ_TOKENS} word pieces and dense retrieval (doc level, question only)")
    for col in ("corpus", "chunks", "over the window", "longest", "questions", "vectors", "R@1", "R@5", "R@10",
                "MRR@10", "embed s"):
        table.add_column(col)
    with LoadSampler() as load:
        for name in ["kb", *args.corpora.split(",")]:
            folder = ROOT / "kb" if name == "kb" else CORPORA / name / "docs"
            chunks = chunks_of(folder)
            pieces = [every.pieces(c.embed_text) for c in chunks]
            over = sum(n > MAX_SEQ_TOKENS for n in pieces)
            counts = (name, str(len(chunks)), f"{over} ({100 * over / len(chunks):.0f}%)", str(max(pieces)))
            if name == "kb":
                table.add_row(*counts, "-", "-", "-", "-", "-", "-", "-")
                continue
            questions = load_questions(name)
            texts = [c.embed_text for c in chunks]
            qv = every.embed_array([q["question"] for q in questions])
            for label, embedder in (("first window", first), ("every window", every)):
                started = time.perf_counter()
                cv = embedder.embed_array(texts)
                spent = time.perf_counter() - started
                top = np.argsort(-(qv @ cv.T), axis=1)[:, :60]
                ranked = [distinct([chunks[i].doc_id for i in row]) for row in top]
                r1, r5, r10, mrr = score_rankings(ranked, questions)
                table.add_row(*counts, str(len(questions)), label, f"{r1:.3f}", f"{r5:.3f}", f"{r10:.3f}",
                              f"{mrr:.3f}", f"{spent:.0f}")
    Console(width=200).print(table)
    print(f"load (1-min average) min / mean / max: {load.summary()}")


if __name__ == "__main__":
    main()
