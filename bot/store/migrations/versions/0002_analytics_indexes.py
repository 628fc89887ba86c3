"""Indexes for the console's analytics and queues (schema_version 2 of older releases).

Revision ID: 0002_indexes
"""

from alembic import op

revision = "0002_indexes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index what the Analytics page, conversation view, handoff queue and audit log filter and sort by."""
    op.create_index("idx_messages_created", "messages", ["created_at"])
    op.create_index("idx_messages_conversation", "messages", ["conversation_id", "id"])
    op.create_index("idx_handoffs_status", "handoffs", ["status", "created_at"])
    op.create_index("idx_audit_at", "audit_log", ["at"])
