"""Evaluation: JSONL suites -> answers -> per-case and aggregate metrics -> a run file (reports, gate).

The metrics follow the names people know from RAGAS / DeepEval / TruLens, computed offline by default:
retrieval doc recall@k and MRR, citation precision and validity, expected-fact recall, faithfulness, refusal
precision/recall, leaks (internal content reaching a public answer) and latency. eval/README.md documents the
suite format and every rule used here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bot.core.audience import LeakGuard
from bot.core.config import PROJECT_ROOT, Settings
from bot.core.errors import EvalSuiteError
from bot.core.text import analyze, normalise, split_sentences
from bot.core.models import REGIONS, Answer, Audience, Citation, Filters

log = logging.getLogger(__name__)

RUN_SCHEMA = 1
RECALL_KS = (1, 5, 10)
RETRIEVAL_DEPTH = 10  # distinct documents kept per case for recall@k / MRR

# Key-term recall (corpora without expected_facts): a case passes when at least half its key terms are stated.
KEY_TERM_PASS = 0.5
# Offline faithfulness: a sentence is supported by its cited chunks when every number it states occurs there,
# its negation agrees with the closest source sentence, and it is close to the source both lexically and in
# meaning. LEXICAL_ALONE accepts near-verbatim sentences without the embedder (extractive answers are).
LEXICAL_ALONE = 0.85
LEXICAL_WITH_MEANING = 0.5
MEANING_MIN = 0.72

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
_NEGATIONS = frozenset(
    "not no never cannot can't don't doesn't won't isn't aren't without neither nor".split()
)
_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")


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


@dataclass
class SentenceVerdict:
    """Whether one answer sentence is supported by the chunks it cites, and why."""

    sentence: str
    supported: bool
    lexical: float
    similarity: float | None
    reason: str = ""


class OfflineJudge:
    """Entailment-style support check: embedder plus lexical overlap, numbers and negation agreement."""

    name = "offline"

    def __init__(self, embedder):
        self.embedder = embedder
        self._sentence_cache: dict[str, tuple[list[str], np.ndarray, int]] = {}

    def _source_sentences(self, text: str) -> tuple[list[str], np.ndarray, int]:
        """(windows, their vectors, number of single sentences): sentences first, then adjacent pairs."""
        key = hashlib.sha1(text.encode()).hexdigest()
        hit = self._sentence_cache.get(key)
        if hit is None:
            sents = source_units(text) or [text]
            # windows of two sentences catch statements that span a sentence boundary in the source
            windows = sents + [f"{a} {b}" for a, b in zip(sents, sents[1:])]
            hit = (windows, self.embedder.embed_array(windows), len(sents))
            if len(self._sentence_cache) > 4096:
                self._sentence_cache.clear()
            self._sentence_cache[key] = hit
        return hit

    def judge(self, sentences: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[SentenceVerdict]:
        """One verdict per sentence; contexts[i] are the chunk texts sentence i may rely on."""
        return [self._one(sentence, ctx) for sentence, ctx in zip(sentences, contexts)]

    def _one(self, sentence: str, ctx: Sequence[str]) -> SentenceVerdict:
        if not ctx:
            return SentenceVerdict(sentence, False, 0.0, None, "no cited source")
        joined = " ".join(ctx)
        if normalise(sentence) and contains_phrase(normalise(joined), sentence):
            return SentenceVerdict(sentence, True, 1.0, 1.0, "verbatim")
        terms = set(analyze(sentence))
        lexical = len(terms & set(analyze(joined))) / len(terms) if terms else 1.0
        singles: list[str] = []
        single_vecs: list[np.ndarray] = []
        all_vecs: list[np.ndarray] = []
        for text in ctx:
            windows, vecs, n = self._source_sentences(text)
            singles += windows[:n]
            single_vecs.append(vecs[:n])
            all_vecs.append(vecs)
        qv = self.embedder.embed_array([sentence])[0]
        single_sims = np.concatenate(single_vecs) @ qv
        # the closest source unit by meaning plus shared words (table rows embed poorly; their words match)
        overlap = np.array([len(terms & set(analyze(u))) / len(terms) if terms else 0.0 for u in singles])
        closest = singles[int(np.argmax(single_sims + overlap))]
        similarity = float(max(float(np.max(v @ qv)) for v in all_vecs))
        # numbers and negation are checked against the closest source sentence, not the whole chunk: "30 days"
        # elsewhere in the chunk must not support a claim that changed "14 days" to "30 days"
        numbers = {n.replace(",", "") for n in _NUM_RE.findall(sentence)}
        missing = sorted(numbers - {n.replace(",", "") for n in _NUM_RE.findall(closest)})
        if missing:
            return SentenceVerdict(
                sentence, False, lexical, similarity, f"numbers {missing} not in the closest source sentence"
            )
        if bool(set(normalise(sentence).split()) & _NEGATIONS) != bool(
            set(normalise(closest).split()) & _NEGATIONS
        ):
            return SentenceVerdict(sentence, False, lexical, similarity, "negation differs from the source")
        if lexical >= LEXICAL_ALONE:
            return SentenceVerdict(sentence, True, lexical, similarity, "lexical")
        if lexical >= LEXICAL_WITH_MEANING and similarity >= MEANING_MIN:
            return SentenceVerdict(sentence, True, lexical, similarity, "lexical+meaning")
        return SentenceVerdict(sentence, False, lexical, similarity, "not supported by the cited text")


class LLMJudge:
    """RAGAS-style faithfulness with a configured chat model: each statement judged against its sources."""

    name = "llm"

    def __init__(self, settings: Settings, fallback: OfflineJudge, llm=None):
        from bot.answer.chat import build_chat_model

        self.model = llm if llm is not None else build_chat_model(settings)
        self.fallback = fallback
        self.failures = 0

    def judge(self, sentences: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[SentenceVerdict]:
        """A 1/0 verdict per statement from the model; the offline judge answers if the model cannot."""
        from bot.answer.chat import message_text
        from bot.answer.prompts import faithfulness_messages

        if not sentences:
            return []
        sources: list[str] = []
        for ctx in contexts:
            for text in ctx:
                if text not in sources:
                    sources.append(text)
        statements = [(s, [sources.index(t) + 1 for t in ctx]) for s, ctx in zip(sentences, contexts)]
        try:
            reply = self.model.invoke(faithfulness_messages(sources, statements))
            verdicts = _parse_verdicts(message_text(reply), len(sentences))
        except (
            Exception
        ) as exc:  # an unreachable or confused judge must not sink the run: fall back, count it
            log.warning("LLM judge failed (%s); using the offline judge for this answer", exc)
            self.failures += 1
            return self.fallback.judge(sentences, contexts)
        return [SentenceVerdict(s, v, 0.0, None, "llm judge") for s, v in zip(sentences, verdicts)]


def _parse_verdicts(text: str, n: int) -> list[bool]:
    """The judge's JSON list of 0/1 verdicts (tolerates prose around it)."""
    lists = re.findall(r"\[\s*(?:(?:[01]|true|false)\s*,\s*)*(?:[01]|true|false)\s*\]", text, re.IGNORECASE)
    if not lists:
        raise ValueError(f"no verdict list in judge reply: {text[:200]!r}")
    items = json.loads(lists[-1].lower())  # the last list: a chatty judge may quote [n] markers before it
    if len(items) != n:
        raise ValueError(f"judge returned {len(items)} verdicts for {n} statements")
    return [str(v).lower() in ("1", "true") for v in items]


