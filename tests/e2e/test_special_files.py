"""A path that is neither a regular file nor a folder (issue 13): a named pipe nobody writes
to, a unix socket, a device. ``fingerprint`` (with and without ``--format``) and ``backup
ingest`` refuse it with exit 2 and a message that says what it is, before anything opens it.
Each command runs in a process of its own under a timeout, so that a command that blocks on
the pipe fails the test instead of hanging it."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

TIMEOUT = 60  # seconds; the refusal itself takes well under one


def affidavit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; a hang raises ``subprocess.TimeoutExpired`` (the process is killed)."""
    return subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_refused(r: subprocess.CompletedProcess[str], path: Path, kind: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line]
    lines = lines[next((i for i, x in enumerate(lines) if x.startswith("error: ")), 0) :]
    assert lines == [
        f"error: {path} is {kind}, not a regular file or a folder",
        "hint: affidavit reads backups from regular files and folders; copy the data into a "
        "file first",
    ], r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A named pipe with no writer: opening it for reading blocks for ever."""
    path = tmp_path / "pipe.bson"
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    """A listening unix socket named like a backup file."""
    path = tmp_path / "sock.rdb"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        yield path


@pytest.fixture
def vault(home: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "vault"
    r = affidavit(home, "vault", "add", "v1", "--url", f"file://{folder}")
    assert r.returncode == 0, r.stderr
    return folder


@pytest.mark.parametrize("fmt", [None, "bson"], ids=["detected", "named"])
def test_fingerprint_refuses_a_fifo(home: Path, fifo: Path, fmt: str | None) -> None:
    args = ["fingerprint", str(fifo)] + (["--format", fmt] if fmt else [])
    assert_refused(affidavit(home, *args), fifo, "a named pipe (FIFO)")


def test_ingest_refuses_a_fifo_and_says_what_it_is(home: Path, vault: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.rdb"
    os.mkfifo(pipe)
    before = catalog_dump(home)
    r = affidavit(home, "backup", "ingest", str(pipe), "--format", "rdb")
    assert_refused(r, pipe, "a named pipe (FIFO)")
    assert "is a folder" not in r.stderr
    assert catalog_dump(home) == before
    assert not vault.exists() or not any(vault.rglob("*"))


def test_fingerprint_and_ingest_refuse_a_unix_socket(
    home: Path, vault: Path, unix_socket: Path
) -> None:
    assert_refused(affidavit(home, "fingerprint", str(unix_socket)), unix_socket, "a socket")
    before = catalog_dump(home)
    r = affidavit(home, "backup", "ingest", str(unix_socket), "--format", "rdb")
    assert_refused(r, unix_socket, "a socket")
    assert catalog_dump(home) == before


def test_fingerprint_refuses_a_device_and_a_link_to_a_fifo(
    home: Path, fifo: Path, tmp_path: Path
) -> None:
    assert_refused(affidavit(home, "fingerprint", "/dev/null"), Path("/dev/null"),
                   "a character device")  # fmt: skip
    link = tmp_path / "dump.bson"
    link.symlink_to(fifo)
    assert_refused(affidavit(home, "fingerprint", str(link)), link, "a named pipe (FIFO)")
