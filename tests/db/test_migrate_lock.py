"""Several processes migrating one fresh SQLite file at once (workers starting together)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6

# Each process waits for the same instants, then migrates a fresh file each time: as close
# to together as it gets, several times for one interpreter start (the race is narrow).
SCRIPT = """
import asyncio, sys, time
from kasal.db.engine import create_engine
from kasal.db.migrate import migrate

async def main(directory, at, rounds):
    for n in range(rounds):
        engine = create_engine(f"sqlite+aiosqlite:///{directory}/{n}/kasal.db", pooled=False)
        try:
            time.sleep(max(0.0, at + n * 0.5 - time.time()))
            await migrate(engine)
        finally:
            await engine.dispose()

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


def test_processes_migrating_one_fresh_sqlite_file_together_all_succeed(tmp_path):
    start_at = time.time() + 4.0  # after every interpreter has imported SQLAlchemy and Alembic
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(tmp_path), str(start_at), str(ROUNDS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in processes]
    for code, stderr in outcomes:
        assert code == 0, stderr[-2000:]
    for n in range(ROUNDS):
        with sqlite3.connect(tmp_path / str(n) / "kasal.db") as db:
            (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert version and {"users", "crews", "executions"} <= tables
