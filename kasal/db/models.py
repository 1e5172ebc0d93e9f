"""Tables: users, crews, executions, the traces of finished executions, blobs, and the
tool catalogs workers publish."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    """A fresh primary key: 32 hex characters."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every Kasal table."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class User(Base):
    """Someone who signs in. ``email`` is the login name."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Crew(Base):
    """A stored crew: its validated ``CrewSpec`` as JSON."""

    __tablename__ = "crews"
    __table_args__ = (Index("ix_crews_owner_created", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The group that shares it (issue 10); None only for rows made before groups existed.
    group_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Execution(Base):
    """One crew kickoff. Written by the API at start, finished by the worker's record activity.

    ``status_detail`` is the final ``ExecutionStatus`` (per-task progress) and ``result`` the
    ``CrewWorkflowResult``, both as JSON, so finished executions are answered from here.
    """

    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_executions_owner_idempotency"),
        Index("ix_executions_owner_created", "owner_id", "created_at"),
        Index("ix_executions_owner_status", "owner_id", "status"),
        Index("ix_executions_crew", "crew_id"),
        Index("ix_executions_replay_of", "replay_of"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(String(100), unique=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The group that shares it (issue 10); None for rows made outside the API or before
    #: groups existed (then only the owner sees it).
    group_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # No foreign key: an execution outlives the crew it was started from.
    crew_id: Mapped[str | None] = mapped_column(String(32))
    crew_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    token_usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    #: A replay's original execution (no foreign key: the original may be deleted) and the
    #: task it re-ran from.
    replay_of: Mapped[str | None] = mapped_column(String(32))
    replay_from_task: Mapped[str | None] = mapped_column(String(100))
    #: The schedule whose run this is (no foreign key: runs outlive their schedule).
    schedule_id: Mapped[str | None] = mapped_column(String(32), index=True)
    #: Who asked to stop it, when, and how (``stop`` graceful, ``force_stop``).
    stop_requested_by: Mapped[str | None] = mapped_column(String(320))
    stop_requested_at: Mapped[datetime | None] = mapped_column()
    stop_mode: Mapped[str | None] = mapped_column(String(16))


class Schedule(Base):
    """A crew on a timetable: the timetable lives in a Temporal Schedule
    (``kasal-sched-<id>``); this row says whose it is and what it runs."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_owner_created", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The group that shares it (issue 10); None only for rows made before groups existed.
    group_id: Mapped[str | None] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    crew_id: Mapped[str | None] = mapped_column(String(32))
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookSubscription(Base):
    """Where to POST which events of an owner's executions (all, one crew's, one
    schedule's). ``secret`` signs deliveries (Standard Webhooks); shown once at creation."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_owner", "owner_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The group that shares it (issue 10): a subscription with no crew or schedule gets
    #: the events of its group's executions. None only for rows made before groups existed.
    group_id: Mapped[str | None] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    crew_id: Mapped[str | None] = mapped_column(String(32))
    schedule_id: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One delivery attempt of one event to one subscription: the delivery log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_sub_created", "subscription_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TraceEvent(Base):
    """One event of a finished execution's stream, at its offset."""

    __tablename__ = "trace_events"
    __table_args__ = (
        UniqueConstraint("execution_id", "offset", name="uq_trace_events_execution_offset"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[datetime] = mapped_column()
    task: Mapped[str | None] = mapped_column(String(100))
    agent: Mapped[str | None] = mapped_column(String(100))
    attempt: Mapped[int | None] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(100), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The Temporal history event (WorkflowTaskStarted) of the workflow task behind it.
    history_event_id: Mapped[int | None] = mapped_column(Integer)


class Blob(Base):
    """A large task output kept out of workflow history; the workflow carries its id.

    Content-addressed (the id is the SHA-256 of the text), so a retried write is a no-op.
    """

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JournalEntry(Base):
    """One paid call of a task attempt (an LLM response or a tool result), kept so a retried
    attempt replays it instead of paying again. ``seq`` -1 marks an attempt's start.

    Keyed by workflow run, activity and attempt: each attempt writes only its own rows, so a
    stale attempt can never rewrite what a newer one journaled.
    """

    __tablename__ = "journal_entries"

    workflow_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="llm")
    digest: Mapped[str] = mapped_column(String(64), default="")
    response: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerCatalog(Base):
    """The tool names one worker process resolves on one task queue, published at its start.

    ``identity`` is the worker's Temporal identity (``pid@hostname``), so the API can keep
    to the catalogs of workers that Temporal says are polling.
    """

    __tablename__ = "worker_catalogs"

    identity: Mapped[str] = mapped_column(String(255), primary_key=True)
    task_queue: Mapped[str] = mapped_column(String(255), primary_key=True)
    tools: Mapped[list[str]] = mapped_column(JSON, default=list)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class MemoryRecord(Base):
    """One remembered thing of a crew, for one owner: a task's outcome (``memory``) or a
    chunk of a knowledge source (``knowledge``), with its embedding.

    ``write_key`` makes writes idempotent: a task's memory is keyed by execution, task and
    step, a knowledge chunk by its content hash, so a retried or replayed task never stores
    the same thing twice. Embeddings are JSON arrays (compared in Python: the plain-SQL
    path); on PostgreSQL with pgvector, ``kasal.memory`` keeps a ``vector`` column too.
    """

    __tablename__ = "memory_records"
    __table_args__ = (
        UniqueConstraint("crew_key", "owner", "write_key", name="uq_memory_records_write"),
        Index("ix_memory_records_scope", "crew_key", "owner", "kind", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    crew_key: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(16))
    write_key: Mapped[str] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    embedder: Mapped[str] = mapped_column(String(255))
    embedding: Mapped[list[float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ToolDescription(Base):
    """What a tool is, as the workers that resolve it describe it: the ``/api/v1/tools``
    catalog (the API imports no CrewAI, so it cannot build tools to ask them)."""

    __tablename__ = "tool_descriptions"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    args_schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(32), default="builtin")
    #: Why the tool cannot work on the worker that described it last ("" if it can).
    problem: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- teams and visibility (issue 10) --------------------------------------------------------


class Group(Base):
    """A team: its members share crews and executions, by role."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    #: A user's own group, made with the account (the default for someone in no team).
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroupMember(Base):
    """A user's role in a group: admin, editor, operator or viewer."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A program's credential. Only a SHA-256 of the key is kept; ``prefix`` (the key's
    first characters, ``kasal_xxxxxxxx``) finds the row and tells people which key it is."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The group the key acts in: it never sees another group, whatever its user may.
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class RefreshToken(Base):
    """One refresh token of a sign-in (a SHA-256 of it). Each use rotates it; a token used
    twice means it leaked, and its whole ``family`` (that sign-in) is revoked."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """One mutation: who, what, when, from where, and the ids before and after.

    Append-only: the migration installs triggers that refuse UPDATE and DELETE.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_group_at", "group_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_user_id: Mapped[str | None] = mapped_column(String(32))
    actor_email: Mapped[str | None] = mapped_column(String(320))
    actor_key_id: Mapped[str | None] = mapped_column(String(32))
    group_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    status_code: Mapped[int] = mapped_column(Integer)
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(255))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    address: Mapped[str | None] = mapped_column(String(100))
