"""`taskiq-exporter worker` removes only prometheus_client's files from its metrics
directory, and refuses a directory another user could write to."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.metrics.multiprocess import UnsafeDirectory, reset_directory

CLIENT_FILES = (
    "counter_1.db",
    "histogram_22.db",
    "summary_333.db",
    "gauge_all_4.db",
    "gauge_livesum_5.db",
    "gauge_livemostrecent_6.db",
    "gauge_max_7.db",
)
OTHER_FILES = (
    "notes.txt",
    "counter_abc.db",
    "counter_1.db.bak",
    "custom_1.db",
    "gauge_weird_8.db",
    "sub/counter_9.db",
)


def populate(directory: Path) -> None:
    for name in CLIENT_FILES + OTHER_FILES:
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_bytes(b"x")


def names(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def test_only_prometheus_client_files_are_removed(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    populate(directory)
    (directory / "counter_10.db").mkdir()  # a directory with a client file's name
    outside = tmp_path / "keep.db"
    outside.write_bytes(b"keep")
    (directory / "counter_11.db").symlink_to(outside)
    reset_directory(str(directory))
    assert names(directory) == {*OTHER_FILES, "sub", "counter_10.db", "counter_11.db"}
    assert outside.read_bytes() == b"keep"


def test_a_missing_directory_is_created_for_this_user_only_to_write(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "metrics"
    old = os.umask(0)
    try:
        reset_directory(str(directory))
    finally:
        os.umask(old)
    mode = directory.stat().st_mode
    assert stat.S_ISDIR(mode)
    assert not mode & (stat.S_IWOTH | stat.S_IWGRP)
    reset_directory(str(directory))  # and accepted the next time


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_a_directory_every_user_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    populate(directory)
    directory.chmod(mode)
    with pytest.raises(UnsafeDirectory, match="writable by every user"):
        reset_directory(str(directory))
    assert names(directory) == {*CLIENT_FILES, *OTHER_FILES, "sub"}


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    populate(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafeDirectory, match="symbolic link"):
        reset_directory(str(link))
    assert names(real) == {*CLIENT_FILES, *OTHER_FILES, "sub"}
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafeDirectory, match="symbolic link"):
        reset_directory(str(tmp_path / "dangling"))
    assert not (tmp_path / "nowhere").exists()


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    directory = tmp_path / "theirs"
    directory.mkdir()
    populate(directory)
    os.chown(directory, 65534, 65534)
    with pytest.raises(UnsafeDirectory, match=r"another user \(uid 65534\)"):
        reset_directory(str(directory))
    assert names(directory) == {*CLIENT_FILES, *OTHER_FILES, "sub"}


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    with pytest.raises(UnsafeDirectory, match="not a directory"):
        reset_directory(str(path))


@pytest.mark.parametrize("mode", [0o1777, 0o777])  # /tmp's mode, and without the sticky bit
def test_the_command_refuses_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    # Never a real /tmp: a bug here would empty it. And a regression must fail
    # this test, not replace the test process with `taskiq worker`.
    def no_exec(*_: object) -> None:
        raise AssertionError("the command went on to start the workers")

    monkeypatch.setattr(os, "execv", no_exec)
    directory = tmp_path / "tmp"
    directory.mkdir()
    directory.chmod(mode)
    populate(directory)
    assert main(["worker", "--multiproc-dir", str(directory), "app:broker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"taskiq-exporter worker: refusing the metrics directory: {directory} ")
    assert names(directory) == {*CLIENT_FILES, *OTHER_FILES, "sub"}
