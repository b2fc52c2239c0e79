"""Second short attack pass on what makes a verification skip its deep passes (issue 18,
session 11: ``services/verify/vouch.py``, ``services/verify/run.py``).

Tried here, each a test (all held): a backup's row given another backup's genuine signed
manifest (two identical dumps still get different manifest digests; the copied one's proven
completion entry names the other backup): no vouch, deep, fails; another home's catalog
copied in and ``ledger recover`` run: refused (the checkpoint is another key's), nothing
verifies; a verify through ``affidavit serve`` by two accounts: the same vouch (fast on the
writer's proof), a body asking for ``fast``/``mode`` or a non-boolean ``deep`` refused and
recorded nothing, a flipped byte found fast and deep; a vouched backup whose artifacts were
removed from the vault: fast, and fails on every one; a mixed manifest (one artifact's
table dropped, re-signed and vouched with the ledger key): the untabled artifact's flipped
byte is still found by its whole-file digest in the fast run; the catalog's manifest edited
behind its signature with the old ``manifest_sha256`` column kept: not vouched (the digest
is the verified statement's, not the column's), deep, fails."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from server_harness import make_world, serving
from test_attack_write_proof import _found
from test_verify_segments import _data, _manifest, _verify, _writable, ingested, small_segments

from affidavit.config import load_settings
from affidavit.crypto.digest import sha256_hex
from affidavit.ledger.attestation import Statement, attest
from affidavit.services.context import load_ledger_identity, open_app
from affidavit.services.setup import initialise

__all__ = ["ingested", "small_segments"]  # fixtures, used by name


def _row(home: Path, backup_id: str) -> tuple[bytes, str, Any]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        manifest, digest, envelope = db.execute(
            "select manifest, manifest_sha256, envelope from backups where id = ?", (backup_id,)
        ).fetchone()
    return bytes(manifest), str(digest), envelope


@pytest.mark.e2e
def test_another_backups_signed_manifest_copied_into_this_row_is_not_vouched(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """Backup B's genuine signed manifest (and its digest, which B's proven completion entry
    names) copied into backup A's row: A's own entry names another digest, B's another
    subject, so nothing vouches and the run is deep (and does not pass)."""
    a = ingested["backup_id"]
    folder = tmp_path / "second" / "shop"
    folder.mkdir(parents=True)
    for p in ingested["plain"].parent.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    r = cli("backup", "ingest", str(tmp_path / "second"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    b = json.loads(r.out)["backup_id"]
    assert _found(home, b) is not None  # B's own entry vouches B
    manifest, digest, envelope = _row(home, b)
    assert digest != _row(home, a)[1]  # identical dumps: the manifests still differ
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update backups set manifest = ?, manifest_sha256 = ?, envelope = ? where id = ?",
            (manifest, digest, envelope, a),
        )
    assert _found(home, a) is None
    code, out = _verify(cli, a, "--workers", "2")
    assert out["mode"] == "deep" and out["vouched_by"] is None
    assert code == 1 and out["ok"] is False, out


@pytest.mark.e2e
def test_an_artifact_without_a_table_in_a_vouched_manifest_is_still_checked_whole(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A mixed manifest: the data artifact's table dropped, re-signed, and a completion
    entry saying ``tables_proven`` recorded for it (both need the ledger key). The run is
    fast (other artifacts have tables), yet the untabled artifact's flipped byte is found
    by its whole-file digest."""
    backup_id = ingested["backup_id"]
    identity = load_ledger_identity(home)
    assert identity is not None
    raw, _, _ = _row(home, backup_id)
    statement = Statement.from_json(raw)
    predicate = json.loads(json.dumps(dict(statement.predicate)))
    (art,) = [x for x in predicate["artifacts"] if x["path"].endswith("customers.bson.age")]
    del art["segments"]
    assert any(x.get("segments") for x in predicate["artifacts"])  # others keep theirs
    forged = Statement(
        subjects=statement.subjects, predicate_type=statement.predicate_type, predicate=predicate
    )
    payload = forged.to_json()
    envelope = attest(forged, identity.signer.key, identity.keyid)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update backups set manifest = ?, manifest_sha256 = ?, envelope = ? where id = ?",
            (payload, sha256_hex(payload), envelope.to_json(), backup_id),
        )
    with open_app(load_settings(home=home)) as app, app.change() as change:
        change.record(
            "backup.completed",
            f"backup:{backup_id}",
            {"manifest_sha256": sha256_hex(payload), "tables_proven": True},
        )
    assert _found(home, backup_id) is not None
    data = next(a for a in _manifest(home, backup_id).artifacts if a.path == art["path"])
    assert data.segments is None
    path = _writable(ingested["vault"] / art["path"])
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0x10
    path.write_bytes(bytes(flipped))
    code, fast = _verify(cli, backup_id, "--workers", "2")
    assert fast["mode"] == "fast", fast
    assert code == 1 and fast["ok"] is False
    hashed = [f for f in fast["findings"] if f["code"] == "artifact-hash-mismatch"]
    assert any(art["path"] in json.dumps(f) for f in hashed), fast["findings"]


