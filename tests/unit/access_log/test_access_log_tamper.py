"""Attacks on the access log, made directly on the SQLite catalog or on an export file: each
is caught by `verify` (with its finding code), and the signer refuses to sign over it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.errors import FormatError, IntegrityError, SigningRefused
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, sign_checkpoint
from affidavit.models.access import Outcome
from affidavit.services import access_log as svc
from affidavit.services import ledger as ledger_svc
from affidavit.services.context import App, open_app

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = T0 - timedelta(days=500)


def _request(n: int, at: datetime = T0) -> object:
    return svc.request_entry(
        started=at + timedelta(seconds=n),
        identity="alice" if n % 2 else "bob",
        auth_method="session",
        method="GET",
        route="/api/v1/backups/{backup_id}",
        outcome=Outcome.ALLOWED,
        client_ip="192.0.2.10",
        user_agent="curl/8.5.0",
        subject=f"backup:bk-{n}",
        status=200,
        latency_us=1000,
    )


@pytest.fixture
def logged(app: App) -> App:
    """Eleven entries in three signed batches (sizes 3, 7, 11); the first three are old."""
    svc.record(app, [_request(n, OLD) for n in range(3)])  # type: ignore[misc]
    svc.record(app, [_request(n) for n in range(3, 7)])  # type: ignore[misc]
    svc.record(app, [_request(n) for n in range(7, 11)])  # type: ignore[misc]
    assert svc.verify(app).ok
    return app


@contextmanager
def db(app: App) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(app.settings.home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


def codes(app: App) -> set[str]:
    return {f.code.value for f in svc.verify(app).findings}


def refused(app: App) -> None:
    """The next process (a fresh App, reading the catalog) refuses to sign."""
    with open_app(app.settings) as fresh, pytest.raises(SigningRefused):
        svc.record(fresh, [_request(99)])  # type: ignore[list-item]


def signs_on_without_laundering(app: App, found: set[str]) -> None:
    """The signer signs on from the tree it knows (its root is not the altered one), and the
    alteration stays visible."""
    with open_app(app.settings) as fresh:
        svc.record(fresh, [_request(99)])  # type: ignore[list-item]
    assert found <= codes(app)


def test_an_edited_payload_is_caught(logged: App) -> None:
    with db(logged) as con:
        con.execute("UPDATE access_log_entries SET entry = replace(entry, 'bob', 'eve') "
                    "WHERE seq = 4")  # fmt: skip
    found = codes(logged)
    assert {"stored-leaf-mismatch", "root-mismatch"} <= found
    assert ledger_svc.verify_catalog(logged).ok  # the other partition is untouched


def test_an_edited_payload_with_its_leaf_rewritten_is_caught(logged: App) -> None:
    with db(logged) as con:
        (entry,) = con.execute("SELECT entry FROM access_log_entries WHERE seq = 4").fetchone()
        forged = bytes(entry).replace(b"bob", b"eve")
        con.execute("UPDATE access_log_entries SET entry = ?, leaf_hash = ?, identity = 'eve' "
                    "WHERE seq = 4", (forged, merkle.leaf_hash(forged)))  # fmt: skip
    found = codes(logged)
    assert "root-mismatch" in found
    assert "stored-nodes-mismatch" in found  # the level-1 hash in row 5 covers leaf 4
    signs_on_without_laundering(logged, found)


def test_an_edited_leaf_hash_is_caught(logged: App) -> None:
    with db(logged) as con:
        con.execute("UPDATE access_log_entries SET leaf_hash = ? WHERE seq = 2", (b"\1" * 32,))
    assert "stored-leaf-mismatch" in codes(logged)


def test_an_edited_stored_node_is_caught(logged: App) -> None:
    with db(logged) as con:  # row 5 closes the subtree 4..5, which both proofs go through
        con.execute("UPDATE access_log_entries SET nodes = ? WHERE seq = 5", (b"\2" * 32,))
    assert codes(logged) == {"stored-nodes-mismatch", "checkpoint-inconsistent"}


def test_an_edited_node_of_the_frontier_is_refused(logged: App) -> None:
    with db(logged) as con:  # row 7 closes the subtrees 6..7, 4..7 and 0..7 (the frontier's)
        con.execute("UPDATE access_log_entries SET nodes = ? WHERE seq = 7", (b"\2" * 96,))
    assert "stored-nodes-mismatch" in codes(logged)
    refused(logged)  # the new tree would not extend the one the key signed


def test_a_deleted_row_is_a_gap(logged: App) -> None:
    with db(logged) as con:
        con.execute("DELETE FROM access_log_entries WHERE seq = 5")
    assert {"seq-gap", "root-mismatch"} <= codes(logged)
    signs_on_without_laundering(logged, {"seq-gap", "root-mismatch"})


def test_reordered_rows_are_caught(logged: App) -> None:
    with db(logged) as con:
        con.execute("UPDATE access_log_entries SET seq = -1 WHERE seq = 4")
        con.execute("UPDATE access_log_entries SET seq = 4 WHERE seq = 5")
        con.execute("UPDATE access_log_entries SET seq = 5 WHERE seq = -1")
    assert {"seq-mismatch", "root-mismatch"} <= codes(logged)


def test_the_query_copies_must_be_the_payloads(logged: App) -> None:
    with db(logged) as con:  # hides seq 3 from `show --identity alice`
        con.execute("UPDATE access_log_entries SET identity = 'nobody' WHERE seq = 3")
    assert codes(logged) == {"column-mismatch"}


def test_a_forged_checkpoint_does_not_verify(logged: App) -> None:
    identity = logged.ledger_identity()
    assert identity is not None
    other = NoteSigner(identity.origin, SigningKey.generate())  # same name, another key
    fake = Checkpoint(origin=identity.origin + "/access-log", size=11, root=b"\3" * 32)
    with db(logged) as con:
        con.execute("UPDATE access_log_checkpoints SET note = ? WHERE size = 11",
                    (sign_checkpoint(fake, other),))  # fmt: skip
    assert "checkpoint-wrong-key" in codes(logged)
    with db(logged) as con:  # a bit flipped in the genuine signature
        (note,) = con.execute("SELECT note FROM access_log_checkpoints WHERE size = 7").fetchone()
        text, sig = note.rsplit(" ", 1)
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        con.execute("UPDATE access_log_checkpoints SET note = ? WHERE size = 7",
                    (f"{text} {flipped}",))  # fmt: skip
    assert "checkpoint-bad-signature" in codes(logged)
    refused(logged)


def test_a_ledger_checkpoint_cannot_pass_for_an_access_log_one(logged: App) -> None:
    """Both are signed by the ledger key; the origin line tells them apart."""
    with logged.read() as uow:
        size, note = uow.ledger.latest_checkpoint() or (0, "")
    with db(logged) as con:
        con.execute("DELETE FROM access_log_checkpoints WHERE size = 11")
        con.execute("INSERT INTO access_log_checkpoints (size, root, note, created_at) "
                    "VALUES (11, ?, ?, 'x')", (b"\0" * 32, note))  # fmt: skip
    found = codes(logged)
    assert "checkpoint-other-origin" in found
    with pytest.raises(SigningRefused, match="not an access-log checkpoint"):
        svc.record(logged, [_request(99)])  # type: ignore[list-item]
    assert size > 0


def test_a_wiped_access_log_is_caught_by_the_signers_memory(logged: App) -> None:
    with db(logged) as con:
        con.execute("DELETE FROM access_log_entries")
        con.execute("DELETE FROM access_log_checkpoints")
    assert codes(logged) == {"checkpoint-beyond-end"}
    refused(logged)


def test_removed_checkpoints_and_appended_rows_are_refused(logged: App) -> None:
    with db(logged) as con:
        con.execute("DELETE FROM access_log_checkpoints WHERE size = 11")
    assert svc.verify(logged).ok  # every entry still matches the memory's signed root
    refused(logged)  # but the signer will not go on without its checkpoint


def test_an_appended_unsigned_row_is_caught(logged: App) -> None:
    entry = svc.request_entry(started=T0, identity="mallory", auth_method="session",
                              method="GET", route="/x", outcome="allowed")  # fmt: skip
    from dataclasses import replace

    forged = replace(entry, seq=11).canonical()
    with db(logged) as con:
        con.execute("INSERT INTO access_log_entries (seq, time, identity, action, subject, "
                    "outcome, entry, leaf_hash, nodes) VALUES (11, ?, 'mallory', 'GET /x', "
                    "NULL, 'allowed', ?, ?, x'')", (entry.time, forged, merkle.leaf_hash(forged)))  # fmt: skip
    assert "unsigned-entries" in codes(logged)
    refused(logged)


def test_expired_then_restored_with_other_content_is_caught(logged: App) -> None:
    with db(logged) as con:
        (original,) = con.execute("SELECT entry FROM access_log_entries WHERE seq = 1").fetchone()
    assert svc.expire(logged, now=T0).count == 3
    assert svc.verify(logged).ok
    forged = bytes(original).replace(b"alice", b"carol")
    with db(logged) as con:
        con.execute("UPDATE access_log_entries SET entry = ? WHERE seq = 1", (forged,))
    assert {"stored-leaf-mismatch", "payload-after-expiry"} <= codes(logged)
    with pytest.raises(IntegrityError, match="refusing to expire"):
        svc.expire(logged, now=T0 + timedelta(days=400))


def test_a_payload_dropped_without_expiry_is_caught(logged: App) -> None:
    with db(logged) as con:
        con.execute("UPDATE access_log_entries SET entry = NULL WHERE seq = 6")
    assert codes(logged) == {"payload-missing"}
    with db(logged) as con:  # disguised as an expiry, but the ledger recorded none
        con.execute("UPDATE access_log_entries SET expired_at = '2026-12-01T00:00:00.000000Z' "
                    "WHERE seq = 6")  # fmt: skip
    report = svc.verify(logged)
    assert [f.code.value for f in report.findings] == ["payload-missing"]
    assert "no access_log.expired event" in report.findings[0].message


def test_a_row_without_payload_or_leaf_is_caught(logged: App) -> None:
    with db(logged) as con:
        con.execute("UPDATE access_log_entries SET entry = NULL, leaf_hash = x'00' WHERE seq = 8")
    assert {"leaf-missing", "payload-missing", "root-mismatch"} <= codes(logged)


# -- the export file, verified and tampered offline ----------------------------------------------


@pytest.fixture
def exported(logged: App, tmp_path: Path) -> tuple[Path, str]:
    svc.expire(logged, now=T0)
    out = tmp_path / "access.jsonl"
    svc.export(logged, out)
    return out, ledger_svc.ledger_vkey(logged.settings)


def _edit(path: Path, seq: int, change: dict[str, object], *, drop: bool = False) -> None:
    lines = path.read_text("utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        obj = json.loads(line)
        if obj["type"] == "entry" and obj["seq"] == seq:
            if drop:
                continue
            obj.update(change)
            kept.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
            continue
        kept.append(line)
    path.write_text("".join(kept), "utf-8")


def file_codes(path: Path, vkey: str) -> set[str]:
    return {f.code.value for f in svc.verify_file(path, vkey=vkey).findings}


def test_the_export_verifies_without_the_catalog(exported: tuple[Path, str]) -> None:
    path, vkey = exported
    report = svc.verify_file(path, vkey=vkey)
    assert report.ok
    assert (report.size, report.expired) == (11, 3)


def test_an_edited_payload_in_the_export_is_caught(exported: tuple[Path, str]) -> None:
    path, vkey = exported
    entry = json.loads(path.read_text("utf-8").splitlines()[-1])["entry"]
    _edit(path, 10, {"entry": entry.replace("alice", "eve").replace("bob", "eve")})
    assert {"stored-leaf-mismatch", "root-mismatch"} <= file_codes(path, vkey)


def test_an_edited_expired_leaf_in_the_export_is_caught(exported: tuple[Path, str]) -> None:
    path, vkey = exported
    _edit(path, 1, {"leaf_hash": "11" * 32})
    assert file_codes(path, vkey) == {"root-mismatch"}


def test_a_payload_dropped_from_the_export_is_caught(exported: tuple[Path, str]) -> None:
    path, vkey = exported
    lines = path.read_text("utf-8").splitlines(keepends=True)
    obj = json.loads(lines[-2])
    del obj["entry"]
    lines[-2] = json.dumps(obj, separators=(",", ":")) + "\n"
    path.write_text("".join(lines), "utf-8")
    assert file_codes(path, vkey) == {"payload-missing"}


def test_a_dropped_entry_line_is_caught(exported: tuple[Path, str]) -> None:
    path, vkey = exported
    _edit(path, 5, {}, drop=True)
    assert {"seq-gap", "root-mismatch"} <= file_codes(path, vkey)


def test_the_export_with_another_key_or_cut_short(exported: tuple[Path, str]) -> None:
    path, _vkey = exported
    other = NoteSigner("affidavit.local/x/1", SigningKey.generate()).verifier().vkey()
    assert "checkpoint-wrong-key" in file_codes(path, other)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(FormatError, match="truncated"):
        svc.verify_file(path, vkey=other)
