"""The store: conversations, answers, feedback, handoffs and the audit log, plus the console's analytics.

SQLite (one file at `Settings.db_path`) by default; Postgres for teams when `POLICYDESK_DATABASE_URL` is set.
Both go through one SQLAlchemy engine and the same SQL; Alembic migrations (bot/store/migrations) create and
upgrade the schema, an older SQLite file in place (bot.store.schema). Every free text a person
typed (questions, answers, feedback reasons, handoff transcripts) goes through `bot.answer.safety.redact_pii`
before it is written. Each write is one transaction; SQLite writers take the lock at BEGIN (IMMEDIATE) and wait
for it, Postgres row locks serialise handoff moves, so concurrent writers across threads and processes queue
instead of failing. One Store is safe to share between Streamlit sessions, API worker threads and processes.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from bot.core.config import Settings
from bot.core.errors import InputRejectedError, RecordNotFoundError, StoreError
from bot.core.models import Answer, Audience
from bot.store.records import (
    HANDOFF_STATUSES,
    AuditEntry,
    CitedDocument,
    ContentGap,
    Handoff,
    StaleCitation,
    Summary,
    cluster_questions,
    handoff_from_row,
    iso,
    message_dict,
    now_utc,
    percentile,
    since_iso,
)
from bot.store.schema import (
    REVISIONS,
    SCHEMA_VERSION,
    create_store_engine,
    migrate,
    safe_url,
    schema_version,
    sqlite_url,
)

__all__ = ["HANDOFF_STATUSES", "REVISIONS", "SCHEMA_VERSION", "AuditEntry", "CitedDocument", "ContentGap",
           "Handoff", "StaleCitation", "Store", "Summary", "cluster_questions"]

log = logging.getLogger(__name__)


def _default_redact() -> Callable[[str], str]:
    """bot.answer.safety.redact_pii, imported on first write (the guard is its own module and owns the rules)."""
    from bot.answer.safety import redact_pii

    return redact_pii


def run_sql(conn: sa.Connection, sql: str, args: Sequence[Any] = ()) -> sa.MappingResult:
    """Execute sql whose `?` placeholders take args in order; rows come back as mappings.

    One SQL string serves SQLite and Postgres: SQLAlchemy's text() binds the values for either driver."""
    parts = sql.split("?")
    named = "".join(p + (f":p{i}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
    return conn.execute(sa.text(named), {f"p{i}": v for i, v in enumerate(args)}).mappings()


class Store:
    """The store every surface shares (SQLite file or Postgres); safe across threads and processes."""

    def __init__(self, settings_or_path: Settings | Path | str, redact: Callable[[str], str] | None = None):
        self.path: Path | None = None
        if isinstance(settings_or_path, Settings) and settings_or_path.database_url:
            self.url = settings_or_path.database_url
        elif isinstance(settings_or_path, str) and "://" in settings_or_path:
            self.url = settings_or_path
        else:
            path = settings_or_path.db_path if isinstance(settings_or_path, Settings) else settings_or_path
            self.path = Path(path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Owner-only from the first byte: the store holds (redacted) conversations and transcripts. SQLite
                # gives its -wal and -shm files the main file's mode.
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
                os.chmod(self.path, 0o600)
            except OSError as exc:
                raise StoreError(f"Cannot create the store {self.path}: {exc.strerror}; make its folder writable or "
                                 "point --data-dir (POLICYDESK_DATA_DIR) elsewhere") from exc
            self.url = sqlite_url(self.path)
        self.where = str(self.path) if self.path is not None else safe_url(self.url)
        self._redact_fn = redact
        self.engine = create_store_engine(self.url)
        self.dialect = self.engine.dialect.name
        self.migrate()

    # ---- plumbing ------------------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        """A connection in one transaction: committed on success, rolled back on error."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Store {self.where} failed: {getattr(exc, 'orig', None) or exc}. If it is a SQLite "
                             "file that is corrupt, move it aside; a new one is created on the next start.") from exc

    def redact(self, text: str | None) -> str | None:
        """PII-redacted text (None stays None)."""
        if text is None:
            return None
        if self._redact_fn is None:
            self._redact_fn = _default_redact()
        return self._redact_fn(text)

    def migrate(self) -> int:
        """Apply pending migrations in order; returns the schema version now in the database."""
        if self.path is not None and self.path.exists() and self.path.stat().st_size and \
                not self.path.read_bytes()[:16].startswith(b"SQLite format 3"):
            raise StoreError(f"Store {self.path} could not be migrated: the file is not a SQLite database. Move "
                             "it aside; a new one is created on the next start.")
        return migrate(self.engine)

    def schema_version(self) -> int:
        """The schema version of the database (the position of its Alembic revision)."""
        with self._connect() as conn:
            return schema_version(conn)

    def close(self) -> None:
        """Close the pooled connections (tests and short-lived tools)."""
        self.engine.dispose()

    # ---- conversations and answers ---------------------------------------------------------------------------
    def new_conversation(self, surface: str, user: str | None = None, at: datetime | None = None) -> str:
        """Start a conversation; returns its id."""
        cid = uuid.uuid4().hex
        with self._connect() as conn:
            self._ensure_conversation(conn, cid, surface, user, iso(at))
        return cid

    @staticmethod
    def _ensure_conversation(conn: sa.Connection, cid: str, surface: str, user: str | None, at: str) -> None:
        run_sql(conn, "INSERT INTO conversations (id, surface, \"user\", created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
                     (cid, surface, user, at, at))

    def log_answer(self, conversation_id: str, question: str, answer: Answer, surface: str,
                   user: str | None = None, latency_ms: float | None = None, at: datetime | None = None) -> int:
        """Record a question and its answer (redacted) plus an audit entry of the cited versions; returns the id."""
        citations = [
            {"number": c.number, "doc_id": c.doc_id, "title": c.title, "section": c.section, "quote": c.quote,
             "chunk_id": c.chunk_id, "version": c.version, "effective_date": c.effective_date,
             "audience": Audience(c.audience).value, "url": c.url}
            for c in answer.citations
        ]
        timings = answer.timings
        if latency_ms is None and timings.get("total") is not None:
            latency_ms = float(timings["total"]) * 1000.0
        esc = asdict(answer.escalation) if answer.escalation is not None else None
        when = iso(at)
        with self._connect() as conn:
            self._ensure_conversation(conn, conversation_id, surface, user, when)
            cur = run_sql(conn,
                "INSERT INTO messages (conversation_id, created_at, surface, \"user\", question, standalone_question, "
                "answer, citations, refused, refusal_reason, confidence, escalation, latency_ms, timings, composer, "
                "outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (conversation_id, when, surface, user, self.redact(question),
                 self.redact(answer.standalone_question or None), self.redact(answer.text),
                 json.dumps(citations), int(answer.refused), answer.refusal_reason or None,
                 answer.confidence, json.dumps(esc) if esc else None, latency_ms, json.dumps(timings),
                 answer.composer or None, answer.outcome or ("refused" if answer.refused else "answered")),
            )
            message_id = int(cur.one()["id"])
            docs = [{"doc_id": c["doc_id"], "version": c["version"], "chunk_id": c["chunk_id"]} for c in citations]
            self._audit(conn, "answer", user, surface, conversation_id, message_id, docs,
                        "refused" if answer.refused else None, when)
        return message_id

    def log_question(self, conversation_id: str, question: str, surface: str, user: str | None = None,
                     error: str | None = None, at: datetime | None = None) -> int:
        """Record a question that produced no answer (rejected input, endpoint down); returns the message id."""
        when = iso(at)
        with self._connect() as conn:
            self._ensure_conversation(conn, conversation_id, surface, user, when)
            cur = run_sql(conn,
                "INSERT INTO messages (conversation_id, created_at, surface, \"user\", question, error) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                # a rejected question can be huge: keep enough to recognise it, not the whole payload
                (conversation_id, when, surface, user, self.redact(question[:2000]), self.redact(error)),
            )
            message_id = int(cur.one()["id"])
            self._audit(conn, "question_failed", user, surface, conversation_id, message_id, [],
                        self.redact(error), when)
        return message_id

    def conversation_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """The stored turns of a conversation, oldest first (question, answer, citations, feedback)."""
        with self._connect() as conn:
            rows = run_sql(conn,
                "SELECT m.*, f.rating, f.reason AS feedback_reason FROM messages m "
                "LEFT JOIN feedback f ON f.message_id = m.id WHERE m.conversation_id = ? ORDER BY m.id",
                (conversation_id,)).fetchall()
        return [message_dict(r) for r in rows]

    def get_message(self, message_id: int) -> dict[str, Any]:
        """One stored message with its feedback, or StoreError if it does not exist."""
        with self._connect() as conn:
            row = run_sql(conn,
                "SELECT m.*, f.rating, f.reason AS feedback_reason FROM messages m "
                "LEFT JOIN feedback f ON f.message_id = m.id WHERE m.id = ?", (message_id,)).fetchone()
        if row is None:
            raise RecordNotFoundError(f"No message with id {message_id}.")
        return message_dict(row)

    def recent_messages(self, limit: int = 50, surface: str | None = None) -> list[dict[str, Any]]:
        """The newest stored questions and answers, newest first."""
        sql = ("SELECT m.*, f.rating, f.reason AS feedback_reason FROM messages m "
               "LEFT JOIN feedback f ON f.message_id = m.id")
        args: list[Any] = []
        if surface:
            sql += " WHERE m.surface = ?"
            args.append(surface)
        sql += " ORDER BY m.id DESC LIMIT ?"
        args.append(limit)
        with self._connect() as conn:
            return [message_dict(r) for r in run_sql(conn, sql, args).fetchall()]

    # ---- feedback ----------------------------------------------------------------------------------------------
    def add_feedback(self, conversation_id: str, message_id: int, rating: int, reason: str | None = None,
                     user: str | None = None, at: datetime | None = None) -> int:
        """Store a thumbs up (+1) or down (-1) with an optional reason; a later rating of the same answer wins."""
        if rating not in (1, -1):
            raise InputRejectedError(f"Feedback rating must be +1 or -1, not {rating!r}.")
        reason = (reason or "").strip()[:2000] or None
        when = iso(at)
        with self._connect() as conn:
            row = run_sql(conn, "SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None or row["conversation_id"] != conversation_id:
                raise RecordNotFoundError(f"No answer {message_id} in conversation {conversation_id}; "
                                          "feedback not stored.")
            cur = run_sql(conn,
                "INSERT INTO feedback (message_id, conversation_id, rating, reason, \"user\", created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(message_id) DO UPDATE SET rating = excluded.rating, "
                "reason = excluded.reason, \"user\" = excluded.\"user\", created_at = excluded.created_at "
                "RETURNING id",
                (message_id, conversation_id, rating, self.redact(reason), user, when))
            fid = int(cur.one()["id"])
            self._audit(conn, "feedback", user, None, conversation_id, message_id, [],
                        f"rating {rating:+d}", when)
        return fid

    # ---- rate limits shared by API processes ----------------------------------------------------------------------
    def take_token(self, client: str, per_minute: int, now: float) -> tuple[float, bool]:
        """Spend one token of client's bucket (capacity and refill per_minute) at wall time now, in one
        transaction so replicas sharing this store share the limit; returns (tokens left, allowed)."""
        capacity, rate = float(max(1, per_minute)), per_minute / 60.0
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        with self._connect() as conn:
            row = run_sql(conn, "SELECT tokens, stamp FROM rate_limits WHERE client = ?" + lock, (client,)).fetchone()
            tokens = capacity if row is None else min(capacity, row["tokens"] + max(0.0, now - row["stamp"]) * rate)
            allowed = tokens >= 1.0
            tokens -= 1.0 if allowed else 0.0
            run_sql(conn, "INSERT INTO rate_limits (client, tokens, stamp) VALUES (?, ?, ?) ON CONFLICT(client) "
                          "DO UPDATE SET tokens = excluded.tokens, stamp = excluded.stamp", (client, tokens, now))
        return tokens, allowed

    # ---- handoffs ----------------------------------------------------------------------------------------------
    def add_handoff(self, conversation_id: str, transcript: list[dict[str, Any]], contact: str | None = None,
                    reason: str | None = None, at: datetime | None = None) -> int:
        """Queue a conversation for a human; the transcript is redacted, the contact kept so they can reply."""
        turns = []
        for turn in transcript or []:
            text = turn.get("text", turn.get("content", ""))
            role = str(turn.get("role", "user"))
            turns.append({"role": role, "text": self.redact(str(text)) or ""})
        when = iso(at)
        with self._connect() as conn:
            cur = run_sql(conn,
                "INSERT INTO handoffs (conversation_id, status, transcript, contact, reason, created_at, updated_at) "
                "VALUES (?, 'open', ?, ?, ?, ?, ?) RETURNING id",
                (conversation_id, json.dumps(turns), (contact or "").strip()[:320] or None,
                 self.redact((reason or "").strip()[:2000] or None), when, when))
            hid = int(cur.one()["id"])
            self._audit(conn, "handoff", None, "widget", conversation_id, None, [], f"handoff {hid} opened", when)
        return hid

    def list_handoffs(self, status: str | None = None, limit: int = 200) -> list[Handoff]:
        """Handoffs, oldest open first (a queue), optionally only one status."""
        if status is not None and status not in HANDOFF_STATUSES:
            raise InputRejectedError(f"Handoff status must be one of {', '.join(HANDOFF_STATUSES)}, not {status!r}.")
        sql = "SELECT * FROM handoffs"
        args: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY CASE status WHEN 'open' THEN 0 WHEN 'claimed' THEN 1 ELSE 2 END, created_at, id LIMIT ?"
        args.append(limit)
        with self._connect() as conn:
            return [handoff_from_row(r) for r in run_sql(conn, sql, args).fetchall()]

    def get_handoff(self, handoff_id: int) -> Handoff:
        """One handoff, or StoreError when the id is unknown."""
        with self._connect() as conn:
            row = run_sql(conn, "SELECT * FROM handoffs WHERE id = ?", (handoff_id,)).fetchone()
        if row is None:
            raise RecordNotFoundError(f"No handoff with id {handoff_id}.")
        return handoff_from_row(row)

    def claim_handoff(self, handoff_id: int, agent: str) -> Handoff:
        """An agent takes an open handoff; claiming one someone else holds is refused."""
        return self._move_handoff(handoff_id, agent, "claimed", allowed_from=("open",))

    def close_handoff(self, handoff_id: int, agent: str, note: str | None = None) -> Handoff:
        """Close an open or claimed handoff with an optional note."""
        return self._move_handoff(handoff_id, agent, "closed", allowed_from=("open", "claimed"), note=note)

    def reopen_handoff(self, handoff_id: int, agent: str) -> Handoff:
        """Put a claimed or closed handoff back in the open queue."""
        return self._move_handoff(handoff_id, agent, "open", allowed_from=("claimed", "closed"))

    def _move_handoff(self, handoff_id: int, agent: str, to: str, allowed_from: tuple[str, ...],
                      note: str | None = None) -> Handoff:
        when = iso(None)
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE already serialises
        with self._connect() as conn:
            row = run_sql(conn, "SELECT * FROM handoffs WHERE id = ?" + lock, (handoff_id,)).fetchone()
            if row is None:
                raise RecordNotFoundError(f"No handoff with id {handoff_id}.")
            if row["status"] not in allowed_from:
                holder = f" by {row['claimed_by']}" if row["claimed_by"] else ""
                raise StoreError(f"Handoff {handoff_id} is {row['status']}{holder}; it cannot be {to} now.")
            claimed_by = agent if to == "claimed" else (None if to == "open" else row["claimed_by"] or agent)
            run_sql(conn, "UPDATE handoffs SET status = ?, claimed_by = ?, updated_at = ?, "
                         "closed_note = COALESCE(?, closed_note) WHERE id = ?",
                         (to, claimed_by, when, self.redact(note), handoff_id))
            self._audit(conn, f"handoff_{to}", agent, "console", row["conversation_id"], None, [],
                        f"handoff {handoff_id}", when)
            row = run_sql(conn, "SELECT * FROM handoffs WHERE id = ?", (handoff_id,)).fetchone()
        return handoff_from_row(row)

    def handoff_counts(self) -> dict[str, int]:
        """Number of handoffs per status."""
        with self._connect() as conn:
            rows = run_sql(conn, "SELECT status, COUNT(*) AS n FROM handoffs GROUP BY status").fetchall()
        counts = {s: 0 for s in HANDOFF_STATUSES}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    # ---- audit log ---------------------------------------------------------------------------------------------
    def _audit(self, conn: sa.Connection, action: str, who: str | None, surface: str | None,
               conversation_id: str | None, message_id: int | None, docs: list[dict[str, Any]],
               detail: str | None, at: str) -> None:
        run_sql(conn, "INSERT INTO audit_log (at, who, surface, action, conversation_id, message_id, documents, "
                     "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (at, who, surface, action, conversation_id, message_id, json.dumps(docs), detail))

    def audit(self, action: str, who: str | None = None, surface: str | None = None,
              conversation_id: str | None = None, message_id: int | None = None,
              documents: list[dict[str, Any]] | None = None, detail: str | None = None,
              at: datetime | None = None) -> None:
        """Append an entry to the audit log (answers, feedback and handoff moves are audited automatically)."""
        with self._connect() as conn:
            self._audit(conn, action, who, surface, conversation_id, message_id, documents or [],
                        self.redact(detail), iso(at))

    def audit_log(self, limit: int = 200, action: str | None = None) -> list[AuditEntry]:
        """The newest audit entries first."""
        sql = "SELECT * FROM audit_log"
        args: list[Any] = []
        if action:
            sql += " WHERE action = ?"
            args.append(action)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._connect() as conn:
            rows = run_sql(conn, sql, args).fetchall()
        return [AuditEntry(**{**dict(r), "documents": json.loads(r["documents"] or "[]")}) for r in rows]

    # ---- analytics ---------------------------------------------------------------------------------------------
    def questions_per_day(self, days: int | None = 30, now: datetime | None = None) -> list[dict[str, Any]]:
        """Per UTC day: questions, answered, refused and errors (days with no questions included as zeros)."""
        since = since_iso(days, now)
        with self._connect() as conn:
            rows = run_sql(conn,
                "SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS questions, "
                "SUM(CASE WHEN error IS NULL AND refused = 0 THEN 1 ELSE 0 END) AS answered, "
                "SUM(refused) AS refused, SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END) AS errors "
                "FROM messages WHERE created_at >= ? GROUP BY day ORDER BY day", (since,)).fetchall()
        by_day = {r["day"]: dict(r) for r in rows}
        if days is None:
            return list(by_day.values())
        today = (now or now_utc()).astimezone(UTC).date()
        out = []
        for i in range(days - 1, -1, -1):
            day = (today - timedelta(days=i)).isoformat()
            out.append(by_day.get(day, {"day": day, "questions": 0, "answered": 0, "refused": 0, "errors": 0}))
        return out

    def summary(self, days: int | None = 30, now: datetime | None = None) -> Summary:
        """Answer and refusal rates, feedback score and latency percentiles over the window."""
        since = since_iso(days, now)
        with self._connect() as conn:
            row = run_sql(conn,
                "SELECT COUNT(*) AS q, SUM(CASE WHEN error IS NULL AND refused = 0 THEN 1 ELSE 0 END) AS a, "
                "COALESCE(SUM(refused), 0) AS r, SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END) AS e "
                "FROM messages WHERE created_at >= ?", (since,)).fetchone()
            fb = run_sql(conn,
                "SELECT COUNT(*) AS n, AVG(f.rating) AS score, SUM(CASE WHEN f.rating > 0 THEN 1 ELSE 0 END) AS up "
                "FROM feedback f JOIN messages m ON m.id = f.message_id WHERE m.created_at >= ?",
                (since,)).fetchone()
            lat = [r["latency_ms"] for r in run_sql(conn,
                "SELECT latency_ms FROM messages WHERE created_at >= ? AND latency_ms IS NOT NULL AND error IS NULL",
                (since,)).fetchall()]
        q = row["q"] or 0
        return Summary(
            questions=q, answered=row["a"] or 0, refused=row["r"] or 0, errors=row["e"] or 0,
            answer_rate=(row["a"] or 0) / q if q else None, refusal_rate=(row["r"] or 0) / q if q else None,
            feedback_count=fb["n"] or 0,
            feedback_score=None if fb["score"] is None else float(fb["score"]),  # Postgres AVG is a Decimal
            positive_share=(fb["up"] or 0) / fb["n"] if fb["n"] else None,
            latency_p50_ms=percentile(lat, 50), latency_p95_ms=percentile(lat, 95),
        )

    def unanswered_questions(self, days: int | None = 30, include_downvoted: bool = True,
                             now: datetime | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        """Questions the KB could not answer: refusals and caution answers (the exact detail was not in the KB),
        plus answers agents rated down (their reason included)."""
        since = since_iso(days, now)
        sql = ("SELECT m.id, m.question, m.created_at, m.refused, m.outcome, f.rating, f.reason FROM messages m "
               "LEFT JOIN feedback f ON f.message_id = m.id WHERE m.created_at >= ? AND m.error IS NULL AND "
               "(m.refused = 1 OR m.outcome = 'caution'" + (" OR f.rating = -1)" if include_downvoted else ")") +
               " ORDER BY m.id DESC LIMIT ?")
        with self._connect() as conn:
            return [dict(r) for r in run_sql(conn, sql, (since, limit)).fetchall()]

    def content_gaps(self, embed: Callable[[list[str]], np.ndarray], days: int | None = 30,
                     threshold: float = 0.72, limit: int = 20, now: datetime | None = None) -> list[ContentGap]:
        """Unanswered questions clustered by meaning with the local embedder, biggest gap first."""
        rows = self.unanswered_questions(days, now=now)
        return cluster_questions([(r["question"], r["created_at"]) for r in rows], embed, threshold)[:limit]

    def _citation_rows(self, days: int | None, now: datetime | None) -> list[dict[str, Any]]:
        """One row per citation of an answer in the window (the JSON is read here: portable across databases)."""
        since = since_iso(days, now)
        with self._connect() as conn:
            rows = run_sql(conn, "SELECT id, created_at, citations FROM messages WHERE created_at >= ? AND "
                                 "citations <> '[]'", (since,)).fetchall()
        return [{"message_id": r["id"], "created_at": r["created_at"], "doc_id": c.get("doc_id"),
                 "title": c.get("title"), "version": c.get("version")}
                for r in rows for c in json.loads(r["citations"] or "[]") if c.get("doc_id")]

    def most_cited_documents(self, days: int | None = 30, limit: int = 15,
                             now: datetime | None = None) -> list[CitedDocument]:
        """Documents by number of citations in the window, with the versions that were cited."""
        agg: dict[str, dict[str, Any]] = {}
        for r in self._citation_rows(days, now):
            a = agg.setdefault(r["doc_id"], {"title": r["title"] or r["doc_id"], "n": 0, "answers": set(),
                                             "versions": set(), "last": ""})
            a["n"] += 1
            a["answers"].add(r["message_id"])
            if r["version"]:
                a["versions"].add(str(r["version"]))
            a["last"] = max(a["last"], r["created_at"])
        docs = [CitedDocument(k, v["title"], v["n"], len(v["answers"]), tuple(sorted(v["versions"])), v["last"])
                for k, v in agg.items()]
        docs.sort(key=lambda d: (-d.citations, d.doc_id))
        return docs[:limit]

    # why: one loop over cited documents; each `if` is one staleness reason, in the order they are shown
    def stale_cited_documents(self, documents: dict[str, dict[str, Any]], days: int | None = 30,
                              today: date | None = None, now: datetime | None = None) -> list[StaleCitation]:
        """Cited documents that are past their review date or superseded, per the index manifest's metadata."""
        today = today or date.today()
        out = []
        for doc in self.most_cited_documents(days, limit=10_000, now=now):
            meta = (documents.get(doc.doc_id) or {}).get("meta") or {}
            reasons = []
            review_due, superseded_by = meta.get("review_due") or "", meta.get("superseded_by") or ""
            if review_due and review_due < today.isoformat():
                reasons.append(f"past review (due {review_due})")
            if superseded_by:
                reasons.append(f"superseded by {superseded_by}")
            if not meta:
                reasons.append("no longer in the knowledge base")
            elif meta.get("version") and doc.versions and any(v != str(meta["version"]) for v in doc.versions):
                reasons.append(f"older version cited (current {meta['version']})")
            if reasons:
                out.append(StaleCitation(doc.doc_id, meta.get("title") or doc.title, doc.citations, doc.last_cited,
                                         tuple(reasons), review_due, superseded_by))
        return out
