"""The backup story through the CLI against real servers (issue 5): run, list, show, verify the
signed manifest, holds, refused and allowed deletion, key status, rotation and disclosure."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.crypto.dsse import Envelope
from affidavit.errors import PolicyViolation
from affidavit.ledger.attestation import BACKUP_PREDICATE_TYPE, verify_attestation
from affidavit.models.backup import BackupStatus
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import backup as backup_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.backup import recording
from affidavit.services.context import load_ledger_identity, open_app

pytestmark = pytest.mark.e2e


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    """Every row of every table: what 'the catalog is unchanged' compares."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


def actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [a for (a,) in db.execute("select action from ledger_entries order by seq")]


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


def vault_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def seed(engine: EngineName, uri: str, scale: int = 10) -> dict[str, int]:
    with engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None, timeout=5) as e:
        return dict(e.seed_sample(seed=5, scale=scale))


@pytest.fixture(scope="module")
def servers(mongo_scratch_class: type[SecantusScratch]) -> Any:
    with mongo_scratch_class() as mongo, RedisScratch(replica_sync_delay=0) as redis:
        yield {
            "mongo": mongo.uri,
            "redis": redis.uri,
            "seeded": {**seed(EngineName.MONGODB, mongo.uri), **seed(EngineName.REDIS, redis.uri)},
        }


def register(cli: Any, servers: Any, vault: Path) -> None:
    assert cli("source", "add", "orders", "--engine", "mongodb", "--uri", servers["mongo"],
               "--classification", "confidential").code == 0  # fmt: skip
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", servers["redis"],
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0


def run_json(cli: Any, *args: str) -> dict[str, Any]:
    r = cli("backup", "run", *args, "--json")
    assert r.code == 0, r.err + r.out
    out: dict[str, Any] = json.loads(r.out)
    return out


def live_fingerprints(cli: Any, source: str) -> dict[str, tuple[int, str]]:
    r = cli("fingerprint", source, "--json")
    assert r.code == 0, r.err
    return {d["name"]: (d["records"], d["fingerprint"]) for d in json.loads(r.out)["datasets"]}


