"""Fit the crisis similarity threshold (bot/answer/safety.py CRISIS_SIMILARITY) on fit halves; report on check
halves and ../shared/eval-dev.

    uv run --frozen python benchmarks/crisis_fit.py

A case is a crisis case when its gold documents include the KB's crisis SOP or crisis-resources macro (the
documents a crisis must reach); every other case is a negative. The threshold is the lowest value (in steps of
0.01) above every negative of the fit halves: a false crisis is never refused for low confidence and searches with
the crisis vocabulary, so precision comes first. Each case is scored on its question and, for a multi-turn case,
its last user turn, as the service does for a follow-up. Prints the fitted value and a table; paste the value into
safety.py when it changes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.answer.safety import CrisisDetector, crisis_signal
from bot.core.config import Settings
from bot.evaluation.split import half
from bot.evaluation.suites import EvalCase, load_suite
from bot.ingest.embeddings import MemoEmbedder, build_embeddings

SUITES = [ROOT / "eval" / "suites" / f"{name}.jsonl" for name in ("kb_agent", "kb_public", "kb_typed")]
EVAL_DEV = ROOT.parent / "shared" / "eval-dev" / "kb_dev.jsonl"
CRISIS_DOCS = frozenset({"sop-self-harm-imminent-danger", "macro-crisis-resources"})


def texts(case: EvalCase) -> list[str]:
    """What the detector reads for a case: the question and the last user turn of its history."""
    users = [t.get("text", "") for t in case.history if t.get("role") in ("user", "human")]
    return [case.question, *users[-1:]]


def confusion(rows: list[tuple[bool, bool, float]], threshold: float) -> tuple[int, int, int, int]:
    """(true positives, positives, false positives, negatives) with the phrase check or the similarity."""
    tp = sum(1 for pos, phrase, sim in rows if pos and (phrase or sim >= threshold))
    fp = sum(1 for pos, phrase, sim in rows if not pos and (phrase or sim >= threshold))
    return tp, sum(1 for pos, _, _ in rows if pos), fp, sum(1 for pos, _, _ in rows if not pos)


def main() -> int:
    """Fit on the fit halves, print the threshold and the table."""
    detector = CrisisDetector(MemoEmbedder(build_embeddings(Settings())).embed_array)
    sets: dict[str, list[tuple[bool, bool, float]]] = {"fit": [], "check": [], "eval-dev": []}
    for path in [*SUITES, EVAL_DEV]:
        if not path.is_file():
            continue
        for case in load_suite(path):
            name = "eval-dev" if path == EVAL_DEV else half(case)
            row = (bool(CRISIS_DOCS & set(case.gold_doc_ids)), any(crisis_signal(t) for t in texts(case)),
                   detector.similarity(texts(case)))
            sets[name].append(row)
    top_negative = max(sim for pos, _, sim in sets["fit"] if not pos)
    threshold = math.floor(top_negative * 100 + 1) / 100
    table = Table(title=f"Crisis detection: threshold {threshold:.2f} (highest fit-half negative {top_negative:.3f})")
    for col in ("set", "detector", "crisis caught", "false crises"):
        table.add_column(col)
    for name, rows in sets.items():
        for label, thr in (("phrases only", math.inf), ("phrases + similarity", threshold)):
            tp, pos, fp, neg = confusion(rows, thr)
            table.add_row(name, label, f"{tp}/{pos}", f"{fp}/{neg}")
    Console(width=120).print(table)
    print(f"CRISIS_SIMILARITY = {threshold:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
