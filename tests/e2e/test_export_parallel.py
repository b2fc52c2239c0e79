"""The record path of an export on worker processes (``export run --workers N``, issue 17's
performance): the output is byte for byte the serial pass's (JSON lines, CSV, Parquet; from a
backup and from the live source), with the same counts, the same contract result (every
violation in the same order, the ``unique`` rule across batches and workers, the null
limits) and the same logical fingerprint; a worker that dies fails the run cleanly. Real
SecantusDB, real backups, real age encryption, real forked worker processes."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pyrage
import pytest
from pymongo import MongoClient
from pyrage import x25519
from tests.e2e.test_export_cli import Setup, events, prepare, verify

from affidavit.errors import InputError
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.context import App
from affidavit.services.exports import parallel
from affidavit.services.exports.run import run_export as run_export_service
from affidavit.services.keys import keystore_for, unwrap_identity

pytestmark = pytest.mark.e2e

N = 1500


def _documents() -> list[dict[str, Any]]:
    """Documents of ~1 KiB (1.5 MB in all: several batches) that meet every per-record rule
    and the whole-pass ones: transforms that refuse (a string age), schema failures (an
    unknown country), duplicates of a ``unique`` field (across batches), missing fields
    (nulls), and fields outside the allow-list."""
    out = []
    for n in range(N):
        doc: dict[str, Any] = {
            "_id": n + 1,
            "email": f"person{n % (N - 40)}@example.com",  # the last 40 repeat earlier ones
            "name": f"Person {n}",
            "birth": datetime(1950 + n % 50, 5, 17, tzinfo=UTC),
            "age": "old" if n % 97 == 5 else 20 + n % 60,
            "country": "XX" if n % 101 == 7 else ["FR", "DE", "NL"][n % 3],
            "notes": f"note {n} " + "x" * 900,
        }
        if n % 89 == 3:
            del doc["country"]
        out.append(doc)
    return out


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_documents())
        client.close()
        yield server.uri


SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{{dest}}"
format = "{fmt}"

[input]
source = "shop"
dataset = "shop.customers"
{live}
[fields]
_id = "pseudonymise"
email = "keep"
birth = "generalise"
age = {{{{ transform = "generalise", width = 10 }}}}
country = "keep"
notes = "keep"

[contract]
min_records = 1
unique = ["email"]
max_violations = {max_violations}

[contract.max_nulls]
country = {max_nulls}

[contract.schema]
type = "object"
required = ["_id", "email"]

[contract.schema.properties.country]
type = "string"
enum = ["FR", "DE", "NL"]
"""


def _spec(
    fmt: str = "extjson", *, max_violations: int = 100_000, max_nulls: int = 1000, live: str = ""
) -> str:
    return SPEC.format(fmt=fmt, max_violations=max_violations, max_nulls=max_nulls, live=live)


def _run(cli: Any, workers: int, output: str, *, code: int = 0) -> dict[str, Any]:
    r = cli(
        "export",
        "run",
        "customers-to-acme",
        "--workers",
        str(workers),
        "--output",
        output,
        "--json",
    )
    assert r.code == code, r.err + r.out
    out: dict[str, Any] = json.loads(r.out)
    return out


def _plain(s: Setup, file: Path) -> bytes:
    return pyrage.decrypt(file.read_bytes(), [x25519.Identity.from_str(s.identity)])