def faithfulness_inputs(
    answer: Answer, chunk_text: Callable[[Citation], str | None]
) -> tuple[list[str], list[list[str]]]:
    """Answer sentences with the texts of the chunks each one cites (all cited chunks if it has no marker)."""
    by_number = {c.number: c for c in answer.citations}
    all_ctx = [t for t in (chunk_text(c) for c in answer.citations) if t]
    sentences: list[str] = []
    contexts: list[list[str]] = []
    for sentence, nums in split_sentences(answer.text):
        if len(analyze(sentence)) < 2:  # connective fragments ("Steps:") carry no claim
            continue
        ctx = (
            [t for t in (chunk_text(by_number[n]) for n in nums if n in by_number) if t] if nums else all_ctx
        )
        sentences.append(sentence)
        contexts.append(list(dict.fromkeys(ctx)))
    return sentences, contexts


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


# ------------------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------------------
class Answerer(Protocol):
    """Anything that answers a case: the product's answer chain, or a retrieval-only stand-in."""

    def __call__(self, question: str, history: list[dict[str, str]], filters: Filters) -> Answer: ...


def chain_answerer(settings: Settings, index, composer: str | None = None) -> Answerer:
    """The product's answer chain (bot.answer.service.AnswerService) over the given index."""
    from bot.answer.service import AnswerService

    service = AnswerService(settings, index=index)

    def ask(question: str, history: list[dict[str, str]], filters: Filters) -> Answer:
        return service.ask(question, history, filters, composer=composer)

    return ask


