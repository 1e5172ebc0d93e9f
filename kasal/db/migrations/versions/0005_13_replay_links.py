"""replay links on executions, Temporal event links on trace events

Revision ID: 0005_13
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_13"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("replay_of", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("replay_from_task", sa.String(length=100), nullable=True))
        batch.create_index("ix_executions_replay_of", ["replay_of"])
    with op.batch_alter_table("trace_events") as batch:
        batch.add_column(sa.Column("history_event_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trace_events") as batch:
        batch.drop_column("history_event_id")
    with op.batch_alter_table("executions") as batch:
        batch.drop_index("ix_executions_replay_of")
        batch.drop_column("replay_from_task")
        batch.drop_column("replay_of")