def test_backup_story_run_list_show_attest_and_ledger(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    for source in ("orders", "cache"):
        out = run_json(cli, source)
        assert {"backup_id", "source", "datasets", "artifacts"} <= set(out)
        assert out["source"] == source
        bid = out["backup_id"]
        for d in out["datasets"]:
            assert {"name", "records", "fingerprint"} <= set(d)
        for a in out["artifacts"]:
            assert {"path", "size", "sha256"} <= set(a)
            assert a["path"].startswith(f"{source}/{bid}/")
            file = vault / a["path"]
            assert file.is_file() and file.stat().st_size == a["size"]
            assert stat.S_IMODE(file.stat().st_mode) == 0o444
        # every file in the vault folder for this backup is a recorded artifact
        stored = {p.relative_to(vault).as_posix() for p in vault_files(vault / source / bid)}
        stored = {p for p in stored if not p.rsplit("/", 1)[-1].startswith(".")}
        assert stored == {a["path"] for a in out["artifacts"]}
        # the fingerprints equal those of the live source
        live = live_fingerprints(cli, source)
        assert {d["name"]: (d["records"], d["fingerprint"]) for d in out["datasets"]} == live
        assert {d["name"]: d["records"] for d in out["datasets"]} == {
            k: v for k, v in servers["seeded"].items() if k in live
        }
        # the data artifacts are encrypted with age
        data = [a for a in out["artifacts"] if a["role"] == "data"]
        assert data and all(a["path"].endswith(".age") for a in data)
        assert (vault / data[0]["path"]).read_bytes().startswith(b"age-encryption.org/v1\n")
    redis_paths = {a["path"].split("/", 2)[2] for a in out["artifacts"]}
    assert "dump.rdb.age" in redis_paths

    # a second backup: the version history has two rows, newest first
    second = run_json(cli, "orders")
    r = cli("backup", "list", "orders", "--json")
    assert r.code == 0, r.err
    listed = json.loads(r.out)["backups"]
    assert len(listed) == 2
    assert listed[0]["backup_id"] == second["backup_id"]
    assert [b["status"] for b in listed] == ["complete", "complete"]
    r = cli("backup", "list", "orders")
    assert r.code == 0 and second["backup_id"] in r.out

    # show --json: the DSSE envelope verifies with the home's ledger key; subjects = artifacts
    r = cli("backup", "show", second["backup_id"], "--json")
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    identity = load_ledger_identity(home)
    assert identity is not None
    envelope = Envelope.from_json(json.dumps(shown["envelope"]))
    statement = verify_attestation(
        envelope,
        {identity.keyid: identity.signer.key.public_key},
        predicate_type=BACKUP_PREDICATE_TYPE,
    )
    signed = {(s.name, s.sha256) for s in statement.subjects}
    recorded = {(a["path"], a["sha256"]) for a in shown["artifacts"] if a["role"] != "manifest"}
    assert signed == recorded
    manifest = statement.predicate
    assert manifest["backup_id"] == second["backup_id"]
    assert {d["name"]: d["fingerprint"] for d in manifest["datasets"]} == {
        d["name"]: d["fingerprint"] for d in second["datasets"]
    }
    assert manifest["encryption"]["recipient"].startswith("age1")
    assert manifest["consistency"] is not None
    assert "@" not in (manifest["source"]["uri"] or "")
    # the signed envelope also sits in the vault, in the clear
    (copy,) = [a for a in shown["artifacts"] if a["role"] == "manifest"]
    assert json.loads((vault / copy["path"]).read_text()) == shown["envelope"]

    done = actions(home)
    for action in (
        "backup.started",
        "backup.artifact_stored",
        "attestation.created",
        "backup.completed",
    ):
        assert action in done
    assert done.count("backup.completed") == 3
    r = cli("ledger", "verify", "--json")
    assert r.code == 0, r.out + r.err
    assert json.loads(r.out)["ok"] is True


def test_holds_and_deletion_refused_then_allowed(
    cli: Any, home: Path, servers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    out = run_json(cli, "cache", "--retain-days", "1")
    bid = out["backup_id"]

    # under retention: refused with exit 1, nothing removed, the refusal is recorded
    r = cli("backup", "delete", bid, "--reason", "cleanup")
    assert r.code == 1, r.out + r.err
    assert "retained until" in (r.out + r.err)
    assert "Traceback" not in r.err
    assert all((vault / a["path"]).exists() for a in out["artifacts"])

    r = cli("hold", "add", bid, "--case", "CASE-7", "--reason", "litigation", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["active"] is True
    r = cli("hold", "list", bid, "--json")
    assert [h["case"] for h in json.loads(r.out)["holds"]] == ["CASE-7"]
    r = cli("backup", "delete", bid, "--reason", "cleanup")
    assert r.code == 1
    assert "CASE-7" in (r.out + r.err)
    assert actions(home).count("backup.deletion_refused") == 2

    # after the retention date, but still held: refused because of the hold alone
    with open_app(load_settings(home=home)) as app:
        retain_until = backup_service.get_backup(app, bid).retain_until
    later = retain_until + timedelta(minutes=1)
    monkeypatch.setattr(recording, "now", lambda: later)
    _move_vault_clock(monkeypatch, later)
    with (
        open_app(load_settings(home=home)) as app,
        pytest.raises(PolicyViolation, match="legal hold CASE-7") as refused,
    ):
        backup_service.delete_backup(app, bid, reason="cleanup")
    assert "retained" not in refused.value.message  # the retention is over; the hold is not
    assert cli("hold", "release", bid, "--case", "CASE-7", "--reason", "case closed").code == 0

    with open_app(load_settings(home=home)) as app:
        receipt = backup_service.delete_backup(app, bid, reason="retention over")
        after = backup_service.get_backup(app, bid)
    assert sorted(receipt.removed) == sorted(a["path"] for a in out["artifacts"])
    assert vault_files(vault / "cache" / bid) == []  # artifacts and sidecars gone
    assert after.status is BackupStatus.DELETED
    assert after.manifest_sha256 and after.manifest_sha256 == receipt.kept_manifest_sha256
    assert [(d.name, d.fingerprint) for d in after.datasets] == [
        (d["name"], d["fingerprint"]) for d in out["datasets"]
    ]
    (deleted,) = events(home, "backup.deleted")
    assert deleted["subject"] == f"backup:{bid}"
    assert deleted["details"]["reason"] == "retention over"
    assert sorted(deleted["details"]["removed"]) == sorted(receipt.removed)
    r = cli("backup", "show", bid, "--json")
    assert json.loads(r.out)["status"] == "deleted"
    assert cli("ledger", "verify").code == 0


def _move_vault_clock(monkeypatch: pytest.MonkeyPatch, moment: Any) -> None:
    """FileVault.delete compares the sidecar's retention with ``datetime.now(UTC)``."""
    import affidavit.vaults.file as file_vault

    real = file_vault.datetime

    class _Clock(real):  # type: ignore[misc,valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return moment

    monkeypatch.setattr(file_vault, "datetime", _Clock)


def test_keys_status_rotate_and_export_identity(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    out = run_json(cli, "cache")
    bid = out["backup_id"]

    r = cli("keys", "status", "--json")
    assert r.code == 0, r.err
    status = json.loads(r.out)
    assert status["current_version"] == 1
    assert status["versions"][0]["wrapped_backup_keys"] == 1
    assert status["overdue"] is False

    r = cli("keys", "rotate", "--json")
    assert r.code == 0, r.err
    rotated = json.loads(r.out)
    assert (rotated["old_version"], rotated["new_version"], rotated["rewrapped"]) == (1, 2, 1)
    assert rotated["retired"] == [1]
    status = json.loads(cli("keys", "status", "--json").out)
    assert status["current_version"] == 2
    by_version = {v["version"]: v for v in status["versions"]}
    assert by_version[1]["retired_at"] is not None
    assert by_version[2]["wrapped_backup_keys"] == 1
    assert "keys.rotated" in actions(home)

    # still decryptable after the rotation, with stock age and the exported identity
    r = cli("keys", "export-identity", bid, "--reason", "restore drill")
    assert r.code == 0, r.err
    identity = r.out.strip()
    assert identity.startswith("AGE-SECRET-KEY-1")
    (exported,) = events(home, "keys.identity_exported")
    assert exported["details"]["reason"] == "restore drill"
    assert identity not in json.dumps(exported)
    key_file = tmp_path / "identity.txt"
    key_file.write_text(identity + "\n")
    (data,) = [a for a in out["artifacts"] if a["role"] == "data"]
    plain = subprocess.run(
        ["age", "-d", "-i", str(key_file), str(vault / data["path"])],
        capture_output=True,
        check=True,
    ).stdout
    assert plain.startswith(b"REDIS")
    assert len(plain) == data["plain_size"]

    r = cli("keys", "export-identity", bid, "--reason", "  ")
    assert r.code == 2
    assert cli("ledger", "verify").code == 0


# -- bad input: right exit code, one line with a hint, nothing half-recorded -----------------


def _bson_dump(root: Path, data: bytes, *, metadata: bool = True) -> Path:
    import bson

    folder = root / "shop"
    folder.mkdir(parents=True)
    good = b"".join(bson.encode({"_id": i, "name": f"n{i}"}) for i in range(20))
    (folder / "orders.bson").write_bytes(good + data)
    if metadata:
        (folder / "orders.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
        )
    return root


def _nest(depth: int) -> bytes:
    """A BSON document nested ``depth`` levels deep (well framed at every level)."""
    import struct

    inner = b"\x05\x00\x00\x00\x00"
    for _ in range(depth):
        body = b"\x03a\x00" + inner
        inner = struct.pack("<i", len(body) + 5) + body + b"\x00"
    body = b"\x10_id\x00" + struct.pack("<i", 99) + b"\x03b\x00" + inner
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def _hostile(kind: str) -> bytes:
    import struct

    if kind == "length_prefix_beyond_end_of_file":
        return struct.pack("<i", 1000) + b"\x02a\x00"
    if kind == "negative_length_prefix":
        return struct.pack("<i", -7) + b"\x00" * 16
    if kind == "truncated_last_document":
        return _nest(1)[:-3]
    if kind == "inner_string_length_lies":
        body = b"\x10_id\x00" + struct.pack("<i", 2) + b"\x02s\x00" + struct.pack("<i", 9999)
        body += b"abc\x00"
        return struct.pack("<i", len(body) + 5) + body + b"\x00"
    if kind == "nesting_bomb":
        return _nest(20_000)
    raise AssertionError(kind)


@pytest.fixture
def ingest_home(cli: Any, tmp_path: Path) -> Path:
    """A home with one folder vault; returns the vault folder."""
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    return vault


def assert_refused(r: Any, code: int, *words: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = [line for line in r.err.strip().splitlines() if line]
    lines = lines[next((i for i, x in enumerate(lines) if x.startswith("error: ")), 0) :]
    assert lines and lines[0].startswith("error: "), r.err  # progress lines may come first
    assert len(lines) == 2 and lines[1].startswith("hint: "), r.err
    assert "Traceback" not in r.err + r.out
    for word in words:
        assert word in r.err


@pytest.mark.parametrize(
    "defect",
    [
        "length_prefix_beyond_end_of_file",
        "negative_length_prefix",
        "truncated_last_document",
        "inner_string_length_lies",
        "nesting_bomb",
    ],
)
def test_ingest_refuses_hostile_bson(
    cli: Any, home: Path, ingest_home: Path, tmp_path: Path, defect: str
) -> None:
    dump = _bson_dump(tmp_path / defect, _hostile(defect))
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(dump), "--format", "mongodump", "--json")
    assert_refused(r, 2, "orders.bson")
    assert catalog_dump(home) == before
    assert vault_files(ingest_home) == []


def test_ingest_refuses_a_dump_without_its_metadata_file(
    cli: Any, home: Path, ingest_home: Path, tmp_path: Path
) -> None:
    dump = _bson_dump(tmp_path / "nometa", b"", metadata=False)
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(dump), "--format", "mongodump")
    assert_refused(r, 2, "metadata")
    assert catalog_dump(home) == before
    assert vault_files(ingest_home) == []


@pytest.fixture
def genuine_rdb(servers: Any, tmp_path: Path) -> Path:
    """An RDB taken from the real redis-server by ``redis-cli --rdb``."""
    uri = ConnectionUri.parse(EngineName.REDIS, servers["redis"])
    out = tmp_path / "dump.rdb"
    port = servers["redis"].rsplit(":", 1)[1].split("/")[0]
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", port, "--rdb", str(out)],
        check=True,
        capture_output=True,
    )
    assert uri and out.read_bytes().startswith(b"REDIS")
    return out


def test_ingest_of_the_genuine_rdb_counts_its_keys(
    cli: Any, ingest_home: Path, genuine_rdb: Path, servers: Any
) -> None:
    r = cli("backup", "ingest", str(genuine_rdb), "--format", "rdb", "--json")
    assert r.code == 0, r.err
    counts = {d["name"]: d["records"] for d in json.loads(r.out)["datasets"]}
    assert counts == {k: v for k, v in servers["seeded"].items() if k.startswith("db")}


def test_ingest_refuses_an_rdb_with_wrong_magic(
    cli: Any, home: Path, ingest_home: Path, genuine_rdb: Path
) -> None:
    bad = genuine_rdb.with_name("wrong-magic.rdb")
    bad.write_bytes(b"REDIX" + genuine_rdb.read_bytes()[5:])
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(bad), "--format", "rdb")
    assert_refused(r, 2)
    assert catalog_dump(home) == before
    assert vault_files(ingest_home) == []


def test_ingest_refuses_an_rdb_with_a_bad_checksum(
    cli: Any, home: Path, ingest_home: Path, genuine_rdb: Path
) -> None:
    data = bytearray(genuine_rdb.read_bytes())
    data[-1] ^= 0x01  # the CRC-64 is the file's last 8 bytes
    bad = genuine_rdb.with_name("bad-crc.rdb")
    bad.write_bytes(bytes(data))
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(bad), "--format", "rdb")
    assert_refused(r, 2)
    assert "crc" in r.err.lower() or "checksum" in r.err.lower()
    assert catalog_dump(home) == before
    assert vault_files(ingest_home) == []


