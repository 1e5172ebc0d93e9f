"""Running untrusted Python for ``code_execution``: a separate, locked-down process.

:func:`run_python` starts :mod:`kasal.sandbox_runner` with the configured interpreter in a
fresh temporary directory, with an empty environment, in its own session, and hands it the
code on stdin. The runner applies resource limits, a network namespace of its own and a
Landlock filesystem ruleset to itself before it runs the code (see its docstring); this
side enforces the wall-clock limit (the whole process group is killed), caps the output it
reads, and deletes the directory afterwards. What this does and does not defend against is
in the README ("code_execution: the sandbox").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds of one run."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 256 * 1024 * 1024
    output_bytes: int = 64 * 1024
    file_bytes: int = 16 * 1024 * 1024
    #: Refuse to run code when the network namespace or Landlock cannot be had.
    require_isolation: bool = True
    #: The interpreter (operator setting; default: the worker's own Python, with ``-I -S``).
    python: str = ""


@dataclass
class SandboxResult:
    """What a run produced."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False
    refused: str | None = None
    network_isolated: bool = False
    landlock: int = 0
    seconds: float = 0.0

    def as_text(self) -> str:
        """The result as a tool answers it: the output, then how the run ended."""
        if self.refused:
            return f"Error: code_execution refused: {self.refused}"
        ending = (
            "timed out and was killed"
            if self.timed_out
            else f"exit code {self.exit_code}"
            if self.exit_code is not None
            else "killed"
        )
        note = " (output truncated)" if self.truncated else ""
        return f"{self.output}\n[{ending}{note}]"


def readable_paths() -> list[str]:
    """What sandboxed code may read: the standard library and the system's shared libraries."""
    paths = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    paths |= {"/usr/lib", "/lib", "/lib64", "/usr/lib64", "/dev/null", "/dev/urandom"}
    lib = Path(sys.base_prefix) / "lib"
    for entry in lib.glob("libpython*"):
        paths.add(str(entry))
    return sorted(p for p in paths if os.path.exists(p))


_probed: dict[str, SandboxResult] = {}


def probe(python: str = "") -> SandboxResult:
    """Which isolation this worker can give code (asked once per interpreter and process)."""
    if python not in _probed:
        _probed[python] = run_python(
            "", SandboxLimits(wall_seconds=10, require_isolation=False, python=python), probe=True
        )
    return _probed[python]


def run_python(
    code: str, limits: SandboxLimits | None = None, *, probe: bool = False
) -> SandboxResult:
    """Run ``code`` in the sandbox and return its output and how it ended."""
    limits = limits or SandboxLimits()
    workdir = tempfile.mkdtemp(prefix="kasal-code-")
    spec = {
        "probe": probe,
        "memory_bytes": limits.memory_bytes,
        "cpu_seconds": limits.cpu_seconds,
        "file_bytes": limits.file_bytes,
        "readable": readable_paths(),
        "require_isolation": limits.require_isolation,
    }
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            [limits.python or sys.executable, "-I", "-S", str(RUNNER), json.dumps(spec)],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # the whole group is killed on timeout
            close_fds=True,
        )
        return _supervise(process, code, limits, started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(
    process: subprocess.Popen[bytes], code: str, limits: SandboxLimits, started: float
) -> SandboxResult:
    assert process.stdin and process.stdout and process.stderr
    chunks: list[bytes] = []
    status: list[bytes] = []
    size = [0]
    truncated = [False]

    def read_output() -> None:
        assert process.stdout
        while block := process.stdout.read1(65536):  # type: ignore[attr-defined]
            if size[0] < limits.output_bytes:
                chunks.append(block[: limits.output_bytes - size[0]])
            size[0] += len(block)
            if size[0] > limits.output_bytes and not truncated[0]:
                truncated[0] = True
                _kill(process)  # a flood of output is stopped, not read for ever

    def read_status() -> None:
        assert process.stderr
        status.append(process.stderr.readline())
        process.stderr.read()

    readers = [threading.Thread(target=read_output), threading.Thread(target=read_status)]
    for reader in readers:
        reader.daemon = True
        reader.start()
    try:
        process.stdin.write(code.encode())
        process.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = False
    try:
        process.wait(limits.wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
        process.wait()
    # Stopped by its CPU limit (SIGXCPU) before the wall clock's: out of time all the same
    # (which of the two comes first depends on how busy the machine is).
    timed_out = timed_out or process.returncode == -signal.SIGXCPU
    for reader in readers:
        reader.join(2)
    try:
        isolation = json.loads(status[0]) if status and status[0].strip() else {}
    except ValueError:
        isolation = {}
    result = SandboxResult(
        output=b"".join(chunks).decode("utf-8", "replace"),
        exit_code=process.returncode if not timed_out else None,
        timed_out=timed_out,
        truncated=truncated[0],
        network_isolated=bool(isolation.get("network_isolated")),
        landlock=int(isolation.get("landlock", 0)),
        seconds=time.monotonic() - started,
    )
    if limits.require_isolation and isolation and not (result.network_isolated and result.landlock):
        result.refused = (
            "this worker cannot isolate code (network namespace: "
            f"{'yes' if result.network_isolated else 'no'}, Landlock: "
            f"{'yes' if result.landlock else 'no'}); an operator may set "
            "KASAL_CODE_EXECUTION_REQUIRE_ISOLATION=false to run it with limits only"
        )
    return result


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
