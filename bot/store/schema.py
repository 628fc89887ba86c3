"""The store's database: one SQLAlchemy engine per URL (SQLite file or Postgres) and its Alembic migrations.

SQLite files written by releases before Alembic carry their own `schema_version` table (1 = initial schema,
2 = analytics indexes, 3 = messages.outcome); such a file is stamped with the matching Alembic revision and upgraded in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from bot.core.errors import StoreError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Ordered Alembic revisions; position + 1 is the schema version older releases recorded in `schema_version`.
REVISIONS = ("0001_initial", "0002_indexes", "0003_outcome", "0004_rate_limits")
SCHEMA_VERSION = len(REVISIONS)
_MIGRATION_LOCK = 7_140_014  # Postgres advisory lock id: two processes starting at once do not both migrate


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def create_store_engine(url: str) -> Engine:
    """An engine for url; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE so writers queue, never fail."""
    try:
        if not url.startswith("sqlite"):
            return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        engine = sa.create_engine(url, connect_args={"timeout": 30.0})
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"POLICYDESK_DATABASE_URL {safe_url(url)} is not usable: {exc}. Use "
                         "postgresql+psycopg://user:password@host:5432/dbname, or unset it for SQLite.") from exc

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy issues BEGIN itself (below), not the sqlite3 module
        cur = dbapi_conn.cursor()
        for pragma in ("foreign_keys = ON", "busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # Take the write lock at BEGIN: a deferred transaction that upgrades to a writer later can fail with
        # "database is locked" without waiting; an immediate one waits for the busy timeout instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def safe_url(url: str) -> str:
    """url with any password hidden, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def _config(conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(engine: Engine) -> int:
    """Apply pending migrations in one transaction; returns the schema version now in the database."""
    where = safe_url(str(engine.url))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg = _config(conn)
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None and sa.inspect(conn).has_table("schema_version"):
                legacy = conn.execute(sa.text("SELECT COALESCE(MAX(version), 0) FROM schema_version")).scalar()
                _refuse_newer(where, int(legacy) > SCHEMA_VERSION, f"schema version {legacy}")
                if legacy:
                    command.stamp(cfg, REVISIONS[int(legacy) - 1])
                    log.info("store %s: pre-Alembic schema version %s stamped as %s", where, legacy,
                             REVISIONS[int(legacy) - 1])
            _refuse_newer(where, current is not None and current not in REVISIONS, f"revision {current}")
            command.upgrade(cfg, "head")
            return schema_version(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"Store {where} could not be migrated: {getattr(exc, 'orig', None) or exc}. If it "
                         "is a SQLite file that is corrupt, move it aside; a new one is created on the next "
                         "start.") from exc


def _refuse_newer(where: str, newer: bool, what: str) -> None:
    if newer:
        raise StoreError(f"Store {where} has {what}, newer than this PolicyDesk ({REVISIONS[-1]}); upgrade "
                         "PolicyDesk or point POLICYDESK_DATA_DIR / POLICYDESK_DATABASE_URL elsewhere.")


def schema_version(conn: sa.Connection) -> int:
    """The schema version of the database (0 when never migrated)."""
    current = MigrationContext.configure(conn).get_current_revision()
    return REVISIONS.index(current) + 1 if current in REVISIONS else 0

