"""The application database: SQLAlchemy 2 models, the async engine, and repositories.

SQLite (aiosqlite) under the data directory by default, PostgreSQL (asyncpg) through
``KASAL_DATABASE_URL``. The schema is owned by the Alembic migrations in ``kasal/db/migrations``.
"""

from kasal.db.engine import create_engine, session_factory
from kasal.db.models import Base, Crew, Execution, TraceEvent, User

__all__ = [
    "Base",
    "Crew",
    "Execution",
    "TraceEvent",
    "User",
    "create_engine",
    "session_factory",
]