def _same_run(serial: dict[str, Any], parallel_: dict[str, Any]) -> None:
    """Everything but the run's own identity and times is equal."""
    assert parallel_["ok"] == serial["ok"]
    assert parallel_["contract"] == serial["contract"]
    assert parallel_["export"]["records_out"] == serial["export"]["records_out"]
    if serial["ok"]:
        a, b = serial["predicate"], parallel_["predicate"]
        assert b["records"] == a["records"]
        assert b["contract"] == a["contract"]
        for name in ("plaintext_sha256", "plaintext_size", "records", "fingerprint"):
            assert b["output"][name] == a["output"][name], name


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 16 KiB (~15 documents): about a hundred of them, on every worker."""
    monkeypatch.setattr(parallel, "BATCH_BYTES", 16 * 1024)


@pytest.mark.parametrize("fmt", ["extjson", "csv", "parquet"])
def test_workers_write_the_serial_pass_bytes(
    cli: Any,
    home: Path,
    tmp_path: Path,
    mongo: str,
    small_batches: None,
    fmt: str,
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=_spec(fmt))
    serial = _run(cli, 1, f"serial.{fmt}.age")
    assert serial["ok"] is True
    records = serial["predicate"]["records"]
    contract = serial["contract"]
    # the data meets every rule: refusals, schema failures, duplicates; nulls counted
    rules = {v["rule"] for v in contract["listed"]}
    assert {"transform", "schema", "unique"} <= rules, rules
    assert records["in"] == N
    assert records["excluded"]["contract"] == contract["failed_records"] > 40
    assert records["out"] == N - contract["failed_records"]
    for workers in (2, 3):
        out = _run(cli, workers, f"workers{workers}.{fmt}.age")
        _same_run(serial, out)
        assert _plain(s, Path(out["output"])) == _plain(s, Path(serial["output"]))
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out


def test_a_blocked_run_names_the_same_violations_in_the_same_order(
    cli: Any, home: Path, tmp_path: Path, mongo: str, small_batches: None
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=_spec(max_violations=0, max_nulls=2))
    serial = _run(cli, 1, "a.jsonl.age", code=1)
    out = _run(cli, 2, "b.jsonl.age", code=1)
    assert serial["contract"]["listed"], serial
    assert any(v["rule"] == "max_nulls" for v in serial["contract"]["listed"])
    _same_run(serial, out)
    assert list(s.dest.iterdir()) == []  # nothing delivered, no partial file left
    blocked = events(home, "export.blocked")
    assert len(blocked) == 2
    assert blocked[0]["details"]["records"] == blocked[1]["details"]["records"]


def test_a_live_export_on_workers_is_the_serial_one(
    cli: Any, home: Path, tmp_path: Path, mongo: str, small_batches: None
) -> None:
    live = 'from = "live"\nfilter = {{ country = {{ "$in" = ["FR", "DE"] }} }}\n'
    s = prepare(cli, home, tmp_path, mongo, spec=_spec(live=live))
    serial = _run(cli, 1, "a.jsonl.age")
    out = _run(cli, 2, "b.jsonl.age")
    assert serial["predicate"]["input"]["source"]
    assert out["predicate"]["input"]["fingerprint"] == serial["predicate"]["input"]["fingerprint"]
    assert 0 < serial["predicate"]["records"]["out"] < N
    _same_run(serial, out)
    assert _plain(s, Path(out["output"])) == _plain(s, Path(serial["output"]))


def _forked_children() -> list[psutil.Process]:
    """This process's children that are forks of it (the export's workers)."""
    me = psutil.Process()
    return [c for c in me.children() if c.cmdline() == me.cmdline()]


def test_a_worker_that_dies_fails_the_run_cleanly(
    cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    monkeypatch.setattr(parallel, "BATCH_BYTES", 2048)  # ~800 batches: the pass lasts
    before = {p.pid for p in _forked_children()}
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for child in _forked_children():
                if child.pid not in before:
                    child.kill()  # SIGKILL: no goodbye
                    killed.append(child.pid)
                    return
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        r = cli("export", "run", "customers-to-acme", "--workers", "2")
    finally:
        stop.set()
        thread.join()
    assert killed, "no worker process was seen"
    assert r.code == 3, r.out + r.err
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("error: ") and "worker process died" in lines[0]
    assert "Traceback" not in r.err
    # nothing delivered, no hidden partial file, no worker left behind
    assert list(s.dest.iterdir()) == []
    deadline = time.monotonic() + 10
    while [c for c in _forked_children() if c.pid not in before and c.is_running()]:
        assert time.monotonic() < deadline, "a worker process outlived its run"
        time.sleep(0.05)
    # the run is recorded failed, as any failed run
    failed = events(home, "export.failed")
    assert len(failed) == 1
    assert "worker process died" in failed[0]["details"]["error"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        states = db.execute("SELECT status FROM export_runs").fetchall()
    assert states == [("failed",)]
    assert not any(os.scandir(s.dest))
    # and the next run, on workers, delivers
    monkeypatch.setattr(parallel, "BATCH_BYTES", 1024 * 1024)
    assert _run(cli, 2, "again.jsonl.age")["ok"] is True


def test_workers_out_of_range_are_bad_input(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo, spec=_spec())
    for bad in ("0", "65", "-1"):
        r = cli("export", "run", "customers-to-acme", "--workers", bad)
        assert r.code == 2, r.out + r.err
        assert "Traceback" not in r.err
    for workers in (0, 65):  # past the CLI's own check: the service refuses too
        with pytest.raises(InputError, match="--workers"):
            run_export_service(app, "customers-to-acme", workers=workers)
    assert events(home, "export.requested") == []


def test_a_server_forks_no_export_workers(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """``affidavit serve`` is threaded: its App may not fork export workers (a worker forked
    while another thread holds a lock could wait on it for ever). The server's App says so,
    an explicit ``--workers 2`` through it is bad input with nothing recorded, and the
    default is one process."""
    from fastapi.testclient import TestClient

    from affidavit.server.app import create_app

    with TestClient(create_app(app.settings)) as client:
        served = client.app.state.affidavit  # type: ignore[attr-defined]
        assert served.no_fork is not None and "one process" in served.no_fork
    prepare(cli, home, tmp_path, mongo, spec=_spec())
    app.no_fork = "a server runs an export's records in one process"
    try:
        with pytest.raises(InputError, match="--workers 2: a server runs"):
            run_export_service(app, "customers-to-acme", workers=2)
    finally:
        app.no_fork = None
    assert events(home, "export.requested") == []


# -- the artifact read as it is decrypted (streamed.py): its checks, got around -----------------


def _artifact(tmp_path: Path) -> Path:
    (found,) = list((tmp_path / "vault").rglob("*.bson.age"))
    found.chmod(0o600)  # the folder vault stores read-only files
    return found


def _refused_as_not_signed(cli: Any, home: Path, s: Setup) -> None:
    for workers in ("1", "2"):
        r = cli("export", "run", "customers-to-acme", "--workers", workers)
        assert r.code == 1, r.out + r.err
        assert "does not match its signed digest" in r.err.splitlines()[0], r.err
        assert "Traceback" not in r.err
        assert list(s.dest.iterdir()) == []
    assert len(events(home, "export.failed")) == 2
    assert events(home, "export.completed") == []


def test_a_flipped_ciphertext_byte_is_the_signed_digest_s_failure(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    artifact = _artifact(tmp_path)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a chunk: it no longer authenticates
    artifact.write_bytes(bytes(data))
    _refused_as_not_signed(cli, home, s)


def test_a_cut_ciphertext_is_the_signed_digest_s_failure(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    artifact = _artifact(tmp_path)
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) - 70_000])  # the last chunks gone
    _refused_as_not_signed(cli, home, s)


def test_an_artifact_re_encrypted_with_the_backup_key_is_refused_at_the_end(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """A ciphertext that decrypts (the backup's own key) but is not the one the signed
    manifest names: its records go to the workers, and the digest stops the run before
    anything is delivered."""
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    with app.read() as uow:
        backup = uow.backups.get(s.backup_id)
    identity = x25519.Identity.from_str(unwrap_identity(keystore_for(app.settings), backup))
    artifact = _artifact(tmp_path)
    plain = pyrage.decrypt(artifact.read_bytes(), [identity])
    edited = plain.replace(b"Person 7", b"Persom 7", 1)
    assert edited != plain
    artifact.write_bytes(pyrage.encrypt(edited, [identity.to_public()]))
    _refused_as_not_signed(cli, home, s)
