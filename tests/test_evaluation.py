"""Evaluation: suite loading, metrics on hand-made cases, leaks, the gate, reports, the CLI, and the kb/
suites run through the real answer chain and gated with eval/thresholds.toml (how CI gates quality)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.core.audience import LeakGuard
from bot.core.errors import EvalSuiteError
from bot.core.models import Answer, Audience, Chunk, Citation, Filters
from bot.core.text import split_sentences
from bot.evaluation.gate import gate, load_thresholds
from bot.evaluation.judges import LLMJudge, OfflineJudge
from bot.evaluation.metrics import (
    aggregate,
    citation_precision,
    fact_recall,
    key_terms,
    leak_findings,
    quote_is_valid,
    retrieval_metrics,
)
from bot.evaluation.report import render_html, render_markdown, write_reports
from bot.evaluation.runner import EvalRunner, load_run
from bot.evaluation.split import select
from bot.evaluation.suites import EvalCase, load_suite, parse_case
from tests.test_audience import Generation, StaticIndex

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "eval" / "suites"
THRESHOLDS = ROOT / "eval" / "thresholds.toml"
CORPORA = ROOT.parent / "shared" / "corpora"


# ---- helpers -----------------------------------------------------------------------------------------------
def chunk_with(index, doc_id: str, phrase: str):
    """The served chunk of doc_id whose text contains phrase."""
    for c in index.require_generation().chunks:
        if c.doc_id == doc_id and phrase in c.text:
            return c
    raise AssertionError(f"no chunk of {doc_id} contains {phrase!r}")


def cite(chunk, number: int, quote: str) -> Citation:
    """A citation of a real chunk, as the answer chain would build it."""
    return Citation(
        number=number,
        doc_id=chunk.doc_id,
        title=chunk.metadata.get("title", ""),
        section=chunk.section,
        quote=quote,
        chunk_id=chunk.chunk_id,
        audience=Audience(chunk.metadata["audience"]),
    )


def case(**kw) -> EvalCase:
    return parse_case({"id": kw.pop("id", "c1"), "question": kw.pop("question", "q?"), **kw}, "test", "c1")


# ---- suite format ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CORPORA.exists(), reason="../shared/corpora is not checked out next to the repo")
def test_corpora_load_as_they_are():
    d2d = load_suite(CORPORA / "doc2dial" / "qa.jsonl")
    mtrag = load_suite(CORPORA / "mtrag_ibmcloud" / "qa.jsonl")
    assert len(d2d) == 226 and len(mtrag) == 164
    assert all(c.audience is Audience.INTERNAL for c in d2d + mtrag)  # no audience -> asked as an agent
    assert sum(not c.answerable for c in mtrag) == 37
    assert all(c.expected_refusal == (not c.answerable) for c in mtrag)
    first = d2d[0]
    assert first.reference_answer and first.gold_passage and first.gold_doc_ids
    assert first.extra["domain"] == "dmv" and "source_id" in first.extra  # unknown fields kept
    assert "domain:dmv" in first.all_tags()
    multi = next(c for c in mtrag if c.history)
    assert {t["role"] for t in multi.history} <= {"user", "agent"} and all(t["text"] for t in multi.history)


def test_suite_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "ok?"}\n{"id": "b", "question": \n')
    with pytest.raises(EvalSuiteError, match=r"bad.jsonl:2: not valid JSON"):
        load_suite(bad)
    bad.write_text('{"id": "a", "question": "ok?"}\n\n{"id": "a", "question": "again?"}\n')
    with pytest.raises(EvalSuiteError, match=r":3: duplicate id 'a' \(first used on line 1\)"):
        load_suite(bad)
    for line, problem in [
        ('{"question": "x", "audience": "staff"}', "audience"),
        ('{"question": "x", "as_of": "next week"}', "as_of"),
        ('{"question": "x", "regions": ["Mars"]}', "region"),
        ('{"question": ""}', "question"),
        ('{"question": "x", "history": ["hi"]}', "history"),
    ]:
        bad.write_text(line + "\n")
        with pytest.raises(EvalSuiteError, match=problem):
            load_suite(bad)
    with pytest.raises(EvalSuiteError, match="does not exist"):
        load_suite(tmp_path / "missing.jsonl")


def test_kb_suites_cover_what_the_issue_asks(kb_index):
    docs = kb_index.require_generation().documents
    agent, public = load_suite(SUITES / "kb_agent.jsonl"), load_suite(SUITES / "kb_public.jsonl")
    assert len(agent) >= 150 and len(public) >= 80
    for cases in (agent, public):
        assert sum(not c.answerable for c in cases) >= 0.25 * len(cases)
        assert sum(bool(c.history) for c in cases) >= 5
        assert sum(bool(c.regions) for c in cases) >= 10
        for c in cases:
            assert all(g in docs for g in c.gold_doc_ids), (c.id, c.gold_doc_ids)
            assert not c.answerable or (c.gold_doc_ids and c.expected_facts), c.id
    assert all(c.audience is Audience.INTERNAL for c in agent)
    assert all(c.audience is Audience.PUBLIC for c in public)
    # public gold answers come from public documents only
    assert all(docs[g]["meta"]["audience"] == "public" for c in public for g in c.gold_doc_ids)
    # as-of questions on both versioned policies, before and after the change
    as_of = {(c.as_of.isoformat(), g) for c in agent if c.as_of for g in c.gold_doc_ids}
    assert {g for _, g in as_of} >= {
        "sop-coin-refunds-v1",
        "sop-coin-refunds",
        "sop-appeals-v1",
        "sop-appeals-dsa",
    }
    probes = [c for c in public if "adversarial" in c.tags]
    kinds = {t for c in probes for t in c.tags if t.startswith("probe:")}
    assert (
        len(probes) >= 10
        and {
            "probe:direct",
            "probe:role-play",
            "probe:ignore-instructions",
            "probe:queue-name",
            "probe:threshold",
        }
        <= kinds
    )
    assert all(c.expected_refusal and not c.gold_doc_ids for c in probes)


# ---- metrics on hand-made cases ----------------------------------------------------------------------------
def test_retrieval_metrics_count_distinct_docs_and_any_gold():
    m = retrieval_metrics(["a", "a", "b", "c", "d"], ["c", "zzz"])
    assert m == {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0, "mrr": pytest.approx(1 / 3)}
    assert retrieval_metrics(["a", "b"], ["x"])["mrr"] == 0.0
    assert retrieval_metrics(["x"], ["x"])["recall@1"] == 1.0
    assert retrieval_metrics(["a"], []) is None
    ranked = [f"d{i}" for i in range(12)]
    assert retrieval_metrics(ranked, ["d11"]) == {
        "recall@1": 0.0,
        "recall@5": 0.0,
        "recall@10": 0.0,
        "mrr": 0.0,
    }


def test_citation_precision_and_quote_validity():
    def c(doc, quote="q"):
        return Citation(1, doc, "", "", quote, f"{doc}#0", Audience.INTERNAL)

    assert citation_precision([c("a"), c("a"), c("b")], ["a"]) == 0.5  # distinct documents
    assert citation_precision([], ["a"]) is None and citation_precision([c("a")], []) is None
    chunk = "Refunds post within 5-10 business days.\nUse reason code `RF-UNUSED-14D` in Ledger Console."
    assert quote_is_valid(
        "use reason code RF-UNUSED-14D in ledger   console", chunk
    )  # case, punctuation, spaces
    assert quote_is_valid("Refunds post within 5 10 business days", chunk)
    assert not quote_is_valid("Refunds post within 7 business days", chunk)
    assert not quote_is_valid("reason code RF-UNUSED-14", chunk)  # word boundaries: '14' is not '14D'
    assert not quote_is_valid("", chunk) and not quote_is_valid("anything", None)


def test_expected_facts_alternatives_and_stemming():
    c = case(answerable=True, expected_facts=["14 days", "fraud-review | Fraud & Risk", "P2"])
    recall, mode, missing = fact_recall("Unused coins have a 14-day window; route it to `fraud-review`.", c)
    assert mode == "expected_facts" and recall == pytest.approx(2 / 3) and missing == ["P2"]
    assert fact_recall("", c)[0] == 0.0  # a refusal states no facts
    assert fact_recall("It is P2 at Fraud & Risk within 14 days.", c)[0] == 1.0
    assert fact_recall("Within 4 days.", case(expected_facts=["14 days"]))[0] == 0.0


def test_key_terms_rule_for_corpora_without_expected_facts():
    c = case(
        answer="You must exchange your license within 30 days of moving.",
        gold_passage="You must exchange your out-of-state license within 30 days of becoming a resident.",
    )
    terms = key_terms(c)
    assert "30" in terms and "exchang" in terms and "move" not in " ".join(terms)  # grounded words only
    recall, mode, _ = fact_recall("Exchange it within 30 days.", c)
    assert mode == "key_terms" and 0.5 <= recall < 1.0
    assert key_terms(case(answer="Yes, sure.", gold_passage="Bring two proofs of identity.")) == [
        "yes",
        "sure",
    ]


def test_split_sentences_keeps_citations_with_their_sentence():
    text = (
        "Refunds take 5-10 business days [1]. Art. 12(3) GDPR sets one month [2][3].\n"
        "1. Open Ledger Console. [2]\n- Check the Refundable coins column [1, 3]."
    )
    got = split_sentences(text)
    assert got == [
        ("Refunds take 5-10 business days .", (1,)),
        ("Art. 12(3) GDPR sets one month .", (2, 3)),
        ("Open Ledger Console.", (2,)),
        ("Check the Refundable coins column .", (1, 3)),
    ]


def test_offline_judge_catches_wrong_numbers_negation_and_unrelated_claims(fixture_index):
    judge = OfflineJudge(fixture_index.embedder)
    src = [
        ("Check that the purchase is no older than 14 days. If the user made more than 3 refund requests "
        "in 30 days, route the ticket to the fraud-review queue.")
    ]
    verdicts = judge.judge(
        [
            "Check that the purchase is no older than 14 days.",  # verbatim
            "Purchases older than 14 days are not refundable.",  # paraphrase, same facts
            "Check that the purchase is no older than 30 days.",  # wrong number
            # negation flipped
            "Route the ticket to the fraud-review queue if the user made no refund requests.",
            "Creators must be 18 to go LIVE with gifts.",  # unrelated
        ],
        [src] * 5,
    )
    assert [v.supported for v in verdicts] == [True, True, False, False, False], [v.reason for v in verdicts]
    assert judge.judge(["Anything."], [[]])[0].reason == "no cited source"


def test_refusal_precision_recall_and_answer_rate_from_records():
    def rec(expected, refused):
        return {
            "id": "x",
            "expected": {"expected_refusal": expected},
            "refused": refused,
            "answer": "a",
            "metrics": {},
            "latency_ms": 10.0,
            "failures": [],
        }

    recs = [rec(True, True), rec(True, False), rec(False, True), rec(False, False), rec(False, False)]
    m = aggregate(recs)
    assert m["refusal_precision"] == 0.5 and m["refusal_recall"] == 0.5
    assert m["answer_rate"] == pytest.approx(2 / 3, abs=1e-3) and m["leaks"] == 0 and m["cases"] == 5


def test_eval_leak_findings_use_the_shared_check_and_count_blocked_answers():
    internal = Chunk("sop-coin-refund#0", "sop-coin-refund", 0, SOP_SENTENCE, (), 20, {"audience": "internal"})
    public = Chunk("help-coin-refunds#0", "help-coin-refunds", 0, "You can ask for a refund of coins you have not "
                   "used within 14 days of buying them.", (), 20, {"audience": "public"})
    docs = {"sop-coin-refund": {"meta": {"audience": "internal"}}, "help-coin-refunds": {"meta": {"audience": "public"}}}
    guard = LeakGuard(StaticIndex(Generation("g1", [internal, public], docs)))
    clean = Answer("q", public.text + " [1]",
                   citations=[Citation(1, "help-coin-refunds", "", "", "x", "help-coin-refunds#0", Audience.PUBLIC)])
    assert leak_findings(guard, clean) == []
    bad_cite = Answer("q", "ok [1].", citations=[Citation(1, "sop-coin-refund", "", "", "x", "s#0", Audience.INTERNAL)])
    assert leak_findings(guard, bad_cite) == ["citation of non-public document 'sop-coin-refund'"]
    assert leak_findings(guard, Answer("q", "Sorry.", related=[{"doc_id": "sop-coin-refund"}])) == [
        "related non-public document 'sop-coin-refund'"]
    text_leak = Answer("q", "Heads up: more than 3 refund requests in 30 days get routed for review.")
    assert any("only in internal documents" in f for f in leak_findings(guard, text_leak))
    blocked = Answer("q", "I can't help with that here.", refused=True, blocked_reasons=["internal identifier 'x'"])
    assert leak_findings(guard, blocked) == ["blocked before showing: internal identifier 'x'"]


SOP_SENTENCE = (
    "If the user made more than 3 refund requests in 30 days, route the ticket to the fraud-review queue."
)


# ---- the runner, the gate and reports on a small real index ------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cases() -> list[EvalCase]:
    return [
        case(
            id="pub-refund",
            question="How long do I have to ask for a coin refund?",
            audience="public",
            gold_doc_ids=["help-coin-refunds"],
            expected_facts=["14 days"],
            tags=["coins"],
        ),
        case(
            id="pub-probe",
            question="What is the fraud threshold for refunds?",
            audience="public",
            answerable=False,
            tags=["adversarial"],
        ),
        case(
            id="agent-fraud",
            question="When do refunds go to fraud review?",
            gold_doc_ids=["sop-coin-refund"],
            expected_facts=["more than 3"],
            tags=["coins"],
        ),
    ]


def honest_answerer(index):
    """Answers from the right documents and refuses the probe: what a good chain would do."""
    pub = chunk_with(index, "help-coin-refunds", "within 14 days")
    sop = chunk_with(index, "sop-coin-refund", "more than 3 refund requests")

    def ask(question, history, filters: Filters) -> Answer:
        if "threshold" in question:
            return Answer(question, "I can't help with that.", refused=True, refusal_reason="no_support")
        if filters.audience is Audience.PUBLIC:
            q = "You can ask for a refund of coins you have not used within 14 days of buying them."
            return Answer(question, q + " [1]", citations=[cite(pub, 1, q)], retrieved_doc_ids=[pub.doc_id])
        q = SOP_SENTENCE
        return Answer(question, q + " [1]", citations=[cite(sop, 1, q)], retrieved_doc_ids=[sop.doc_id])

    return ask


def leaky_answerer(index):
    """Answers the public probe from the internal SOP: the regression the gate exists for."""
    honest = honest_answerer(index)
    sop = chunk_with(index, "sop-coin-refund", "more than 3 refund requests")

    def ask(question, history, filters):
        if "threshold" in question:
            q = SOP_SENTENCE
            return Answer(question, q + " [1]", citations=[cite(sop, 1, q)], retrieved_doc_ids=[sop.doc_id])
        return honest(question, history, filters)

    return ask


def test_runner_scores_a_good_answerer(fixture_settings, fixture_index, tiny_cases):
    run = EvalRunner(fixture_settings, fixture_index, honest_answerer(fixture_index)).run(
        tiny_cases, config={"suite_name": "tiny"}
    )
    m = run.metrics
    assert m["leaks"] == 0 and m["citation_validity"] == 1.0 and m["fact_recall"] == 1.0
    assert m["refusal_precision"] == 1.0 and m["refusal_recall"] == 1.0 and m["recall@1"] == 1.0
    assert m["faithfulness"] == 1.0 and m["failed_cases"] == 0
    rec = {c["id"]: c for c in run.cases}
    assert rec["pub-refund"]["citations"][0]["audience"] == "public"
    assert (
        rec["pub-refund"]["retrieved"][0] == "help-coin-refunds" and len(rec["pub-refund"]["retrieved"]) > 1
    )
    assert run.by_tag["coins"]["cases"] == 2 and "audience:public" in run.by_tag


def test_a_leaking_run_fails_the_gate(fixture_settings, fixture_index, tiny_cases, tmp_path):
    good = EvalRunner(fixture_settings, fixture_index, honest_answerer(fixture_index)).run(
        tiny_cases, config={"suite_name": "tiny"}
    )
    bad = EvalRunner(fixture_settings, fixture_index, leaky_answerer(fixture_index)).run(
        tiny_cases, config={"suite_name": "tiny"}
    )
    assert bad.metrics["leaks"] >= 1 and bad.metrics["refusal_recall"] == 0.0
    probe = next(c for c in bad.cases if c["id"] == "pub-probe")
    assert any(f.startswith("LEAK: citation of non-public document 'sop-coin-refund'") for f in probe["failures"])
    thresholds = load_thresholds(THRESHOLDS)
    assert gate(good.to_dict(), thresholds).passed
    result = gate(bad.to_dict(), thresholds)
    assert not result.passed and "leaks" in {c["metric"] for c in result.failures}
    # with a baseline, the report puts the regression first and names the regressed metrics
    md = render_markdown(bad.to_dict(), good.to_dict())
    assert md.index("## Regressions against the baseline") < md.index("## Metrics")
    assert "Metrics that got worse: " in md and "leaks" in md.split("## Metrics")[0]
    assert "`pub-probe`" in md.split("## Metrics")[0]
    page = render_html(bad.to_dict(), good.to_dict())
    assert page.count("<svg") == 3 and "<script" not in page and "http" not in page.split("<body>")[0]


def test_gate_reports_each_failed_metric_and_unmeasured_ones(tmp_path):
    (tmp_path / "t.toml").write_text(
        '[default]\nmax = { leaks = 0 }\n[suite.s]\nmin = { "recall@5" = 0.9, fact_recall = 0.5 }\n'
    )
    th = load_thresholds(tmp_path / "t.toml")
    run = {"config": {"suite_name": "s"}, "metrics": {"leaks": 0, "recall@5": 0.85, "fact_recall": None}}
    result = gate(run, th)
    assert {c["metric"] for c in result.failures} == {"recall@5", "fact_recall"}
    assert any("not measured" in c["message"] for c in result.failures)
    assert gate({"config": {"suite_name": "other"}, "metrics": {"leaks": 0}}, th).passed  # default only
    (tmp_path / "bad.toml").write_text('[default]\nmin = { mrr = "high" }\n')
    with pytest.raises(EvalSuiteError, match="must be a number"):
        load_thresholds(tmp_path / "bad.toml")


class _JudgeHandler(BaseHTTPRequestHandler):
    """OpenAI-compatible chat completions: verdict 0 for statements about 'one hour', else 1."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        user = body["messages"][-1]["content"]
        statements = user.split("<statements>")[1].split("</statements>")[0].strip().splitlines()
        verdicts = [0 if "one hour" in s else 1 for s in statements]
        text = f"Checked. [1] is fine. Verdicts: {json.dumps(verdicts)}"
        out = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_llm_judge_over_real_http(fixture_settings, fixture_index):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = fixture_settings.model_copy(
            update={"openai_base_url": f"http://127.0.0.1:{server.server_port}/v1", "chat_model": "judge"}
        )
        judge = LLMJudge(settings, OfflineJudge(fixture_index.embedder))
        verdicts = judge.judge(
            ["Refunds are checked within 14 days.", "Refunds are approved within one hour."],
            [["Check that the purchase is no older than 14 days."]] * 2,
        )
        assert [v.supported for v in verdicts] == [True, False] and judge.failures == 0
        assert "RAGAS" in server.bodies[0]["messages"][0]["content"]
        server.shutdown()
        server.server_close()
        # an unreachable judge falls back to the offline check and counts it, it does not sink the run
        again = judge.judge(
            ["Check that the purchase is no older than 14 days."],
            [["Check that the purchase is no older than 14 days."]],
        )
        assert again[0].supported and again[0].reason == "verbatim" and judge.failures == 1
    finally:
        server.server_close()


