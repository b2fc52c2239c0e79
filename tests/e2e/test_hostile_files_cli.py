"""Hostile files handed to the CLI (attack pass, B1, B4, B5): each command runs in a process of
its own under a timeout, so that a command that blocks fails the test instead of hanging it.

- a named pipe nobody writes to, given as a ledger export file, an evidence package or a
  source's secret file, is refused with exit 2 and one line saying what it is (B1);
- a mongodump folder in which a collection's file is a named pipe (or its metadata is, or a
  link leads nowhere) is refused with exit 2 naming the entry, instead of being fingerprinted
  or ingested without that collection (B4);
- a ledger entry nested 100,000 arrays deep, in the catalog or in an export file, is a finding
  of ``ledger verify`` (exit 1), and an export line nested that deep is a malformed file
  (exit 2), never an internal error (B5).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import pytest

from affidavit.config import Settings
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e

TIMEOUT = 60  # seconds; each refusal takes well under one


def affidavit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; a hang raises ``subprocess.TimeoutExpired`` (the process is killed)."""
    return subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def error_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr from the ``error:`` line on (progress lines come before it)."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line]
    return lines[next((i for i, x in enumerate(lines) if x.startswith("error: ")), 0) :]


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


def vkey(home: Path) -> str:
    r = affidavit(home, "ledger", "key")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A named pipe with no writer: opening it for reading blocks for ever."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


# -- B1: a named pipe where a file belongs -----------------------------------------------------


def test_ledger_verify_refuses_a_fifo_as_export_file(home: Path, fifo: Path) -> None:
    r = affidavit(home, "ledger", "verify", "--file", str(fifo), "--public-key", vkey(home))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert error_lines(r) == [
        f"error: the export file {fifo} is a named pipe (FIFO), not a regular file",
        "hint: give the file written by `affidavit ledger export --out FILE`",
    ]


def test_evidence_verify_refuses_a_fifo_as_package(home: Path, fifo: Path) -> None:
    r = affidavit(home, "evidence", "verify", str(fifo), "--public-key", vkey(home))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert error_lines(r) == [
        f"error: the evidence package {fifo} is a named pipe (FIFO), not a regular file",
        "hint: give the .tar.gz file `affidavit evidence build` wrote",
    ]


def test_source_test_refuses_a_fifo_as_secret_file(home: Path, fifo: Path) -> None:
    r = affidavit(home, "source", "add", "orders", "--engine", "mongodb",
                  "--uri", "mongodb://127.0.0.1:1/", "--classification", "internal",
                  "--secret-file", str(fifo))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = affidavit(home, "source", "test", "orders")
    assert r.returncode == 2, (r.returncode, r.stderr)
    error, hint = error_lines(r)
    assert error.startswith("error: ")
    assert error.endswith(f"the secret file {fifo} is a named pipe (FIFO), not a regular file")
    assert hint == f"hint: make {fifo} a regular file (chmod 600) that holds only the secret"


# -- B4: a mongodump folder with a special file -----------------------------------------------


def _dump(root: Path) -> Path:
    """A mongodump folder ``db/orders`` of three documents, with its metadata."""
    db = root / "dump" / "db"
    db.mkdir(parents=True)
    (db / "orders.bson").write_bytes(b"".join(bson.encode({"_id": i}) for i in range(3)))
    (db / "orders.metadata.json").write_text(json.dumps({"collectionName": "orders"}))
    return db.parent


def _meta(collection: str) -> str:
    return json.dumps({"collectionName": collection, "indexes": [], "options": {}})


def _fifo_collection(db: Path) -> Path:
    os.mkfifo(db / "pipe.bson")
    (db / "pipe.metadata.json").write_text(_meta("pipe"))
    return db / "pipe.bson"


def _fifo_metadata(db: Path) -> Path:
    (db / "pipe.bson").write_bytes(bson.encode({"_id": 1}))
    os.mkfifo(db / "pipe.metadata.json")
    return db / "pipe.metadata.json"


def _dangling_link(db: Path) -> Path:
    (db / "gone.bson").symlink_to(db / "nothing.bson")
    (db / "gone.metadata.json").write_text(_meta("gone"))
    return db / "gone.bson"


