"""Settings from the environment (``KASAL_*``), read once per process."""

from __future__ import annotations

import getpass
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kasal.constants import TASK_QUEUE


def _os_user() -> str:
    """The login name of whoever runs this process ("" if the OS cannot say)."""
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return ""


class Settings(BaseSettings):
    """Everything configurable. Secrets are ``SecretStr`` so they never print.

    Read from ``KASAL_*`` environment variables, then a ``.env`` file in the working
    directory (the environment wins). ``DATABASE_URL`` and ``JWT_SECRET``, the names other
    FastAPI templates document, are accepted too; the ``KASAL_`` names win over them.
    """

    model_config = SettingsConfigDict(
        env_prefix="KASAL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Code (tests, the facade) builds settings by field name despite the env aliases.
        populate_by_name=True,
    )

    #: Where embedded Temporal and SQLite files live.
    data_dir: Path = Path(".kasal")
    #: ``host:port`` of a Temporal frontend; empty means start the embedded dev server.
    temporal_address: str = ""
    temporal_namespace: str = "default"
    task_queue: str = TASK_QUEUE
    #: Port of the embedded dev server (0 = pick a free one) and its Web UI.
    embedded_port: int = 7233
    embedded_ui_port: int = 8233
    #: Worker concurrency.
    #: Task attempts one worker runs at once. Tasks wait on LLM providers (I/O, no CPU while
    #: they wait), so the default is high; each running task holds one thread.
    max_concurrent_activities: int = 1000
    #: Workflow tasks a worker runs at once. They are Python code under one GIL: more at once
    #: is no faster, only more threads contending; a burst of new crews (each a fresh
    #: sandbox, ~10 ms) then stretched every one past the SDK's 2 s deadlock timeout.
    #: (1,000- and 200-crew rounds: 10 as fast as 50.)
    max_concurrent_workflow_tasks: int = Field(default=10, ge=2)
    #: Task attempts running CrewAI's own code at once (the others wait on their provider,
    #: a tool, or here): past a few, more threads only fight over the GIL and starve the
    #: event loop that sends heartbeats.
    compute_slots: int = Field(default=4, ge=1)
    #: Task attempts that may be computing or waiting for a compute slot before the worker
    #: stops taking new tasks from Temporal (attempts waiting on a provider or a tool do
    #: not count: I/O-bound crews still fill ``max_concurrent_activities``). Tasks past it
    #: wait in the task queue, not started, not heartbeating, free for any other worker.
    #: 0: no such limit (every slot up to ``max_concurrent_activities`` is taken at once).
    compute_backlog: int = Field(default=16, ge=0)
    #: Allocations between two collections of the youngest generation in a worker or API
    #: process (CPython's default: 700). Raised, the short-lived objects of each call die
    #: by reference counting before they are promoted, and the full collections that stop
    #: the whole process come far less often (a 200 + 1,000-crew run: 27 s of the worker's
    #: CPU in the collector at 700, 7.5 s at 50,000). Start-up's objects are frozen out of
    #: the collector's sight either way; 0 leaves the collector as CPython sets it.
    gc_young_threshold: int = Field(default=50_000, ge=0)
    #: Most seconds between two heartbeats of a running task reaching the Temporal server:
    #: how soon a cancel or stop reaches a task in the middle of a provider call. Each one
    #: is a write on the server: with thousands of long calls in flight, a few seconds
    #: here spares the server most of its work for a slower stop.
    heartbeat_throttle_seconds: float = Field(default=1.0, gt=0)
    #: Heartbeats a second one worker's running tasks send together, at most: with more
    #: tasks running, each beats less often (down to a third of its heartbeat timeout),
    #: so a thousand tasks in flight do not swamp the Temporal server. 0: no budget.
    heartbeats_per_second: float = Field(default=100.0, ge=0)
    #: Whether the Temporal server pushes a cancel to the worker running the task (server
    #: 1.32+ with ``frontend.WorkerCommandsEnabled`` and
    #: ``system.enableCancelActivityWorkerCommand``; the embedded server sets both). Then a
    #: running task heartbeats only to show it lives, a third of its heartbeat timeout apart,
    #: and a cancel still reaches it at once. None: as the namespace's capabilities say.
    #: false: cancels ride on heartbeats (``heartbeat_throttle_seconds`` apart).
    cancel_push: bool | None = None
    #: Running executions a worker keeps in memory between their workflow tasks (Temporal's
    #: sticky cache, about 0.25 MB each); beyond it the least recently used is evicted and
    #: replayed from its history when its next event arrives: CPU instead of memory.
    max_cached_workflows: int = Field(default=1000, ge=0)
    #: Modules to import on worker start so their tools register by name.
    tool_modules: list[str] = Field(default_factory=list)
    #: Directory the built-in ``file_read`` tool may read from (default: <data_dir>/files;
    #: the data directory itself, with its databases, is never readable).
    files_dir: Path | None = None
    #: Base URLs (prefixes) a crew spec may point an LLM at. Empty: specs cannot choose one,
    #: only the operator can (OPENAI_BASE_URL, KASAL_LLM_BASE_URL, DATABRICKS_HOST).
    llm_base_urls: list[str] = Field(default_factory=list)
    #: Set true to let CrewAI send its telemetry (off by default).
    telemetry: bool = False
    #: Shared by every worker of a deployment: workers sign the events task attempts send
    #: their workflow with it, so no other Temporal client can forge them. Unset: derived
    #: from ``secret_key`` (set both in production; see README).
    worker_secret: SecretStr | None = None
    #: ``kasal worker`` writes this file once it polls its task queue, and removes it at
    #: exit (``--ready-file`` overrides): a readiness check for scripts and containers.
    worker_ready_file: Path | None = None
    #: Who starts executions from this process (CLI, facade): the ``KasalOwner`` search
    #: attribute, so the Temporal Web UI can filter by it. Default: the OS user.
    owner: str = Field(default_factory=_os_user)
    #: Run agents whose provider key is missing on the offline model (and say so) instead
    #: of failing. ``kasal dev`` turns it on for executions started through its API on the
    #: embedded default, as ``kasal run`` does; never on for a configured deployment.
    offline_fallback: bool = False
    #: Run every agent, manager and planner on the offline model (deterministic, no
    #: network): ``KASAL_OFFLINE=1`` or ``kasal run --offline``. Never implied.
    offline: bool = False
    #: CrewAI projects this process serves (``kasal worker --project DIR``, repeatable):
    #: their crews run by name (``{"project": name}``), built from their own code.
    projects: list[Path] = Field(default_factory=list)

    # -- built-in tools, memory and knowledge (issue 8; see README "Tools") -------------
    #: ``web_search``: ``serper``, ``tavily`` or ``brave``, its key, and (tests, proxies)
    #: the endpoint to use instead of the provider's own.
    web_search_provider: str = ""
    web_search_api_key: SecretStr | None = None
    web_search_url: str = ""
    #: ``scrape_website``: hosts (names or addresses) it may fetch although they are
    #: private, loopback or link-local; size and time bounds of one fetch.
    scrape_allowed_hosts: list[str] = Field(default_factory=list)
    scrape_max_bytes: int = Field(default=2_000_000, gt=0)
    scrape_timeout: float = Field(default=15.0, gt=0)
    #: ``database_query``: databases it may read, name -> SQLAlchemy-style URL
    #: (``postgresql://...`` or ``sqlite:///path``); never the app database.
    query_databases: dict[str, str] = Field(default_factory=dict)
    query_timeout: float = Field(default=10.0, gt=0)
    query_max_rows: int = Field(default=200, gt=0)
    #: ``code_execution``: the interpreter, and the bounds of one run.
    code_execution_python: str = ""
    code_execution_require_isolation: bool = True
    code_execution_timeout: float = Field(default=10.0, gt=0)
    code_execution_memory_mb: int = Field(default=256, gt=16)
    code_execution_output_bytes: int = Field(default=64_000, gt=0)
    #: MCP tool servers, name -> ``{"command": [...], "env": {...}}`` (stdio) or
    #: ``{"url": "http://host/mcp", "headers": {...}}`` (streamable HTTP).
    mcp_servers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    mcp_timeout: float = Field(default=30.0, gt=0)
    #: ``crewai_tools`` classes data specs may name (with arguments), e.g.
    #: ``["ScrapeWebsiteTool"]``; ``["*"]`` for all. Empty by default: some of them read
    #: any file or run code on the worker, so the operator chooses.
    crewai_tools: list[str] = Field(default_factory=list)
    #: The embedder of crews that name none (memory and knowledge).
    embedder: str = "offline/default"

    # -- API (issue 3) -------------------------------------------------------------------
    env: str = "dev"
    database_url: str = Field(
        default="", validation_alias=AliasChoices("KASAL_DATABASE_URL", "DATABASE_URL")
    )
    #: Connection pool of the app database: connections kept open per process, and how
    #: many more it may open under load (PostgreSQL; a SQLite file keeps both). A request
    #: past the kept ones paid a new connection (TCP, TLS, a server process) and closed it
    #: after: with 5 kept, 50 clients reading statuses spent a quarter of the API's CPU and
    #: its 99th percentile (0.8 s) there.
    db_pool_size: int = Field(default=15, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    #: A pooled PostgreSQL connection is pinged before use only if it sat idle this long
    #: (seconds; 0: before every use). A ping costs three round trips with asyncpg; one used
    #: a moment ago is alive, and a database that went away since is noticed by the failing
    #: statement, which discards the pool.
    db_ping_after_idle: float = Field(default=1.0, ge=0)
    secret_key: SecretStr = Field(
        default=SecretStr("dev-insecure-secret-change-me-0123456789abcdef"),
        validation_alias=AliasChoices("KASAL_SECRET_KEY", "JWT_SECRET"),
    )
    access_token_minutes: int = 60
    admin_email: str = ""
    admin_password: SecretStr = SecretStr("")
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 1_000_000
    login_rate_limit: str = "10/minute"
    execution_rate_limit: str = "60/minute"

    # -- operations (issue 9) ------------------------------------------------------------
    #: Seconds a force-stop waits for the workflow to acknowledge its cancellation before it
    #: terminates it.
    force_stop_seconds: float = Field(default=10.0, gt=0)
    #: Seconds between the API's passes that reconcile executions ended outside Kasal.
    reconcile_interval: float = Field(default=2.0, gt=0)
    #: Seconds between SSE heartbeats (comment lines that keep proxies from closing).
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    #: Finished executions older than this many days are purged (with trace and blobs) by
    #: Kasal's own Temporal schedule ``kasal-retention``. 0 keeps everything.
    retention_days: float = Field(default=0, ge=0)
    #: Let webhook subscriptions target private, loopback and link-local addresses.
    webhook_allow_private: bool = False
    # -- teams and visibility (issue 10) --------------------------------------------------
    #: A refresh token (from login) lives this long; each use rotates it.
    refresh_token_days: int = Field(default=30, ge=1)
    #: Failed logins for one account from one address before that address is locked out
    #: of that account (the right password from another address still works).
    login_failure_limit: str = "5/15 minutes"
    #: Seconds an API process may reuse who an access token's user is (active, roles) for
    #: GET requests (0: read on every request). Disabling a user or changing a role holds at
    #: once in the process that did it, within this bound in the other replicas; the token's
    #: expiry stays exact. API keys are read on every request.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    #: Requests per API key, and execution starts per group (per user: execution_rate_limit).
    api_key_rate_limit: str = "600/minute"
    group_execution_rate_limit: str = "600/minute"
    #: Executions of one group that may run at once (0: no limit).
    group_max_concurrent_executions: int = Field(default=0, ge=0)
    #: ``redis://host:6379/0``: rate limits shared by every API replica. Unset: per process.
    redis_url: str = ""
    #: Prefix of Kasal's keys in Redis (deployments sharing one Redis set their own).
    redis_prefix: str = "kasal"
    #: Identity from a header the platform in front sets (``X-Forwarded-Email`` on
    #: Databricks Apps). Off unless set, and refused unless ``trusted_proxies`` names the
    #: proxy's addresses: the header is believed only on requests from those.
    trusted_proxy_header: str = ""
    trusted_proxies: list[str] = Field(default_factory=list)
    #: ``json``: one JSON object per log line with execution id, task and trace id.
    log_format: str = "text"
    #: ``kasal worker`` serves Prometheus ``/metrics`` on this port (0: not at all).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    #: Put prompt and response text in LLM spans (off: spans carry model, tokens, latency).
    otel_capture_content: bool = False

    def resolved_worker_secret(self) -> str:
        """The workers' signing secret: ``worker_secret``, else one derived from ``secret_key``."""
        if self.worker_secret is not None and self.worker_secret.get_secret_value():
            return self.worker_secret.get_secret_value()
        return "derived:" + self.secret_key.get_secret_value()

    def readable_files_dir(self) -> Path:
        """Where ``file_read`` reads: ``files_dir`` or ``<data_dir>/files``."""
        return (self.files_dir or self.data_dir / "files").resolve()

    def allows_base_url(self, url: str) -> bool:
        """True if a spec may send requests (and a key) to ``url``."""
        return any(url.startswith(prefix) for prefix in self.llm_base_urls)

    @property
    def embedded(self) -> bool:
        """True when no Temporal address is configured."""
        return not self.temporal_address

    def resolved_database_url(self) -> str:
        """The app database URL: KASAL_DATABASE_URL, or a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'kasal.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()


def disable_crewai_telemetry(settings: Settings | None = None) -> None:
    """Turn CrewAI's telemetry off unless the user opted in.

    With no network each process otherwise hangs about 10 s at exit sending it.
    """
    if (settings or get_settings()).telemetry:
        return
    from kasal.telemetry import tracing_requested

    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    if not tracing_requested():  # the operator's own tracing needs the SDK on
        os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
    os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
    # CrewAI collects a first-time user's traces even with its tracing off (no
    # ``.crewai_user.json`` yet, as on every fresh worker): its trace listener then keeps
    # every event of every task until a ``Crew.kickoff`` ends, and a worker's per-task
    # attempts never end one, so a worker kept them all, prompts and outputs included, for
    # its whole life (12,120 after three bursts of 1,000 crews). CREWAI_TESTING is the
    # switch CrewAI reads to skip that first-run collection and its prompts, and recording
    # kickoffs into the working directory.
    if os.environ.get("CREWAI_TRACING_ENABLED", "").lower() in ("false", "0"):
        os.environ.setdefault("CREWAI_TESTING", "true")
