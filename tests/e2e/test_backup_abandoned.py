"""A ``backup run`` killed with SIGKILL (issue 13): the next command that looks at backups
records it failed as abandoned, with a ``backup.abandoned`` event, removes the partial file it
left in the vault (or reports the one the vault refuses to give up), and ``policy check``
reports it through the ``backup.abandoned`` control. A run that is still going is never
taken for dead.

The run is held mid-way by the real server, not by the product: a ``redis-server`` started
with a long ``repl-diskless-sync-delay`` waits that long before it streams the RDB, while the
backup is recorded ``running`` and its vault put has opened the artifact's ``.partial``."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.errors import OperationError
from affidavit.models.progress import SilentReporter
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import backup as backup_service
from affidavit.services import leases
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e


@pytest.fixture
def held_redis() -> Iterator[RedisScratch]:
    """A seeded redis-server that waits a minute before it streams an RDB to a replica."""
    with RedisScratch(replica_sync_delay=60) as server:
        uri = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
            engine.seed_sample(seed=13, scale=5)
        yield server


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _register(cli: Any, server: RedisScratch, vault: Path) -> None:
    _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", server.uri,
            "--classification", "internal"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", f"file://{vault}"))


def _partials(vault: Path) -> list[Path]:
    return sorted(vault.rglob(".*.partial")) if vault.exists() else []


def _running(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [i for (i,) in db.execute("select id from backups where status = 'running'")]


def _events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("select entry from ledger_entries where action = ? order by seq",
                          (action,))  # fmt: skip
        return [json.loads(e) for (e,) in rows]


def _start_backup(home: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """``affidavit backup run cache`` in a process of its own, as an operator starts it."""
    with (tmp_path / "backup.err").open("wb") as err:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "affidavit", "--home", str(home), "backup", "run", "cache",
             "--json"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ),
        )  # fmt: skip


def _wait_mid_run(proc: subprocess.Popen[bytes], home: Path, vault: Path, tmp_path: Path) -> str:
    """Wait until the run is recorded ``running`` and its artifact's .partial exists."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the backup ended early: {(tmp_path / 'backup.err').read_text()}")
        running = _running(home)
        if running and _partials(vault):
            (backup_id,) = running
            return backup_id
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the backup never got to the middle of its run")


