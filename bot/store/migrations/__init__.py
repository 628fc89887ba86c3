"""Alembic migrations of the store (run by bot.store.schema.migrate, never by hand-written DDL elsewhere)."""