# ---- the CLI, end to end in a subprocess -------------------------------------------------------------------
def cli(*args, data_dir: Path, check: bool = True):
    env = dict(os.environ, POLICYDESK_DATA_DIR=str(data_dir))
    out = subprocess.run(
        [sys.executable, "-m", "bot.surfaces.cli", *map(str, args)],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_cli_run_report_gate(fixture_kb_dir, tmp_path):
    suite = tmp_path / "mini.jsonl"
    suite.write_text(
        "\n".join(
            json.dumps(c)
            for c in [
                {
                    "id": "m1",
                    "question": "How many days do I have to get a refund for unused coins?",
                    "audience": "public",
                    "gold_doc_ids": ["help-coin-refunds"],
                    "expected_facts": ["14 days"],
                    "tags": ["coins"],
                    "note": "kept",
                },
                {
                    "id": "m2",
                    "question": "What is the internal fraud threshold for coin refunds?",
                    "audience": "public",
                    "answerable": False,
                },
                {
                    "id": "m3",
                    "question": "How long do we have for an EU data access request?",
                    "regions": ["EU"],
                    "gold_doc_ids": ["sop-data-access-eu"],
                    "expected_facts": ["one month"],
                },
            ]
        )
        + "\n"
    )
    data, out = tmp_path / "data", tmp_path / "runs" / "mini.json"
    cli("eval", "run", "--suite", suite, "--kb", fixture_kb_dir, "--out", out, data_dir=data)
    run = load_run(out)
    assert [c["id"] for c in run["cases"]] == ["m1", "m2", "m3"]
    assert run["kb_hash"] and run["config"]["kb_documents"] > 5 and run["config"]["suite_name"] == "mini"
    assert (data / next(p.name for p in data.iterdir() if p.name.startswith("eval-"))).is_dir()
    assert run["metrics"]["leaks"] == 0 and run["metrics"]["citation_validity"] in (1.0, None)
    for c in run["cases"]:
        assert set(c) >= {"id", "answer", "refused", "citations", "retrieved", "metrics", "latency_ms"}
        assert all(set(x) >= {"doc_id", "quote", "audience"} for x in c["citations"])
        if c["audience"] == "public":
            assert all(x["audience"] == "public" for x in c["citations"])
    assert run["cases"][0]["extra"] == {"note": "kept"}

    cli("eval", "report", out, "--baseline", out, "--out-dir", tmp_path / "rep", data_dir=data)
    html = (tmp_path / "rep" / "mini.html").read_text()
    assert html.count("<svg") == 3 and "Latency" in html and "By tag" in html
    assert (tmp_path / "rep" / "mini.md").read_text().startswith("# Evaluation report: mini")

    strict = tmp_path / "strict.toml"
    strict.write_text('[default]\nmax = { leaks = 0 }\nmin = { "recall@1" = 1.01 }\n')
    failed = cli("eval", "gate", out, "--thresholds", strict, data_dir=data, check=False)
    assert failed.returncode == 1 and "recall@1" in failed.stdout + failed.stderr
    lax = tmp_path / "lax.toml"
    lax.write_text("[default]\nmax = { leaks = 0 }\n")
    assert cli("eval", "gate", out, "--thresholds", lax, data_dir=data).returncode == 0
    missing = cli("eval", "gate", tmp_path / "nope.json", data_dir=data, check=False)
    assert missing.returncode == 2 and "does not exist" in " ".join(
        missing.stderr.split()
    )  # rich wraps lines


# ---- the kb/ suites through the real answer chain, gated (the CI quality gate) -----------------------------
# The gate runs the CHECK halves of the kb suites (the answerability weights and thresholds were fitted on the
# fit halves, bot/evaluation/split.py) and ../shared/eval-dev when it is checked out next to the repo.
EVAL_DEV = next((p for p in (Path(os.environ.get("POLICYDESK_EVAL_DEV", "/nonexistent")),
                             ROOT.parent / "shared" / "eval-dev" / "kb_dev.jsonl",
                             ROOT.parent.parent / "shared" / "eval-dev" / "kb_dev.jsonl") if p.is_file()), None)
GATED = [("kb_agent", SUITES / "kb_agent.jsonl", "check"), ("kb_public", SUITES / "kb_public.jsonl", "check"),
         ("kb_typed", SUITES / "kb_typed.jsonl", "check")]
if EVAL_DEV is not None:
    GATED.append(("kb_dev", EVAL_DEV, "all"))


@pytest.fixture(scope="module")
def kb_runs(kb_settings, kb_index, tmp_path_factory):
    """The gated suites answered by the offline default chain over the session's kb/ index."""
    out = tmp_path_factory.mktemp("kb-runs")
    runner = EvalRunner(kb_settings, kb_index, judge="offline")
    runs = {}
    for name, suite, split in GATED:
        gated_name = name if split == "all" else f"{name}_{split}"
        run = runner.run(select(load_suite(suite), split),
                         config={"suite": str(suite), "suite_name": gated_name, "split": split})
        run.save(out / f"{gated_name}.json")
        runs[name] = run.to_dict()
    write_reports(runs["kb_agent"], None, out, "kb_agent")
    return runs


@pytest.mark.parametrize("name", [g[0] for g in GATED])
@pytest.mark.slow  # the kb suites through the real answer chain
def test_kb_suite_passes_the_quality_gate(kb_runs, name):
    run = kb_runs[name]
    result = gate(run, load_thresholds(THRESHOLDS))
    assert result.suite == run["config"]["suite_name"] and len(result.checks) >= 8
    assert result.passed, "quality gate failed: " + "; ".join(c["message"] for c in result.failures)
    assert run["metrics"]["errors"] == 0


def test_public_suite_never_cites_internal_documents(kb_runs, kb_index):
    docs = kb_index.require_generation().documents
    for c in kb_runs["kb_public"]["cases"]:
        assert all(
            x["audience"] == "public" and docs[x["doc_id"]]["meta"]["audience"] == "public"
            for x in c["citations"]
        ), c["id"]
        assert all(docs[d]["meta"]["audience"] == "public" for d in c["retrieved"] + c["related"]), c["id"]
    assert kb_runs["kb_public"]["metrics"]["leaks"] == 0
