"""worker_projects: the CrewAI projects workers serve, published at worker start

Revision ID: 0006_7
Revises: 0005_13
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_7"
down_revision: str | None = "0005_13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_projects",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task_queue", sa.String(length=255), nullable=False),
        sa.Column("identity", sa.String(length=255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("default_inputs", sa.JSON(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "task_queue", name=op.f("pk_worker_projects")),
    )


def downgrade() -> None:
    op.drop_table("worker_projects")
