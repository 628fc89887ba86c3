"""Answer quality on the third-party corpora (../shared/corpora): citations, key facts, refusals, latency.

Usage (the corpus is ingested into --data-dir first when it is empty):
    uv run python benchmarks/answer_quality.py doc2dial --data-dir /tmp/pd_d2d
    uv run python benchmarks/answer_quality.py mtrag_ibmcloud --data-dir /tmp/pd_mtrag --sweep

Metrics (answerable questions unless said otherwise):
- doc recall@5 (cited): share of questions where a gold document is among the first 5 cited documents.
- retrieval hit@5: share where a gold document is among the top-5 retrieved chunks' documents.
- key-fact share: share of questions whose key facts appear in the answer; key facts = stemmed content words
  of the reference answer that also occur in the gold passage (or gold documents), numbers included; a
  question counts when at least half of them are in the answer text. Also the mean key-fact recall.
- refusal rate on answerable / unanswerable questions.
- quote verification: share of citations whose quote is an exact substring of the cited chunk.
- latency p50/p95 of the whole answer (ms), and of each stage.
- condensing: retrieval hit@5 on questions with history, with (a) the question alone, (b) the retriever's own
  history blending, (c) the deterministic condense of bot.answer.condense.
- answerability ROC AUC: how well the answerability score (Answer.confidence) separates answerable from
  unanswerable questions (corpora with both kinds).
With --sweep it also prints refusal rates for a range of thresholds. These are measurements: the threshold and
the scorer's weights are calibrated on the project's eval suites (benchmarks/answerability_fit.py), not here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.answer.safety import trim_history
from bot.answer.service import AnswerService
from bot.core.config import Settings
from bot.core.models import Audience, Filters
from bot.core.text import analyze
from bot.ingest.index import KnowledgeIndex

CORPORA = ROOT.parent / "shared" / "corpora"


def key_facts(answer: str, grounding: str) -> set[str]:
    """Stemmed content words of the reference answer that the grounding text also contains."""
    g = set(analyze(grounding))
    return {t for t in analyze(answer) if t in g}


def pct(values: list[float], q: float) -> float:
    """q-th percentile (0-100) of values."""
    if not values:
        return float("nan")
    s = sorted(values)
    i = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[i]


def load_qa(corpus: str) -> list[dict]:
    """Questions of one corpus."""
    return [json.loads(line) for line in (CORPORA / corpus / "qa.jsonl").read_text().splitlines() if line.strip()]


def ensure_index(settings: Settings, corpus: str) -> KnowledgeIndex:
    """The corpus index under settings.data_dir, ingested on first use."""
    index = KnowledgeIndex(settings)
    if index.generation() is None:
        report = index.sync([CORPORA / corpus / "docs"])
        print(f"ingested {report.chunks_total} chunks in {report.seconds:.0f}s", file=sys.stderr)
    return index


def run(corpus: str, data_dir: Path, threshold: float | None, sweep: bool, limit: int | None,
        dump: Path | None, embed_units: int | None, overrides: list[str] | None = None,
        skip_condense: bool = False) -> dict:
    """Answer every question and print the metrics table."""
    kw = {"data_dir": data_dir}
    if embed_units is not None:
        kw["answer_embed_units"] = embed_units
    base = Settings(**kw)
    index = ensure_index(base, corpus)
    # the corpora are asked as agents (audience internal), so their threshold applies
    internal = base.refusal_threshold_internal
    chosen = (internal if internal is not None else base.refusal_threshold) if threshold is None else threshold
    # answer with the threshold off, so each question's confidence is recorded; refusals are applied below
    service = AnswerService(base.model_copy(update={"refusal_threshold": 0.0, "refusal_threshold_internal": 0.0}),
                            index)
    service.warm()
    for item in overrides or []:  # composer knobs, for tuning runs: --set sem_weight=0.3
        name, value = item.split("=", 1)
        setattr(service.composers["extractive"], name, type(getattr(service.composers["extractive"], name))(value))
    gen = index.require_generation()
    doc_text = {d: "" for d in gen.documents}
    for c in gen.chunks:
        doc_text[c.doc_id] += c.text + "\n"
    filters = Filters(audience=Audience.INTERNAL)
    rows = []
    qa = load_qa(corpus)[:limit] if limit else load_qa(corpus)
    for item in qa:
        history = trim_history(item.get("history"), base)  # as a surface does with a long transcript
        a = service.ask(item["question"], history, filters)
        gold = set(item.get("gold_doc_ids") or [])
        cited_docs = list(dict.fromkeys(c.doc_id for c in a.citations))
        grounding = item.get("gold_passage") or " ".join(doc_text.get(d, "") for d in gold)
        facts = key_facts(item.get("answer") or "", grounding) if item["answerable"] else set()
        have = set(analyze(a.text)) if not a.refused else set()
        rows.append({
            "id": item["id"], "answerable": item["answerable"], "history": bool(item.get("history")),
            "confidence": a.confidence, "no_support": a.refused, "cited_hit5": bool(gold & set(cited_docs[:5])),
            "retrieved_hit5": bool(gold & set(a.retrieved_doc_ids[:5])),
            "facts": len(facts), "fact_recall": (len(facts & have) / len(facts)) if facts else None,
            "quotes": len(a.citations), "quotes_ok": sum(1 for c in a.citations if c.quote and c.quote in c.chunk_text),
            "timings": a.timings, "answer": a.text, "question": item["question"],
        })
    if dump:
        dump.write_text("\n".join(json.dumps(r) for r in rows))

    def metrics(t: float) -> dict:
        ans = [r for r in rows if r["answerable"]]
        una = [r for r in rows if not r["answerable"]]
        refused = lambda r: r["no_support"] or r["confidence"] < t
        answered = [r for r in ans if not refused(r)]
        fr = [r["fact_recall"] if not refused(r) else 0.0 for r in ans if r["fact_recall"] is not None]
        return {
            "threshold": t,
            "answerable": len(ans), "unanswerable": len(una),
            "refusal_answerable": sum(map(refused, ans)) / max(len(ans), 1),
            "refusal_unanswerable": (sum(map(refused, una)) / len(una)) if una else float("nan"),
            "doc_recall@5_cited": sum(r["cited_hit5"] and not refused(r) for r in ans) / max(len(ans), 1),
            "doc_recall@5_cited_when_answered": sum(r["cited_hit5"] for r in answered) / max(len(answered), 1),
            "key_fact_share": sum(1 for x in fr if x >= 0.5) / max(len(fr), 1),
            "key_fact_recall_mean": statistics.mean(fr) if fr else float("nan"),
        }

    m = metrics(chosen)
    quotes = sum(r["quotes"] for r in rows)
    m["quote_verified"] = sum(r["quotes_ok"] for r in rows) / max(quotes, 1)
    m["citations"] = quotes
    m["retrieval_hit@5"] = sum(r["retrieved_hit5"] for r in rows if r["answerable"]) / max(
        sum(r["answerable"] for r in rows), 1)
    totals = [r["timings"]["total"] * 1000 for r in rows]
    m["latency_p50_ms"], m["latency_p95_ms"] = pct(totals, 50), pct(totals, 95)
    for stage in ("condense", "retrieve", "compose", "verify"):
        vals = [r["timings"].get(stage, 0) * 1000 for r in rows]
        m[f"{stage}_p50_ms"], m[f"{stage}_p95_ms"] = pct(vals, 50), pct(vals, 95)
    print(f"\n== {corpus}: {len(rows)} questions, chunks {len(gen.chunks)}, threshold {chosen}")
    for k, v in m.items():
        print(f"  {k:34s} {v:.3f}" if isinstance(v, float) else f"  {k:34s} {v}")
    pos = [r["confidence"] for r in rows if r["answerable"]]
    neg = [r["confidence"] for r in rows if not r["answerable"]]
    if pos and neg:  # how well the answerability score separates the two, whatever the threshold
        auc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        print(f"  {'answerability ROC AUC':34s} {auc:.3f}")
    if sweep:
        print("\n  threshold  refuse(answerable)  refuse(unanswerable)  cited@5  key-fact share")
        for t in [x / 100 for x in range(20, 80, 2)]:
            s = metrics(t)
            print(f"  {t:9.2f}  {s['refusal_answerable']:18.3f}  {s['refusal_unanswerable']:20.3f}  "
                  f"{s['doc_recall@5_cited']:7.3f}  {s['key_fact_share']:14.3f}")
    if not skip_condense:
        condense_study(service, corpus, qa)
    return m


def condense_study(service: AnswerService, corpus: str, qa: list[dict]) -> None:
    """Retrieval hit@5 on answerable questions with history, by how the history is used."""
    multi = [dict(q, history=trim_history(q["history"], service.settings)) for q in qa
             if q.get("history") and q["answerable"]]
    if not multi:
        return
    filters = Filters(audience=Audience.INTERNAL)
    k = 5
    hits = {"question alone": 0, "retriever history blend": 0, "condense (follow-ups) only": 0,
            "condense + blend (default)": 0}
    for q in multi:
        gold = set(q["gold_doc_ids"])

        def hit(results, gold=gold) -> bool:
            return bool(gold & {r.chunk.doc_id for r in results[:k]})

        c = service.condenser.run(q["question"], q["history"], service.weights())
        hits["question alone"] += hit(service.searcher.search(q["question"], filters, k))
        hits["retriever history blend"] += hit(service.searcher.search(q["question"], filters, k, q["history"]))
        hits["condense (follow-ups) only"] += hit(service.searcher.search(c.retrieval_query, filters, k))
        hits["condense + blend (default)"] += hit(service.searcher.search(c.retrieval_query, filters, k,
                                                                          q["history"]))
    print(f"\n  follow-up retrieval hit@{k} on {len(multi)} answerable questions with history ({corpus}):")
    for name, n in hits.items():
        print(f"    {name:30s} {n / len(multi):.3f}")


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", choices=["doc2dial", "mtrag_ibmcloud"])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--threshold", type=float, default=None, help="Refusal threshold (default: Settings).")
    p.add_argument("--sweep", action="store_true", help="Print refusal rates over a range of thresholds.")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--dump", type=Path, default=None, help="Write per-question rows as JSONL.")
    p.add_argument("--embed-units", type=int, default=None)
    p.add_argument("--set", action="append", default=[], help="Extractive composer knob, e.g. sem_weight=0.3.")
    p.add_argument("--no-condense-study", action="store_true")
    a = p.parse_args()
    run(a.corpus, a.data_dir, a.threshold, a.sweep, a.limit, a.dump, a.embed_units, a.set, a.no_condense_study)


if __name__ == "__main__":
    main()
