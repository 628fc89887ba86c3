"""messages.outcome: answered | caution | refused (issue 11); older rows derived from refused (schema_version 3).

Revision ID: 0003_outcome
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_outcome"
down_revision = "0002_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the outcome column and fill it for rows written before it existed."""
    op.add_column("messages", sa.Column("outcome", sa.Text))
    op.execute("UPDATE messages SET outcome = CASE WHEN error IS NOT NULL THEN NULL "
               "WHEN refused = 1 THEN 'refused' ELSE 'answered' END")
