"""Segment tables (issue 18): new backups sign one per artifact, and ``verify --workers N``
checks an artifact segment by segment on N threads with exactly the result of a sequential
run. The segment size is cut to 128 KiB (two STREAM chunks) so that a few MB of documents make
many segments, some of them without a document start (a document larger than a segment).

Tampers, each a finding with exit 1 and never a traceback: a bit flipped in one segment, two
segments swapped, a truncated artifact, and tables re-signed with the ledger key that leave a
gap, overlap, miss or reorder rows, name a wrong first record, or disagree with the whole-file
digest; a read error of the vault is exit 3. Backups without tables verify as before."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pytest

from affidavit.config import load_settings
from affidavit.crypto.age_reader import AgeFile, AgePayload
from affidavit.crypto.digest import sha256_hex
from affidavit.ledger.attestation import Statement, attest
from affidavit.models.manifest import BackupManifest
from affidavit.services import backup as backup_service
from affidavit.services import segment_tables
from affidavit.services.context import load_ledger_identity, open_app
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.verify import reading
from affidavit.services.verify.segments import SegmentUse, read_segments

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject

SEGMENT = 128 * 1024


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_tables, "SEGMENT_SIZE", SEGMENT)


def _documents() -> bytes:
    """About 2.5 MB of documents of many sizes; every 97th is 300 KB (spans whole segments)."""
    docs = []
    for i in range(4000):
        size = 300_000 if i % 97 == 50 else (i * 37) % 900
        docs.append(bson.encode({"_id": bson.ObjectId(f"{i:024x}"), "n": i, "pad": "x" * size}))
    return b"".join(docs)


@pytest.fixture
def ingested(cli: Any, tmp_path: Path) -> dict[str, Any]:
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    (folder / "customers.bson").write_bytes(_documents())
    (folder / "empty.bson").write_bytes(b"")  # one segment of no plaintext, no document
    for name in ("customers", "empty"):
        (folder / f"{name}.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [], "collectionName": name})
        )
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    out["vault"] = vault
    out["plain"] = folder / "customers.bson"
    return out


def ingest_customers(cli: Any, tmp_path: Path) -> str:
    """One ``customers`` collection (:func:`_documents`) ingested from a mongodump folder
    into the vault already added: the backup's id."""
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    (folder / "customers.bson").write_bytes(_documents())
    (folder / "customers.metadata.json").write_text(json.dumps({"options": {}, "indexes": []}))
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    backup_id: str = json.loads(r.out)["backup_id"]
    return backup_id


def _manifest(home: Path, backup_id: str) -> BackupManifest:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select manifest from backups where id = ?", (backup_id,)).fetchone()
    return BackupManifest.from_predicate(Statement.from_json(bytes(raw)).predicate)


def _data(manifest: BackupManifest) -> Any:
    (art,) = [a for a in manifest.artifacts if a.path.endswith("customers.bson.age")]
    return art


