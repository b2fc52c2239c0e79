"""Segment tables proven when written (issue 18, session 11), and the ways around it.

The writer signs a segment table only when the bytes it hashed per segment also hashed, as a
whole, to the artifact's signed whole-file digests (``segment_tables.TableBuilder``), and its
``backup.completed`` entry says ``tables_proven``. A backup's first verification then runs
fast, vouched by that entry, provably in the tree the ledger key signed. Attacked here: a
completion entry that does not say it (an older writer), one appended or rewritten behind
affidavit's back, a re-signed manifest, a stale signer memory, the setting that asks for a
deep first run, and a file that changed between encryption and the table's read (no table
is signed then). And what a first fast run still finds: a tampered segment, worded as a
deep run words it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import bson
import pyrage
import pytest
from test_attack_segments_whole_digest import _resign_digest
from test_verify_segments import (
    _codes,
    _data,
    _manifest,
    _verify,
    _writable,
    ingest_customers,
    ingested,
    small_segments,
)

from affidavit.config import load_settings
from affidavit.crypto.age_process import encrypt_file
from affidavit.models.backup import ArtifactRole
from affidavit.services import segment_tables
from affidavit.services.context import Change, open_app
from affidavit.services.verify.vouch import WRITTEN, find_vouch

__all__ = ["ingested", "small_segments"]  # fixtures, used by name

pytestmark = pytest.mark.e2e


def _completion(home: Path, backup_id: str) -> tuple[int, dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (seq, raw) = db.execute(
            "select seq, entry from ledger_entries where action = 'backup.completed' "
            "and subject = ?",
            (f"backup:{backup_id}",),
        ).fetchone()
    return int(seq), json.loads(bytes(raw))


def _manifest_sha256(home: Path, backup_id: str) -> str:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (digest,) = db.execute(
            "select manifest_sha256 from backups where id = ?", (backup_id,)
        ).fetchone()
    return str(digest)


def _found(home: Path, backup_id: str) -> tuple[int, str] | None:
    with open_app(load_settings(home=home)) as app:
        vouch = find_vouch(app, backup_id, _manifest_sha256(home, backup_id))
    return None if vouch is None else (vouch.seq, vouch.action)


def test_the_first_verification_is_fast_on_the_writers_proof(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    backup_id = ingested["backup_id"]
    seq, completed = _completion(home, backup_id)
    assert completed["details"]["tables_proven"] is True
    assert all(a.segments is not None for a in _manifest(home, backup_id).artifacts)
    code, first = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and first["ok"] is True
    assert (first["mode"], first["vouched_by"], first["vouched_by_action"]) == (
        "fast",
        seq,
        WRITTEN,
    )
    r = cli("verify", backup_id)  # as people read it
    assert r.code == 0 and "tables proven when written" in r.out, r.out
    code, deep = _verify(cli, backup_id, "--workers", "2", "--deep")
    assert code == 0 and (deep["mode"], deep["vouched_by"]) == ("deep", None)


def test_the_setting_asks_for_a_deep_first_run(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFFIDAVIT_VERIFY_FIRST_RUN", "deep")
    code, first = _verify(cli, ingested["backup_id"])
    assert code == 0 and (first["mode"], first["vouched_by"]) == ("deep", None)
    code, second = _verify(cli, ingested["backup_id"])
    assert code == 0 and second["mode"] == "fast"
    assert second["vouched_by_action"] == "verification.completed"


def test_a_completion_entry_without_the_proof_vouches_nothing(
    cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup recorded by a writer that did not prove its tables (an older release):
    its first verification is deep."""
    plain_record = Change.record

    def record_without_proof(self: Change, action: str, subject: str, details: Any = None) -> Any:
        if action == "backup.completed":
            details = {k: v for k, v in details.items() if k != "tables_proven"}
        return plain_record(self, action, subject, details)

    monkeypatch.setattr(Change, "record", record_without_proof)
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    backup_id = ingest_customers(cli, tmp_path)
    monkeypatch.setattr(Change, "record", plain_record)
    assert "tables_proven" not in _completion(home, backup_id)[1]["details"]
    assert _found(home, backup_id) is None
    code, first = _verify(cli, backup_id)
    assert code == 0 and (first["mode"], first["vouched_by"]) == ("deep", None)


