"""memory_records (memory and knowledge, with embeddings) and tool_descriptions (the catalog)

On PostgreSQL with the pgvector extension available, memory_records also gets a ``vector``
column that similarity search uses; without it the plain-SQL path compares JSON embeddings.

Revision ID: 0007_8
Revises: 0006_7
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_8"
down_revision: str | None = "0006_7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "memory_records",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("crew_key", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("write_key", sa.String(length=255), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("embedder", sa.String(length=255), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_records")),
        sa.UniqueConstraint("crew_key", "owner", "write_key", name="uq_memory_records_write"),
    )
    op.create_index(
        "ix_memory_records_scope",
        "memory_records",
        ["crew_key", "owner", "kind", "created_at"],
        unique=False,
    )
    op.create_table(
        "tool_descriptions",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("args_schema", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tool_descriptions")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        available = bind.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar()
        if available:
            op.execute("CREATE EXTENSION IF NOT EXISTS vector")
            op.execute("ALTER TABLE memory_records ADD COLUMN embedding_vector vector")


def downgrade() -> None:
    op.drop_table("tool_descriptions")
    op.drop_index("ix_memory_records_scope", table_name="memory_records")
    op.drop_table("memory_records")