@pytest.mark.parametrize(
    ("plant", "kind"),
    [
        (_fifo_collection, "a named pipe (FIFO)"),
        (_fifo_metadata, "a named pipe (FIFO)"),
        (_dangling_link, "a symbolic link to nothing"),
    ],
    ids=["fifo-collection", "fifo-metadata", "dangling-link"],
)
def test_a_mongodump_folder_with_a_special_entry_is_refused(
    home: Path, tmp_path: Path, plant: Any, kind: str
) -> None:
    dump = _dump(tmp_path)
    entry = plant(dump / "db")
    r = affidavit(home, "vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}")
    assert r.returncode == 0, r.stderr
    expected = [
        f"error: {entry} is {kind}, not a regular file",
        "hint: a mongodump folder holds regular files only; copy the dump into plain files",
    ]
    r = affidavit(home, "fingerprint", str(dump))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert error_lines(r) == expected
    before = catalog_dump(home)
    r = affidavit(home, "backup", "ingest", str(dump), "--format", "mongodump")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert error_lines(r) == expected  # ingest names the special entry too, before opening it
    assert catalog_dump(home) == before
    vault = tmp_path / "vault"
    assert not vault.exists() or not any(p.is_file() for p in vault.rglob("*"))


def test_the_same_mongodump_folder_without_the_fifo_is_read(home: Path, tmp_path: Path) -> None:
    r = affidavit(home, "fingerprint", str(_dump(tmp_path)), "--json")
    assert r.returncode == 0, r.stderr
    assert "db.orders" in r.stdout


# -- B5: entries nested 100,000 arrays deep ----------------------------------------------------

DEPTH = 100_000
_OPEN = b'{"action":"verification.completed","details":'
#: as the attack pass wrote it: an object cut short after its arrays
TRUNCATED = _OPEN + b"[" * DEPTH
#: a whole event of the right shape whose details nest that deep
WHOLE = (
    b'{"action":"verification.completed","actor":"mallory","client":{},"details":{"x":'
    + b"[" * DEPTH
    + b"]" * DEPTH
    + b'},"seq":SEQ,"subject":"backup:x","time":"2026-01-01T00:00:00.000000Z"}'
)


@pytest.fixture
def hostile(settings: Settings, home: Path, request: pytest.FixtureRequest) -> int:
    """The home's ledger with a few more events, one of them (returned: its seq) replaced in
    the catalog by an entry nested :data:`DEPTH` arrays deep."""
    with open_app(settings) as app:
        for i in range(4):
            with app.change() as change:
                change.record("test.event", f"thing:{i}", {"i": i})
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (seq,) = db.execute("SELECT max(seq) - 1 FROM ledger_entries").fetchone()
        entry = request.param.replace(b"SEQ", str(seq).encode())
        db.execute("UPDATE ledger_entries SET entry = ? WHERE seq = ?", (entry, seq))
    return int(seq)


def _finding_at(r: subprocess.CompletedProcess[str], seq: int) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    assert not report["ok"]
    codes = {f["code"] for f in report["findings"] if f.get("seq") == seq}
    assert codes & {"entry-unparseable", "entry-not-canonical"}, report["findings"]


@pytest.mark.parametrize("hostile", [TRUNCATED, WHOLE], ids=["truncated", "whole"], indirect=True)
def test_deeply_nested_catalog_entry_is_a_finding(home: Path, hostile: int) -> None:
    r = affidavit(home, "ledger", "show", "--json")
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    shown = {e["seq"] for e in json.loads(r.stdout)["entries"]}
    assert hostile in shown
    _finding_at(affidavit(home, "ledger", "verify", "--full", "--json"), hostile)


@pytest.mark.parametrize("hostile", [TRUNCATED, WHOLE], ids=["truncated", "whole"], indirect=True)
def test_deeply_nested_entry_in_an_export_file_is_a_finding(
    home: Path, hostile: int, tmp_path: Path
) -> None:
    export = tmp_path / "ledger.jsonl"
    r = affidavit(home, "ledger", "export", "--out", str(export))
    assert r.returncode == 0, r.stderr
    key = vkey(home)
    for full in ([], ["--full"]):
        r = affidavit(home, "ledger", "verify", "--file", str(export), "--public-key", key,
                      "--json", *full)  # fmt: skip
        if full:
            _finding_at(r, hostile)
        else:  # the fast path reads no entry in full: the leaf hash already disagrees
            assert r.returncode == 1, (r.returncode, r.stderr)
            assert "Traceback" not in r.stderr


def test_an_export_line_nested_too_deeply_is_a_malformed_file(home: Path, tmp_path: Path) -> None:
    export = tmp_path / "ledger.jsonl"
    assert affidavit(home, "ledger", "export", "--out", str(export)).returncode == 0
    lines = export.read_bytes().splitlines(keepends=True)
    lines[-1] = b'{"type":"entry","seq":' + b"[" * DEPTH + b"]" * DEPTH + b"}\n"
    export.write_bytes(b"".join(lines))
    r = affidavit(home, "ledger", "verify", "--file", str(export), "--public-key", vkey(home))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert error_lines(r) == [
        f"error: {export}, line {len(lines)}: the line is nested too deeply to be an export line",
        "hint: the export file is damaged or not an affidavit ledger export; export it again",
    ]
