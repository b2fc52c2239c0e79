"""A catalog row edited behind affidavit's back to hold a value affidavit never writes (attack
pass, B7): an unknown backup status, a date that does not parse, ``'{'`` where JSON belongs, an
unknown engine or classification. Commands that read the row stop with exit 3 and one line
naming the table, the row and the column, with a hint — never an internal error (exit 4) or a
traceback. The edits are plain SQL on the SQLite catalog; every command runs in a process of
its own under a timeout."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import bson
import pytest

pytestmark = pytest.mark.e2e

TIMEOUT = 120  # seconds
HINT = (
    "hint: the catalog was altered outside affidavit; "
    "run `affidavit ledger verify` / `affidavit policy check`"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env["AFFIDAVIT_ACTOR"] = "tester@example.com"
    return env


def affidavit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        stdin=subprocess.DEVNULL, env=_env(),
    )  # fmt: skip


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, (r.args, r.stdout, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home with a baseline, a source, an ingested and verified backup, a dataset of the
    source and a policy check run; returns it and the backup's id. Each test edits a copy."""
    root = tmp_path_factory.mktemp("damage")
    home = root / "home"
    _ok(affidavit(home, "init"))
    _ok(affidavit(home, "vault", "add", "v1", "--url", f"file://{root / 'vault'}"))
    _ok(affidavit(home, "baseline", "approve", "--note", "first"))  # no source to reach yet
    _ok(affidavit(home, "source", "add", "shop", "--engine", "mongodb",
                  "--uri", "mongodb://127.0.0.1:1/", "--classification", "internal"))  # fmt: skip
    db = root / "dump" / "shop"
    db.mkdir(parents=True)
    (db / "orders.bson").write_bytes(b"".join(bson.encode({"_id": i}) for i in range(3)))
    (db / "orders.metadata.json").write_text(json.dumps({"collectionName": "orders"}))
    out = _ok(affidavit(home, "backup", "ingest", str(db.parent), "--format", "mongodump",
                        "--source", "shop", "--json"))  # fmt: skip
    backup_id = str(json.loads(out)["backup_id"])
    _ok(affidavit(home, "verify", backup_id))
    affidavit(home, "policy", "check", "--offline")  # records a check run; it may fail
    with sqlite3.connect(home / "catalog.sqlite") as con:
        assert con.execute("SELECT count(*) FROM check_runs").fetchone() == (1,)
        con.execute(
            "INSERT INTO datasets (source_id, name, classification) "
            "SELECT id, 'shop.orders', 'confidential' FROM sources"
        )
    return home, backup_id


@pytest.fixture
def damaged(template: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A copy of the template home (the vault is shared: the commands here only read it)."""
    home, backup_id = template
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return copy, backup_id


def _edit(home: Path, statement: str) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as con:
        assert con.execute(statement).rowcount == 1, statement


def _row_id(home: Path, table: str) -> str:
    with sqlite3.connect(home / "catalog.sqlite") as con:
        ((key,),) = con.execute(f"SELECT id FROM {table}").fetchall()
    return str(key)


def _refused(r: subprocess.CompletedProcess[str], message: str) -> None:
    assert r.returncode == 3, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [line for line in r.stderr.strip().splitlines() if line]
    lines = lines[next((i for i, x in enumerate(lines) if x.startswith("error: ")), 0) :]
    assert lines == [f"error: damaged catalog row: {message}", HINT]


CASES = [
    # (edit, the table whose row it damages, commands that read it, what the error says)
    ("UPDATE backups SET status = 'bogus'", "backups",
     [("backup", "list"), ("verify", "{backup}"), ("policy", "check", "--offline")],
     "backups row {id}, column status holds 'bogus'"),
    ("UPDATE backups SET started_at = 'not a date'", "backups",
     [("backup", "list"), ("backup", "show", "{backup}"), ("policy", "check", "--offline")],
     "backups row {id}, column started_at holds 'not a date'"),
    ("UPDATE verifications SET findings = '{'", "verifications",
     [("verify", "list"), ("policy", "check", "--offline")],
     "verifications row {id}, column findings holds '{{'"),
    ("UPDATE check_runs SET results = '{'", "check_runs",
     [("evidence", "build", "--from", "2000-01-01", "--to", "2100-01-01", "--out", "{out}")],
     "check_runs row {id}, column results holds '{{'"),
    ("UPDATE sources SET engine = 'oracle'", "sources",
     [("inventory",), ("source", "list")],
     "sources row {id}, column engine holds 'oracle'"),
    ("UPDATE datasets SET classification = 'topsecret'", "datasets",
     [("inventory",), ("policy", "check", "--offline")],
     "datasets row {id}, column classification holds 'topsecret'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "table", "commands", "message"),
    CASES,
    ids=["backup-status", "backup-date", "verification-json", "check-run-json", "engine", "class"],
)
def test_a_damaged_row_is_named_with_exit_3(
    damaged: tuple[Path, str],
    tmp_path: Path,
    edit: str,
    table: str,
    commands: list[tuple[str, ...]],
    message: str,
) -> None:
    home, backup_id = damaged
    _edit(home, edit)
    expected = message.format(id=_row_id(home, table))
    for command in commands:
        out = str(tmp_path / "evidence.tar.gz")
        args = [arg.format(backup=backup_id, out=out) for arg in command]
        _refused(affidavit(home, *args), expected)


def test_a_baseline_whose_content_is_not_json_is_reported_not_a_bug(
    damaged: tuple[Path, str],
) -> None:
    """The baseline is checked against the SHA-256 its ledger event recorded: content that
    does not parse is reported as altered (exit 1, one line and a hint), never exit 4."""
    home, _ = damaged
    _edit(home, "UPDATE baselines SET content = CAST('{' AS BLOB)")
    r = affidavit(home, "baseline", "show")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    error, hint = [line for line in r.stderr.strip().splitlines() if line]
    assert error.startswith("error: baseline 1 ") and "altered in the catalog" in error
    assert hint.startswith("hint: ")


def test_the_undamaged_copy_reads(damaged: tuple[Path, str]) -> None:
    home, backup_id = damaged
    assert backup_id in _ok(affidavit(home, "backup", "list"))
    _ok(affidavit(home, "verify", "list"))
    _ok(affidavit(home, "source", "list"))
