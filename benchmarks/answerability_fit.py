"""Fit the answerability scorer (bot/answer/assess.py) on the project's own eval suites and print its constants.

Usage:
    uv run python benchmarks/answerability_fit.py --data-dir /tmp/pd_fit            # fit, print WEIGHTS + sweep
    uv run python benchmarks/answerability_fit.py --data-dir /tmp/pd_fit --current  # sweep the shipped weights

Every case of the FIT halves of every suite in eval/suites/ (kb_agent, kb_public and kb_typed, the realistic-
phrasing suite written from kb/ alone; bot/evaluation/split.py) is asked through the real chain (kb/ ingested into --data-dir on first
use) with refusal switched off, and the features of each answer are recorded; label = the case expects an answer. An L2-regularised logistic regression (plain numpy gradient descent on standardised
features, so no extra dependency) is fitted on both fit halves together and printed in raw feature units, ready to
paste into bot/answer/assess.py. Also printed: 5-fold cross-validated ROC AUC on the fit halves, ROC AUC on
the CHECK halves (never fitted on), and the share refused at each threshold on the fit halves, with the highest
threshold that still answers at least --answer-rate of the answerable fit cases of each suite (how
Settings.refusal_threshold was chosen) and the highest threshold refusing at most --caution-refuse of kb_agent's
answerable fit cases (Settings.caution_threshold: agents between the two get `caution`). ../shared/eval-dev is
never used here; the third-party corpora are not used either: benchmarks/answer_quality.py measures the result on them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.answer import assess
from bot.answer.safety import trim_history
from bot.answer.service import AnswerService, Turn
from bot.core.config import Settings
from bot.evaluation.split import select
from bot.evaluation.suites import load_suite
from bot.ingest.index import KnowledgeIndex

SUITES = sorted((ROOT / "eval" / "suites").glob("kb_*.jsonl"))
NAMES = list(assess.Features.__dataclass_fields__)


def collect(service: AnswerService, suite: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, labels (1 = answerable) and agent flags of every case of one half of a suite that reaches
    the scorer."""
    rows, labels, agents = [], [], []
    for case in select(load_suite(suite), split):
        history = trim_history(list(case.history), service.settings)
        turn = service.chain.invoke(Turn(case.question, history, case.filters, "extractive"))
        if turn.answerability is None:  # small talk or nothing visible: refused before any scoring
            continue
        rows.append([getattr(turn.answerability, n) for n in NAMES])
        labels.append(0.0 if case.expected_refusal else 1.0)
        agents.append(case.filters.audience.value == "internal")
    return np.asarray(rows, dtype=float), np.asarray(labels), np.asarray(agents, dtype=bool)


Halves = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def ask_all(data_dir: Path, kb: Path) -> tuple[Halves, Halves]:
    """Features of the fit and check halves of every suite, asked through the real chain."""
    settings = Settings(data_dir=data_dir, refusal_threshold=0.0, refusal_threshold_internal=0.0)
    index = KnowledgeIndex(settings)
    if index.generation() is None:
        index.sync([kb])
    service = AnswerService(settings, index)
    service.warm()
    return ({s.stem: collect(service, s, "fit") for s in SUITES}, {s.stem: collect(service, s, "check") for s in SUITES})


def load(path: Path) -> tuple[Halves, Halves]:
    """Halves saved by --cache."""
    z = np.load(path)
    out: dict[str, dict[str, list]] = {"fit": {}, "check": {}}
    for key in sorted(z.files):
        half, suite, i = key.split("|")
        out[half].setdefault(suite, [None, None, None])[int(i)] = z[key]
    return ({k: tuple(v) for k, v in out["fit"].items()}, {k: tuple(v) for k, v in out["check"].items()})