def case_fields(case: EvalCase) -> dict[str, Any]:
    """The part of a case record that comes from the case itself: what was asked and what was expected."""
    return {
        "id": case.id,
        "question": case.question,
        "history": list(case.history),
        "audience": case.audience.value,
        "regions": list(case.regions),
        "as_of": case.as_of.isoformat() if case.as_of else None,
        "tags": list(case.all_tags()),
        "expected": {
            "answerable": case.answerable,
            "expected_refusal": case.expected_refusal,
            "gold_doc_ids": list(case.gold_doc_ids),
            "expected_facts": list(case.expected_facts),
            "gold_passage": case.gold_passage,
            "reference_answer": case.reference_answer,
        },
    }


def retrieval_answerer(settings: Settings, index) -> Answerer:
    """Retrieval only: an empty answer carrying the ranked doc ids (for measuring retrieval alone)."""
    from bot.search.retrieval import HybridSearcher

    searcher = HybridSearcher.from_settings(index, settings)

    def ask(question: str, history: list[dict[str, str]], filters: Filters) -> Answer:
        hits = searcher.search(question, filters, settings.top_k, history)
        return Answer(
            question=question, text="", retrieved_doc_ids=list(dict.fromkeys(h.chunk.doc_id for h in hits))
        )

    return ask


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The checked-out commit, with '-dirty' when the work tree has changes (read-only git calls)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class EvalRun:
    """A finished run: its configuration, aggregate metrics, per-tag breakdown and one record per case."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    by_tag: dict[str, dict[str, Any]]
    cases: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The run file's JSON form."""
        return {
            "schema": RUN_SCHEMA,
            "config": self.config,
            "git_commit": self.config.get("git_commit"),
            "kb_hash": self.config.get("kb_hash"),
            "metrics": self.metrics,
            "by_tag": self.by_tag,
            "cases": self.cases,
        }

    def save(self, path: Path | str) -> Path:
        """Write the run file (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False, default=str) + "\n")
        return path


def load_run(path: Path | str) -> dict[str, Any]:
    """Read a run file written by `policydesk eval run`, with a clear error if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalSuiteError(
            f"Run file {path} does not exist; create it with `policydesk eval run`"
        ) from None
    except json.JSONDecodeError as exc:
        raise EvalSuiteError(f"{path} is not a run file (invalid JSON: {exc.msg})") from None
    if not isinstance(data, dict) or "metrics" not in data or "cases" not in data:
        raise EvalSuiteError(
            f"{path} is not a run file (no 'metrics'/'cases'); create it with `policydesk eval run`"
        )
    return data


