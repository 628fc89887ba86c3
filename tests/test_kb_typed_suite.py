"""Checks eval/suites/kb_typed.jsonl against the documents in kb/ (loaded by the real loaders, HTML/PDF/DOCX too).

The suite is only worth its fit/check halves if every case is true to the KB: gold ids exist, each expected fact
is quoted from a gold document, the public never gets an internal gold document, near-miss and out-of-KB
questions ask for a detail the KB really lacks, and leak probes ask for something only internal documents hold.
The last tests feed deliberately broken cases to the same checks, so the checker is shown to fail.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from pathlib import Path

import pytest

from bot.core.models import Audience, Document
from bot.core.text import normalise
from bot.evaluation.metrics import contains_phrase
from bot.evaluation.suites import EvalCase, load_suite
from bot.ingest.loaders import load_paths

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "eval" / "suites" / "kb_typed.jsonl"
KB = ROOT / "kb"
KINDS = {"paraphrase", "regional", "follow-up", "topic-switch", "procedure", "deadline", "escalation",
         "eligibility", "fact", "near-miss", "out-of-kb", "leak-probe"}
UNANSWERABLE_KINDS = {"near-miss", "out-of-kb", "leak-probe"}
ID_RE = re.compile(r"^kt-\d{3}$")


@lru_cache(maxsize=1)
def kb_docs() -> dict[str, Document]:
    result = load_paths([KB])
    assert not result.failures, result.failures
    return {d.id: d for d in result.documents}


@cache
def norm_text(doc_id: str) -> str:
    doc = kb_docs()[doc_id]
    return normalise(f"{doc.title}\n{doc.text}")


def kinds(case: EvalCase) -> set[str]:
    return {t.split(":", 1)[1] for t in case.tags if t.startswith("kind:")}


def case_problems(case: EvalCase) -> list[str]:
    """Everything wrong with one case against kb/ (empty when the case is sound)."""
    docs = kb_docs()
    problems: list[str] = []
    kind = kinds(case)
    if not ID_RE.match(case.id):
        problems.append(f"id {case.id!r} is not kt-NNN")
    if not kind or not kind <= KINDS:
        problems.append(f"kind tags {sorted(kind)} not in {sorted(KINDS)}")
    if f"audience:{case.audience.value}" not in case.tags:
        problems.append("audience tag does not match the audience field")
    if ("answerable" if case.answerable else "unanswerable") not in case.tags:
        problems.append("answerable tag does not match the answerable field")
    if kind & {"follow-up", "topic-switch"} and not case.history:
        problems.append("follow-up/topic-switch case without history")
    if bool(kind & UNANSWERABLE_KINDS) == case.answerable:
        problems.append("near-miss/out-of-kb/leak-probe cases (and only they) must be unanswerable")
    for gid in case.gold_doc_ids:
        if gid not in docs:
            problems.append(f"gold doc {gid!r} is not in kb/")
        elif case.audience is Audience.PUBLIC and docs[gid].audience is not Audience.PUBLIC:
            problems.append(f"public case cites internal gold doc {gid!r}")
    if case.answerable:
        if not case.gold_doc_ids or not case.expected_facts:
            problems.append("answerable case needs gold_doc_ids and expected_facts")
        gold = [g for g in case.gold_doc_ids if g in docs]
        for fact in case.expected_facts:
            if not any(contains_phrase(norm_text(g), alt) for g in gold for alt in fact.split(" | ")):
                problems.append(f"fact {fact!r} occurs in no gold doc")
    elif case.gold_doc_ids or case.expected_facts:
        problems.append("unanswerable case must have no gold_doc_ids and no expected_facts")
    missing = case.extra.get("missing") or []
    if kind & {"near-miss", "out-of-kb"} and not missing:
        problems.append("near-miss/out-of-kb case must list the 'missing' detail it asks for")
    for term in missing:
        found = [d for d in docs if contains_phrase(norm_text(d), term)]
        if found:
            problems.append(f"'missing' term {term!r} is in kb/: {found[:3]}")
    probes = case.extra.get("probe_terms") or []
    if "leak-probe" in kind and (not probes or case.audience is not Audience.PUBLIC):
        problems.append("a leak probe is a public case listing the internal 'probe_terms' it fishes for")
    for term in probes:
        internal = [d for d, doc in docs.items() if doc.audience is Audience.INTERNAL
                    and contains_phrase(norm_text(d), term)]
        public = [d for d, doc in docs.items() if doc.audience is Audience.PUBLIC
                  and contains_phrase(norm_text(d), term)]
        if not internal or public:
            problems.append(f"probe term {term!r}: internal docs {internal[:3]}, public docs {public[:3]}")
    return problems


@lru_cache(maxsize=1)
def suite() -> tuple[EvalCase, ...]:
    return tuple(load_suite(SUITE))


def test_suite_parses_and_ids_are_sequential():
    cases = suite()
    assert [c.id for c in cases] == [f"kt-{i:03d}" for i in range(1, len(cases) + 1)]


@pytest.mark.parametrize("case", suite(), ids=lambda c: c.id)
def test_case_is_true_to_the_kb(case):
    assert case_problems(case) == []


def test_suite_covers_every_kind_and_both_audiences():
    cases = suite()
    by_kind = {k: sum(k in kinds(c) for c in cases) for k in KINDS}
    assert all(n > 0 for n in by_kind.values()), by_kind
    assert sum(c.audience is Audience.PUBLIC and c.answerable for c in cases) >= 20
    assert sum(c.audience is Audience.INTERNAL and c.answerable and not c.history for c in cases) >= 40
    assert sum(bool(c.history) for c in cases) >= 8


def _typed(**overrides) -> EvalCase:
    base = {"id": "kt-001", "question": "refund window for web coins?", "audience": Audience.INTERNAL,
            "gold_doc_ids": ("sop-coin-refunds",), "expected_facts": ("14 days",),
            "tags": ("kind:fact", "audience:internal", "answerable")}
    return EvalCase(**{**base, **overrides})


def test_checker_accepts_a_sound_case():
    assert case_problems(_typed()) == []


@pytest.mark.parametrize("overrides, expected", [
    ({"expected_facts": ("21 days",)}, "occurs in no gold doc"),
    ({"gold_doc_ids": ("sop-coin-refund",)}, "is not in kb/"),
    ({"audience": Audience.PUBLIC, "tags": ("kind:fact", "audience:public", "answerable")}, "internal gold doc"),
    ({"answerable": False, "gold_doc_ids": (), "expected_facts": (),
      "tags": ("kind:near-miss", "audience:internal", "unanswerable"), "extra": {"missing": ["fraud-review"]}},
     "is in kb/"),
    ({"answerable": False, "gold_doc_ids": (), "expected_facts": (), "audience": Audience.PUBLIC,
      "tags": ("kind:leak-probe", "audience:public", "unanswerable"), "extra": {"probe_terms": ["14 days"]}},
     "public docs ['"),
    ({"tags": ("kind:follow-up", "audience:internal", "answerable")}, "without history"),
])
def test_checker_rejects_a_broken_case(overrides, expected):
    problems = case_problems(_typed(**overrides))
    assert any(expected in p for p in problems), problems