def fit(x: np.ndarray, y: np.ndarray, l2: float = 0.01, steps: int = 4000, rate: float = 0.5) -> np.ndarray:
    """Logistic regression weights (last = intercept) by gradient descent on standardised features."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        w -= rate * (xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0])
    return w


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC: chance that an answerable case scores above an unanswerable one (ties count half)."""
    pos, neg = scores[y == 1], scores[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def fitted(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weights and intercept in raw feature units."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    w = fit((x - mu) / sd, y, l2)
    raw = w[:-1] / sd
    return raw, float(w[-1] - (w[:-1] * mu / sd).sum())


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="Index of kb/ (ingested here when empty).")
    p.add_argument("--kb", type=Path, default=ROOT / "kb")
    p.add_argument("--l2", type=float, default=0.01)
    p.add_argument("--answer-rate", type=float, default=0.93,
                   help="Answer at least this share of each suite's answerable fit cases (threshold choice).")
    p.add_argument("--caution-refuse", type=float, default=0.01,
                   help="Agents: refuse at most this share of the agents' answerable fit cases (caution threshold).")
    p.add_argument("--current", action="store_true", help="Score with the shipped weights instead of refitting.")
    p.add_argument("--cache", type=Path, help="Keep the collected features in this .npz (re-fit without re-asking).")
    p.add_argument("--only", help="Comma-separated features to fit (the others get weight 0).")
    a = p.parse_args()

    data, check = load(a.cache) if a.cache and a.cache.exists() else ask_all(a.data_dir, a.kb)
    if a.cache and not a.cache.exists():
        np.savez(a.cache, **{f"{half}|{k}|{i}": arr for half, dd in (("fit", data), ("check", check))
                             for k, d in dd.items() for i, arr in enumerate(d)})
    keep = np.array([n in a.only.split(",") for n in NAMES]) if a.only else np.ones(len(NAMES), dtype=bool)
    data = {k: (d[0] * keep, d[1], d[2]) for k, d in data.items()}
    check = {k: (d[0] * keep, d[1], d[2]) for k, d in check.items()}
    x = np.concatenate([d[0] for d in data.values()])
    y = np.concatenate([d[1] for d in data.values()])

    if a.current:
        w = np.array([assess.WEIGHTS[n] for n in NAMES])
        b = assess.INTERCEPT
    else:
        w, b = fitted(x, y, a.l2)
        # cross-validated AUC, so the figure is not the fit's own training score
        order = np.random.default_rng(0).permutation(len(y))
        cv = np.zeros(len(y))
        for fold in np.array_split(order, 5):
            train = np.setdiff1d(order, fold)
            fw, fb = fitted(x[train], y[train], a.l2)
            cv[fold] = x[fold] @ fw + fb
        print(f"5-fold cross-validated ROC AUC (both suites): {auc(cv, y):.3f}")
        print("\n# paste into bot/answer/assess.py")
        print("WEIGHTS: dict[str, float] = {")
        for n, v in zip(NAMES, w):
            print(f'    "{n}": {v:.3f},')
        print("}")
        print(f"INTERCEPT = {b:.3f}\n")

    scores = {k: 1.0 / (1.0 + np.exp(-(d[0] @ w + b))) for k, d in data.items()}
    for half, dd in (("fit", data), ("check", check)):
        for k, d in dd.items():
            print(f"{k} {half} half: {int(d[1].sum())} answerable / {int((d[1] == 0).sum())} unanswerable, "
                  f"ROC AUC {auc(d[0] @ w + b, d[1]):.3f}")
    print("\nfit halves: share refused (answerable / unanswerable) by threshold:")
    print("threshold  " + "  ".join(f"{k:>22s}" for k in data))
    for t in np.arange(0.20, 0.72, 0.02):
        cells = []
        for k, d in data.items():
            s, lab = scores[k], d[1]
            cells.append(f"{np.mean(s[lab == 1] < t):.3f} / {np.mean(s[lab == 0] < t):.3f}")
        print(f"{t:9.2f}  " + "  ".join(f"{c:>22s}" for c in cells))
    # highest threshold (2 decimals) at which every suite still answers --answer-rate of its answerable cases.
    # One threshold for both audiences: per-audience thresholds at a pooled 0.90 answer rate were tried and
    # answered only 0.68 of eval-dev's internal questions (docs/quality.md).
    best = max((t / 100 for t in range(100) if all(
        np.mean(scores[k][d[1] == 1] >= t / 100) >= a.answer_rate for k, d in data.items())), default=0.0)
    print(f"\nhighest threshold answering >= {a.answer_rate:.2f} of each suite's answerable cases: {best:.2f}"
          "  -> Settings.refusal_threshold")
    chosen = {"public": best, "internal": best}
    # agents between the two thresholds get `caution`; below the lower one they are refused
    agent = np.concatenate([scores[k][(d[1] == 1) & d[2]] for k, d in data.items()])
    caution = max((t / 100 for t in range(100) if np.mean(agent < t / 100) <= a.caution_refuse), default=0.0)
    caution = min(caution, chosen["internal"])
    print(f"highest threshold refusing <= {a.caution_refuse:.2f} of the agents' answerable fit cases: "
          f"{caution:.2f}  -> Settings.caution_threshold")
    print("\nwith these thresholds (score only; caution for a missing specific element not simulated):")
    print("half   suite       answered|answerable  caution|answerable  refused-or-caution|unanswerable")
    for half, dd in (("fit", data), ("check", check)):
        for k, d in dd.items():
            s_ = 1.0 / (1.0 + np.exp(-(d[0] @ w + b)))
            answer_at = np.where(d[2], chosen["internal"], chosen["public"])
            answered, cautious = s_ >= answer_at, d[2] & (s_ < answer_at) & (s_ >= caution)
            pos, neg = d[1] == 1, d[1] == 0
            print(f"{half:6s} {k:10s}  {np.mean(answered[pos]):19.3f}  {np.mean(cautious[pos]):18.3f}  "
                  f"{np.mean(~answered[neg]):30.3f}")


if __name__ == "__main__":
    main()
