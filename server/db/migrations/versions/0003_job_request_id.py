"""jobs.request_id and jobs.traceparent: the request (and trace) that created a job

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without a default: a plain ALTER TABLE on SQLite and PostgreSQL alike.
    op.add_column("jobs", sa.Column("request_id", sa.String(length=128), nullable=True))
    op.add_column("jobs", sa.Column("traceparent", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("traceparent")
        batch.drop_column("request_id")
