"""The store on a real SQLite file and on a real Postgres server: migrations, PII redaction, feedback, handoffs,
audit log, analytics, concurrent writers. Every test taking `store` runs against both."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from bot.core.config import Settings
from bot.core.errors import InputRejectedError, StoreError
from bot.core.models import Answer, Audience, Citation, Escalation
from bot.ingest.embeddings import LocalMiniLMEmbeddings
from bot.store.sqlite import REVISIONS, SCHEMA_VERSION, Store, cluster_questions, run_sql

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def make_answer(question: str, text: str = "Refund unused coins within 14 days [1].", refused: bool = False,
                docs: tuple[tuple[str, str], ...] = (("sop-coin-refunds", "2.0"),), total: float = 0.2) -> Answer:
    """A real Answer with one citation per (doc_id, version)."""
    cites = [Citation(number=i + 1, doc_id=d, title=f"Title of {d}", section="Steps", quote="within 14 days",
                      chunk_id=f"{d}#{i}", audience=Audience.INTERNAL, version=v, effective_date="2026-07-01")
             for i, (d, v) in enumerate(docs)] if not refused else []
    return Answer(question=question, text=text if not refused else "I could not find this in the policies.",
                  citations=cites, refused=refused, confidence=0.2 if refused else 0.8,
                  escalation=Escalation(team="Payments", queue="payments-l2", priority="P3"),
                  timings={"total": total}, composer="extractive")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Store:
    """A new store on a SQLite file, or on a fresh database of the session's Postgres server."""
    if request.param == "sqlite":
        s = Store(Settings(data_dir=tmp_path))
    else:
        s = Store(Settings(data_dir=tmp_path, database_url=request.getfixturevalue("postgres_url")))
    yield s
    s.close()


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLMEmbeddings:
    return LocalMiniLMEmbeddings()


def raw_rows(store: Store, sql: str, *args):
    """Read the database directly with a separate engine, bypassing the Store, to check what is really stored."""
    engine = sa.create_engine(store.url)
    try:
        with engine.connect() as conn:
            return [tuple(r.values()) for r in run_sql(conn, sql, args).fetchall()]
    finally:
        engine.dispose()


# ---- schema --------------------------------------------------------------------------------------------------
# The SQL of the schema releases 1 and 2 wrote by hand before the store moved to Alembic, kept to build old files.
LEGACY_V1 = """
    CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL);
    CREATE TABLE conversations (id TEXT PRIMARY KEY, surface TEXT NOT NULL, user TEXT, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL);
    CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL REFERENCES
        conversations(id) ON DELETE CASCADE, created_at TEXT NOT NULL, surface TEXT NOT NULL, user TEXT,
        question TEXT NOT NULL, standalone_question TEXT, answer TEXT, citations TEXT NOT NULL DEFAULT '[]',
        refused INTEGER NOT NULL DEFAULT 0, refusal_reason TEXT, confidence REAL, escalation TEXT, latency_ms REAL,
        timings TEXT, composer TEXT, error TEXT);
    CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER NOT NULL UNIQUE REFERENCES
        messages(id) ON DELETE CASCADE, conversation_id TEXT NOT NULL, rating INTEGER NOT NULL CHECK (rating IN
        (-1, 1)), reason TEXT, user TEXT, created_at TEXT NOT NULL);
    CREATE TABLE handoffs (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL, status TEXT NOT NULL
        DEFAULT 'open' CHECK (status IN ('open', 'claimed', 'closed')), transcript TEXT NOT NULL, contact TEXT,
        reason TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, claimed_by TEXT, closed_note TEXT);
    CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT, surface TEXT,
        action TEXT NOT NULL, conversation_id TEXT, message_id INTEGER, documents TEXT NOT NULL DEFAULT '[]',
        detail TEXT);
    INSERT INTO schema_version VALUES (1, 'initial schema', '2026-01-01');
"""


def test_new_store_applies_every_migration_in_order(store):
    assert store.schema_version() == SCHEMA_VERSION == len(REVISIONS)
    assert raw_rows(store, "SELECT version_num FROM alembic_version") == [(REVISIONS[-1],)]
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"conversations", "messages", "feedback", "handoffs", "audit_log", "alembic_version"} <= tables
    indexes = {i["name"] for i in sa.inspect(store.engine).get_indexes("messages")}
    assert {"idx_messages_created", "idx_messages_conversation"} <= indexes


