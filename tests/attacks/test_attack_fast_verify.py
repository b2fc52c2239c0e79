"""Fast verification after a deep one (issue 18, session 10), and the ways around it.

A verification of an artifact with a segment table runs deep (whole-file and plaintext
digests recomputed: the signed manifest proven self-consistent) unless the ledger vouches a
passed deep verification of the same signed manifest; then fast. What is attacked here is
the vouching: a catalog row claiming a deep pass, a ledger entry written or rewritten in the
catalog behind affidavit's back, a deep pass of another (re-signed) manifest; and what fast
mode still catches: a tampered segment, worded exactly as a deep run words it. Every check
of the vouch (:func:`affidavit.services.verify.vouch.deep_vouch`) has a test that tries to
get around it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_attack_segments_whole_digest import _resign_digest
from test_verify_segments import (
    _codes,
    _data,
    _manifest,
    _verify,
    _writable,
    ingested,
    small_segments,
)

from affidavit.config import load_settings
from affidavit.crypto.age_reader import AgePayload
from affidavit.ledger import merkle
from affidavit.services.context import open_app
from affidavit.services.verify import reading
from affidavit.services.verify.vouch import deep_vouch

__all__ = ["ingested", "small_segments"]  # fixtures, used by name

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject


def _entries(
    home: Path, action: str = "verification.completed"
) -> list[tuple[int, dict[str, Any]]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select seq, entry from ledger_entries where action = ? order by seq", (action,)
        ).fetchall()
    return [(int(seq), json.loads(bytes(entry))) for seq, entry in rows]


def _event(home: Path, verification_id: str) -> tuple[int, dict[str, Any]]:
    (found,) = [
        (seq, e["details"])
        for seq, e in _entries(home)
        if e["details"].get("verification_id") == verification_id
    ]
    return found


def _row_coverage(home: Path, verification_id: str) -> dict[str, Any]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (coverage,) = db.execute(
            "select coverage from verifications where id = ?", (verification_id,)
        ).fetchone()
    found: dict[str, Any] = json.loads(coverage)
    return found


def _signed_coverage(home: Path, verification_id: str) -> dict[str, Any]:
    import base64

    with sqlite3.connect(home / "catalog.sqlite") as db:
        (envelope,) = db.execute(
            "select envelope from verifications where id = ?", (verification_id,)
        ).fetchone()
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    found: dict[str, Any] = statement["predicate"]["coverage"]
    return found


def _manifest_sha256(home: Path, backup_id: str) -> str:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (digest,) = db.execute(
            "select manifest_sha256 from backups where id = ?", (backup_id,)
        ).fetchone()
    return str(digest)


def _vouch(home: Path, backup_id: str) -> int | None:
    with open_app(load_settings(home=home)) as app:
        return deep_vouch(app, backup_id, _manifest_sha256(home, backup_id))


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What the segment path computed: ``read_segments``'s ``deep`` and ``whole_digest``
    per artifact, and ``read_segment``'s ``plain_digest`` per segment."""
    seen: dict[str, list[Any]] = {"segments": [], "plain_digest": []}
    real_segments = reading.read_segments
    real_read = AgePayload.read_segment

    def segments(*args: Any, **kwargs: Any) -> Any:
        seen["segments"].append((kwargs["deep"], kwargs["whole_digest"]))
        return real_segments(*args, **kwargs)

    def read(self: AgePayload, *args: Any, **kwargs: Any) -> Any:
        seen["plain_digest"].append(kwargs.get("plain_digest", True))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(reading, "read_segments", segments)
    monkeypatch.setattr(AgePayload, "read_segment", read)
    return seen


def _reset(seen: dict[str, list[Any]]) -> None:
    for calls in seen.values():
        calls.clear()


# -- the modes -------------------------------------------------------------------------------


