"""Failure safety of ``backup run`` (issue 5): a source that dies, a vault that goes away and
Ctrl-C each leave a ``failed`` row with the reason, a ``backup.failed`` event listing every
artifact written, no artifact in the vault that the catalog does not know, no ``complete``
row, and a ledger that verifies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from pymongo import MongoClient

from affidavit.config import load_settings
from affidavit.models.backup import BackupStatus
from affidavit.models.progress import SilentReporter
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import backup as backup_service
from affidavit.services.backup import recording
from affidavit.services.context import open_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return list(db.execute(sql))


def failed_event(home: Path, backup_id: str) -> dict[str, Any]:
    (entry,) = rows(
        home,
        f"select entry from ledger_entries where action = 'backup.failed' "
        f"and subject = 'backup:{backup_id}'",
    )
    out: dict[str, Any] = json.loads(entry[0])
    return out


def assert_failed_cleanly(cli: Any, home: Path, vault_dirs: list[Path], reason: str) -> str:
    """One failed backup, its reason, its event, no orphans; returns the backup id."""
    backups = rows(home, "select id, status, error from backups")
    assert len(backups) == 1, backups
    ((backup_id, status, error),) = backups
    assert status == BackupStatus.FAILED.value
    assert reason in error
    recorded = {p for (p,) in rows(home, "select path from backup_artifacts")}
    event = failed_event(home, backup_id)
    assert reason in event["details"]["error"]
    assert set(event["details"]["artifacts_written"]) == recorded
    in_vault = set()
    for root in vault_dirs:
        for file in root.rglob("*") if root.is_dir() else []:
            if file.is_file() and not file.name.startswith("."):
                in_vault.add(file.relative_to(root).as_posix())
    assert in_vault <= recorded, f"orphans: {in_vault - recorded}"
    assert not rows(home, "select id from backups where status = 'complete'")
    r = cli("ledger", "verify", "--json")
    assert r.code == 0 and json.loads(r.out)["ok"] is True, r.out
    return str(backup_id)


def when_partial_appears(root: Path, name: str, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` as soon as the vault starts writing artifact ``name`` (its .partial)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if root.exists() and any(root.rglob(f".{name}.*.partial")):
                time.sleep(0.05)
                action()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def register(cli: Any, name: str, engine: str, uri: str, vault: Path) -> None:
    assert cli("source", "add", name, "--engine", engine, "--uri", uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0


def fill_redis(uri_port: int, keys: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=uri_port)
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"key:{i}", os.urandom(512))
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    client.close()


def fill_mongo(uri: str, docs: int) -> None:
    client: MongoClient[Any] = MongoClient(uri)
    coll = client["big"]["docs"]
    batch = [{"_id": i, "pad": "x" * 600, "n": i} for i in range(docs)]
    for i in range(0, docs, 10_000):
        coll.insert_many(batch[i : i + 10_000], ordered=False)
    client.close()


def kill(server: Any) -> Callable[[], None]:
    pid = server.pid

    def do() -> None:
        os.killpg(pid, signal.SIGKILL)

    return do


def test_redis_that_dies_mid_backup(
    cli: Any, home: Path, tmp_path: Path, fresh_redis: RedisScratch
) -> None:
    fill_redis(fresh_redis.port, 300_000)
    vault = tmp_path / "vault"
    register(cli, "cache", "redis", fresh_redis.uri, vault)
    watcher = when_partial_appears(vault, "dump.rdb.age", kill(fresh_redis))
    r = cli("backup", "run", "cache", "--json")
    watcher.join(timeout=5)
    assert r.code == 3, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    assert_failed_cleanly(cli, home, [vault], "")
    assert not list(vault.rglob("*.partial"))


def test_mongo_that_dies_mid_backup(
    cli: Any, home: Path, tmp_path: Path, fresh_mongo: SecantusScratch
) -> None:
    fill_mongo(fresh_mongo.uri, 60_000)
    vault = tmp_path / "vault"
    register(cli, "orders", "mongodb", fresh_mongo.uri, vault)
    watcher = when_partial_appears(vault, "docs.bson.age", kill(fresh_mongo))
    r = cli("backup", "run", "orders", "--json")
    watcher.join(timeout=5)
    assert r.code == 3, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    assert_failed_cleanly(cli, home, [vault], "")
    assert not list(vault.rglob("*.partial"))


def test_vault_that_goes_away_mid_backup(
    cli: Any, home: Path, tmp_path: Path, fresh_mongo: SecantusScratch
) -> None:
    """The vault folder is moved away and a plain file put in its place while an artifact is
    being written (root ignores permissions, so a read-only folder would not stop it)."""
    fill_mongo(fresh_mongo.uri, 30_000)
    vault = tmp_path / "vault"
    moved = tmp_path / "vault-moved"
    register(cli, "orders", "mongodb", fresh_mongo.uri, vault)

    def break_vault() -> None:
        vault.rename(moved)
        vault.write_text("not a folder any more")

    watcher = when_partial_appears(vault, "docs.bson.age", break_vault)
    r = cli("backup", "run", "orders", "--json")
    watcher.join(timeout=5)
    assert r.code == 3, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "docs.bson.age" in r.err and "hint:" in r.err
    assert_failed_cleanly(cli, home, [moved], "docs.bson.age")


def test_ctrl_c_mid_backup_is_recorded_as_interrupted(
    home: Path, cli: Any, tmp_path: Path, fresh_mongo: SecantusScratch
) -> None:
    fill_mongo(fresh_mongo.uri, 10_000)
    vault = tmp_path / "vault"
    register(cli, "orders", "mongodb", fresh_mongo.uri, vault)

    class CtrlC(SilentReporter):
        def advance(self, n: int = 1) -> None:
            raise KeyboardInterrupt

    with open_app(load_settings(home=home)) as app, pytest.raises(KeyboardInterrupt):
        backup_service.run_backup(app, "orders", reporter=CtrlC())
    assert_failed_cleanly(cli, home, [vault], "interrupted")
    assert not list(vault.rglob("*.partial"))


def test_failure_while_signing_is_recorded_not_left_running(
    home: Path, cli: Any, tmp_path: Path, fresh_mongo: SecantusScratch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Everything is stored, then the final unit of work fails: the row must not stay
    ``running`` (nor turn ``complete``)."""
    from affidavit.errors import KeystoreError

    fill_mongo(fresh_mongo.uri, 500)
    vault = tmp_path / "vault"
    register(cli, "orders", "mongodb", fresh_mongo.uri, vault)

    def broken_signer(*_args: Any, **_kwargs: Any) -> Any:
        raise KeystoreError("the ledger signing key cannot be read")

    monkeypatch.setattr(recording, "attest_and_record", broken_signer)
    r = cli("backup", "run", "orders", "--json")
    assert r.code == 3, (r.code, r.err)
    backup_id = assert_failed_cleanly(cli, home, [vault], "signing key")
    assert rows(home, f"select count(*) from backup_artifacts where backup_id = '{backup_id}'")[0][
        0
    ] == len(failed_event(home, backup_id)["details"]["artifacts_written"])


