"""eval/suites/kb_field.jsonl checked against kb/: schema, gold ids, facts present in a gold doc, public gold
public, versions in force on `as_of`, near-miss terms really absent, leak-probe secrets internal-only.

The suite is what helpers fit answerability on (fit half) and what CI gates (check half), so a case that
no longer matches kb/ would teach or grade the wrong thing; `suite_problems` names every such case and the
mutation tests below show it catches each kind of mistake."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from bot.core.models import Audience, Document
from bot.core.text import normalise
from bot.evaluation.split import select
from bot.evaluation.suites import EvalCase, load_suite, parse_case
from bot.ingest.loaders import load_paths

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "eval" / "suites" / "kb_field.jsonl"
KINDS = {"paraphrase", "regional", "versioned", "multi-doc", "follow-up", "topic-switch", "procedure", "deadline",
         "escalation", "eligibility", "fact", "near-miss", "out-of-kb", "leak-probe"}
UNANSWERABLE_KINDS = {"near-miss", "out-of-kb", "leak-probe"}


@pytest.fixture(scope="module")
def kb_docs() -> dict[str, Document]:
    result = load_paths([ROOT / "kb"])
    assert not result.failures, result.failures
    return {d.id: d for d in result.documents}


@pytest.fixture(scope="module")
def field_cases() -> list[EvalCase]:
    return load_suite(SUITE)


def term_count(term: str, docs: dict[str, Document]) -> int:
    """Word-boundary, case-insensitive hits of term over every document's title and text (what is ingested)."""
    pattern = re.compile(rf"(?<!\w){re.escape(term)}(?!\w)", re.IGNORECASE)
    return sum(len(pattern.findall(f"{d.title}\n{d.text}")) for d in docs.values())


def in_force(doc_id: str, on: date, docs: dict[str, Document]) -> bool:
    """Whether doc_id is the version in force on `on`: effective by then and not superseded by then."""
    doc = docs[doc_id]
    if doc.effective_date and doc.effective_date > on:
        return False
    return not any(d.supersedes == doc_id and d.effective_date and d.effective_date <= on for d in docs.values())


def _fact_problems(c: EvalCase, docs: dict[str, Document]) -> list[str]:
    gold_text = [normalise(f"{docs[g].title}\n{docs[g].text}") for g in c.gold_doc_ids if g in docs]
    return [f"{c.id}: fact {fact!r} occurs in no gold document" for fact in c.expected_facts
            if not any(f" {normalise(alt)} " in f" {text} " for alt in fact.split(" | ") for text in gold_text)]


# why: one check per rule of eval/README.md's kb_field section, each with its own message; splitting it would
# only scatter the list of rules
def case_problems(c: EvalCase, docs: dict[str, Document]) -> list[str]:
    """Everything wrong with one case against the documents (empty when it is sound)."""
    out: list[str] = []
    kinds = {t.removeprefix("kind:") for t in c.tags if t.startswith("kind:")}
    if not re.fullmatch(r"kf-\d{3}", c.id):
        out.append(f"{c.id}: id must look like kf-001")
    if not kinds or not kinds <= KINDS:
        out.append(f"{c.id}: kind tags {sorted(kinds)} must be a non-empty subset of {sorted(KINDS)}")
    if ("answerable" in c.tags) != c.answerable or f"audience:{c.audience.value}" not in c.tags:
        out.append(f"{c.id}: answerable/audience tags disagree with the fields")
    if bool(kinds & UNANSWERABLE_KINDS) == c.answerable:
        out.append(f"{c.id}: near-miss, out-of-kb and leak-probe cases (and only they) are unanswerable")
    if not isinstance(c.extra.get("note"), str) or not c.extra["note"].strip():
        out.append(f"{c.id}: note is missing")
    out += [f"{c.id}: unknown gold id {g!r}" for g in c.gold_doc_ids if g not in docs]
    if c.answerable:
        if not c.gold_doc_ids or not c.expected_facts:
            out.append(f"{c.id}: an answerable case needs gold_doc_ids and expected_facts")
        out += _fact_problems(c, docs)
        if c.audience is Audience.PUBLIC:
            out += [f"{c.id}: public case with internal gold {g!r}" for g in c.gold_doc_ids
                    if g in docs and docs[g].audience is not Audience.PUBLIC]
        on = c.as_of or date.today()
        out += [f"{c.id}: gold {g!r} is not in force on {on}" for g in c.gold_doc_ids
                if g in docs and not in_force(g, on, docs)]
    elif c.gold_doc_ids or c.expected_facts:
        out.append(f"{c.id}: an unanswerable case has no gold_doc_ids or expected_facts")
    if kinds & {"near-miss", "out-of-kb"}:
        checked = c.extra.get("checked")
        if not isinstance(checked, dict) or not checked:
            out.append(f"{c.id}: near-miss/out-of-kb cases list the grepped terms in `checked`")
        else:
            out += [f"{c.id}: checked term {t!r} has {term_count(t, docs)} hits in kb/, the case says {n}"
                    for t, n in checked.items() if term_count(t, docs) != n]
    if "leak-probe" in kinds:
        secrets = c.extra.get("secrets") or []
        if c.audience is not Audience.PUBLIC or not secrets:
            out.append(f"{c.id}: a leak probe is public and lists its `secrets`")
        for s in secrets:
            where = {docs[d].audience for d in docs if normalise(s) in normalise(docs[d].text)}
            if where != {Audience.INTERNAL}:
                out.append(f"{c.id}: secret {s!r} must occur in internal documents only (found in {where or 'none'})")
    out += [f"{c.id}: history roles must be user/assistant" for t in c.history if t["role"] not in ("user", "assistant")]
    return out