def test_old_store_is_upgraded_in_place_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_V1)
    conn.execute("INSERT INTO conversations VALUES ('c1', 'console', 'ann', '2026-01-01', '2026-01-01')")
    conn.execute("INSERT INTO messages (conversation_id, created_at, surface, question) "
                 "VALUES ('c1', '2026-01-01T10:00:00', 'console', 'old question')")
    conn.commit()
    conn.close()

    s = Store(path)
    assert s.schema_version() == SCHEMA_VERSION
    indexes = {r[0] for r in raw_rows(s, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_messages_created" in indexes  # migration 2 ran on top of the stamped 1
    old = s.conversation_messages("c1")[0]
    assert old["question"] == "old question" and old["outcome"] == "answered"  # migration 3 derived it
    mid = s.log_answer("c1", "new question", make_answer("new question"), "console")
    assert mid == 2
    # Opening again applies nothing twice.
    Store(path)
    assert raw_rows(s, "SELECT version_num FROM alembic_version") == [(REVISIONS[-1],)]


def test_store_from_a_newer_release_is_refused_with_a_clear_error(store):
    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this PolicyDesk"):
        Store(store.url)


def test_legacy_file_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_V1.replace("VALUES (1, 'initial schema'", f"VALUES ({SCHEMA_VERSION + 1}, 'future'"))
    conn.close()
    with pytest.raises(StoreError, match="newer than this PolicyDesk"):
        Store(path)


def test_a_file_that_is_not_sqlite_gives_store_error(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="could not be migrated|failed"):
        Store(path)


def test_unreachable_postgres_is_one_clear_error(tmp_path):
    from conftest import free_port

    url = f"postgresql+psycopg://policydesk@127.0.0.1:{free_port()}/none"
    with pytest.raises(StoreError, match="could not be migrated") as info:
        Store(Settings(data_dir=tmp_path, database_url=url))
    assert "Traceback" not in str(info.value)


# ---- answers, redaction, audit -----------------------------------------------------------------------------
def test_answers_are_stored_redacted_with_an_audit_entry_of_cited_versions(store):
    question = ("Customer jane.doe@example.com, phone +44 20 7946 0958, card 4111 1111 1111 1111 wants a coin "
                "refund")
    answer = make_answer(question, text="Refund to jane.doe@example.com within 14 days [1].",
                         docs=(("sop-coin-refunds", "2.0"), ("help-coin-refunds", "3")))
    cid = store.new_conversation("console", user="ann")
    mid = store.log_answer(cid, question, answer, "console", user="ann")

    on_disk = json.dumps(raw_rows(store, "SELECT * FROM messages"))
    for secret in ("jane.doe@example.com", "7946 0958", "4111 1111 1111 1111"):
        assert secret not in on_disk
    msg = store.get_message(mid)
    assert "[EMAIL]" in msg["question"] and "[CARD]" in msg["question"] and "[EMAIL]" in msg["answer"]
    assert [c["doc_id"] for c in msg["citations"]] == ["sop-coin-refunds", "help-coin-refunds"]
    assert msg["latency_ms"] == pytest.approx(200.0) and msg["escalation"]["queue"] == "payments-l2"

    entry = store.audit_log(action="answer")[0]
    assert entry.who == "ann" and entry.message_id == mid and entry.conversation_id == cid
    assert [(d["doc_id"], d["version"]) for d in entry.documents] == [("sop-coin-refunds", "2.0"),
                                                                       ("help-coin-refunds", "3")]
    datetime.fromisoformat(entry.at)  # a real timestamp


def test_failed_questions_are_kept_as_errors(store):
    mid = store.log_question("c-err", "x" * 50_000, "console", error="The question is 50000 characters long")
    msg = store.get_message(mid)
    assert msg["error"].startswith("The question is") and len(msg["question"]) <= 2000 and msg["answer"] is None
    assert store.summary(days=None).errors == 1


# ---- feedback ------------------------------------------------------------------------------------------------
def test_feedback_is_stored_and_a_later_rating_replaces_the_first(store):
    cid = store.new_conversation("console")
    mid = store.log_answer(cid, "q", make_answer("q"), "console")
    store.add_feedback(cid, mid, -1, "Outdated: mention jane@example.com", user="ann")
    rows = raw_rows(store, 'SELECT rating, reason, "user" FROM feedback WHERE message_id = ?', mid)
    assert rows == [(-1, "Outdated: mention [EMAIL]", "ann")]
    store.add_feedback(cid, mid, 1)
    assert raw_rows(store, "SELECT rating, reason FROM feedback") == [(1, None)]
    assert store.get_message(mid)["rating"] == 1


@pytest.mark.parametrize("rating", [0, 2, -5])
def test_feedback_rating_must_be_plus_or_minus_one(store, rating):
    cid = store.new_conversation("console")
    mid = store.log_answer(cid, "q", make_answer("q"), "console")
    with pytest.raises(InputRejectedError):
        store.add_feedback(cid, mid, rating)
    assert raw_rows(store, "SELECT COUNT(*) FROM feedback") == [(0,)]


def test_feedback_for_an_unknown_answer_is_refused(store):
    cid = store.new_conversation("console")
    mid = store.log_answer(cid, "q", make_answer("q"), "console")
    with pytest.raises(StoreError):
        store.add_feedback(cid, mid + 100, 1)
    with pytest.raises(StoreError):
        store.add_feedback("another-conversation", mid, 1)


# ---- handoffs ------------------------------------------------------------------------------------------------
def test_handoff_queue_lifecycle(store):
    transcript = [{"role": "user", "text": "My email is sam@example.org and I was charged twice"},
                  {"role": "assistant", "content": "I could not find this; let me hand you to a person."}]
    first = store.add_handoff("w1", transcript, contact="sam@example.org", reason="double charge",
                              at=NOW - timedelta(hours=2))
    second = store.add_handoff("w2", [{"role": "user", "text": "hello"}], at=NOW - timedelta(hours=1))

    h = store.get_handoff(first)
    assert h.status == "open" and h.contact == "sam@example.org"  # kept: the agent must be able to reply
    assert h.transcript[0]["text"] == "My email is [EMAIL] and I was charged twice"
    assert h.transcript[1] == {"role": "assistant", "text": "I could not find this; let me hand you to a person."}
    assert [x.id for x in store.list_handoffs("open")] == [first, second]  # oldest first: a queue

    assert store.claim_handoff(first, "ann").claimed_by == "ann"
    with pytest.raises(StoreError, match="claimed by ann"):
        store.claim_handoff(first, "bob")
    closed = store.close_handoff(first, "ann", note="refunded")
    assert closed.status == "closed" and closed.closed_note == "refunded"
    assert store.handoff_counts() == {"open": 1, "claimed": 0, "closed": 1}
    assert [x.id for x in store.list_handoffs()] == [second, first]  # open before closed
    assert store.reopen_handoff(first, "ann").status == "open"
    assert {e.action for e in store.audit_log()} >= {"handoff", "handoff_claimed", "handoff_closed", "handoff_open"}


def test_unknown_handoff_and_bad_status_are_clear_errors(store):
    with pytest.raises(StoreError, match="No handoff"):
        store.claim_handoff(999, "ann")
    with pytest.raises(InputRejectedError):
        store.list_handoffs("pending")


# ---- analytics ------------------------------------------------------------------------------------------------
def test_questions_per_day_and_summary(store, tmp_path):
    cid = store.new_conversation("console")
    # three days ago: 2 answered; yesterday: 1 answered, 1 refused; today: 1 refused, 1 error
    for i in range(2):
        store.log_answer(cid, f"a{i}", make_answer(f"a{i}", total=0.1 * (i + 1)), "console", at=NOW - timedelta(3))
    m = store.log_answer(cid, "b", make_answer("b", total=0.3), "console", at=NOW - timedelta(1))
    r1 = store.log_answer(cid, "c", make_answer("c", refused=True, total=0.4), "console", at=NOW - timedelta(1))
    store.log_answer(cid, "d", make_answer("d", refused=True, total=1.0), "widget", at=NOW)
    store.log_question(cid, "e", "console", error="endpoint down", at=NOW)
    store.log_answer(cid, "old", make_answer("old"), "console", at=NOW - timedelta(days=40))
    store.add_feedback(cid, m, 1)
    store.add_feedback(cid, r1, -1, "no answer")

    days = store.questions_per_day(7, now=NOW)
    assert len(days) == 7 and days[-1]["day"] == "2026-11-20"
    by_day = {d["day"]: d for d in days}
    assert by_day["2026-11-17"]["questions"] == 2 and by_day["2026-11-17"]["answered"] == 2
    assert (by_day["2026-11-19"]["answered"], by_day["2026-11-19"]["refused"]) == (1, 1)
    assert (by_day["2026-11-20"]["refused"], by_day["2026-11-20"]["errors"]) == (1, 1)
    assert by_day["2026-11-18"]["questions"] == 0

    s = store.summary(30, now=NOW)
    assert (s.questions, s.answered, s.refused, s.errors) == (6, 3, 2, 1)
    assert s.answer_rate == pytest.approx(0.5) and s.refusal_rate == pytest.approx(2 / 6)
    assert s.feedback_count == 2 and s.feedback_score == pytest.approx(0.0) and s.positive_share == 0.5
    # latencies 100, 200, 300, 400, 1000 ms (the error has none)
    assert s.latency_p50_ms == pytest.approx(300.0) and s.latency_p95_ms == pytest.approx(880.0)
    assert store.summary(None, now=NOW).questions == 7
    empty = Store(tmp_path / "empty.sqlite3").summary()
    assert empty.questions == 0 and empty.answer_rate is None and empty.latency_p50_ms is None


def test_most_cited_and_stale_documents(store):
    cid = store.new_conversation("console")
    store.log_answer(cid, "q1", make_answer("q1", docs=(("sop-coin-refunds", "2.0"), ("sop-appeals-v1", "1.0"))),
                     "console", at=NOW)
    store.log_answer(cid, "q2", make_answer("q2", docs=(("sop-coin-refunds", "2.0"),)), "console", at=NOW)
    store.log_answer(cid, "q3", make_answer("q3", docs=(("sop-coin-refunds", "1.9"), ("help-2fa", "4"))),
                     "console", at=NOW)
    top = store.most_cited_documents(30, now=NOW)
    assert top[0].doc_id == "sop-coin-refunds" and top[0].citations == 3 and top[0].versions == ("1.9", "2.0")
    assert {d.doc_id for d in top} == {"sop-coin-refunds", "sop-appeals-v1", "help-2fa"}

    manifest_docs = {
        "sop-coin-refunds": {"meta": {"title": "Coin refunds", "version": "2.0", "review_due": "2027-03-13",
                                      "superseded_by": ""}},
        "sop-appeals-v1": {"meta": {"title": "Appeals v1", "version": "1.0", "review_due": "2027-01-01",
                                    "superseded_by": "sop-appeals-dsa"}},
        "help-2fa": {"meta": {"title": "2FA", "version": "4", "review_due": "2026-10-01", "superseded_by": ""}},
    }
    stale = {s.doc_id: s for s in store.stale_cited_documents(manifest_docs, 30, today=date(2026, 11, 20), now=NOW)}
    assert set(stale) == {"sop-coin-refunds", "sop-appeals-v1", "help-2fa"}
    assert stale["sop-appeals-v1"].reasons == ("superseded by sop-appeals-dsa",)
    assert stale["help-2fa"].reasons == ("past review (due 2026-10-01)",)
    assert stale["sop-coin-refunds"].reasons == ("older version cited (current 2.0)",)
    # Nothing is stale when every cited document is current and reviewed.
    fresh = {k: {"meta": {**v["meta"], "review_due": "2030-01-01", "superseded_by": ""}}
             for k, v in manifest_docs.items()}
    fresh["sop-coin-refunds"]["meta"]["version"] = "2.0"
    assert {s.doc_id for s in store.stale_cited_documents(fresh, 30, today=date(2026, 11, 20), now=NOW)} == {
        "sop-coin-refunds"}


def test_content_gaps_group_paraphrases_of_unanswered_questions(store, embedder):
    cid = store.new_conversation("console")
    unanswered = [
        "Can a user transfer coins to another account?",
        "how do I move coins to a different account",
        "Can a user transfer coins to another account?",
        "Is it possible to send coins from one account to another account?",
        "What is the policy for selling a username?",
        "Can users sell or buy usernames?",
    ]
    for q in unanswered:
        store.log_answer(cid, q, make_answer(q, refused=True), "console", at=NOW)
    answered = store.log_answer(cid, "Refund window for coins?", make_answer("r"), "console", at=NOW)
    store.log_answer(cid, "How do I reset 2FA?", make_answer("2fa"), "console", at=NOW)
    store.add_feedback(cid, answered, -1, "wrong window")

    gaps = store.content_gaps(embedder.embed_array, days=30, now=NOW)
    assert gaps[0].label == "Can a user transfer coins to another account?" and gaps[0].count == 4
    labels = [set(g.questions) for g in gaps]
    assert {"What is the policy for selling a username?", "Can users sell or buy usernames?"} in labels
    assert any("Refund window for coins?" in g.questions for g in gaps)  # down-voted answers count
    assert not any("How do I reset 2FA?" in g.questions for g in gaps)  # answered and not down-voted


def test_cluster_questions_threshold_controls_merging(embedder):
    items = [("reset two factor authentication", "t1"), ("reset 2FA for a locked user", "t2"),
             ("chargeback on a coin purchase", "t3")]
    assert len(cluster_questions(items, embedder.embed_array, threshold=0.99)) == 3
    assert len(cluster_questions(items, embedder.embed_array, threshold=-1.0)) == 1
    assert cluster_questions([], embedder.embed_array) == []


# ---- concurrency ------------------------------------------------------------------------------------------------
def _write_many(url_or_store: str | Store, worker: int, n: int) -> None:
    """n answers, ratings and one handoff, through a Store of its own (a process) or a shared one (a thread)."""
    s = Store(url_or_store) if isinstance(url_or_store, str) else url_or_store
    cid = s.new_conversation("api")
    for i in range(n):
        mid = s.log_answer(cid, f"p{worker} q{i}", make_answer("q"), "api")
        s.add_feedback(cid, mid, 1)
    s.add_handoff(cid, [{"role": "user", "text": f"p{worker}"}])
    if s is not url_or_store:
        s.close()


def test_many_writer_processes_lose_nothing(store):
    """Four processes (stand-ins for API replicas) with their own Store and eight threads sharing this one
    write at once: every row arrives."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(store.url, w, 20)) for w in range(4)]
    for p in procs:
        p.start()
    errors: list[BaseException] = []

    def thread_writer(n: int) -> None:
        try:
            _write_many(store, 100 + n, 10)
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(300)
    assert not errors and [p.exitcode for p in procs] == [0, 0, 0, 0]
    expected = 4 * 20 + 8 * 10
    assert raw_rows(store, "SELECT COUNT(*) FROM messages") == [(expected,)]
    assert raw_rows(store, "SELECT COUNT(*) FROM feedback") == [(expected,)]
    assert raw_rows(store, "SELECT COUNT(*) FROM audit_log WHERE action = 'answer'") == [(expected,)]
    assert len(store.list_handoffs("open")) == 12



def test_rate_limit_buckets_are_shared_by_every_store_on_the_database(store):
    """Two Store objects (two API processes) draw from one bucket per client; it refills with wall time."""
    other = Store(store.url)
    got = [s.take_token("ip:203.0.113.7", 4, now=1000.0)[1] for s in (store, other, store, other, store, other)]
    assert got == [True, True, True, True, False, False]
    assert other.take_token("ip:198.51.100.1", 4, now=1000.0)[1]  # another client has its own bucket
    assert store.take_token("ip:203.0.113.7", 4, now=1015.0)[1]  # 4/min: one token back after 15 s
    assert not other.take_token("ip:203.0.113.7", 4, now=1015.0)[1]
    other.close()