class EvalRunner:
    """Asks every case through an answerer and scores the answers against the suite and the index."""

    def __init__(
        self,
        settings: Settings,
        index,
        answerer: Answerer | None = None,
        *,
        mode: str = "answer",
        judge: str = "auto",
        composer: str | None = None,
    ):
        self.settings = settings
        self.index = index
        self.mode = mode
        self.composer = composer or settings.composer
        if answerer is None:
            answerer = (
                retrieval_answerer(settings, index)
                if mode == "retrieval"
                else chain_answerer(settings, index, self.composer)
            )
        self.answerer = answerer
        gen = index.require_generation()
        self.generation = gen
        from bot.search.retrieval import HybridSearcher

        self.searcher = HybridSearcher.from_settings(index, settings)
        self.leaks = getattr(answerer, "guard", None) or LeakGuard(index)
        offline = OfflineJudge(index.embedder)
        self.judge_name = "offline"
        self.judge = offline
        chat_configured = settings.openai_api_key is not None or settings.openai_base_url is not None
        if judge == "llm" or (judge == "auto" and chat_configured):
            self.judge = LLMJudge(settings, offline)
            self.judge_name = "llm"

    # chunk text by citation: the index is the source of truth, the citation's copy a fallback
    def _chunk_text(self, c: Citation) -> str | None:
        pos = self.generation.by_id.get(c.chunk_id)
        if pos is not None:
            return self.generation.chunks[pos].text
        return None

    def ranked_docs(self, case: EvalCase, answer: Answer) -> list[str]:
        """Distinct docs in rank order: the chain's retrieved docs, then a deeper retrieval to depth 10."""
        ranked = list(dict.fromkeys(answer.retrieved_doc_ids))
        if len(ranked) < RETRIEVAL_DEPTH:
            query = answer.standalone_question or case.question
            # a condensed question already carries the conversation's topic; a raw follow-up needs history
            history = list(case.history) if query == case.question else None
            hits = self.searcher.search(query, case.filters, self.settings.fetch_k, history)
            for h in hits:
                if h.chunk.doc_id not in ranked:
                    ranked.append(h.chunk.doc_id)
        return ranked[:RETRIEVAL_DEPTH]

    def score(self, case: EvalCase, answer: Answer, latency_ms: float) -> dict[str, Any]:
        """The case record: what was asked, what came back, per-case metrics and failure reasons."""
        ranked = self.ranked_docs(case, answer)
        metrics: dict[str, Any] = {}
        failures: list[str] = []
        retr = retrieval_metrics(ranked, case.gold_doc_ids) if case.answerable else None
        if retr:
            metrics.update(retr)
            if retr["recall@5"] == 0:
                failures.append("no gold document in the top 5 retrieved")
        answered = self.mode == "answer"
        record_citations: list[dict[str, Any]] = []
        if answered:
            valid = 0
            for c in answer.citations:
                ok = quote_is_valid(c.quote, self._chunk_text(c))
                valid += ok
                record_citations.append(
                    {
                        "number": c.number,
                        "doc_id": c.doc_id,
                        "quote": c.quote,
                        "audience": c.audience.value,
                        "chunk_id": c.chunk_id,
                        "title": c.title,
                        "section": c.section,
                        "valid": ok,
                    }
                )
            metrics["citations"] = len(answer.citations)
            metrics["valid_citations"] = valid
            if valid < len(answer.citations):
                failures.append(
                    f"{len(answer.citations) - valid} citation quote(s) not found in the cited chunk"
                )
            if case.answerable and not answer.refused:
                metrics["citation_precision"] = citation_precision(answer.citations, case.gold_doc_ids)
                if metrics["citation_precision"] == 0.0:
                    failures.append("cites no gold document")
            if case.answerable and not case.expected_refusal:
                recall, mode, missing = fact_recall("" if answer.refused else answer.text, case)
                metrics["fact_recall"] = None if recall is None else round(recall, 4)
                metrics["fact_mode"] = mode
                if recall is not None and (
                    recall < 1.0 if mode == "expected_facts" else recall < KEY_TERM_PASS
                ):
                    failures.append(
                        f"missing expected facts: {missing}"
                        if mode == "expected_facts"
                        else f"key-term recall {recall:.2f} below {KEY_TERM_PASS}"
                    )
            if not answer.refused and answer.text.strip():
                sentences, contexts = faithfulness_inputs(answer, self._chunk_text)
                verdicts = self.judge.judge(sentences, contexts) if sentences else []
                if verdicts:
                    metrics["faithfulness"] = round(sum(v.supported for v in verdicts) / len(verdicts), 4)
                    unsupported = [v for v in verdicts if not v.supported]
                    metrics["unsupported_sentences"] = [
                        {"sentence": v.sentence, "reason": v.reason} for v in unsupported
                    ]
                    if unsupported:
                        failures.append(
                            f"{len(unsupported)} of {len(verdicts)} sentences not supported by their "
                            "citations"
                        )
            if case.expected_refusal and not answer.refused:
                failures.append("answered, but a refusal was expected")
            if not case.expected_refusal and answer.refused:
                failures.append(f"refused an answerable question ({answer.refusal_reason or 'no reason'})")
            leaks = leak_findings(self.leaks, answer) if case.audience is Audience.PUBLIC else []
            metrics["leaks"] = len(leaks)
            if leaks:
                metrics["leak_findings"] = leaks
                failures += [f"LEAK: {x}" for x in leaks]
        return {
            **case_fields(case),
            "answer": answer.text if answered else None,
            "refused": answer.refused if answered else None,
            "outcome": answer.outcome if answered else None,
            "refusal_reason": answer.refusal_reason if answered else None,
            "standalone_question": answer.standalone_question or None,
            "turn_decision": answer.turn_decision or None,
            "citations": record_citations,
            "retrieved": ranked,
            "related": [r.get("doc_id") for r in answer.related or []],
            "escalation": asdict(answer.escalation) if answer.escalation else None,
            "confidence": answer.confidence,
            "composer": answer.composer or None,
            "latency_ms": round(latency_ms, 2),
            "timings": answer.timings,
            "metrics": metrics,
            "failures": failures,
            "error": None,
            "extra": case.extra,
        }

    def run_case(self, case: EvalCase) -> dict[str, Any]:
        """Ask one case and score it; an exception becomes an error record (the run goes on)."""
        from bot.answer.safety import trim_history

        # like every surface, send only the most recent turns that fit the history limits (corpora run longer)
        history = trim_history(list(case.history), self.settings)
        started = time.perf_counter()
        try:
            answer = self.answerer(case.question, history, case.filters)
        except Exception as exc:  # one bad case must not lose the run; it is counted and shown in the report
            log.warning("case %s failed: %s: %s", case.id, type(exc).__name__, exc)
            return {
                **case_fields(case),
                "answer": None,
                "refused": None,
                "citations": [],
                "retrieved": [],
                "metrics": {},
                "latency_ms": None,
                "failures": [f"error: {type(exc).__name__}: {exc}"],
                "error": f"{type(exc).__name__}: {exc}",
            }
        latency = (time.perf_counter() - started) * 1000
        record = self.score(case, answer, latency)
        record["history_trimmed"] = len(case.history) - len(history)
        return record

    def run(
        self,
        cases: Sequence[EvalCase],
        progress: Callable[[int, int], None] | None = None,
        config: dict[str, Any] | None = None,
    ) -> EvalRun:
        """Run every case, then aggregate; `progress(done, total)` is called after each case."""
        started = time.perf_counter()
        records: list[dict[str, Any]] = []
        for i, case in enumerate(cases, 1):
            records.append(self.run_case(case))
            if progress:
                progress(i, len(cases))
        s = self.settings
        cfg: dict[str, Any] = {
            "mode": self.mode,
            "composer": self.composer if self.mode == "answer" else None,
            "judge": self.judge_name,
            "embedding_provider": s.embedding_provider,
            "chunk_tokens": s.chunk_tokens,
            "top_k": s.top_k,
            "fetch_k": s.fetch_k,
            "refusal_threshold": s.refusal_threshold,
            "chat_model": s.chat_model if self.composer == "chat" or self.judge_name == "llm" else None,
            "data_dir": str(s.data_dir),
            "kb_hash": self.generation.manifest.get("kb_hash"),
            "kb_documents": len(self.generation.documents),
            "kb_chunks": len(self.generation.chunks),
            "git_commit": git_commit(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if isinstance(self.judge, LLMJudge):
            cfg["judge_fallbacks"] = self.judge.failures
        cfg.update(config or {})
        return EvalRun(cfg, aggregate(records), by_tag(records), records)


# ------------------------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------------------------
@dataclass
class GateResult:
    """Which thresholds a run met and which it missed."""

    suite: str
    checks: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c["ok"] for c in self.checks)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The checks that failed."""
        return [c for c in self.checks if not c["ok"]]


def load_thresholds(path: Path | str) -> dict[str, Any]:
    """Read eval/thresholds.toml with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EvalSuiteError(f"Thresholds file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise EvalSuiteError(f"{path} is not valid TOML: {exc}") from None
    for name, section in [("default", data.get("default", {}))] + list(data.get("suite", {}).items()):
        for kind in ("min", "max"):
            for metric, value in (section.get(kind) or {}).items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise EvalSuiteError(f"{path}: [{name}] {kind}.{metric} must be a number, got {value!r}")
    return data


def gate(run: dict[str, Any], thresholds: dict[str, Any], suite: str | None = None) -> GateResult:
    """Check a run's metrics against [default] plus the [suite.<name>] section for its suite (file stem)."""
    suite = suite or run.get("config", {}).get("suite_name") or ""
    sections = [thresholds.get("default", {})]
    if suite in thresholds.get("suite", {}):
        sections.append(thresholds["suite"][suite])
    metrics = run["metrics"]
    checks: list[dict[str, Any]] = []
    limits: dict[tuple[str, str], float] = {}
    for section in sections:  # a suite section overrides the default for the same metric
        for kind in ("min", "max"):
            for metric, value in (section.get(kind) or {}).items():
                limits[(metric, kind)] = float(value)
    for (metric, kind), limit in limits.items():
        value = metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append(
                {
                    "metric": metric,
                    "kind": kind,
                    "limit": limit,
                    "value": None,
                    "ok": False,
                    "message": f"{metric} was not measured in this run (needed {kind} {limit})",
                }
            )
            continue
        ok = value >= limit if kind == "min" else value <= limit
        op = ">=" if kind == "min" else "<="
        checks.append(
            {
                "metric": metric,
                "kind": kind,
                "limit": limit,
                "value": value,
                "ok": ok,
                "message": f"{metric} = {value} (needs {op} {limit})",
            }
        )
    return GateResult(suite, checks)


def eval_index_dir(settings: Settings, kb_path: Path) -> Path:
    """The data folder a `--kb` evaluation ingests into: its own index per knowledge-base path."""
    digest = hashlib.sha1(str(Path(kb_path).resolve()).encode()).hexdigest()[:12]
    return Path(settings.data_dir) / f"eval-{digest}"