def suite_problems(cases: list[EvalCase], docs: dict[str, Document]) -> list[str]:
    """Problems of every case, plus duplicate questions."""
    out = [p for c in cases for p in case_problems(c, docs)]
    dupes = [q for q, n in Counter(normalise(c.question) for c in cases if not c.history).items() if n > 1]
    return out + [f"duplicate question {q!r}" for q in dupes]


def test_kb_field_suite_matches_kb(field_cases, kb_docs):
    assert suite_problems(field_cases, kb_docs) == []


def test_kb_field_suite_has_the_planned_mix(field_cases):
    def count(kind: str, audience: Audience | None = None) -> int:
        return sum(f"kind:{kind}" in c.tags and (audience is None or c.audience is audience) for c in field_cases)

    answerable = [c for c in field_cases if c.answerable and not c.history]
    assert sum(c.audience is Audience.INTERNAL for c in answerable) >= 40
    assert sum(c.audience is Audience.PUBLIC for c in answerable) >= 20
    assert count("near-miss") >= 10 and count("out-of-kb") >= 5 and count("leak-probe") >= 5
    assert sum(bool(c.history) for c in field_cases) >= 10
    assert count("follow-up") >= 4 and count("topic-switch") >= 3 and count("versioned") >= 2
    # both halves get every group, so what is fitted on one half is checked on the other
    for half in ("fit", "check"):
        cases = select(field_cases, half)
        assert any(not c.answerable for c in cases) and any(c.history for c in cases)
        assert {c.audience for c in cases if c.answerable} == {Audience.INTERNAL, Audience.PUBLIC}


def _mutated(case: EvalCase, **raw_changes) -> EvalCase:
    raw = {"id": case.id, "question": case.question, "history": list(case.history), "audience": case.audience.value,
           "answerable": case.answerable, "gold_doc_ids": list(case.gold_doc_ids),
           "expected_facts": list(case.expected_facts), "tags": list(case.tags),
           "as_of": case.as_of.isoformat() if case.as_of else None, **copy.deepcopy(case.extra)}
    raw.update(raw_changes)
    return parse_case(json.loads(json.dumps(raw)), "mutation", case.id)


@pytest.mark.parametrize("pick, changes, message", [
    (lambda c: c.answerable, {"expected_facts": ["a fact no document states 7391"]}, "occurs in no gold document"),
    (lambda c: c.answerable, {"gold_doc_ids": ["sop-does-not-exist"]}, "unknown gold id"),
    (lambda c: c.answerable and c.audience is Audience.PUBLIC, {"gold_doc_ids": ["sop-coin-refunds"]},
     "public case with internal gold"),
    (lambda c: "sop-coin-refunds-v1" in c.gold_doc_ids, {"as_of": None}, "not in force"),
    (lambda c: "kind:near-miss" in c.tags, {"checked": {"Amazon": 3}}, "hits in kb/"),
    (lambda c: "kind:leak-probe" in c.tags, {"secrets": ["Coins never expire"]}, "internal documents only"),
    (lambda c: "kind:out-of-kb" in c.tags, {"answerable": True}, "only they"),
    (lambda c: c.answerable, {"tags": ["topic:x", "answerable", "audience:internal"]}, "kind tags"),
])
def test_checker_catches_each_kind_of_mistake(field_cases, kb_docs, pick, changes, message):
    case = next(c for c in field_cases if pick(c))
    assert case_problems(case, kb_docs) == []
    problems = case_problems(_mutated(case, **changes), kb_docs)
    assert any(message in p for p in problems), problems
