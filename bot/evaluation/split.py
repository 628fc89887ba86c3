"""Fit and check halves of an eval suite: a fixed, seeded split so nothing fitted is reported on its own data.

Every number the product fits (answerability weights, the refusal threshold, priors) is fitted on the `fit` half
of eval/suites/kb_agent.jsonl and kb_public.jsonl (and, when used, of a corpus qa.jsonl) and reported on the
`check` half and on ../shared/eval-dev; the CI gate runs the check halves (docs/quality.md).

A case's half is decided by sha256(SPLIT_SEED + group key) alone, so it never changes when cases are added,
removed or reordered. The group key keeps a conversation whole: corpus turns of one dialogue share a
`source_id` that differs only in a trailing turn number ("<dialogue>_3", "<dialogue><::>3"), and those turns
land in the same half. Our own suites carry each multi-turn case's history inside the case, so the case id is
the key there.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from bot.evaluation.suites import EvalCase

SPLIT_SEED = "policydesk-fit-check-v1"  # changing it re-deals every suite: refit everything after a change
SPLITS = ("all", "fit", "check")
_TURN_SUFFIX = re.compile(r"(?:_|<::>|#|:)\d+$")


def group_key(case: EvalCase) -> str:
    """What keeps related cases together: the dialogue of a corpus turn, otherwise the case id."""
    source = case.extra.get("source_id")
    if isinstance(source, str) and source.strip():
        return "dialogue:" + _TURN_SUFFIX.sub("", source.strip())
    return "case:" + case.id


def half(case: EvalCase, seed: str = SPLIT_SEED) -> str:
    """'fit' or 'check': the half this case belongs to (stable: a hash of the seed and its group key)."""
    digest = hashlib.sha256(f"{seed}\x00{group_key(case)}".encode()).digest()
    return "fit" if digest[0] % 2 == 0 else "check"


def select(cases: Sequence[EvalCase], split: str, seed: str = SPLIT_SEED) -> list[EvalCase]:
    """The cases of one half ('fit' or 'check'), or all of them for 'all'; order is kept."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if split == "all":
        return list(cases)
    return [c for c in cases if half(c, seed) == split]
