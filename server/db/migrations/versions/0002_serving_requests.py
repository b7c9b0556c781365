"""serving requests: the worker asks the API's serving plane to load a model

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "serving_requests",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("base_model", sa.String(length=256), nullable=False),
        sa.Column("adapter_prefix", sa.String(length=1024), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("ready_at", sa.Float(), nullable=True),
        sa.Column("replicas", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_serving_requests_model", "serving_requests", ["model"])
    op.create_index("ix_serving_requests_job_id", "serving_requests", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_serving_requests_job_id", table_name="serving_requests")
    op.drop_index("ix_serving_requests_model", table_name="serving_requests")
    op.drop_table("serving_requests")
