"""rate_limits: one token bucket per API client, shared by every API process that uses this store.

Revision ID: 0004_rate_limits
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_rate_limits"
down_revision = "0003_outcome"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the bucket table: tokens left and the wall-clock time they were counted at."""
    op.create_table(
        "rate_limits",
        sa.Column("client", sa.Text, primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("stamp", sa.Float, nullable=False),
    )