def test_a_malformed_document_from_the_source_fails_the_backup(
    home: Path, cli: Any, tmp_path: Path, fresh_mongo: SecantusScratch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A document the server hands over that does not decode (here a bool of value 2, past
    thousands of good ones: the batched check names it) fails the backup cleanly."""
    import bson

    from affidavit.engines.mongodb import MongoSnapshot

    fill_mongo(fresh_mongo.uri, 5_000)
    vault = tmp_path / "vault"
    register(cli, "orders", "mongodb", fresh_mongo.uri, vault)
    real = MongoSnapshot.iter_raw

    def with_a_bad_document(self: Any, dataset: str) -> Any:
        for n, raw in enumerate(real(self, dataset)):
            yield raw
            if n == 3_000:
                bad = bytearray(bson.encode({"_id": "bad", "flag": True}))
                bad[-2] = 2  # the bool's byte
                yield bytes(bad)

    monkeypatch.setattr(MongoSnapshot, "iter_raw", with_a_bad_document)
    r = cli("backup", "run", "orders", "--json")
    assert r.code in (2, 3), (r.code, r.err)
    assert "Traceback" not in r.err and "malformed BSON document" in r.err
    assert_failed_cleanly(cli, home, [vault], "malformed BSON document")
    assert not list(vault.rglob("*.partial"))