@pytest.mark.e2e
def test_another_homes_catalog_recovered_into_this_home_vouches_nothing(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """Another home's catalog (its own ledger key, its own proven completion entries)
    copied over this home's and ``ledger recover`` run: either recover refuses, or nothing
    in it verifies fast and passes here (its manifests and checkpoints are another key's)."""
    other = tmp_path / "other"
    initialise(load_settings(home=other))
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'v2'}", home_dir=other).code == 0
    r = cli("backup", "ingest", str(ingested["plain"].parent.parent), "--format", "mongodump",
            "--json", home_dir=other)  # fmt: skip
    assert r.code == 0, r.err
    foreign = json.loads(r.out)["backup_id"]
    assert _found(other, foreign) is not None
    for suffix in ("", "-wal", "-shm"):
        (home / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copyfile(other / "catalog.sqlite", home / "catalog.sqlite")
    r = cli("ledger", "recover", "--reason", "attack", "--json")
    assert "Traceback" not in r.err
    assert r.code in (0, 2, 3), (r.code, r.err)
    if r.code != 0:
        assert _found(home, foreign) is None
    r = cli("verify", foreign, "--json")
    assert "Traceback" not in r.err
    out = json.loads(r.out) if r.out else {}
    assert not (r.code == 0 and out.get("mode") == "fast" and out.get("ok")), (r.code, out)


@pytest.mark.e2e
def test_a_verify_through_the_server_uses_the_same_vouch_and_no_flag_forces_fast(
    home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """Through ``affidavit serve``: one account's run is fast on the writer's proof, as a
    local one is; a body asking for ``fast`` (or a ``deep`` that is no boolean; pydantic takes "no" as false, the default) is refused and
    verifies nothing; a second account's run after a flipped byte is fast and fails."""
    backup_id = ingested["backup_id"]
    found = _found(home, backup_id)
    assert found is not None
    world = make_world(home)
    with serving(home) as served, served.client() as http:
        operator = world.login(http, "operator")
        bot = {"Authorization": f"Bearer {world.token}"}
        first = http.post(f"/backups/{backup_id}/verify", json={}, headers=operator.bearer)
        assert first.status_code == 200, first.text
        out = first.json()
        assert (out["ok"], out["mode"], out["vouched_by"]) == (
            True,
            "fast",
            found[0],
        )
        for body in ({"fast": True}, {"deep": "maybe"}, {"mode": "fast"}):
            refused = http.post(f"/backups/{backup_id}/verify", json=body, headers=bot)
            assert refused.status_code in (400, 422), (body, refused.text)
        listed = http.get("/verifications", params={"backup": backup_id}, headers=bot)
        assert len(listed.json()["verifications"]) == 1  # the refused ones recorded nothing
        art = _data(_manifest(home, backup_id))
        path = _writable(ingested["vault"] / art.path)
        raw = bytearray(path.read_bytes())
        row = art.segments.segments[2]
        raw[row.offset + row.size // 2] ^= 0x01
        path.write_bytes(bytes(raw))
        second = http.post(f"/backups/{backup_id}/verify", json={}, headers=bot)
        assert second.status_code == 200, second.text
        out = second.json()
        assert out["mode"] == "fast" and out["ok"] is False
        assert "segment-mismatch" in {f["code"] for f in out["findings"]}
        deep = http.post(f"/backups/{backup_id}/verify", json={"deep": True}, headers=bot)
        assert deep.json()["mode"] == "deep" and deep.json()["ok"] is False


@pytest.mark.e2e
def test_a_vouched_backup_whose_artifacts_were_deleted_is_not_passed(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """The artifacts removed from the vault as a deletion would, the catalog row left
    ``complete``: the genuine completion entry still vouches the same signed manifest, so
    the run is fast, and it fails on every artifact that is gone. (``backup delete`` itself
    is refused before the vault's own retention: the file vault locks its files.)"""
    backup_id = ingested["backup_id"]
    assert _found(home, backup_id) is not None
    gone = [a.path for a in _manifest(home, backup_id).artifacts]
    for name in gone:
        path = ingested["vault"] / name
        path.parent.chmod(0o700)
        _writable(path).unlink()
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert out["mode"] == "fast"
    assert code == 1 and out["ok"] is False, out
    named = json.dumps(out["findings"])
    assert all(name in named for name in gone), out["findings"]


@pytest.mark.e2e
def test_a_manifest_edited_behind_its_signature_with_the_old_digest_kept_is_not_vouched(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """The catalog's manifest edited (one segment row dropped from the data artifact's
    table) and not re-signed, its ``manifest_sha256`` column and envelope left as the
    writer's: the vouch takes the digest of a statement whose signature verified, never the
    column, so nothing vouches; the run is deep and fails."""
    backup_id = ingested["backup_id"]
    raw, digest, _ = _row(home, backup_id)
    predicate = json.loads(raw)
    body = predicate.get("predicate", predicate)
    (art,) = [x for x in body["artifacts"] if x["path"].endswith("customers.bson.age")]
    art["segments"]["table"].pop()
    edited = json.dumps(predicate).encode()
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update backups set manifest = ? where id = ?", (edited, backup_id))
    assert _row(home, backup_id)[1] == digest
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert out["mode"] == "deep" and out["vouched_by"] is None, out
    assert code == 1 and out["ok"] is False