def _verify(cli: Any, backup_id: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", backup_id, "--json", *args)
    assert "Traceback" not in r.err
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _codes(out: dict[str, Any]) -> set[str]:
    return {f["code"] for f in out["findings"]}


def _writable(path: Path) -> Path:
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many artifacts went through the segment path."""
    calls: list[int] = []
    real = reading.read_segments

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(reading, "read_segments", counted)
    return calls


def _resign(home: Path, backup_id: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Re-sign the backup's statement with the ledger key after ``edit`` changed the data
    artifact's segment table (as a buggy or subverted signer would)."""
    identity = load_ledger_identity(home)
    assert identity is not None
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select manifest from backups where id = ?", (backup_id,)).fetchone()
        statement = Statement.from_json(bytes(raw))
        predicate = json.loads(json.dumps(dict(statement.predicate)))
        (art,) = [a for a in predicate["artifacts"] if a["path"].endswith("customers.bson.age")]
        edit(art["segments"])
        forged = Statement(
            subjects=statement.subjects,
            predicate_type=statement.predicate_type,
            predicate=predicate,
        )
        envelope = attest(forged, identity.signer.key, identity.keyid)
        payload = forged.to_json()
        db.execute(
            "update backups set manifest = ?, manifest_sha256 = ?, envelope = ? where id = ?",
            (payload, sha256_hex(payload), envelope.to_json(), backup_id),
        )


# -- the table -------------------------------------------------------------------------------


def test_every_new_artifact_has_a_signed_table_that_tiles_it(
    home: Path, ingested: dict[str, Any]
) -> None:
    manifest = _manifest(home, ingested["backup_id"])
    assert all(a.segments is not None for a in manifest.artifacts)
    art = _data(manifest)
    table = art.segments
    assert table is not None and table.framing == "bson" and table.segment_size == SEGMENT
    assert art.plain_size is not None and len(table.segments) == -(-art.plain_size // SEGMENT)
    assert table.tiling_issues(size=art.size, plain_size=art.plain_size) == []
    plain = ingested["plain"].read_bytes()
    cipher = (ingested["vault"] / art.path).read_bytes()
    starts, at = [], 0
    while at < len(plain):
        starts.append(at)
        at += int.from_bytes(plain[at : at + 4], "little")
    for row in table.segments:
        assert sha256_hex(cipher[row.offset : row.offset + row.size]) == row.sha256
        end = row.plain_offset + row.plain_size
        assert sha256_hex(plain[row.plain_offset : end]) == row.plain_sha256
        inside = [s for s in starts if row.plain_offset <= s < end]
        assert row.first_record == (inside[0] if inside else None)
    assert any(row.first_record is None for row in table.segments)  # a document spans it
    metadata = next(a for a in manifest.artifacts if a.path.endswith(".metadata.json.age"))
    assert metadata.segments is not None and metadata.segments.framing is None


def test_segments_compute_the_signed_fingerprint_on_any_number_of_threads(
    home: Path, ingested: dict[str, Any]
) -> None:
    manifest = _manifest(home, ingested["backup_id"])
    art = _data(manifest)
    with open_app(load_settings(home=home)) as app:
        stored = backup_service.get_backup(app, ingested["backup_id"])
        identity = unwrap_identity(keystore_for(app.settings), stored)
    seen = []
    for workers in (1, 2, 5):
        with (ingested["vault"] / art.path).open("rb") as fh:
            got = read_segments(
                AgeFile.from_file(fh, identity),
                art.segments,
                size=art.size,
                plain_size=art.plain_size,
                workers=workers,
                use=SegmentUse(frame=True),
                dataset="shop.customers",
                advance=seen.append,
            )
        assert got.ok, (got.problems, got.table_issues, got.frame_errors)
        assert got.fingerprint == manifest.fingerprints["shop.customers"]
    assert sum(seen) == 3 * art.size  # every byte of the file, each time


def test_parallel_verify_equals_the_sequential_one(
    cli: Any,
    home: Path,
    ingested: dict[str, Any],
    spy: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = {}
    for workers in ("1", "2"):
        code, out = _verify(cli, ingested["backup_id"], "--workers", workers)
        assert code == 0 and out["ok"] is True, out["findings"]
        results[workers] = out
    artifacts = len(_manifest(home, ingested["backup_id"]).artifacts)
    assert artifacts == 6  # data, metadata and index of two datasets, one of them empty
    assert spy == [1] * artifacts + [2] * artifacts  # every artifact by its segments
    monkeypatch.setattr(reading, "_regular_descriptor", lambda fh: None)  # no table used
    code, sequential = _verify(cli, ingested["backup_id"])
    assert code == 0 and len(spy) == 2 * artifacts
    # the first run is deep and proves the tables; the later ones are fast, vouched by it
    assert (results["1"]["mode"], results["1"]["vouched_by"]) == ("deep", None)
    assert results["2"]["mode"] == sequential["mode"] == "fast"
    assert results["2"]["vouched_by"] == sequential["vouched_by"] is not None
    for out in (*results.values(), sequential):
        assert _checked(out) == _checked(sequential) and out["findings"] == []
    assert cli("ledger", "verify").code == 0


def _checked(out: dict[str, Any]) -> dict[str, Any]:
    """What a run checked, whichever mode ran."""
    return {
        k: v
        for k, v in out["coverage"].items()
        if k not in {"mode", "vouched_by", "vouched_by_action"}
    }


def test_a_backup_without_tables_verifies_as_before(
    cli: Any, home: Path, tmp_path: Path, spy: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest signed before segment tables (none written here) is read sequentially, by
    its whole-file digests, and tampering is found as it always was."""
    monkeypatch.setattr(segment_tables.TableBuilder, "table", lambda self, **_: None)
    monkeypatch.setattr(segment_tables, "table_of_staged", lambda *args, **_: None)
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    backup_id = ingest_customers(cli, tmp_path)
    manifest = _manifest(home, backup_id)
    assert all(a.segments is None for a in manifest.artifacts)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select manifest from backups where id = ?", (backup_id,)).fetchone()
    assert b'"segments"' not in bytes(raw)
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and out["ok"] is True and spy == []
    path = _writable(vault / _data(manifest).path)
    raw_file = bytearray(path.read_bytes())
    raw_file[len(raw_file) // 2] ^= 1
    path.write_bytes(bytes(raw_file))
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert code == 1 and spy == []
    assert {"artifact-hash-mismatch", "artifact-undecryptable"} <= _codes(out)
    assert not {"segment-mismatch", "segment-table-invalid"} & _codes(out)


def test_bad_workers_is_bad_input(cli: Any, ingested: dict[str, Any]) -> None:
    r = cli("verify", ingested["backup_id"], "--workers", "0")
    assert r.code == 2 and "--workers" in r.err and "Traceback" not in r.err


# -- tampers ---------------------------------------------------------------------------------


def _segment_file(home: Path, ingested: dict[str, Any]) -> tuple[Any, Path]:
    art = _data(_manifest(home, ingested["backup_id"]))
    return art, _writable(ingested["vault"] / art.path)


def test_bit_flip_in_one_segment_names_that_segment(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    art, path = _segment_file(home, ingested)
    row = art.segments.segments[5]
    raw = bytearray(path.read_bytes())
    raw[row.offset + row.size // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    code, out = _verify(cli, ingested["backup_id"], "--workers", "2")
    assert code == 1 and out["ok"] is False
    (found,) = [f for f in out["findings"] if f["code"] == "segment-mismatch"]
    assert [s["segment"] for s in found["details"]["segments"]] == [5]
    assert found["details"]["segments"][0]["expected"] == row.sha256
    assert "undecryptable" in found["details"]["segments"][0]
    # the sequential pass words the artifact's own findings as it always did
    assert {"artifact-hash-mismatch", "artifact-undecryptable"} <= _codes(out)


def test_two_segments_swapped(cli: Any, home: Path, ingested: dict[str, Any]) -> None:
    art, path = _segment_file(home, ingested)
    one, two = art.segments.segments[3], art.segments.segments[4]
    assert one.size == two.size
    raw = bytearray(path.read_bytes())
    a, b = (
        bytes(raw[one.offset : one.offset + one.size]),
        bytes(raw[two.offset : two.offset + two.size]),
    )
    raw[one.offset : one.offset + one.size], raw[two.offset : two.offset + two.size] = b, a
    path.write_bytes(bytes(raw))
    code, out = _verify(cli, ingested["backup_id"])
    assert code == 1
    (found,) = [f for f in out["findings"] if f["code"] == "segment-mismatch"]
    assert [s["segment"] for s in found["details"]["segments"]] == [3, 4]
    assert "artifact-undecryptable" in _codes(out)


def test_truncated_artifact(cli: Any, home: Path, ingested: dict[str, Any]) -> None:
    _, path = _segment_file(home, ingested)
    path.write_bytes(path.read_bytes()[:-70_000])
    code, out = _verify(cli, ingested["backup_id"], "--workers", "2")
    assert code == 1
    assert {"artifact-size-mismatch", "artifact-hash-mismatch", "artifact-undecryptable"} <= (
        _codes(out)
    )


def _shift(k: int, by: int) -> Callable[[dict[str, Any]], None]:
    def edit(table: dict[str, Any]) -> None:
        row = table["table"][k]
        row["offset"] += by
        row["size"] -= by

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_shift(2, 16), "gap"),
        (_shift(2, -16), "overlap"),
        (lambda t: t["table"].__delitem__(4), "gap"),
        (lambda t: t["table"].insert(2, t["table"].pop(3)), "offset"),
    ],
    ids=["gap", "overlap", "missing-row", "rows-swapped"],
)
def test_table_that_does_not_tile_the_file(
    cli: Any, home: Path, ingested: dict[str, Any], edit: Any, words: str
) -> None:
    _resign(home, ingested["backup_id"], edit)
    code, out = _verify(cli, ingested["backup_id"], "--workers", "2")
    assert code == 1
    (found,) = [f for f in out["findings"] if f["code"] == "segment-table-invalid"]
    assert words in found["message"]
    # the artifact itself is then read sequentially: its bytes are the signed ones
    assert not {"artifact-hash-mismatch", "fingerprint-mismatch"} & _codes(out)
    assert "manifest-copy-mismatch" in _codes(out)  # the vault holds the genuine envelope


def test_table_with_a_wrong_first_record(cli: Any, home: Path, ingested: dict[str, Any]) -> None:
    def edit(table: dict[str, Any]) -> None:
        row = next(r for r in table["table"][1:] if r["first_record"] is not None)
        row["first_record"] += 1

    _resign(home, ingested["backup_id"], edit)
    code, out = _verify(cli, ingested["backup_id"])
    assert code == 1
    (found,) = [f for f in out["findings"] if f["code"] == "segment-table-invalid"]
    assert "first record" in found["message"]
    assert not {"fingerprint-mismatch", "content-unreadable"} & _codes(out)


def test_a_vault_read_error_is_could_not_run(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error while a segment is read says nothing about the backup: exit 3, recorded
    only as ``verification.could_not_run``, never a traceback."""

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(AgePayload, "read_segment", failing)
    r = cli("verify", ingested["backup_id"], "--workers", "2", "--json")
    assert r.code == 3, r.err
    assert "Input/output error" in r.err and "Traceback" not in r.err
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (action,) = db.execute("select action from ledger_entries order by seq desc").fetchone()
        assert db.execute("select count(*) from verifications").fetchone() == (0,)
    assert action == "verification.could_not_run"


def test_a_table_that_disagrees_with_the_whole_file_digest(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A signed segment digest that is not the file's while the whole-file digest is: the
    segment is reported, and the sequential pass finds the artifact itself intact."""

    def edit(table: dict[str, Any]) -> None:
        table["table"][2]["sha256"] = "0" * 64

    _resign(home, ingested["backup_id"], edit)
    code, out = _verify(cli, ingested["backup_id"], "--workers", "2")
    assert code == 1
    (found,) = [f for f in out["findings"] if f["code"] == "segment-mismatch"]
    assert [s["segment"] for s in found["details"]["segments"]] == [2]
    assert found["details"]["segments"][0]["expected"] == "0" * 64
    assert not {"artifact-hash-mismatch", "artifact-undecryptable"} & _codes(out)
