"""Spec builders shared by tests live in :mod:`kasal.testing.specs` (benchmarks use them);
here, what tests alone share."""

import subprocess
import sys
import textwrap
from pathlib import Path

from kasal.testing.specs import FAST_RETRY, crew, offline_agent, stub_agent

__all__ = ["FAST_RETRY", "crew", "offline_agent", "run_python", "stub_agent"]

CHECKOUT = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: float = 120) -> str:
    """Run ``code`` (dedented) in a fresh interpreter from the checkout, for what changes a
    whole process (the collector, the loop policy); its stripped stdout. Fails the test on
    a non-zero exit, with the process's stderr."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=CHECKOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
