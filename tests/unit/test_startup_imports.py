"""What the CLI imports before it works (issue 18, session 10): start-up is most of a small
command's time, so a command imports only what it uses.

Each case runs the console-script entry point (``affidavit.cli.main.run``) in a fresh
interpreter, as ``affidavit ...`` does, with an ``atexit`` hook that writes ``sys.modules``
when the interpreter ends; the command's exit code and output are checked as well, so a run
that failed early (and imported little for that reason) cannot pass.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bson
import pytest
from alembic import command
from alembic.config import Config

from affidavit.catalog.store import MIGRATIONS_DIR, SCHEMA_HEAD, Catalog

_PROBE = """
import atexit, json, sys

def _write_modules(path: str = sys.argv[1]) -> None:
    with open(path, "w") as fh:
        json.dump(sorted(sys.modules), fh)

atexit.register(_write_modules)
sys.argv = ["affidavit", *sys.argv[2:]]
from affidavit.cli.main import run

run()
"""

# never for a file's fingerprint: no catalog, ledger, settings, server, policy or verification
_NOT_FOR_A_FILE = (
    "sqlalchemy",
    "alembic",
    "affidavit.catalog",
    "affidavit.ledger",
    "affidavit.server",
    "affidavit.policy",
    "affidavit.config",
    "affidavit.services.context",
    "affidavit.services.verify",
    "affidavit.services.exports",
    "fastapi",
    "starlette",
    "jinja2",
    "distributed",
    "dask",
)
# never for a verification: the server and its web pages, exports, Dask (only --cluster),
# the approval gate, policy, and alembic while the catalog is at this affidavit's schema
_NOT_FOR_VERIFY = (
    "affidavit.server",
    "fastapi",
    "starlette",
    "jinja2",
    "uvicorn",
    "affidavit.services.exports",
    "affidavit.catalog.exports",
    "affidavit.models.export",
    "affidavit.services.requests",
    "affidavit.services.inventory",
    "affidavit.policy",
    "affidavit.services.policy_vouch",
    "affidavit.models.governance",
    "affidavit.models.identity",
    "affidavit.evidence",
    "distributed",
    "dask",
    "alembic",
)


def _run(
    tmp_path: Path, args: Iterable[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
        timeout=120,
    )
    assert out.exists(), proc.stderr  # the hook ran: the interpreter ended normally
    return proc, set(json.loads(out.read_text()))


# the fingerprint's bucket root is the RFC 9162 Merkle root: the pure hashing module is shared
# with the ledger (its package's ``__init__`` is a docstring); nothing else of the ledger is
_SHARED = frozenset({"affidavit.ledger", "affidavit.ledger.merkle"})


def _loaded(modules: set[str], prefixes: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that are one of ``prefixes`` or inside one (but the shared
    Merkle hashing)."""
    return sorted(m for m in modules - _SHARED for p in prefixes if m == p or m.startswith(p + "."))


def _bson_file(path: Path, n: int = 40) -> Path:
    path.write_bytes(b"".join(bson.encode({"_id": i, "v": "x" * 200}) for i in range(n)))
    return path


def test_fingerprint_of_a_file_loads_no_catalog_and_no_rich_under_json(tmp_path: Path) -> None:
    file = _bson_file(tmp_path / "c.bson")
    proc, modules = _run(tmp_path, ["fingerprint", str(file), "--format", "bson", "--json"])
    assert proc.returncode == 0, proc.stderr
    (dataset,) = json.loads(proc.stdout)["datasets"]
    assert dataset["records"] == 40 and dataset["fingerprint"].startswith("afp1:exact:")
    assert _loaded(modules, _NOT_FOR_A_FILE) == []
    assert _loaded(modules, ["rich"]) == []  # --json prints no table, no progress
    assert "affidavit.services.fingerprint" in modules  # it did the work here


def test_fingerprint_of_a_file_for_people_loads_no_catalog(tmp_path: Path) -> None:
    file = _bson_file(tmp_path / "c.bson")
    proc, modules = _run(tmp_path, ["fingerprint", str(file), "--format", "bson"])
    assert proc.returncode == 0, proc.stderr
    assert "Fingerprints of" in proc.stdout and "40" in proc.stdout
    assert _loaded(modules, _NOT_FOR_A_FILE) == []


