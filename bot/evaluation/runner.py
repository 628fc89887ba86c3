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
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bot.core.audience import LeakGuard
from bot.core.config import PROJECT_ROOT, Settings
from bot.core.errors import EvalSuiteError
from bot.core.models import Answer, Audience, Citation, Filters
from bot.evaluation.judges import LLMJudge, OfflineJudge, faithfulness_inputs
from bot.evaluation.metrics import (
    KEY_TERM_PASS,
    RETRIEVAL_DEPTH,
    aggregate,
    by_tag,
    citation_precision,
    fact_recall,
    leak_findings,
    quote_is_valid,
    retrieval_metrics,
)
from bot.evaluation.suites import EvalCase

log = logging.getLogger(__name__)

RUN_SCHEMA = 1

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

    # why: one case's record: every metric of eval/README.md computed in the order it documents
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
        except Exception as exc:  # noqa: BLE001 - one bad case must not lose the run; it is counted and reported
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



def eval_index_dir(settings: Settings, kb_path: Path) -> Path:
    """The data folder a `--kb` evaluation ingests into: its own index per knowledge-base path."""
    digest = hashlib.sha1(str(Path(kb_path).resolve()).encode()).hexdigest()[:12]
    return Path(settings.data_dir) / f"eval-{digest}"
