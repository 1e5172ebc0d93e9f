"""Kasal workers as real OS processes (``kasal worker``), so tests can SIGKILL them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_LINE = "worker polling task queue"


class WorkerProcess:
    """``python -m cli.main worker`` against a given server and task queue.

    Workers of one deployment share the app database (the journal of paid calls, blobs,
    records): by default ``app.db`` beside ``data_dir``, so workers whose data directories
    share a parent share it, as they would share PostgreSQL in production.
    """

    def __init__(
        self, address: str, task_queue: str, data_dir: Path, *args: str, **env: str
    ) -> None:
        self.env = {
            **os.environ,
            "KASAL_TEMPORAL_ADDRESS": address,
            "KASAL_TASK_QUEUE": task_queue,
            "KASAL_DATA_DIR": str(data_dir),
            "KASAL_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir.parent / 'app.db'}",
            **env,
        }
        #: Extra arguments of ``kasal worker`` (``--project DIR``).
        self.args = list(args)
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 90) -> WorkerProcess:
        """Start and wait until the worker polls its task queue."""
        self._ready.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError("worker did not start:\n" + "".join(self.output[-30:]))
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.output.append(line)
            if READY_LINE in line:
                self._ready.set()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, like a crashed machine."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(predicate, timeout: float = 60, every: float = 0.05) -> None:
    """Poll ``predicate`` until true (blocking; run it in a thread from async tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise TimeoutError("condition not met in time")


async def crash_mid_call_and_resume(server_address, client, queue, spec, stub, data_dir, **env):
    """Start ``spec`` on a worker process, SIGKILL it while the stub holds an LLM call
    (a ``block_at`` behaviour), start a fresh worker, and wait for the crew to finish.
    ``env`` is added to both workers' environment.

    Returns ``(result, events)``; the events are read while a worker still runs (reading a
    finished workflow's stream needs one).
    """
    import asyncio

    from kasal.client import start_execution

    first = WorkerProcess(server_address, queue, data_dir / "w1", **env)
    await asyncio.to_thread(first.start)
    second = WorkerProcess(server_address, queue, data_dir / "w2", **env)
    try:
        handle = await start_execution(client, spec, task_queue=queue)
        assert await asyncio.to_thread(stub.blocked.wait, 90), "the LLM call never started"
        first.kill()  # in the middle of the held LLM call
        stub.release.set()
        await asyncio.to_thread(second.start)
        result = await asyncio.wait_for(handle.result(), 120)
        events = [e async for e in handle.events()]
    finally:
        first.kill()
        second.stop()
    return result, events
