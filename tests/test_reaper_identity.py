"""Which worker pids the reaper may test: those of its own pid namespace, named by
the identity a worker stores after its host name."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from exporter.maintenance.reaper import span, worker_gone
from exporter.processes import process_identity, split_worker_host, worker_host


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def identity_in_new_pid_namespace() -> str:
    """The identity a worker in another container of the pod would record (an
    unprivileged user and pid namespace, with its own /proc)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    code = "from exporter.processes import process_identity; print(process_identity())"
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
         sys.executable, "-c", code],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot create a pid namespace here: {done.stderr.strip()[-200:]}")
    return done.stdout.strip()


def test_the_identity_is_the_pid_namespace_on_this_boot() -> None:
    identity = process_identity()
    assert identity is not None
    inode, boot = identity.split("-", 1)
    assert int(inode) == os.stat("/proc/self/ns/pid").st_ino
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert boot == f.read().strip()
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", boot)


def test_a_worker_stores_its_host_name_and_identity() -> None:
    stored = worker_host()
    assert stored == f"{socket.gethostname()}#{process_identity()}"
    assert split_worker_host(stored) == (socket.gethostname(), process_identity())
    assert len(stored) <= 255  # the column
    # Rows written before the identity was recorded, or without /proc.
    assert split_worker_host("web-1") == ("web-1", None)
    assert split_worker_host("web-1#") == ("web-1", None)


def test_the_fast_path_needs_this_namespace_and_a_missing_pid() -> None:
    own = process_identity()
    here = worker_host()
    gone = dead_pid()
    assert worker_gone(here, gone, own)
    assert not worker_gone(here, os.getpid(), own)
    assert not worker_gone(here, None, own)
    assert not worker_gone(None, gone, own)
    # Same host name, another namespace (a sidecar), or no identity known on
    # either side: only the timeout applies.
    assert not worker_gone(worker_host("4026532999-another-boot"), gone, own)
    assert not worker_gone(socket.gethostname(), gone, own)
    assert not worker_gone(here, gone, None)


def test_a_worker_in_another_pid_namespace_of_the_same_host_is_not_tested() -> None:
    """The Kubernetes sidecar case with a real namespace: the host name and the
    boot are the same, the namespace is not."""
    other = identity_in_new_pid_namespace()
    own = process_identity()
    assert own is not None
    assert other != own
    assert other.split("-", 1)[1] == own.split("-", 1)[1]  # same boot
    sidecar = worker_host(other)
    assert split_worker_host(sidecar)[0] == socket.gethostname()
    assert not worker_gone(sidecar, dead_pid(), own)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86_400, "24h"), (3_600, "1h"), (6_300, "105min"), (90, "90s"), (0.5, "0.5s")],
)
def test_timeouts_read_as_people_write_them(seconds: float, text: str) -> None:
    assert span(seconds) == text
