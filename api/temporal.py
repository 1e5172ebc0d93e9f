"""The API's Temporal client, connected lazily so the API can start before Temporal."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client

from kasal.client import connect, ensure_search_attributes
from kasal.exceptions import TemporalUnavailableError
from kasal.settings import Settings

log = logging.getLogger(__name__)


class TemporalConnection:
    """One client per API process, (re)connected on demand.

    With ``KASAL_TEMPORAL_ADDRESS`` unset the API expects the embedded dev server that
    ``kasal dev`` starts beside it; if nothing answers there, requests that need Temporal
    get 503 and ``/readyz`` says why, instead of the API failing to start.
    """

    #: Seconds between connection attempts while Temporal is down.
    RETRY_INTERVAL = 2.0

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self.address = settings.temporal_address or f"127.0.0.1:{settings.embedded_port}"
        self._client = client
        self._lock = asyncio.Lock()
        self._last_attempt = 0.0
        self.last_error: str | None = None
        #: Whether Kasal's search attributes are registered (then executions carry them).
        self.search_attributes = False

    async def get(self) -> Client:
        """The connected client; :class:`TemporalUnavailableError` if Temporal is down."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            if self.last_error and time.monotonic() - self._last_attempt < self.RETRY_INTERVAL:
                raise TemporalUnavailableError(self.last_error)
            self._last_attempt = time.monotonic()
            try:
                self._client = await connect(
                    self.address, self.settings.temporal_namespace, timeout=5.0
                )
            except TemporalUnavailableError as exc:
                self.last_error = self._explain(exc.message)
                raise TemporalUnavailableError(self.last_error) from None
            self.last_error = None
            # Idempotent; on a fresh cluster (docker compose) this is what registers them.
            self.search_attributes = await ensure_search_attributes(self._client)
            log.info("connected to Temporal at %s", self.address)
            return self._client

    def _explain(self, message: str) -> str:
        if self.settings.embedded:
            return (
                f"no Temporal server answers at {self.address}: KASAL_TEMPORAL_ADDRESS is "
                "unset, so the API expects the embedded server `kasal dev` starts; run "
                "`kasal dev` or set KASAL_TEMPORAL_ADDRESS"
            )
        return message

    async def check(self) -> None:
        """Raise unless Temporal answers a health check now."""
        client = await self.get()
        try:
            healthy = await asyncio.wait_for(client.service_client.check_health(), 3.0)
        except Exception as exc:
            raise TemporalUnavailableError(f"Temporal at {self.address} is not healthy") from exc
        if not healthy:
            raise TemporalUnavailableError(f"Temporal at {self.address} is not serving")
