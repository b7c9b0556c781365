"""tracking runs: the experiment-tracker runs of a job's integrations

jobs.tracking_runs: the W&B / MLflow runs the worker started for the job's `integrations`
(`[{"index", "type", "run_id", "url"}]`, `tuneforge.domain.TrackingRun`); NULL when none.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("tracking_runs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("tracking_runs")
