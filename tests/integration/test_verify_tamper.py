"""Tamper tests for `affidavit verify` (issue 6): an attacker with write access to the vault
folder, the catalog database or the home; each defect is detected with its own finding code
and exit 1, and every discrepancy is reported (not just the first)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import bson
import pytest

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.crypto.age import decrypt_chunks, encrypt_chunks
from affidavit.crypto.dsse import Envelope
from affidavit.crypto.signing import SigningKey
from affidavit.ledger.attestation import Statement, attest
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import backup as backup_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app
from affidavit.services.keys import KEK_FILENAME, keystore_for, unwrap_identity

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Any:
    with mongo_scratch_class() as server:
        uri = ConnectionUri.parse(EngineName.MONGODB, server.uri)
        with engine_for_uri(EngineName.MONGODB, uri, password=None, timeout=5) as engine:
            engine.seed_sample(seed=9, scale=8)
        yield server.uri


@pytest.fixture
def backup(cli: Any, home: Path, mongo: str, tmp_path: Path) -> dict[str, Any]:
    """One clean MongoDB backup in a folder vault: its JSON plus the vault folder."""
    vault = tmp_path / "vault"
    r = cli("source", "add", "orders", "--engine", "mongodb", "--uri", mongo,
            "--classification", "internal")  # fmt: skip
    assert r.code == 0, r.err
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    r = cli("backup", "run", "orders", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    out["vault"] = vault
    return out


def data_file(backup: dict[str, Any], collection: str = "customers") -> Path:
    (art,) = [
        a
        for a in backup["artifacts"]
        if a["role"] == "data" and a["path"].endswith(f"/{collection}.bson.age")
    ]
    path: Path = backup["vault"] / art["path"]
    return path


def writable(path: Path) -> Path:
    """What an attacker with write access does first: the vault's files are 0444."""
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def verify(cli: Any, backup_id: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", backup_id, "--json")
    assert r.out, r.err
    assert "Traceback" not in r.err
    return r.code, json.loads(r.out)


def codes(out: dict[str, Any]) -> set[str]:
    return {f["code"] for f in out["findings"]}


def failed_with(cli: Any, backup_id: str, code: str) -> dict[str, Any]:
    exit_code, out = verify(cli, backup_id)
    assert exit_code == 1, out
    assert out["ok"] is False
    assert code in codes(out), out["findings"]
    return out


def test_flipped_byte_in_an_artifact(cli: Any, backup: dict[str, Any]) -> None:
    path = writable(data_file(backup))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    out = failed_with(cli, backup["backup_id"], "artifact-hash-mismatch")
    assert "artifact-size-mismatch" not in codes(out)
    assert "artifact-undecryptable" in codes(out)  # every discrepancy, not just the first


def test_truncated_artifact(cli: Any, backup: dict[str, Any]) -> None:
    path = writable(data_file(backup))
    path.write_bytes(path.read_bytes()[:-100])
    out = failed_with(cli, backup["backup_id"], "artifact-size-mismatch")
    assert {"artifact-hash-mismatch", "artifact-undecryptable"} <= codes(out)


def test_deleted_artifact(cli: Any, backup: dict[str, Any]) -> None:
    path = data_file(backup, "orders")
    path.unlink()
    out = failed_with(cli, backup["backup_id"], "artifact-missing")
    (missing,) = [f for f in out["findings"] if f["code"] == "artifact-missing"]
    assert missing["subject"].endswith("orders.bson.age")


def test_artifact_swapped_in_from_another_backup(cli: Any, backup: dict[str, Any]) -> None:
    r = cli("backup", "run", "orders", "--json")
    assert r.code == 0, r.err
    other = json.loads(r.out)
    other["vault"] = backup["vault"]
    target = writable(data_file(backup))
    target.write_bytes(data_file(other).read_bytes())  # same layout, other backup id
    out = failed_with(cli, backup["backup_id"], "artifact-from-other-backup")
    (swapped,) = [f for f in out["findings"] if f["code"] == "artifact-from-other-backup"]
    assert swapped["details"]["other_backup"] == other["backup_id"]
    assert other["backup_id"] in swapped["message"]
    assert "artifact-hash-mismatch" not in codes(out)
    code, fine = verify(cli, other["backup_id"])
    assert code == 0 and fine["ok"] is True


def test_manifest_edited_in_the_catalog(cli: Any, home: Path, backup: dict[str, Any]) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (manifest,) = db.execute(
            "select manifest from backups where id = ?", (backup["backup_id"],)
        ).fetchone()
        edited = bytes(manifest).replace(b'"records":', b'"records" :', 1)
        assert edited != bytes(manifest)
        db.execute("update backups set manifest = ? where id = ?", (edited, backup["backup_id"]))
    out = failed_with(cli, backup["backup_id"], "manifest-mismatch")
    assert "manifest-signature-invalid" not in codes(out)


def test_manifest_resigned_with_another_key(cli: Any, home: Path, backup: dict[str, Any]) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (envelope_json,) = db.execute(
            "select envelope from backups where id = ?", (backup["backup_id"],)
        ).fetchone()
        genuine = Envelope.from_json(envelope_json)
        forged = attest(
            Statement.from_json(genuine.payload),
            SigningKey.generate(),
            genuine.signatures[0].keyid,  # even claiming the ledger key's id
        )
        db.execute(
            "update backups set envelope = ? where id = ?",
            (forged.to_json(), backup["backup_id"]),
        )
    out = failed_with(cli, backup["backup_id"], "manifest-signature-invalid")
    assert "manifest-copy-mismatch" in codes(out)  # the vault copy is still the genuine one


def test_wrong_kek(cli: Any, home: Path, backup: dict[str, Any], tmp_path: Path) -> None:
    kek = home / "keys" / KEK_FILENAME
    kek.unlink()
    keystore_for(load_settings(home=home)).current()  # creates a new, unrelated KEK file
    assert kek.exists()
    out = failed_with(cli, backup["backup_id"], "key-unwrap-failed")
    # the ciphertext is still checked: no artifact finding, and nothing decrypted
    assert codes(out) == {"key-unwrap-failed"}


def test_vault_copy_of_the_manifest_edited(cli: Any, backup: dict[str, Any]) -> None:
    (copy,) = [a for a in backup["artifacts"] if a["role"] == "manifest"]
    path = writable(backup["vault"] / copy["path"])
    envelope = json.loads(path.read_text())
    envelope["payloadType"] = "application/json"
    path.write_text(json.dumps(envelope))
    path.chmod(0o444)  # and covers the tracks (left writable, it is artifact-lock-weakened too)
    out = failed_with(cli, backup["backup_id"], "manifest-copy-mismatch")
    assert codes(out) == {"manifest-copy-mismatch"}


def test_bson_byte_changed_and_reencrypted_is_plaintext_and_fingerprint_mismatch(
    cli: Any, home: Path, backup: dict[str, Any]
) -> None:
    path = data_file(backup)
    with open_app(load_settings(home=home)) as app:
        stored = backup_service.get_backup(app, backup["backup_id"])
        identity = unwrap_identity(keystore_for(app.settings), stored)
    assert stored.recipient is not None
    plain = bytearray(b"".join(decrypt_chunks([path.read_bytes()], identity)))
    # change one character of a string field of the first document, keeping its length
    size = int.from_bytes(plain[:4], "little")
    doc = bson.decode(bytes(plain[:size]))
    name, value = next((k, v) for k, v in doc.items() if k != "_id" and isinstance(v, str) and v)
    at = plain.index(value.encode(), 0, size)
    plain[at] = ord("X") if plain[at] != ord("X") else ord("Y")
    ciphertext = b"".join(encrypt_chunks([bytes(plain)], stored.recipient))
    writable(path).write_bytes(ciphertext)
    out = failed_with(cli, backup["backup_id"], "artifact-plaintext-mismatch")
    assert "fingerprint-mismatch" in codes(out)
    assert "artifact-undecryptable" not in codes(out)
    (mismatch,) = [f for f in out["findings"] if f["code"] == "fingerprint-mismatch"]
    assert mismatch["subject"] == "shop.customers"
    expected_key = json.dumps({"$oid": str(doc["_id"])})
    assert [(k["change"], k["key"]) for k in mismatch["details"]["keys"]] == [
        ("changed", expected_key)
    ]
    assert expected_key in mismatch["message"], name


def test_every_tamper_has_its_own_code(cli: Any, home: Path, backup: dict[str, Any]) -> None:
    """Several defects at once: all are reported, each with its code."""
    writable(data_file(backup, "orders")).unlink()
    writable(data_file(backup)).write_bytes(b"age-encryption.org/v1\n-> nonsense\n")
    (copy,) = [a for a in backup["artifacts"] if a["role"] == "manifest"]
    (backup["vault"] / copy["path"]).unlink()
    out = failed_with(cli, backup["backup_id"], "artifact-missing")
    assert {"artifact-size-mismatch", "artifact-hash-mismatch", "manifest-copy-missing"} <= codes(
        out
    )
    r = cli("verify", "list", backup["backup_id"], "--json")
    (listed,) = json.loads(r.out)["verifications"]
    assert listed["ok"] is False and listed["findings_count"] == len(out["findings"])
    assert cli("ledger", "verify").code == 0