def _proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, and wait until the process is dead but not yet reaped (a zombie): the
    command that follows must take a zombie for dead, not its pid for a live process."""
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _proc_state(proc.pid) != "Z":
        assert time.monotonic() < deadline, "the killed backup did not die"
        time.sleep(0.01)


def _backup(cli: Any, backup_id: str) -> dict[str, Any]:
    listed = json.loads(_ok(cli("backup", "list", "--json")).out)["backups"]
    (found,) = [b for b in listed if b["backup_id"] == backup_id]
    return dict(found)


def _control(cli: Any, subject: str) -> tuple[int, dict[str, Any]]:
    r = cli("policy", "check", "--offline", "--json")
    assert r.out, r.err
    results = [x for x in json.loads(r.out)["results"] if x["control"] == "backup.abandoned"]
    (result,) = [x for x in results if x["subject"] == subject]
    return r.code, result


def test_a_backup_killed_with_sigkill_is_recorded_abandoned_and_reported(
    cli: Any, home: Path, tmp_path: Path, held_redis: RedisScratch
) -> None:
    vault = tmp_path / "vault"
    _register(cli, held_redis, vault)
    proc = _start_backup(home, tmp_path)
    try:
        backup_id = _wait_mid_run(proc, home, vault, tmp_path)
        (partial,) = _partials(vault)
        _kill(proc)
        # the next command that lists backups tells the dead run from a live one
        found = _backup(cli, backup_id)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert found["status"] == "failed"
    assert found["error"].startswith(f"abandoned: process {proc.pid} on ")
    assert found["error"].endswith("has exited")
    (event,) = _events(home, "backup.abandoned")
    assert event["subject"] == f"backup:{backup_id}"
    details = event["details"]
    assert details["reason"] == "abandoned"
    assert details["lease"]["pid"] == proc.pid
    assert details["partials_removed"] == [partial.relative_to(vault).as_posix()]
    assert details["partials_left"] == []
    assert not partial.exists() and not _partials(vault)
    assert not _running(home)
    # nothing more to do for later commands: the run is recorded once
    assert _backup(cli, backup_id)["status"] == "failed"
    assert len(_events(home, "backup.abandoned")) == 1
    shown = json.loads(_ok(cli("backup", "show", backup_id, "--json")).out)
    assert shown["error"] == found["error"]

    code, result = _control(cli, f"backup:{backup_id}")
    assert code == 1
    assert result["status"] == "fail"
    assert "no backup of cache has completed since" in result["message"]
    assert f"ledger:{event['seq']}" in result["evidence"]

    # a later backup completes: the finding's condition is met, the abandonment stays on record
    client = redis.Redis(host="127.0.0.1", port=held_redis.port)
    client.config_set("repl-diskless-sync-delay", 0)
    client.close()
    _ok(cli("backup", "run", "cache"))
    _, result = _control(cli, f"backup:{backup_id}")
    assert result["status"] == "pass", result
    assert _backup(cli, backup_id)["status"] == "failed"
    verified = cli("ledger", "verify", "--json")
    assert verified.code == 0 and json.loads(verified.out)["ok"] is True, verified.out


def test_a_partial_file_the_vault_refuses_to_remove_is_reported_and_retried(
    cli: Any, home: Path, tmp_path: Path, held_redis: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = tmp_path / "vault"
    _register(cli, held_redis, vault)
    proc = _start_backup(home, tmp_path)
    try:
        backup_id = _wait_mid_run(proc, home, vault, tmp_path)
        (partial,) = _partials(vault)
        _kill(proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    rel = partial.relative_to(vault).as_posix()
    unlink = pathlib.Path.unlink

    def refuse_partials(self: Path, missing_ok: bool = False) -> None:
        if self.name.endswith(".partial"):
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok=missing_ok)

    with monkeypatch.context() as patch:  # the vault's file system refuses the removal
        patch.setattr(pathlib.Path, "unlink", refuse_partials)
        found = _backup(cli, backup_id)
        assert found["status"] == "failed" and found["error"].startswith("abandoned: ")
        (event,) = _events(home, "backup.abandoned")
        assert event["details"]["partials_removed"] == []
        (left,) = event["details"]["partials_left"]
        assert left["path"] == rel and left["error"].endswith("Permission denied")
        assert partial.exists()
        code, result = _control(cli, f"backup:{backup_id}")
        assert code == 1 and result["status"] == "fail"
        assert (
            f"1 partial file(s) of it could not be removed from the vault ({rel})"
            in (result["message"])
        )
        _backup(cli, backup_id)  # still refused: nothing new to record
        assert _events(home, "backup.partials_removed") == []

    # once the vault lets go, the next command removes it and records that
    _backup(cli, backup_id)
    assert not partial.exists()
    (removed,) = _events(home, "backup.partials_removed")
    assert removed["subject"] == f"backup:{backup_id}"
    assert removed["details"] == {"removed": [rel], "gone": [], "left": []}
    _, result = _control(cli, f"backup:{backup_id}")
    assert result["status"] == "fail"  # no complete backup since: still a finding
    assert "partial" not in result["message"]


def test_a_live_run_is_not_taken_for_abandoned(
    cli: Any, home: Path, tmp_path: Path, held_redis: RedisScratch
) -> None:
    vault = tmp_path / "vault"
    _register(cli, held_redis, vault)
    proc = _start_backup(home, tmp_path)
    try:
        backup_id = _wait_mid_run(proc, home, vault, tmp_path)
        assert _backup(cli, backup_id)["status"] == "running"
        checked = json.loads(cli("policy", "check", "--offline", "--json").out)
        abandoned = [r for r in checked["results"] if r["control"] == "backup.abandoned"]
        assert [r["status"] for r in abandoned] == ["not-applicable"]
        assert _running(home) == [backup_id]
        assert _events(home, "backup.abandoned") == []
        assert _partials(vault)  # the live run's write is left alone
        # let the server stream now (it reads the setting again every second)
        client = redis.Redis(host="127.0.0.1", port=held_redis.port)
        client.config_set("repl-diskless-sync-delay", 0)
        client.close()
        assert proc.wait(timeout=60) == 0, (tmp_path / "backup.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert _backup(cli, backup_id)["status"] == "complete"
    assert _events(home, "backup.abandoned") == []
    assert not _partials(vault)


class _ReclaimMidRun(SilentReporter):
    """When the RDB starts streaming, another process (here: another App on the same home)
    takes the run for dead, as a host whose heartbeats stopped reaching the catalog would
    be taken."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.abandoned: list[str] = []

    def stage(self, description: str) -> None:
        if description.startswith("streaming"):
            with open_app(self.settings) as other:
                gone = leases.reclaim_abandoned(other, probe=lambda _pid: None)
                self.abandoned += [a.backup_id for a in gone]


def test_a_run_taken_for_dead_while_alive_stops_without_signing(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    with RedisScratch(replica_sync_delay=0) as server:
        vault = tmp_path / "vault"
        _register(cli, server, vault)
        settings = load_settings(home=home)
        hook = _ReclaimMidRun(settings)
        with open_app(settings) as app, pytest.raises(OperationError) as raised:
            backup_service.run_backup(app, "cache", reporter=hook)
    (backup_id,) = hook.abandoned
    assert "was recorded abandoned by another affidavit process" in raised.value.message
    found = _backup(cli, backup_id)
    assert found["status"] == "failed" and found["error"].startswith("abandoned: process ")
    assert [a["path"] for a in found["artifacts"]] == [f"cache/{backup_id}/dump.rdb.age"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        acts = {a for (a,) in db.execute("select action from ledger_entries where subject = ?",
                                         (f"backup:{backup_id}",))}  # fmt: skip
        everything = {a for (a,) in db.execute("select action from ledger_entries")}
    assert "backup.abandoned" in acts and "backup.artifact_stored" in acts
    assert not acts & {"backup.completed", "backup.failed"}
    assert "attestation.created" not in everything  # nothing was signed for it
    verified = cli("ledger", "verify", "--json")
    assert verified.code == 0 and json.loads(verified.out)["ok"] is True, verified.out
