"""Per-case and aggregate metrics: retrieval recall@k / MRR, citation precision and validity, fact
recall, leaks, refusal and outcome rates, latency percentiles."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bot.core.audience import LeakGuard
from bot.core.models import Answer, Citation
from bot.core.text import analyze, normalise, split_sentences
from bot.evaluation.suites import EvalCase

log = logging.getLogger(__name__)

RUN_SCHEMA = 1
RECALL_KS = (1, 5, 10)
RETRIEVAL_DEPTH = 10  # distinct documents kept per case for recall@k / MRR

# Key-term recall (corpora without expected_facts): a case passes when at least half its key terms are stated.
KEY_TERM_PASS = 0.5
# Offline faithfulness: a sentence is supported by its cited chunks when every number it states occurs there,

# ------------------------------------------------------------------------------------------------------------
# Text helpers shared by the metrics
# ------------------------------------------------------------------------------------------------------------
def contains_phrase(haystack_norm: str, phrase: str) -> bool:
    """Whether the normalised phrase occurs in an already-normalised text on word boundaries."""
    needle = normalise(phrase)
    return bool(needle) and f" {needle} " in f" {haystack_norm} "


def fact_stated(answer_norm: str, answer_terms: Sequence[str], fact: str) -> bool:
    """A fact is stated when one of its " | " alternatives occurs in the answer, as a normalised phrase or as
    the same run of stemmed content words (so "14-day" states "14 days" and "refunded" states "refund")."""
    for alt in fact.split(" | "):
        if contains_phrase(answer_norm, alt):
            return True
        seq = analyze(alt)
        n = len(seq)
        if n and any(list(answer_terms[i : i + n]) == seq for i in range(len(answer_terms) - n + 1)):
            return True
    return False


_TABLE_SEPARATOR_RE = re.compile(r"^:?-{2,}:?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# why: splits a chunk into sentences and table rows in one pass over its lines
def source_units(text: str) -> list[str]:
    """A chunk's statements for the judge: its sentences, and each Markdown table row as "header: cell; ...",
    the way answers quote table rows."""
    units: list[str] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("|"):
            prose.append(lines[i])
            i += 1
            continue
        units += [s for s, _ in split_sentences("\n".join(prose))]
        prose = []
        block: list[list[str]] = []
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            row = _cells(lines[i])
            if not all(_TABLE_SEPARATOR_RE.match(c) for c in row if c):
                block.append(row)
            i += 1
        header, rows = block[0], block[1:]
        linear = ["; ".join(f"{h}: {c}" for h, c in zip(header, row) if c) for row in rows]
        units += linear or [" ".join(header)]
    units += [s for s, _ in split_sentences("\n".join(prose))]
    return [u for u in units if u.strip()]


def key_terms(case: EvalCase) -> list[str]:
    """Key facts for a case without expected_facts: the reference answer's words grounded in the passage.

    Rule (eval/README.md): stemmed content words (stop words removed) of the reference answer that also occur
    in the gold passage; if fewer than 2 remain, the reference answer's own content words; if there is no
    reference answer, the gold passage's.
    """
    answer_terms = list(dict.fromkeys(analyze(case.reference_answer or "")))
    passage_terms = set(analyze(case.gold_passage or ""))
    if answer_terms and passage_terms:
        grounded = [t for t in answer_terms if t in passage_terms]
        if len(grounded) >= 2:
            return grounded
    if answer_terms:
        return answer_terms
    return list(dict.fromkeys(analyze(case.gold_passage or "")))


# ------------------------------------------------------------------------------------------------------------
# Per-case metrics (pure functions over an Answer; the runner supplies chunk texts)
# ------------------------------------------------------------------------------------------------------------
def retrieval_metrics(ranked_doc_ids: Sequence[str], gold: Iterable[str]) -> dict[str, float] | None:
    """Doc recall@1/5/10 (any gold id counts) and reciprocal rank over distinct docs in rank order."""
    gold = set(gold)
    if not gold:
        return None
    ranked = list(dict.fromkeys(ranked_doc_ids))
    first = next((i for i, d in enumerate(ranked, 1) if d in gold), None)
    out = {f"recall@{k}": 1.0 if first is not None and first <= k else 0.0 for k in RECALL_KS}
    out["mrr"] = 1.0 / first if first is not None and first <= RETRIEVAL_DEPTH else 0.0
    return out


def citation_precision(citations: Sequence[Citation], gold: Iterable[str]) -> float | None:
    """Share of cited documents (distinct) that are gold; None when nothing is cited or there is no gold."""
    gold = set(gold)
    cited = list(dict.fromkeys(c.doc_id for c in citations))
    if not gold or not cited:
        return None
    return sum(d in gold for d in cited) / len(cited)


def quote_is_valid(quote: str, chunk_text: str | None) -> bool:
    """A quote is valid when it is non-empty and occurs in its chunk after normalisation."""
    if not chunk_text or not normalise(quote):
        return False
    return contains_phrase(normalise(chunk_text), quote)


def fact_recall(answer_text: str, case: EvalCase) -> tuple[float | None, str, list[str]]:
    """(recall, mode, missing): expected facts stated in the answer, or key-term recall without them."""
    norm = normalise(answer_text)
    if case.expected_facts:
        terms = analyze(answer_text)
        missing = [f for f in case.expected_facts if not fact_stated(norm, terms, f)]
        return 1 - len(missing) / len(case.expected_facts), "expected_facts", missing
    terms = key_terms(case)
    if not terms:
        return None, "none", []
    have = set(analyze(answer_text))
    missing = [t for t in terms if t not in have]
    return 1 - len(missing) / len(terms), "key_terms", missing



# ------------------------------------------------------------------------------------------------------------
# Leaks
# ------------------------------------------------------------------------------------------------------------
def leak_findings(guard: LeakGuard, answer: Answer) -> list[str]:
    """Leaks of one public answer: what the shared check (bot/core/audience.py) finds in what the user sees,
    plus what it withheld (a blocked answer means internal content reached the answer stage)."""
    return guard.check(answer).reasons + [f"blocked before showing: {r}" for r in answer.blocked_reasons]


# ------------------------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(sum(vals) / len(vals)), 4) if vals else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation) or None for no values."""
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 1) if values else None