def test_a_completion_entry_rewritten_in_the_catalog_does_not_vouch(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """The genuine completion entry, rewritten to drop and then re-add the proof with
    another manifest digest: its leaf is no longer the one the key signed."""
    backup_id = ingested["backup_id"]
    seq, event = _completion(home, backup_id)
    event["details"]["manifest_sha256"] = "0" * 64
    forged = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update ledger_entries set entry = ? where seq = ?", (forged, seq))
    assert _found(home, backup_id) is None


def test_a_stale_or_missing_signer_memory_gives_a_deep_run(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    backup_id = ingested["backup_id"]
    memory = home / "keys" / "ledger.signed"
    assert memory.is_file()
    memory.unlink()
    assert _found(home, backup_id) is None
    code, out = _verify(cli, backup_id)
    assert code == 0 and out["mode"] == "deep"


def test_a_re_signed_manifest_is_not_vouched_by_the_original_completion(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """The backup re-signed with a table that matches the file under a whole-file digest
    that does not: another manifest digest than the completion entry's. The first run is
    deep and finds the contradiction."""
    backup_id = ingested["backup_id"]
    _resign_digest(home, ingested["vault"], backup_id)
    assert _found(home, backup_id) is None
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert code == 1 and out["mode"] == "deep"
    assert "artifact-hash-mismatch" in _codes(out), out["findings"]


def test_a_tampered_segment_in_a_first_fast_run_is_found_as_a_deep_run_finds_it(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    backup_id = ingested["backup_id"]
    art = _data(_manifest(home, backup_id))
    path = _writable(ingested["vault"] / art.path)
    row = art.segments.segments[3]
    raw = bytearray(path.read_bytes())
    raw[row.offset + row.size // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    code, fast = _verify(cli, backup_id, "--workers", "2")
    assert code == 1 and fast["mode"] == "fast"
    (found,) = [f for f in fast["findings"] if f["code"] == "segment-mismatch"]
    assert [s["segment"] for s in found["details"]["segments"]] == [3]
    code, deep = _verify(cli, backup_id, "--workers", "2", "--deep")
    assert code == 1 and deep["mode"] == "deep"
    assert fast["findings"] == deep["findings"]  # word for word


# -- the writer gives no table it did not prove --------------------------------------------------


def test_a_builder_whose_whole_digests_differ_gives_no_table() -> None:
    builder = segment_tables.TableBuilder("db/c.bson.age", ArtifactRole.DATA, 1 << 16)

    plain = b"".join(bytes([k % 251]) * 1000 for k in range(300))
    recipient = pyrage.x25519.Identity.generate().to_public()
    cipher = pyrage.encrypt(plain, [recipient])
    builder.plain(plain)
    builder.cipher(cipher)
    right = (hashlib.sha256(cipher).hexdigest(), hashlib.sha256(plain).hexdigest())
    assert builder.table(cipher_sha256=right[0], plain_sha256="0" * 64) is None
    assert builder.table(cipher_sha256="0" * 64, plain_sha256=right[1]) is None
    assert builder.table(cipher_sha256=right[0], plain_sha256=right[1]) is not None


def test_the_encrypting_childs_table_is_the_one_the_files_give(tmp_path: Path) -> None:
    """The staged road: the child that encrypts hashes both sides per segment from the very
    bytes it hashes whole; its rows equal a table built independently from the two files,
    and their whole-file digests are the child's."""
    docs = b"".join(bson.encode({"_id": i, "s": "q" * (i * 37 % 3000)}) for i in range(3000))
    plain = tmp_path / "c.bson"
    plain.write_bytes(docs)
    cipher = tmp_path / "c.bson.age"
    cipher.touch()
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    size = 1 << 18
    side = segment_tables.PlainSide(plain, size)  # as stage_file: beside the child
    done = encrypt_file(recipient, plain, cipher, segment_size=size)
    assert done.cipher_segments is not None and len(done.cipher_segments) > 3
    path, role = "db/c.bson.age", ArtifactRole.DATA
    table = segment_tables.table_of_staged(path, role, done, side)
    builder = segment_tables.TableBuilder(path, role, size)
    builder.plain(plain.read_bytes())
    builder.cipher(cipher.read_bytes())
    independent = builder.table(cipher_sha256=done.cipher_sha256, plain_sha256=done.plain_sha256)
    assert table is not None and table == independent
    assert table.framing == "bson"
    assert done.cipher_sha256 == hashlib.sha256(cipher.read_bytes()).hexdigest()


def test_a_staged_file_changed_after_its_encryption_gets_no_table(tmp_path: Path) -> None:
    plain = tmp_path / "c.bson"
    plain.write_bytes(bson.encode({"_id": 1, "s": "x" * 5000}) * 100)
    cipher = tmp_path / "c.bson.age"
    cipher.touch()
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    done = encrypt_file(recipient, plain, cipher, segment_size=1 << 16)
    raw = bytearray(plain.read_bytes())
    raw[-3] ^= 0x01  # the file the plaintext side reads is not the one encrypted
    plain.write_bytes(bytes(raw))
    path, role = "db/c.bson.age", ArtifactRole.DATA
    side = segment_tables.PlainSide(plain, 1 << 16)
    assert segment_tables.table_of_staged(path, role, done, side) is None
    assert encrypt_file(recipient, plain, cipher).cipher_segments is None  # none asked for
