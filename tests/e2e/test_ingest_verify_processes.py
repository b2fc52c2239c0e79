"""Ingest and verify of large artifacts, whose work runs in other processes: documents checked
and hashed by worker processes, age encryption and decryption in a child process. The size
thresholds are forced to zero here so that small fixtures take those paths.

Each test states a contract of the in-process paths that must hold unchanged: the same
fingerprints, the same refusal of hostile input with nothing recorded, the same finding code
for each tamper; and each failure of a helper process (a worker or the age child dying) ends
as "could not run" or a failed backup, with no process, temporary file or half-recorded row
left behind."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest

from affidavit.config import load_settings
from affidavit.crypto import age_process
from affidavit.crypto.age import decrypt_chunks, encrypt_chunks
from affidavit.models.records import RecordEncoding
from affidavit.services import artifacts
from affidavit.services import backup as backup_service
from affidavit.services import fingerprint as fingerprint_service
from affidavit.services.context import open_app
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.verify import reading

DOCS = 3000


@pytest.fixture(autouse=True)
def in_other_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setattr(artifacts, "PROCESS_FROM", 0)
    # verify's sequential road (an artifact without a segment table, or in a vault that
    # streams), where decryption runs in a child: the segment road is test_verify_segments.py
    monkeypatch.setattr(reading, "_regular_descriptor", lambda fh: None)
    scratch = tmp_path / "scratch"  # every temporary file and folder of the commands
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # servers of session-scoped fixtures are children of this process too: only new ones count
    before = set(_helpers())
    yield
    assert set(_helpers()) - before == set(), "a helper process outlived its command"
    assert list(scratch.iterdir()) == [], "a temporary file outlived its command"


def _helpers() -> list[int]:
    """Live children of this process (age children, pool workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _dump(root: Path, tail: bytes = b"") -> Path:
    folder = root / "shop"
    folder.mkdir(parents=True)
    docs = b"".join(
        bson.encode({"_id": bson.ObjectId(f"{i:024x}"), "n": i, "name": f"customer-{i}"})
        for i in range(DOCS)
    )
    (folder / "customers.bson").write_bytes(docs + tail)
    (folder / "orders.bson").write_bytes(
        b"".join(bson.encode({"_id": f"o{i}", "total": i * 1.5}) for i in range(50))
    )
    for name in ("customers", "orders"):
        (folder / f"{name}.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [], "collectionName": name})
        )
    return root


@pytest.fixture
def vault(cli: Any, tmp_path: Path) -> Path:
    folder = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{folder}").code == 0
    return folder


@pytest.fixture
def ingested(cli: Any, vault: Path, tmp_path: Path) -> dict[str, Any]:
    r = cli("backup", "ingest", str(_dump(tmp_path / "dump")), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    out["vault"] = vault
    return out


def _catalog(home: Path) -> dict[str, list[str]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [a for (a,) in db.execute("select action from ledger_entries order by seq")]


# -- ingest ----------------------------------------------------------------------------------


def test_fingerprints_equal_the_in_process_full_check(
    ingested: dict[str, Any], tmp_path: Path
) -> None:
    got = {d["name"]: d["fingerprint"] for d in ingested["datasets"]}
    for name, file in (("shop.customers", "customers"), ("shop.orders", "orders")):
        (reference,) = fingerprint_service.fingerprint_path(
            tmp_path / "dump" / "shop" / f"{file}.bson",
            fmt="bson",
            dataset=None,
            profile="exact",
            out=None,
            workers=1,
            check_bson=True,
        )
        assert got[name] == reference.fingerprint.text
    data = [a for a in ingested["artifacts"] if a["role"] == "data"]
    assert {a["plain_size"] for a in data} == {
        (tmp_path / "dump" / "shop" / f"{c}.bson").stat().st_size for c in ("customers", "orders")
    }


def test_spooled_ciphertext_becomes_the_artifact_and_no_spool_is_left(
    ingested: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    vault: Path = ingested["vault"]
    files = _files(vault)
    assert not [p for p in files if p.name.startswith(".spool-") or p.suffix == ".partial"]
    data = [a for a in ingested["artifacts"] if a["role"] == "data"]
    assert len(data) == 2
    for art in [a for a in ingested["artifacts"] if a["role"] == "index"]:
        stored = vault / art["path"]  # spooled right after its fold, then linked
        assert stored.stat().st_nlink == 1
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == art["sha256"]
    for art in data:
        stored = vault / art["path"]
        # the child's spool file, linked into place: one name, read-only, the digests the
        # child took are those of the bytes in the vault and of the file ingested
        assert stored.stat().st_nlink == 1
        assert stored.stat().st_mode & 0o777 == 0o444
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == art["sha256"]
        name = art["path"].rsplit("/", 1)[-1].removesuffix(".age")
        plain = (tmp_path / "dump" / "shop" / name).read_bytes()
        assert hashlib.sha256(plain).hexdigest() == art["plain_sha256"]
    r = cli("verify", ingested["backup_id"], "--json")
    assert r.code == 0, r.out


def test_a_spool_that_fails_falls_back_to_the_ordinary_copy(
    cli: Any, vault: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the spool disk is full")

    monkeypatch.setattr(artifacts, "encrypt_file", failing)
    r = cli("backup", "ingest", str(_dump(tmp_path / "dump")), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    assert not [p for p in _files(vault) if p.name.startswith(".spool-")]
    assert cli("verify", json.loads(r.out)["backup_id"]).code == 0


def _nest(depth: int) -> bytes:
    inner = b"\x05\x00\x00\x00\x00"
    for _ in range(depth):
        body = b"\x03a\x00" + inner
        inner = struct.pack("<i", len(body) + 5) + body + b"\x00"
    body = b"\x07_id\x00" + b"\x01" * 12 + b"\x03b\x00" + inner
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def _lying_string() -> bytes:
    body = b"\x07_id\x00" + b"\x02" * 12 + b"\x02s\x00" + struct.pack("<i", 9999) + b"abc\x00"
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(_nest(20_000), id="nesting_bomb"),
        pytest.param(_lying_string(), id="inner_string_length_lies"),
        pytest.param(struct.pack("<i", 1 << 30) + b"\x00" * 8, id="lying_length_prefix"),
        pytest.param(_nest(1)[:-3], id="truncated_last_document"),
    ],
)
def test_hostile_input_is_refused_with_nothing_recorded(
    cli: Any, home: Path, vault: Path, tmp_path: Path, tail: bytes
) -> None:
    dump = _dump(tmp_path / "hostile", tail)
    before = _catalog(home)
    r = cli("backup", "ingest", str(dump), "--format", "mongodump")
    assert r.code == 2, r.err
    assert "customers.bson" in r.err and "byte offset" in r.err
    assert "Traceback" not in r.err
    assert _catalog(home) == before
    assert _files(vault) == []


_TEST_PROCESS = os.getpid()
_HASHERS = {
    "_hash_file_range": fingerprint_service._hash_file_range,
    "_hash_framed": fingerprint_service._hash_framed,
}


def dying_file_range(*args: Any) -> Any:
    """Stands in for the batch hasher: a worker process running it dies (this process, which
    also hashes batches when the workers are busy, does the work)."""
    if os.getpid() != _TEST_PROCESS:
        os._exit(7)
    return _HASHERS["_hash_file_range"](*args)


def dying_framed(*args: Any) -> Any:
    """:func:`dying_file_range` for framed batches."""
    if os.getpid() != _TEST_PROCESS:
        os._exit(7)
    return _HASHERS["_hash_framed"](*args)


def test_a_worker_that_dies_while_checking_records_nothing(
    cli: Any, home: Path, vault: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fingerprint_service, "_hash_file_range", dying_file_range)
    monkeypatch.setattr(fingerprint_service, "_hash_framed", dying_framed)
    before = _catalog(home)
    r = cli("backup", "ingest", str(_dump(tmp_path / "dump")), "--format", "mongodump")
    assert r.code == 3, r.err
    assert "worker process ended unexpectedly" in r.err
    assert "Traceback" not in r.err
    assert _catalog(home) == before
    assert _files(vault) == []


def test_an_encryption_process_that_dies_fails_the_backup_and_leaves_no_file(
    cli: Any, home: Path, vault: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        age_process, "_command", lambda mode, *args: [sys.executable, "-c", "raise SystemExit(9)"]
    )
    r = cli("backup", "ingest", str(_dump(tmp_path / "dump")), "--format", "mongodump")
    assert r.code == 3, r.err
    assert "encryption process ended unexpectedly" in r.err
    assert _actions(home)[-2:] == ["backup.started", "backup.failed"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("select status from backups").fetchall() == [("failed",)]
        assert db.execute("select count(*) from backup_artifacts").fetchone() == (0,)
    assert _files(vault) == []  # no artifact and no partial file


# -- verify ----------------------------------------------------------------------------------


def _verify(cli: Any, backup_id: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", backup_id, "--json")
    assert "Traceback" not in r.err
    return r.code, json.loads(r.out) if r.out else {}


def _codes(out: dict[str, Any]) -> set[str]:
    return {f["code"] for f in out["findings"]}


def _codes_both_ways(
    cli: Any, backup_id: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[set[str], dict[str, Any]]:
    """The finding codes through the processes and in-process (they must be the same)."""
    code, out = _verify(cli, backup_id)
    assert code == 1, out
    monkeypatch.setattr(artifacts, "PROCESS_FROM", 1 << 62)
    code_in, out_in = _verify(cli, backup_id)
    monkeypatch.setattr(artifacts, "PROCESS_FROM", 0)
    assert code_in == 1
    assert _codes(out) == _codes(out_in)
    return _codes(out), out


def _data_file(backup: dict[str, Any], name: str = "customers") -> Path:
    (art,) = [a for a in backup["artifacts"] if a["path"].endswith(f"/{name}.bson.age")]
    path: Path = backup["vault"] / art["path"]
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def _reencrypt(home: Path, backup: dict[str, Any], path: Path, change: Any) -> None:
    with open_app(load_settings(home=home)) as app:
        stored = backup_service.get_backup(app, backup["backup_id"])
        identity = unwrap_identity(keystore_for(app.settings), stored)
    assert stored.recipient is not None
    plain = bytearray(b"".join(decrypt_chunks([path.read_bytes()], identity)))
    change(plain)
    path.write_bytes(b"".join(encrypt_chunks([bytes(plain)], stored.recipient)))


def test_a_clean_backup_verifies(cli: Any, ingested: dict[str, Any]) -> None:
    code, out = _verify(cli, ingested["backup_id"])
    assert code == 0, out["findings"]
    assert out["coverage"]["datasets_checked"] == ["shop.customers", "shop.orders"]


def test_corrupt_ciphertext_mid_file(
    cli: Any, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _data_file(ingested)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    codes, _ = _codes_both_ways(cli, ingested["backup_id"], monkeypatch)
    # _data_file left the artifact writable (0600): a weakened lock is a finding of its own
    assert codes == {"artifact-hash-mismatch", "artifact-undecryptable", "artifact-lock-weakened"}


def test_truncated_ciphertext(
    cli: Any, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _data_file(ingested)
    path.write_bytes(path.read_bytes()[:-100])
    codes, _ = _codes_both_ways(cli, ingested["backup_id"], monkeypatch)
    assert {"artifact-size-mismatch", "artifact-hash-mismatch", "artifact-undecryptable"} <= codes


def test_a_changed_string_byte_reencrypted_names_its_key(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _data_file(ingested)

    def change(plain: bytearray) -> None:
        at = plain.index(b"customer-7\x00")
        plain[at] = ord("K")

    _reencrypt(home, ingested, path, change)
    codes, out = _codes_both_ways(cli, ingested["backup_id"], monkeypatch)
    assert {
        "artifact-hash-mismatch",
        "artifact-plaintext-mismatch",
        "fingerprint-mismatch",
    } <= codes
    (mismatch,) = [f for f in out["findings"] if f["code"] == "fingerprint-mismatch"]
    assert [k["change"] for k in mismatch["details"]["keys"]] == ["changed"]
    assert f"{7:024x}" in mismatch["details"]["keys"][0]["key"]


def test_malformed_bson_inside_a_well_framed_document_is_content_unreadable(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The framing-only pass cannot see this; the plaintext hash can, and then the full pass
    reports it as the full check always did."""
    path = _data_file(ingested)

    def change(plain: bytearray) -> None:
        at = plain.index(b"customer-9\x00")
        plain[at - 4 : at] = struct.pack("<i", 9999)  # the string's length now lies

    _reencrypt(home, ingested, path, change)
    codes, _ = _codes_both_ways(cli, ingested["backup_id"], monkeypatch)
    assert {"artifact-plaintext-mismatch", "content-unreadable"} <= codes
    assert "fingerprint-mismatch" not in codes


def test_a_decryption_process_that_dies_is_could_not_run(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        age_process, "_command", lambda mode, *args: [sys.executable, "-c", "raise SystemExit(9)"]
    )
    r = cli("verify", ingested["backup_id"], "--json")
    assert r.code == 3, r.err
    assert "decryption process ended unexpectedly" in r.err
    assert "Traceback" not in r.err
    assert _actions(home)[-1] == "verification.could_not_run"
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("select count(*) from verifications").fetchone() == (0,)


def test_the_batch_hashers_are_what_the_workers_run(tmp_path: Path) -> None:
    """The worker-death test above replaces these functions: they must be the ones run."""
    buffer = bson.encode({"_id": 1}) + bson.encode({"_id": 2})
    pairs, keys = fingerprint_service._hash_framed(
        RecordEncoding.BSON, "exact", buffer, [0, len(buffer) // 2], True
    )
    assert len(pairs) == 128
    assert keys is not None and len(keys) == 2
    (tmp_path / "c.bson").write_bytes(buffer)
    assert fingerprint_service._hash_file_range(str(tmp_path / "c.bson"), 0, len(buffer), True) == (
        pairs,
        keys,
    )
