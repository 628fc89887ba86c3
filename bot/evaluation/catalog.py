"""The metrics a run reports, in display order, and when a move between two runs counts as a regression."""

from __future__ import annotations

from typing import Any

# Metrics in display order: (key, label, higher is better, is a 0-1 share)
METRICS: list[tuple[str, str, bool, bool]] = [
    ("recall@1", "Doc recall@1", True, True),
    ("recall@5", "Doc recall@5", True, True),
    ("recall@10", "Doc recall@10", True, True),
    ("mrr", "MRR", True, True),
    ("citation_precision", "Citation precision", True, True),
    ("citation_validity", "Citation validity", True, True),
    ("fact_recall", "Expected-fact recall", True, True),
    ("faithfulness", "Faithfulness", True, True),
    ("refusal_precision", "Refusal precision", True, True),
    ("refusal_recall", "Refusal recall", True, True),
    ("answer_rate", "Answer rate (answerable)", True, True),
    ("answered_rate", "Outcome answered (all)", True, True),
    ("caution_rate", "Outcome caution (all)", False, True),
    ("answered_on_answerable", "Answered (answerable)", True, True),
    ("caution_on_answerable", "Caution (answerable)", False, True),
    ("refused_or_caution_on_unanswerable", "Refused or caution (unanswerable)", True, True),
    ("leaks", "Leaks (must be 0)", False, False),
    ("latency_p50_ms", "Latency p50 (ms)", False, False),
    ("latency_p95_ms", "Latency p95 (ms)", False, False),
    ("failed_cases", "Failing cases", False, False),
    ("errors", "Errors", False, False),
]
TAG_METRICS = [
    ("recall@5", "recall@5"),
    ("fact_recall", "facts"),
    ("faithfulness", "faithful"),
    ("refusal_recall", "refusal recall"),
    ("answer_rate", "answer rate"),
    ("answered_on_answerable", "answered"),
    ("caution_rate", "caution"),
]
REGRESSION_EPS = 0.005  # share metrics: smaller moves are noise from rounding
LATENCY_REGRESSION = 1.25  # latency counts as a regression when 25% slower


def is_regression(key: str, new: Any, old: Any) -> bool:
    """Whether a metric moved the wrong way between a baseline and a run."""
    if new is None or old is None:
        return False
    higher = next((h for k, _, h, _ in METRICS if k == key), True)
    if key.startswith("latency"):
        return new > old * LATENCY_REGRESSION and new - old > 5
    if key in ("leaks", "errors", "failed_cases"):
        return new > old
    return new < old - REGRESSION_EPS if higher else new > old + REGRESSION_EPS