def test_fingerprint_help_loads_neither_the_catalog_nor_the_fingerprint_pass(
    tmp_path: Path,
) -> None:
    proc, modules = _run(tmp_path, ["fingerprint", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "--check-bson" in proc.stdout and "--workers" in proc.stdout
    assert _loaded(modules, _NOT_FOR_A_FILE) == []
    assert _loaded(modules, ["numpy", "affidavit.services.fingerprint"]) == []


def test_fingerprint_bad_input_is_one_line_and_loads_no_catalog(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bson"
    bad.write_bytes(b"hello")  # five bytes: not a document
    proc, modules = _run(tmp_path, ["fingerprint", str(bad), "--format", "bson", "--json"])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"error: {bad}: malformed document at byte offset 0")
    assert "Traceback" not in proc.stderr
    assert _loaded(modules, _NOT_FOR_A_FILE) == []


@pytest.fixture
def ingested(cli: Callable[..., Any], home: Path, tmp_path: Path) -> str:
    """A backup of one small collection in a folder vault of ``home``: its id."""
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    _bson_file(folder / "customers.bson")
    (folder / "customers.metadata.json").write_text(
        json.dumps({"options": {}, "indexes": [], "collectionName": "customers"})
    )
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    backup_id: str = json.loads(r.out)["backup_id"]
    return backup_id


def test_verify_loads_only_what_a_verification_uses(
    tmp_path: Path, home: Path, ingested: str
) -> None:
    env = {"AFFIDAVIT_HOME": str(home), "AFFIDAVIT_ACTOR": "tester@example.com"}
    proc, modules = _run(tmp_path, ["verify", ingested, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["findings"] == []
    assert _loaded(modules, _NOT_FOR_VERIFY) == []
    assert "affidavit.services.verify.run" in modules  # it did verify here
    # the catalog was closed by the command, not left to the (frozen) interpreter's end:
    # SQLite removes its write-ahead log when the last connection closes
    assert not (home / "catalog.sqlite-wal").exists()


def test_verify_list_on_an_empty_home_loads_no_server_or_exports(
    tmp_path: Path, home: Path
) -> None:
    env = {"AFFIDAVIT_HOME": str(home)}
    proc, modules = _run(tmp_path, ["verify", "list", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"verifications": []}
    assert _loaded(modules, _NOT_FOR_VERIFY) == []


def _downgrade(path: Path, revision: str) -> None:
    catalog = Catalog(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with catalog._engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    catalog.close()


def test_a_home_on_an_older_schema_is_still_refused(tmp_path: Path, home: Path) -> None:
    """The schema check that lets a current catalog skip alembic must not let an old one in:
    a real downgrade, and version rows edited to look current to a careless check."""
    db = home / "catalog.sqlite"
    assert db.exists()
    env = {"AFFIDAVIT_HOME": str(home)}
    previous = f"{int(SCHEMA_HEAD) - 1:04d}"
    _downgrade(db, previous)
    proc, modules = _run(tmp_path, ["verify", "list", "--json"], env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: the catalog schema is at revision {previous}, this affidavit needs {SCHEMA_HEAD}",
        "hint: run `affidavit init` to upgrade it (take a copy of the catalog first)",
    ]
    assert "alembic" in modules  # the slow way was taken because the fast one said no
    # the old schema plus a second version row naming head: still not at head
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_HEAD,))
    proc, _ = _run(tmp_path, ["verify", "list", "--json"], env)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    # an empty version table on a catalog with tables: not an affidavit catalog at head
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM alembic_version")
    proc, _ = _run(tmp_path, ["verify", "list", "--json"], env)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")


@pytest.mark.parametrize(
    "docs",
    [
        b"".join(bson.encode({"_id": i, "x": "y" * i}) for i in range(50))
        + bson.encode({"a": 1, "_id": 5}),  # _id not first: the Python reader's document
        bson.encode({"_id": 1}) + bson.encode({"_id": 2})[:9],  # a document cut short
        bson.encode({"_id": 1}) + bson.encode({"no_id": 1}),  # a defect
    ],
)
def test_the_fingerprints_framing_helper_is_the_verifications(docs: bytes) -> None:
    """``services.fingerprint_threads`` frames a file's ranges with its own copy of
    ``services.verify.segments.frame_pairs`` (so that it does not load the verification
    package): the same pairs and end, or the same error, from a view of a larger buffer."""
    from affidavit.errors import FormatError
    from affidavit.services.fingerprint_threads import _frame as _frame_view
    from affidavit.services.verify.segments import frame_pairs

    buffer = bytearray(docs + b"\x00" * 64)
    outcomes = []
    for frame in (_frame_view, frame_pairs):
        try:
            outcomes.append(frame(memoryview(buffer)[: len(docs)]))
        except FormatError as exc:
            outcomes.append(("error", exc.message))
    assert outcomes[0] == outcomes[1]
