"""The migrations form one line: every branch merged into main chains onto the last."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from kasal.db.migrate import alembic_config


def test_the_migrations_have_one_head():
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"several heads {heads}: chain the newest onto the others"
