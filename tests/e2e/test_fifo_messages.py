"""A named pipe where `diff` expects an index file, or inside a mongodump folder given to
`backup ingest`, is named for what it is (exit 2), never read (a pipe would block) and never
skipped (a collection silently missing from a signed backup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), *args],
        check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_diff_names_a_fifo_index(home: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "live.afpidx"
    os.mkfifo(fifo)
    done = _run(home, "diff", str(fifo), str(fifo))
    assert done.returncode == 2
    assert "is a named pipe (FIFO), not a fingerprint index file" in done.stderr


def test_ingest_refuses_a_mongodump_folder_holding_a_fifo(home: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump" / "shop"
    dump.mkdir(parents=True)
    (dump / "orders.bson").write_bytes(b"")
    os.mkfifo(dump / "customers.bson")
    assert _run(home, "vault", "add", "v1", "--url", (tmp_path / "vault").as_uri()).returncode == 0
    done = _run(home, "backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump")
    assert done.returncode == 2, done.stderr
    assert "customers.bson is a named pipe (FIFO)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "vault").rglob("*.age"))  # nothing stored