def test_the_first_verification_is_deep_and_later_ones_fast(
    cli: Any, home: Path, ingested: dict[str, Any], passes: dict[str, list[Any]]
) -> None:
    backup_id = ingested["backup_id"]
    code, first = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and (first["mode"], first["vouched_by"]) == ("deep", None)
    assert passes["segments"] and all(s == (True, True) for s in passes["segments"])
    assert passes["plain_digest"] and all(passes["plain_digest"])
    seq, details = _event(home, first["id"])
    assert details["mode"] == "deep" and details["tables_proven"] is True
    assert details["manifest_sha256"] == _manifest_sha256(home, backup_id)

    _reset(passes)
    code, fast = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and (fast["mode"], fast["vouched_by"]) == ("fast", seq)
    # every artifact still by its segments (each byte read, decrypted, authenticated,
    # framed), without the whole-file pass and without a plaintext digest
    assert len(passes["segments"]) == 6 and all(s == (False, False) for s in passes["segments"])
    assert passes["plain_digest"] and not any(passes["plain_digest"])
    assert fast["findings"] == [] and fast["coverage"]["artifacts_checked"] == 6
    # the mode is signed, in the catalog's row and in the ledger's event
    for coverage in (_signed_coverage(home, fast["id"]), _row_coverage(home, fast["id"])):
        assert (coverage["mode"], coverage["vouched_by"]) == ("fast", seq)
    _, fast_details = _event(home, fast["id"])
    assert (fast_details["mode"], fast_details["vouched_by"]) == ("fast", seq)
    assert fast_details["tables_proven"] is False  # a fast run vouches nothing
    assert _vouch(home, backup_id) == seq  # still the deep one

    _reset(passes)
    code, forced = _verify(cli, backup_id, "--workers", "2", "--deep")
    assert code == 0 and (forced["mode"], forced["vouched_by"]) == ("deep", None)
    assert all(s == (True, True) for s in passes["segments"]) and all(passes["plain_digest"])
    assert _vouch(home, backup_id) == _event(home, forced["id"])[0]  # the newest deep one
    listed = json.loads(cli("verify", "list", "--json").out)["verifications"]
    assert [v["mode"] for v in listed] == ["deep", "fast", "deep"]
    assert cli("ledger", "verify").code == 0
    shown = cli("verify", backup_id)
    assert shown.code == 0 and "fast after the deep verification at ledger seq" in shown.out


def test_a_sample_is_not_a_deep_pass_of_every_table(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A deep sample proves the tables of the artifacts it read only: it vouches nothing."""
    code, sample = _verify(cli, ingested["backup_id"], "--sample", "50")
    assert code == 0 and sample["mode"] == "deep"
    assert _event(home, sample["id"])[1]["tables_proven"] is False
    code, out = _verify(cli, ingested["backup_id"])
    assert code == 0 and out["mode"] == "deep"


def test_a_failed_deep_verification_vouches_nothing(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    art = _data(_manifest(home, ingested["backup_id"]))
    path = _writable(ingested["vault"] / art.path)
    genuine = path.read_bytes()
    raw = bytearray(genuine)
    raw[art.segments.segments[3].offset + 100] ^= 1
    path.write_bytes(bytes(raw))
    code, failed = _verify(cli, ingested["backup_id"])
    assert code == 1 and failed["mode"] == "deep"
    path.write_bytes(genuine)  # repaired (and locked again)
    path.chmod(0o444)
    code, out = _verify(cli, ingested["backup_id"])
    assert code == 0, out["findings"]
    assert out["mode"] == "deep"  # the failed run vouched nothing


# -- attacks on the vouch --------------------------------------------------------------------


def test_a_forged_catalog_row_claiming_a_deep_pass_does_not_make_a_run_fast(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A catalog writer inserts a verification row that says: deep, passed, tables proven.
    The vouch reads the ledger only: the next run is deep."""
    backup_id = ingested["backup_id"]
    coverage = {"mode": "deep", "vouched_by": None, "tables_proven": True}
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "insert into verifications (id, backup_id, kind, started_at, finished_at, ok, "
            "coverage, findings) values (?, ?, 'full', ?, ?, 1, ?, '[]')",
            (
                "vf-20260101T000000Z-forged",
                backup_id,
                "2026-01-01 00:00:00.000000+00:00",
                "2026-01-01 00:00:01.000000+00:00",
                json.dumps(coverage),
            ),
        )
    assert _vouch(home, backup_id) is None
    code, out = _verify(cli, backup_id)
    assert code == 0 and (out["mode"], out["vouched_by"]) == ("deep", None)


def _forged_entry(home: Path, backup_id: str, seq: int) -> bytes:
    event = {
        "seq": seq,
        "time": "2026-12-05T00:00:00Z",
        "actor": "tester@example.com",
        "action": "verification.completed",
        "subject": f"backup:{backup_id}",
        "details": {
            "verification_id": "vf-20261205T000000Z-forged",
            "kind": "full",
            "ok": True,
            "findings": [],
            "mode": "deep",
            "vouched_by": None,
            "manifest_sha256": _manifest_sha256(home, backup_id),
            "tables_proven": True,
        },
        "client": {},
    }
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