def test_ingest_refuses_an_rdb_with_a_flipped_payload_byte(
    cli: Any, home: Path, ingest_home: Path, genuine_rdb: Path
) -> None:
    data = bytearray(genuine_rdb.read_bytes())
    data[len(data) // 2] ^= 0x20
    bad = genuine_rdb.with_name("flipped.rdb")
    bad.write_bytes(bytes(data))
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(bad), "--format", "rdb")
    assert_refused(r, 2)
    assert catalog_dump(home) == before
    assert vault_files(ingest_home) == []


def test_backup_into_an_unknown_vault_is_refused(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    before = catalog_dump(home)
    r = cli("backup", "run", "cache", "--vault", "nope")
    assert_refused(r, 2, "nope")
    assert catalog_dump(home) == before
    assert vault_files(vault) == []


def test_backup_of_an_unknown_source_is_refused(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    before = catalog_dump(home)
    r = cli("backup", "run", "nosuchsource")
    assert_refused(r, 2, "nosuchsource")
    r = cli("backup", "ingest", str(tmp_path), "--format", "mongodump", "--source", "nosuch")
    assert_refused(r, 2, "nosuch")
    assert catalog_dump(home) == before
    assert vault_files(vault) == []


def test_backup_of_an_unknown_dataset_is_refused(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    before = catalog_dump(home)
    r = cli("backup", "run", "orders", "--dataset", "shop.nothing")
    assert r.code == 2, r.err
    assert "Traceback" not in r.err
    assert catalog_dump(home) == before
    assert vault_files(vault) == []


def test_redis_backup_of_an_unknown_dataset_after_sync_is_refused(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    """The RDB transfer is requested before the datasets are counted: a refusal after it
    records nothing, writes nothing and leaves no replica connection on the server."""
    import redis

    vault = tmp_path / "vault"
    register(cli, servers, vault)
    before = catalog_dump(home)
    r = cli("backup", "run", "cache", "--dataset", "db99")
    assert r.code == 2, r.err
    assert "Traceback" not in r.err
    assert catalog_dump(home) == before
    assert vault_files(vault) == []
    client = redis.Redis.from_url(servers["redis"])
    try:
        for _ in range(50):  # the server notices the closed replica socket promptly
            kinds = [c.get("flags", "") for c in client.client_list()]
            if not any("S" in flags for flags in kinds):
                break
            time.sleep(0.1)
        assert not any("S" in flags for flags in kinds), kinds
    finally:
        client.close()
    assert run_json(cli, "cache")["status"] == "complete"  # and the server still serves


def test_wrong_passphrase_is_refused_and_nothing_recorded(
    cli: Any, home: Path, servers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    monkeypatch.setenv("AFFIDAVIT_PASSPHRASE", "correct horse battery staple")
    first = run_json(cli, "cache")  # the key file is created with this passphrase
    key_file = home / "keys" / "kek.json"
    assert json.loads(key_file.read_text())["body"]["protection"]["kdf"] == "scrypt"
    monkeypatch.setenv("AFFIDAVIT_PASSPHRASE", "wrong passphrase")
    before = catalog_dump(home)
    files = vault_files(vault)
    r = cli("backup", "run", "cache")
    assert_refused(r, 3, "wrong passphrase")
    r = cli("keys", "export-identity", first["backup_id"], "--reason", "try")
    assert_refused(r, 3, "wrong passphrase")
    monkeypatch.delenv("AFFIDAVIT_PASSPHRASE")
    r = cli("backup", "run", "cache")
    assert_refused(r, 3, "passphrase")
    assert catalog_dump(home) == before
    assert vault_files(vault) == files


def test_deletion_takes_retention_and_holds_from_the_ledger_not_the_catalog(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    """An attacker who can write the catalog shortens the retention and deletes the hold row:
    `backup delete` still refuses, because the signed events say otherwise."""
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    out = run_json(cli, "cache", "--retain-days", "30")
    bid = out["backup_id"]
    assert cli("hold", "add", bid, "--case", "CASE-9", "--reason", "litigation").code == 0
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("UPDATE backups SET retain_until='2000-01-01 00:00:00' WHERE id=?", (bid,))
        db.execute("DELETE FROM holds")
    r = cli("backup", "delete", bid, "--reason", "cleanup")
    assert r.code == 1, r.out + r.err
    assert "retained until" in r.err and "CASE-9" in r.err
    assert all((vault / a["path"]).exists() for a in out["artifacts"])
    assert events(home, "backup.deleted") == []


def test_deletion_refuses_a_ledger_whose_events_were_edited(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    """The signed backup.started is rewritten to an expired retention (leaf and subtree
    hashes left alone, or recomputed), the hold event hidden by renaming its action column,
    the hold row deleted and the vault's retention records moved earlier: the deletion
    refuses before it touches the vault, because the ledger does not verify."""
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    out = run_json(cli, "cache", "--retain-days", "30")
    bid = out["backup_id"]
    assert cli("hold", "add", bid, "--case", "CASE-3", "--reason", "litigation").code == 0
    past = "2026-01-01T00:00:00+00:00"
    with sqlite3.connect(home / "catalog.sqlite") as db:
        seq, entry = db.execute(
            "SELECT seq, entry FROM ledger_entries WHERE action='backup.started' AND subject=?",
            (f"backup:{bid}",),
        ).fetchone()
        forged = json.loads(entry)
        forged["details"]["retain_until"] = past
        db.execute(
            "UPDATE ledger_entries SET entry=? WHERE seq=?",
            (json.dumps(forged, sort_keys=True, separators=(",", ":")).encode(), seq),
        )
        db.execute("UPDATE ledger_entries SET action='hold.note' WHERE action='hold.added'")
        db.execute("UPDATE backups SET retain_until='2026-01-01 00:00:00' WHERE id=?", (bid,))
        db.execute("DELETE FROM holds")
    for sidecar in vault.rglob(".*.retention"):
        sidecar.chmod(0o644)
        sidecar.write_text(json.dumps({"retain_until": past}))
    r = cli("backup", "delete", bid, "--reason", "cleanup")
    assert r.code == 1, r.out + r.err
    assert "the ledger does not verify" in r.err and "nothing was deleted" in r.err
    assert all((vault / a["path"]).exists() for a in out["artifacts"])


def test_deletion_refuses_a_backup_no_signed_event_started(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    """A phantom row (a copy of a real backup under a new id, with an expired retention and
    its artifacts pointing at the real ones) verifies as a ledger (nothing in the ledger was
    touched), but nothing signed vouches for it: the deletion refuses."""
    vault = tmp_path / "vault"
    register(cli, servers, vault)
    out = run_json(cli, "cache", "--retain-days", "30")
    bid, phantom = out["backup_id"], "bk-20200101T000000Z-000000"
    with sqlite3.connect(home / "catalog.sqlite") as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(backups)")]
        db.execute(
            f"INSERT INTO backups ({', '.join(cols)}) SELECT "
            + ", ".join("?" if c == "id" else c for c in cols)
            + " FROM backups WHERE id=?",
            (phantom, bid),
        )
        db.execute(
            "UPDATE backups SET retain_until='2020-01-01 00:00:00', status='complete' WHERE id=?",
            (phantom,),
        )
        acols = [r[1] for r in db.execute("PRAGMA table_info(backup_artifacts)")]
        keep = [c for c in acols if c != "id"]
        db.execute(
            f"INSERT INTO backup_artifacts ({', '.join(keep)}) SELECT "
            + ", ".join("?" if c == "backup_id" else c for c in keep)
            + " FROM backup_artifacts WHERE backup_id=?",
            (phantom, bid),
        )
    r = cli("backup", "delete", phantom, "--reason", "cleanup")
    assert r.code == 1, r.out + r.err
    assert "no signed backup.started" in r.err
    assert all((vault / a["path"]).exists() for a in out["artifacts"])
