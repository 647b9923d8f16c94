"""Facts about processes on this host, and which processes' pids this process sees.

A worker stores where it runs as ``host#identity`` in ``worker_host``; the reaper
tests a pid only when the identity is its own. A host name alone would not do:
the containers of a Kubernetes pod share one, each with a pid namespace of its
own, so a pid missing from the service's namespace says nothing about a worker
in the next container.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

IDENTITY_SEPARATOR = "#"  # never part of a host name
PID_NAMESPACE = Path("/proc/self/ns/pid")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (in this pid namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just is not ours
    return True


def process_identity() -> str | None:
    """The pid namespace this process sees pids in, as ``<inode>-<boot id>``, or
    None where /proc does not tell (not Linux, /proc not mounted).

    A namespace's inode is unique among the namespaces alive on one kernel, and
    reused after a reboot (the initial namespace's is the same everywhere): the
    boot id, the same in every container of a machine, tells kernels apart."""
    try:
        inode = os.stat(PID_NAMESPACE).st_ino
        boot = BOOT_ID.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return f"{inode}-{boot}" if boot else None


def worker_host(identity: str | None = None) -> str:
    """What a worker stores in ``worker_host``: the host name, and the identity
    (by default this process's) after ``#`` when there is one."""
    host = socket.gethostname()
    identity = identity or process_identity()
    return f"{host}{IDENTITY_SEPARATOR}{identity}" if identity else host


def split_worker_host(value: str) -> tuple[str, str | None]:
    """``(host name, identity)`` of a stored ``worker_host``; no identity in rows
    written before it was recorded, or where /proc did not tell."""
    host, sep, identity = value.rpartition(IDENTITY_SEPARATOR)
    return (host, identity or None) if sep else (value, None)
