"""Initial schema: conversations, messages, feedback, handoffs, audit log (schema_version 1 of older releases).

Revision ID: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


# why: a migration is the schema as written: one CREATE per table
def upgrade() -> None:
    """Create the five tables as release 1 of the SQLite store had them."""
    op.create_table(
        "conversations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("surface", sa.Text, nullable=False),
        sa.Column("user", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.Text, sa.ForeignKey("conversations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("surface", sa.Text, nullable=False),
        sa.Column("user", sa.Text),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("standalone_question", sa.Text),
        sa.Column("answer", sa.Text),
        sa.Column("citations", sa.Text, nullable=False, server_default="[]"),
        sa.Column("refused", sa.Integer, nullable=False, server_default="0"),
        sa.Column("refusal_reason", sa.Text),
        sa.Column("confidence", sa.Float),
        sa.Column("escalation", sa.Text),
        sa.Column("latency_ms", sa.Float),
        sa.Column("timings", sa.Text),
        sa.Column("composer", sa.Text),
        sa.Column("error", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("rating", sa.Integer, sa.CheckConstraint("rating IN (-1, 1)"), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("user", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, sa.CheckConstraint("status IN ('open', 'claimed', 'closed')"),
                  nullable=False, server_default="open"),
        sa.Column("transcript", sa.Text, nullable=False),
        sa.Column("contact", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("claimed_by", sa.Text),
        sa.Column("closed_note", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("who", sa.Text),
        sa.Column("surface", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text),
        sa.Column("message_id", sa.Integer),
        sa.Column("documents", sa.Text, nullable=False, server_default="[]"),
        sa.Column("detail", sa.Text),
        sqlite_autoincrement=True,
    )
