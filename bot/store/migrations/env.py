"""Alembic environment: migrations run on the connection bot.store.schema.migrate hands over (one transaction)."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode lets later migrations alter SQLite tables (copy-and-move) with the same code as Postgres.
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
