"""``run-due --cluster`` (issue 18): the due verifications of ``run-due`` have their segments
checked on a real Dask cluster (``distributed.LocalCluster``: a scheduler and worker
processes on 127.0.0.1) as ``verify --cluster`` does, and give exactly what a local
``run-due`` gives: the same outcomes and findings, the same signed statements (times and ids
aside). A scheduler that does not answer is exit 3 with nothing run or recorded (the check
stays due); an address that is not tls:// (or tcp:// on loopback) is exit 2; and --cluster
is refused in client mode (the TLS files are on this host).

Segments are cut to 128 KiB, as in ``test_verify_cluster.py``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_verify_cluster import (
    _address,
    _documents,
    _events,
    _free_port,
    _result,
    _segment_tasks,
    _wait_workers,
)

from affidavit.services import schedule, segment_tables

distributed = pytest.importorskip("distributed")
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_tables, "SEGMENT_SIZE", 128 * 1024)


@pytest.fixture(autouse=True)
def short_connect_timeout(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("AFFIDAVIT_CONNECT_TIMEOUT", "3")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    local = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    )
    client = Client(local)
    try:
        _wait_workers(client, 2)
        yield local, client
    finally:
        client.close()
        local.close()


@pytest.fixture
def backup_id(cli: Any, tmp_path: Path) -> str:
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    (folder / "customers.bson").write_bytes(_documents())
    (folder / "customers.metadata.json").write_text(
        json.dumps({"options": {}, "indexes": [], "collectionName": "customers"})
    )
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    found: str = json.loads(r.out)["backup_id"]
    return found


def _run_due(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("run-due", "--json", *args)
    assert "Traceback" not in r.err
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _verification(home: Path, check_id: str) -> dict[str, Any]:
    """A recorded verification as ``_result`` compares it (its reported JSON is rebuilt from
    the catalog: the id is all run-due reports)."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (ok,) = db.execute("select ok from verifications where id = ?", (check_id,)).fetchone()
    return _result(home, {"id": check_id, "ok": bool(ok)})


def _comparable(ran: dict[str, Any]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return sorted(
        (r["kind"], r["backup_id"], r["outcome"], tuple(r["findings"])) for r in ran["results"]
    )


def test_run_due_on_a_cluster_equals_a_local_run_due(
    cli: Any,
    home: Path,
    backup_id: str,
    cluster: tuple[LocalCluster, Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local, client = cluster
    due = json.loads(cli("due", "--json").out)
    assert "verify-full" in {i["kind"] for i in due["items"]}
    with get_task_stream(client) as stream:
        code, remote = _run_due(cli, "--cluster", _address(local))
    assert code == (0 if remote["ok"] else 1), remote
    tasks = _segment_tasks(stream)
    assert len(tasks) >= 20  # the verification's segments ran on the cluster
    [on_cluster] = [r for r in remote["results"] if r["kind"] == "verify-full"]
    assert on_cluster["outcome"] == "passed", on_cluster
    assert not any(
        i["kind"] == "verify-full" for i in json.loads(cli("due", "--json").out)["items"]
    )

    # a week later the full verification is due again: a local run-due, no cluster
    later = schedule._now() + timedelta(days=8)
    monkeypatch.setattr(schedule, "_now", lambda: later)
    with get_task_stream(client) as quiet:
        code_here, here = _run_due(cli)
    assert code_here == (0 if here["ok"] else 1)
    assert not _segment_tasks(quiet)  # nothing went to the cluster
    [alone] = [r for r in here["results"] if r["kind"] == "verify-full"]
    assert (alone["outcome"], alone["findings"]) == (on_cluster["outcome"], on_cluster["findings"])
    verify_rows = [r for r in remote["results"] if r["kind"] == "verify-full"]
    assert _comparable({"results": verify_rows}) == _comparable(
        {"results": [r for r in here["results"] if r["kind"] == "verify-full"]}
    )
    assert _verification(home, on_cluster["check_id"]) == _verification(home, alone["check_id"])
    # continuous verification: the first is deep (on the cluster), the next ones fast
    assert (_mode(home, on_cluster["check_id"]), _mode(home, alone["check_id"])) == (
        "deep",
        "fast",
    )
    assert (on_cluster["message"], alone["message"]) == ("verified (deep)", "verified (fast)")
    assert cli("ledger", "verify").code == 0


def _mode(home: Path, check_id: str) -> str:
    """The mode a recorded verification ran in, as its catalog row records it."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (coverage,) = db.execute(
            "select coverage from verifications where id = ?", (check_id,)
        ).fetchone()
    mode: str = json.loads(coverage)["mode"]
    return mode


def test_a_bit_flip_found_by_run_due_on_a_cluster_as_by_verify(
    cli: Any,
    home: Path,
    tmp_path: Path,
    backup_id: str,
    cluster: tuple[LocalCluster, Client],
) -> None:
    """A tampered segment: run-due on the cluster fails the verification with the findings of
    a local ``verify`` of the same backup, and raises its alert."""
    import stat

    local, _ = cluster
    (path,) = (tmp_path / "vault").rglob("*customers.bson.age")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    code, ran = _run_due(cli, "--cluster", _address(local))
    assert code == 1
    [verified] = [r for r in ran["results"] if r["kind"] == "verify-full"]
    assert verified["outcome"] == "failed" and verified["alert_id"] is not None
    r = cli("verify", backup_id, "--json", "--workers", "2")
    alone = json.loads(r.out)
    assert tuple(sorted({f["code"] for f in alone["findings"]})) == tuple(verified["findings"])
    assert {"segment-mismatch", "artifact-hash-mismatch"} <= set(verified["findings"])
    signed = _result(home, alone)
    assert _verification(home, verified["check_id"]) == {**signed, "reported": {"ok": False}}


def test_an_unreachable_scheduler_is_exit_3_and_nothing_is_run_or_recorded(
    cli: Any, home: Path, backup_id: str
) -> None:
    before = _events(home)
    due = json.loads(cli("due", "--json").out)["items"]
    r = cli("run-due", "--json", "--cluster", f"tcp://127.0.0.1:{_free_port()}")
    assert r.code == 3 and "Traceback" not in r.err
    assert "does not answer" in r.err and "hint" in r.err.lower()
    assert _events(home) == before
    assert json.loads(cli("verify", "list", "--json").out)["verifications"] == []
    assert json.loads(cli("due", "--json").out)["items"] == due  # still due


@pytest.mark.parametrize("url", ["http://127.0.0.1:8786", "tcp://192.0.2.10:8786"])
def test_a_bad_cluster_address_is_bad_input(cli: Any, home: Path, backup_id: str, url: str) -> None:
    before = _events(home)
    r = cli("run-due", "--cluster", url)
    assert r.code == 2 and "--cluster" in r.err and "Traceback" not in r.err
    assert _events(home) == before