def test_a_ledger_entry_appended_behind_affidavits_back_does_not_vouch(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A well-formed ``verification.completed`` entry (deep, ok, tables proven, the right
    manifest digest, a correct leaf hash) inserted at the ledger's end: the key never signed
    a tree that holds it, so it vouches nothing (and the signer refuses the next change)."""
    backup_id = ingested["backup_id"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (size,) = db.execute("select count(*) from ledger_entries").fetchone()
        entry = _forged_entry(home, backup_id, size)
        db.execute(
            "insert into ledger_entries (seq, time, actor, action, subject, entry, leaf_hash, "
            "nodes) values (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                size,
                "2026-12-05T00:00:00Z",
                "tester@example.com",
                "verification.completed",
                f"backup:{backup_id}",
                entry,
                merkle.leaf_hash(entry),
                b"",
            ),
        )
    assert _vouch(home, backup_id) is None
    r = cli("verify", backup_id, "--json")
    assert r.code == 3 and "Traceback" not in r.err and "refusing to sign" in r.err


def test_a_genuine_entry_rewritten_in_the_catalog_does_not_vouch(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A genuine deep *sample* (it proves no table) whose entry is rewritten in the catalog
    to claim ``tables_proven``: its leaf is no longer the one the key signed, so the inclusion
    proof fails and the next run is deep."""
    backup_id = ingested["backup_id"]
    code, sample = _verify(cli, backup_id, "--sample", "100")
    assert code == 0
    seq, _ = _event(home, sample["id"])
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select entry from ledger_entries where seq = ?", (seq,)).fetchone()
        event = json.loads(bytes(raw))
        event["details"]["tables_proven"] = True
        forged = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        db.execute("update ledger_entries set entry = ? where seq = ?", (forged, seq))
    assert _vouch(home, backup_id) is None
    code, out = _verify(cli, backup_id)
    assert out["mode"] == "deep"
    assert cli("ledger", "verify").code != 0  # and the ledger's own check names it


def test_a_deep_pass_of_another_manifest_does_not_vouch_a_re_signed_one(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """A deep pass proves the genuine manifest; the backup is then re-signed (with the
    ledger key) with a table that matches the file under a whole-file digest that does not:
    a self-contradicting manifest with another digest. The next run is deep and reaches the
    sequential run's verdict, as at a first verification."""
    backup_id = ingested["backup_id"]
    code, first = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and first["mode"] == "deep"
    _resign_digest(home, ingested["vault"], backup_id)
    assert _vouch(home, backup_id) is None
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert code == 1 and out["mode"] == "deep"
    assert "artifact-hash-mismatch" in _codes(out), out["findings"]


# -- what a fast run still finds ---------------------------------------------------------------


def test_a_tampered_segment_in_fast_mode_is_found_as_a_deep_run_finds_it(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    backup_id = ingested["backup_id"]
    code, first = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and first["mode"] == "deep"
    art = _data(_manifest(home, backup_id))
    path = _writable(ingested["vault"] / art.path)
    row = art.segments.segments[5]
    raw = bytearray(path.read_bytes())
    raw[row.offset + row.size // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    code, fast = _verify(cli, backup_id, "--workers", "2")
    assert code == 1 and fast["mode"] == "fast"
    (found,) = [f for f in fast["findings"] if f["code"] == "segment-mismatch"]
    assert [s["segment"] for s in found["details"]["segments"]] == [5]
    assert {"artifact-hash-mismatch", "artifact-undecryptable"} <= _codes(fast)
    code, deep = _verify(cli, backup_id, "--workers", "2", "--deep")
    assert code == 1 and deep["mode"] == "deep"
    assert fast["findings"] == deep["findings"]  # word for word


@pytest.mark.parametrize("deep", [True, False], ids=["deep", "fast"])
def test_cluster_workers_skip_the_plaintext_digest_only_in_fast_mode(
    home: Path, ingested: dict[str, Any], deep: bool
) -> None:
    """The worker's function (:func:`check_segment`, run here as a cluster's worker runs
    it) over every segment of the data artifact: a fast job returns no plaintext digest and
    the merge still gives the signed fingerprint; a deep one returns each segment's."""
    from affidavit.crypto.age_reader import AgeFile
    from affidavit.services import backup as backup_service
    from affidavit.services.keys import keystore_for, unwrap_identity
    from affidavit.services.verify.segments import (
        Remote,
        SegmentJob,
        SegmentPart,
        SegmentUse,
        check_segment,
        read_segments,
    )

    backup_id = ingested["backup_id"]
    manifest = _manifest(home, backup_id)
    art = _data(manifest)
    with open_app(load_settings(home=home)) as app:
        stored = backup_service.get_backup(app, backup_id)
        identity = unwrap_identity(keystore_for(app.settings), stored)
        with app.read() as uow:
            vault = uow.vaults.get(stored.vault)
    parts: list[tuple[SegmentJob, SegmentPart]] = []

    def run(jobs: Any) -> Iterator[SegmentPart]:
        for job in jobs:
            part = check_segment(job)
            parts.append((job, part))
            yield part

    with (ingested["vault"] / art.path).open("rb") as fh:
        got = read_segments(
            AgeFile.from_file(fh, identity),
            art.segments,
            size=art.size,
            plain_size=art.plain_size,
            workers=1,
            use=SegmentUse(frame=True),
            dataset="shop.customers",
            advance=lambda n: None,
            remote=Remote(vault=vault, path=art.path, run=run),
            deep=deep,
        )
    assert got.ok and got.fingerprint == manifest.fingerprints["shop.customers"]
    assert len(parts) == len(art.segments.segments) >= 20
    for (job, part), row in zip(parts, art.segments.segments, strict=True):
        assert job.plain_digest is deep and part.cipher_sha256 == row.sha256
        assert part.plain_sha256 == (row.plain_sha256 if deep else None)