# why: each metric is one line; the complexity is the None handling of optional metrics
def aggregate(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate metrics over case records (as stored in a run file); None where a metric does not apply."""
    ok = [c for c in cases if not c.get("error")]
    m = [c["metrics"] for c in ok]
    out: dict[str, Any] = {"cases": len(cases), "errors": len(cases) - len(ok)}
    for k in [f"recall@{k}" for k in RECALL_KS] + ["mrr"]:
        out[k] = _mean(x.get(k) for x in m)
    out["citation_precision"] = _mean(x.get("citation_precision") for x in m)
    cited = sum(x.get("citations", 0) for x in m)
    valid = sum(x.get("valid_citations", 0) for x in m)
    out["citation_validity"] = round(valid / cited, 4) if cited else None
    out["fact_recall"] = _mean(x.get("fact_recall") for x in m)
    out["faithfulness"] = _mean(x.get("faithfulness") for x in m)
    expected = [c for c in ok if c["expected"]["expected_refusal"]]
    refused = [c for c in ok if c.get("refused")]
    both = [c for c in expected if c.get("refused")]
    answered_mode = any(c.get("answer") is not None for c in ok)
    out["refusal_precision"] = round(len(both) / len(refused), 4) if refused and answered_mode else None
    out["refusal_recall"] = round(len(both) / len(expected), 4) if expected and answered_mode else None
    should_answer = [c for c in ok if not c["expected"]["expected_refusal"]]
    out["answer_rate"] = (
        round(sum(not c.get("refused") for c in should_answer) / len(should_answer), 4)
        if should_answer and answered_mode
        else None
    )
    out.update(outcome_rates(ok, should_answer, expected) if answered_mode else {})
    out["leaks"] = sum(x.get("leaks", 0) for x in m) if answered_mode else None
    lat = [c["latency_ms"] for c in ok if c.get("latency_ms") is not None]
    out["latency_p50_ms"] = percentile(lat, 50)
    out["latency_p95_ms"] = percentile(lat, 95)
    out["failed_cases"] = sum(bool(c.get("failures")) for c in cases)
    return out


def case_outcome(record: dict[str, Any]) -> str:
    """answered | caution | refused of a case record (runs written before `outcome` existed: from `refused`)."""
    return record.get("outcome") or ("refused" if record.get("refused") else "answered")


def outcome_rates(ok: Sequence[dict[str, Any]], should_answer: Sequence[dict[str, Any]],
                  expected_refusal: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Issue 11's outcome figures: answered and caution rates over all cases, answered and caution rates on
    answerable cases, and the share of should-refuse cases (out-of-KB, near-miss) refused or marked caution."""

    def share(records: Sequence[dict[str, Any]], *outcomes: str) -> float | None:
        return round(sum(case_outcome(c) in outcomes for c in records) / len(records), 4) if records else None

    return {
        "answered_rate": share(ok, "answered"),
        "caution_rate": share(ok, "caution"),
        "answered_on_answerable": share(should_answer, "answered"),
        "caution_on_answerable": share(should_answer, "caution"),
        "refused_or_caution_on_unanswerable": share(expected_refusal, "refused", "caution"),
    }


def by_tag(cases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Aggregate metrics per tag (a case counts under each of its tags)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        for t in c.get("tags", []):
            groups.setdefault(t, []).append(c)
    return {t: aggregate(cs) for t, cs in sorted(groups.items())}
