"""The training extension, lineage and full-weight models

jobs.training / resolved_training (TuneForge's `training` extension as asked and as run),
jobs.base_model / parent (a job started from an ft: model), fine_tuned_models.parent_model /
tuning, serving_requests.kind (adapter or full weights).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("training", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("resolved_training", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("base_model", sa.String(length=256), nullable=True))
    op.add_column("jobs", sa.Column("parent", sa.JSON(), nullable=True))
    op.add_column("fine_tuned_models",
                  sa.Column("parent_model", sa.String(length=600), nullable=True))
    op.add_column("fine_tuned_models", sa.Column("tuning", sa.String(length=16),
                                                 nullable=False, server_default="lora"))
    op.add_column("serving_requests", sa.Column("kind", sa.String(length=16),
                                                nullable=False, server_default="adapter"))


def downgrade() -> None:
    with op.batch_alter_table("serving_requests") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("fine_tuned_models") as batch:
        batch.drop_column("tuning")
        batch.drop_column("parent_model")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("parent")
        batch.drop_column("base_model")
        batch.drop_column("resolved_training")
        batch.drop_column("training")
