"""When a deleted model's weights were removed from object storage

fine_tuned_models.storage_freed_at: set once the adapter, merged weights and checkpoints of a
deleted model are gone from S3 (`server.service.model_storage`); NULL on a deleted model means
the removal is still owed (S3 was down, or a job still trains from the model).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("fine_tuned_models",
                  sa.Column("storage_freed_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tuned_models") as batch:
        batch.drop_column("storage_freed_at")
