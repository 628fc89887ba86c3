"""Eval suites: the JSONL case format, parsed and validated into EvalCase objects (eval/README.md)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bot.core.errors import EvalSuiteError
from bot.core.models import REGIONS, Audience, Filters

log = logging.getLogger(__name__)

CASE_FIELDS = {
    "id",
    "question",
    "history",
    "audience",
    "regions",
    "as_of",
    "answerable",
    "gold_doc_ids",
    "gold_passage",
    "expected_facts",
    "expected_refusal",
    "tags",
    "answer",
}

# ------------------------------------------------------------------------------------------------------------
# Suite format
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalCase:
    """One evaluation question with what a good answer must (and must not) do."""

    id: str
    question: str
    history: tuple[dict[str, str], ...] = ()
    audience: Audience = Audience.INTERNAL  # a case without audience is asked as an agent
    regions: tuple[str, ...] = ()
    as_of: date | None = None
    answerable: bool = True
    gold_doc_ids: tuple[str, ...] = ()
    gold_passage: str | None = None
    reference_answer: str | None = None  # the suite's `answer` field (corpora carry a human reference answer)
    expected_facts: tuple[str, ...] = ()  # each may list alternatives separated by " | "
    expected_refusal: bool = False
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def filters(self) -> Filters:
        """The requester's filters this case is asked under."""
        return Filters(audience=self.audience, regions=self.regions, as_of=self.as_of)

    def all_tags(self) -> tuple[str, ...]:
        """The suite's tags plus derived ones (audience, answerability, multi-turn, as-of, region)."""
        derived = [f"audience:{self.audience.value}", "answerable" if self.answerable else "unanswerable"]
        if self.history:
            derived.append("multi-turn")
        if self.as_of:
            derived.append("as-of")
        derived += [f"region:{r}" for r in self.regions]
        if isinstance(self.extra.get("domain"), str):
            derived.append(f"domain:{self.extra['domain']}")
        return tuple(dict.fromkeys(list(self.tags) + derived))


def _as_str_list(raw: Any, name: str, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,) if raw.strip() else ()
    if not isinstance(raw, list) or not all(isinstance(x, (str, int)) for x in raw):
        raise EvalSuiteError(f"{where}: '{name}' must be a list of strings, got {raw!r}")
    return tuple(str(x) for x in raw)


def _as_bool(raw: Any, name: str, where: str, default: bool) -> bool:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise EvalSuiteError(f"{where}: '{name}' must be true or false, got {raw!r}")


# why: validates every field of a case with a message naming it; one branch per field
def parse_case(raw: Any, where: str, fallback_id: str) -> EvalCase:
    """Validate one suite record (a JSON object) into an EvalCase; unknown fields are kept in `extra`."""
    if not isinstance(raw, dict):
        raise EvalSuiteError(f"{where}: each line must be a JSON object, got {type(raw).__name__}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise EvalSuiteError(f"{where}: 'question' must be a non-empty string")
    case_id = str(raw.get("id") or fallback_id)
    history: list[dict[str, str]] = []
    for i, turn in enumerate(raw.get("history") or []):
        if (
            not isinstance(turn, dict)
            or "role" not in turn
            or not isinstance(turn.get("text", turn.get("content")), str)
        ):
            raise EvalSuiteError(
                f"{where}: history[{i}] must be an object with 'role' and 'text' (or 'content')"
            )
        history.append({"role": str(turn["role"]), "text": turn.get("text", turn.get("content"))})
    audience_raw = str(raw.get("audience") or "internal").lower()
    try:
        audience = Audience(audience_raw)
    except ValueError:
        raise EvalSuiteError(
            f"{where}: 'audience' must be internal or public, got {audience_raw!r}"
        ) from None
    canon = {r.lower(): r for r in REGIONS}
    regions = _as_str_list(raw.get("regions"), "regions", where)
    bad = [r for r in regions if r.lower() not in canon]
    if bad:
        raise EvalSuiteError(f"{where}: unknown region(s) {bad}; use {', '.join(REGIONS)}")
    as_of = None
    if raw.get("as_of"):
        try:
            as_of = date.fromisoformat(str(raw["as_of"]))
        except ValueError:
            raise EvalSuiteError(
                f"{where}: 'as_of' must be a date YYYY-MM-DD, got {raw['as_of']!r}"
            ) from None
    answerable = _as_bool(
        raw.get("answerable"),
        "answerable",
        where,
        default=not _as_bool(raw.get("expected_refusal"), "expected_refusal", where, False),
    )
    expected_refusal = _as_bool(
        raw.get("expected_refusal"), "expected_refusal", where, default=not answerable
    )
    gold_passage = raw.get("gold_passage")
    reference = raw.get("answer")
    return EvalCase(
        id=case_id,
        question=question,
        history=tuple(history),
        audience=audience,
        regions=tuple(canon[r.lower()] for r in regions),
        as_of=as_of,
        answerable=answerable,
        gold_doc_ids=_as_str_list(raw.get("gold_doc_ids"), "gold_doc_ids", where),
        gold_passage=gold_passage if isinstance(gold_passage, str) and gold_passage.strip() else None,
        reference_answer=reference if isinstance(reference, str) and reference.strip() else None,
        expected_facts=_as_str_list(raw.get("expected_facts"), "expected_facts", where),
        expected_refusal=expected_refusal,
        tags=_as_str_list(raw.get("tags"), "tags", where),
        extra={k: v for k, v in raw.items() if k not in CASE_FIELDS},
    )


def load_suite(path: Path | str) -> list[EvalCase]:
    """Read a JSONL suite (ours or ../shared/corpora/*/qa.jsonl as they are); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise EvalSuiteError(
            f"Suite file {path} does not exist (pass a .jsonl file, e.g. eval/suites/kb_agent.jsonl)"
        )
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith("//"):
                continue
            where = f"{path}:{line_no}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalSuiteError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            case = parse_case(raw, where, f"{path.stem}-{line_no}")
            if case.id in seen:
                raise EvalSuiteError(
                    f"{where}: duplicate id '{case.id}' (first used on line {seen[case.id]})"
                )
            seen[case.id] = line_no
            cases.append(case)
    if not cases:
        raise EvalSuiteError(f"{path} holds no cases")
    return cases
