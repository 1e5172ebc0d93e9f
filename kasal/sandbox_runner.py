"""The inside of ``code_execution``'s sandbox: run as a script by :mod:`kasal.sandbox`.

Started as ``python -I -S sandbox_runner.py <limits JSON>`` in a fresh temporary directory
with an empty environment, it reads the code from stdin, then locks itself down before
running it, in this order (each step can only take rights away):

1. resource limits: address space, CPU seconds, file size, open files, no core dumps;
2. a network namespace of its own (loopback only, and down): no socket reaches anything;
3. ``no_new_privs`` and a Landlock ruleset: the Python standard library and system
   libraries are readable, the temporary directory is readable and writable, nothing
   else exists (the worker's files, ``/proc`` of other processes, ``/etc``); Landlock also
   forbids ptrace of and signals to processes outside the sandbox, and abstract UNIX sockets.

It prints one JSON line on stderr saying which of these it applied; the parent refuses to
run code when the isolation it requires is missing. Standard library only: this file must
not import Kasal (it runs with ``-S``, without the worker's packages).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
# x86_64 and aarch64 share the Landlock syscall numbers.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1
LANDLOCK_SCOPE_SIGNAL = 2

# Filesystem access rights by ABI version.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _limits(spec: dict[str, int]) -> None:
    memory = spec["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = spec["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_bytes"], spec["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _no_network(libc: ctypes.CDLL) -> bool:
    # As root a network namespace needs no user namespace; otherwise one makes it possible.
    return any(libc.unshare(flags) == 0 for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET))


def _landlock(libc: ctypes.CDLL, workdir: str, readable: list[str]) -> int:
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        return 0
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= FS_REFER
    if abi >= 3:
        handled |= FS_TRUNCATE
    if abi >= 5:
        handled |= FS_IOCTL_DEV
    attr = _RulesetAttr(handled_access_fs=handled)
    size = ctypes.sizeof(ctypes.c_uint64)
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 2 * ctypes.sizeof(ctypes.c_uint64)
    if abi >= 6:
        attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL
        size = ctypes.sizeof(_RulesetAttr)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return 0
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    rules = [(path, read) for path in readable] + [(workdir, handled)]
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        # Files get file rights only (directory rights on a file are refused).
        if not os.path.isdir(path):
            access &= FS_EXECUTE | FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV
        rule = _PathBeneath(allowed_access=access & handled, parent_fd=fd)
        libc.syscall(
            SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0
        )
        os.close(fd)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return 0
    if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
        return 0
    os.close(ruleset)
    return abi


def main() -> None:
    spec = json.loads(sys.argv[1])
    code = sys.stdin.read()
    sys.stdin.close()
    workdir = os.getcwd()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    _limits(spec)
    network = _no_network(libc)
    landlock = _landlock(libc, workdir, spec["readable"])
    os.environ.clear()
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
    sys.stderr.write(json.dumps({"network_isolated": network, "landlock": landlock}) + "\n")
    sys.stderr.flush()
    if (spec["require_isolation"] and not (network and landlock)) or spec.get("probe"):
        return
    os.dup2(1, 2)  # the code's errors are part of its output
    sys.argv = ["code"]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(code, "<code>", "exec"), namespace)  # noqa: S102 - this is the sandbox


if __name__ == "__main__":
    main()
