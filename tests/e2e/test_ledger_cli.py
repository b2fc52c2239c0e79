"""The ledger CLI end to end, and tamper attacks made directly on the SQLite catalog."""

from __future__ import annotations

import json
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import Settings
from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.errors import IntegrityError
from affidavit.ledger import merkle
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    Statement,
    Subject,
    verify_attestation,
)
from affidavit.ledger.checkpoint import Checkpoint, sign_checkpoint
from affidavit.models.ledger import Event
from affidavit.services.context import App, open_app
from affidavit.services.ledger import attest_and_record, inclusion_proof

pytestmark = pytest.mark.e2e

Cli = Callable[..., Any]


@pytest.fixture
def busy(settings: Settings, home: Path) -> Path:
    """The ``home`` ledger with eight more events, each in its own change (own checkpoint)."""
    with open_app(settings) as app:
        for i in range(8):
            with app.change() as change:
                change.record("test.event", f"thing:{i}", {"i": i, "name": f"item {i}"})
    return home


@contextmanager
def db(home: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


def _verify(cli: Cli, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("ledger", "verify", "--json", *extra)
    return result.code, json.loads(result.out)


def _codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


def _entry(con: sqlite3.Connection, seq: int) -> bytes:
    return bytes(con.execute("SELECT entry FROM ledger_entries WHERE seq=?", (seq,)).fetchone()[0])


def _forged(seq: int, **details: Any) -> bytes:
    return Event(
        seq=seq,
        time="2026-01-01T00:00:00.000000Z",
        actor="mallory",
        action="test.event",
        subject="thing:forged",
        details=details,
    ).canonical()


def _vkey(cli: Cli) -> str:
    return str(cli("ledger", "key").out.strip())


# -- the happy path -------------------------------------------------------------------------


def test_ledger_init_creates_key_and_origin_once(home: Path, cli: Cli) -> None:
    key = home / "keys" / "ledger.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    origin = (home / "keys" / "ledger.origin").read_text()
    vkey = _vkey(cli)
    assert vkey.startswith(origin.strip() + "+")
    size = json.loads(cli("ledger", "verify", "--json").out)["size"]
    assert cli("init").code == 0
    assert _vkey(cli) == vkey  # same key, nothing re-created
    assert json.loads(cli("ledger", "verify", "--json").out)["size"] == size  # nothing recorded
    actions = [e["action"] for e in json.loads(cli("ledger", "show", "--json").out)["entries"]]
    assert actions[:2] == ["ledger.key_created", "catalog.initialized"]


def test_ledger_clean_verify_show_proof(busy: Path, cli: Cli) -> None:
    code, report = _verify(cli)
    assert code == 0 and report["ok"] and report["findings"] == []
    assert report["size"] == 10 and report["checkpoint"]["size"] == 10
    shown = json.loads(
        cli("ledger", "show", "--action", "test.event", "--limit", "3", "--json").out
    )
    assert [e["seq"] for e in shown["entries"]] == [2, 3, 4]
    since = shown["entries"][1]["time"]
    later = json.loads(cli("ledger", "show", "--since", since, "--json").out)["entries"]
    assert later[0]["seq"] == 3
    assert cli("ledger", "show").code == 0
    proof = json.loads(cli("ledger", "proof", "--seq", "4", "--json").out)
    merkle.verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        4,
        proof["tree_size"],
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root"]),
    )
    assert merkle.leaf_hash(proof["entry"].encode()) == bytes.fromhex(proof["leaf_hash"])
    older = json.loads(cli("ledger", "proof", "--seq", "4", "--size", "6", "--json").out)
    assert older["tree_size"] == 6


def test_ledger_checkpoint_publish_is_recorded_and_refuses_split_view(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    witness = tmp_path / "witness"
    out = json.loads(cli("ledger", "checkpoint", "--publish", str(witness), "--json").out)
    assert (witness / "checkpoint-10.note").read_text() == out["note"]
    assert (witness / "latest.note").read_text() == out["note"]
    events = json.loads(
        cli("ledger", "show", "--action", "ledger.checkpoint_published", "--json").out
    )
    assert events["entries"][0]["details"]["size"] == 10
    # publishing again extends consistently
    again = json.loads(cli("ledger", "checkpoint", "--publish", str(witness), "--json").out)
    assert again["size"] == 11
    # a different checkpoint of the same size at the witness is a split view
    (witness / "checkpoint-12.note").write_text("someone else's checkpoint\n")
    result = cli("ledger", "checkpoint", "--publish", str(witness))
    assert result.code == 1 and "different checkpoint" in result.err
    bad = cli("ledger", "checkpoint", "--publish", "ftp://witness/x")
    assert bad.code == 2 and "cannot publish" in bad.err


def test_ledger_checkpoint_publishes_to_an_s3_witness(
    busy: Path, cli: Cli, s3_env: str, tmp_path: Path
) -> None:
    import boto3

    bucket = f"witness-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/acme/ledger"
    out = json.loads(cli("ledger", "checkpoint", "--publish", url, "--json").out)
    key = f"acme/ledger/checkpoint-{out['size']}.note"
    assert out["published"] == f"{url}/checkpoint-{out['size']}.note"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert body == out["note"]
    # the next publication proves it extends the newest one there
    again = json.loads(cli("ledger", "checkpoint", "--publish", url, "--json").out)
    assert again["size"] == out["size"] + 1
    # a forged checkpoint of the next size already at the witness: a split view, exit 1
    s3.put_object(Bucket=bucket, Key=f"acme/ledger/checkpoint-{again['size'] + 1}.note",
                  Body=b"someone else's checkpoint\n")  # fmt: skip
    result = cli("ledger", "checkpoint", "--publish", url)
    assert result.code == 1, result.err
    events = json.loads(
        cli("ledger", "show", "--action", "ledger.checkpoint_published", "--json").out
    )["entries"]
    assert [e["details"]["destination"] for e in events] == [url, url]
    missing = cli("ledger", "checkpoint", "--publish", "s3://no-such-bucket-x1/p")
    assert missing.code == 3, missing.err


def test_ledger_attest_and_record_has_inclusion_proof(busy: Path, settings: Settings) -> None:
    statement = Statement(
        subjects=(Subject("backup.tar", "ab" * 32),),
        predicate_type=BACKUP_PREDICATE_TYPE,
        predicate={"source": "orders"},
    )
    with open_app(settings) as app:
        with app.change() as change:
            envelope = attest_and_record(change, statement)
            seq = change.events[-1].seq
        identity = app.ledger_identity()
        assert identity is not None
        assert (
            verify_attestation(envelope, {identity.keyid: identity.signer.key.public_key})
            == statement
        )
        proof = inclusion_proof(app, seq)
    event = Event.from_canonical(proof.entry)
    assert event.action == "attestation.created"
    from affidavit.crypto.digest import sha256_hex

    assert event.details["envelope_sha256"] == sha256_hex(envelope.to_json().encode())
    assert event.details["payload_sha256"] == sha256_hex(envelope.payload)


# -- tamper attacks on the catalog ----------------------------------------------------------


def test_tamper_edit_one_entry_details(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        event = json.loads(_entry(con, 5))
        event["details"]["name"] = "edited"
        forged = Event.from_canonical(
            Event(**{**event, "client": _client(event)}).canonical()
        ).canonical()
        con.execute("UPDATE ledger_entries SET entry=? WHERE seq=5", (forged,))
    code, report = _verify(cli)
    assert code == 1 and not report["ok"]
    assert {"stored-leaf-mismatch", "root-mismatch"} <= _codes(report)
    assert any(f["seq"] == 5 for f in report["findings"] if f["code"] == "stored-leaf-mismatch")
    root_finding = next(f for f in report["findings"] if f["code"] == "root-mismatch")
    assert root_finding["seq"] == 5  # localised by the per-change checkpoints


def _client(event: dict[str, Any]) -> Any:
    from affidavit.models.ledger import ClientInfo

    return ClientInfo(**event["client"])


def test_tamper_edit_entry_and_its_leaf_hash_and_nodes(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        forged = _forged(5, i=5)
        leaves = [bytes(r[0]) for r in con.execute("SELECT leaf_hash FROM ledger_entries")]
        leaves[5] = merkle.leaf_hash(forged)
        # the forger also rewrites the subtree hashes stored above leaf 5: (1, 2) in row 5,
        # (2, 1) in row 7 (after (1, 3)) and (3, 0) in row 7
        con.execute(
            "UPDATE ledger_entries SET entry=?, leaf_hash=?, nodes=? WHERE seq=5",
            (forged, leaves[5], merkle.root(leaves[4:6])),
        )
        con.execute(
            "UPDATE ledger_entries SET nodes=? WHERE seq=7",
            (merkle.root(leaves[6:8]) + merkle.root(leaves[4:8]) + merkle.root(leaves[0:8]),),
        )
    code, report = _verify(cli)
    assert code == 1 and "root-mismatch" in _codes(report)


def test_tamper_delete_a_row(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        con.execute("DELETE FROM ledger_entries WHERE seq=4")
    code, report = _verify(cli)
    assert code == 1
    gap = next(f for f in report["findings"] if f["code"] == "seq-gap")
    assert gap["seq"] == 4


def test_tamper_swap_two_rows(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        a, b = _entry(con, 3), _entry(con, 6)
        con.execute("UPDATE ledger_entries SET entry=? WHERE seq=3", (b,))
        con.execute("UPDATE ledger_entries SET entry=? WHERE seq=6", (a,))
    code, report = _verify(cli)
    assert code == 1
    assert {f["seq"] for f in report["findings"] if f["code"] == "seq-mismatch"} == {3, 6}


def test_tamper_insert_a_forged_row(busy: Path, cli: Cli) -> None:
    forged = _forged(10, i=99)
    with db(busy) as con:
        con.execute(
            "INSERT INTO ledger_entries(seq, time, actor, action, subject, entry, leaf_hash, "
            "nodes) VALUES (10, 't', 'mallory', 'test.event', 'x', ?, ?, X'')",
            (forged, merkle.leaf_hash(forged)),
        )
    code, report = _verify(cli)
    assert code == 1 and "unsigned-entries" in _codes(report)
    # and affidavit refuses to sign over it on the next change
    result = cli("ledger", "export", "--out", str(busy / "x.jsonl"))
    assert result.code == 3 and "refusing to sign" in result.err


def test_tamper_truncate_and_re_extend_to_same_size(busy: Path, cli: Cli, tmp_path: Path) -> None:
    old = tmp_path / "old.note"
    assert cli("ledger", "checkpoint", "--out", str(old)).code == 0
    with db(busy) as con:
        con.execute("DELETE FROM ledger_entries WHERE seq >= 6")
        con.execute("DELETE FROM ledger_checkpoints WHERE size > 6")
        for seq in range(6, 10):
            forged = _forged(seq, i=seq)
            con.execute(
                "INSERT INTO ledger_entries(seq, time, actor, action, subject, entry, leaf_hash, "
                "nodes) VALUES (?, 't', 'a', 'test.event', 'x', ?, ?, X'')",
                (seq, forged, merkle.leaf_hash(forged)),
            )
    code, report = _verify(cli, "--checkpoint", str(old))
    assert code == 1 and report["size"] == 10
    assert "old-checkpoint-inconsistent" in _codes(report)


def test_tamper_re_sign_with_a_different_key(busy: Path, cli: Cli) -> None:
    vkey = _vkey(cli)
    origin = vkey.split("+")[0]
    mallory = NoteSigner(origin, SigningKey.generate())
    with db(busy) as con:
        forged = _forged(9, i=9)
        con.execute(
            "UPDATE ledger_entries SET entry=?, leaf_hash=? WHERE seq=9",
            (forged, merkle.leaf_hash(forged)),
        )
        leaves = [
            merkle.leaf_hash(bytes(r[0]))
            for r in con.execute("SELECT entry FROM ledger_entries ORDER BY seq")
        ]
        for (size,) in con.execute("SELECT size FROM ledger_checkpoints").fetchall():
            note = sign_checkpoint(
                Checkpoint(origin=origin, size=size, root=merkle.root(leaves[:size])), mallory
            )
            con.execute("UPDATE ledger_checkpoints SET note=? WHERE size=?", (note, size))
    code, report = _verify(cli, "--public-key", vkey)
    assert code == 1
    assert {"checkpoint-wrong-key", "no-checkpoint"} <= _codes(report)


@pytest.mark.parametrize("line", [1, 2], ids=["size", "root"])
def test_tamper_alter_a_checkpoint_size_or_root(busy: Path, cli: Cli, line: int) -> None:
    with db(busy) as con:
        cid, note = con.execute(
            "SELECT size, note FROM ledger_checkpoints ORDER BY size DESC"
        ).fetchone()
        lines = note.split("\n")
        lines[line] = "9" if line == 1 else "A" * 43 + "="
        con.execute("UPDATE ledger_checkpoints SET note=? WHERE size=?", ("\n".join(lines), cid))
    code, report = _verify(cli)
    assert code == 1 and "checkpoint-bad-signature" in _codes(report)


def test_tamper_checkpoint_from_another_origin(busy: Path, cli: Cli, settings: Settings) -> None:
    with open_app(settings) as app:
        identity = app.ledger_identity()
        assert identity is not None
        with app.read() as uow:
            size = uow.ledger.size()
            from affidavit.ledger.log import LedgerLog

            root = LedgerLog(uow.ledger).root()
    note = sign_checkpoint(
        Checkpoint(origin="other.example/log", size=size, root=root), identity.signer
    )
    with db(busy) as con:
        con.execute(
            "INSERT OR REPLACE INTO ledger_checkpoints(size, root, note, created_at) "
            "VALUES (?, ?, ?, 't')",
            (size, root, note),
        )
    code, report = _verify(cli)
    assert code == 1 and "checkpoint-other-origin" in _codes(report)


def test_tamper_proof_with_wrong_length_hash(busy: Path, cli: Cli) -> None:
    proof = json.loads(cli("ledger", "proof", "--seq", "3", "--json").out)
    path = [bytes.fromhex(h) for h in proof["proof"]]
    path[0] = path[0][:31]
    with pytest.raises(IntegrityError, match="32-byte"):
        merkle.verify_inclusion(
            bytes.fromhex(proof["leaf_hash"]),
            3,
            proof["tree_size"],
            path,
            bytes.fromhex(proof["root"]),
        )


def test_tamper_export_file_with_a_line_removed(busy: Path, cli: Cli, tmp_path: Path) -> None:
    export = tmp_path / "ledger.jsonl"
    assert cli("ledger", "export", "--out", str(export)).code == 0
    lines = export.read_bytes().splitlines(keepends=True)
    entry_lines = [i for i, line in enumerate(lines) if line.startswith(b'{"type":"entry"')]
    del lines[entry_lines[4]]
    export.write_bytes(b"".join(lines))
    code, report = _verify(cli, "--file", str(export), "--public-key", _vkey(cli))
    assert code == 1 and "seq-gap" in _codes(report)


def test_tamper_stored_leaf_hash_changed_alone(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        con.execute("UPDATE ledger_entries SET leaf_hash=? WHERE seq=2", (bytes(32),))
    code, report = _verify(cli)
    assert code == 1
    assert [(f["code"], f["seq"]) for f in report["findings"]] == [("stored-leaf-mismatch", 2)]


def test_tamper_ledger_nodes_corrupted(busy: Path, cli: Cli) -> None:
    with db(busy) as con:  # subtree 2..3 (row 3's first hash) and subtree 0..7 (row 7's third)
        con.execute("UPDATE ledger_entries SET nodes=? WHERE seq=3", (bytes(64),))
        (row7,) = con.execute("SELECT nodes FROM ledger_entries WHERE seq=7").fetchone()
        con.execute("UPDATE ledger_entries SET nodes=? WHERE seq=7", (row7[:64] + bytes(32),))
    for seq in ("0", "8"):
        result = cli("ledger", "proof", "--seq", seq)
        assert result.code == 1 and "does not lead to the signed root" in result.err
        assert "Traceback" not in result.err
    code, report = _verify(cli)
    assert code == 1
    # the entries and checkpoints still agree: verify recomputed from the entries
    assert _codes(report) == {"stored-nodes-mismatch"}
    assert report["checkpoint"]["root"] == report["root"]


# -- the auditor's path -----------------------------------------------------------------------


def test_auditor_verifies_export_with_only_the_vkey(busy: Path, cli: Cli, tmp_path: Path) -> None:
    export = tmp_path / "ledger.jsonl"
    vkey = _vkey(cli)
    exported = json.loads(cli("ledger", "export", "--out", str(export), "--json").out)
    assert exported["entries"] == 10
    auditor_home = tmp_path / "auditor"  # never initialised: no catalog, no key
    result = cli(
        "ledger",
        "verify",
        "--file",
        str(export),
        "--public-key",
        vkey,
        "--json",
        home_dir=auditor_home,
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] and report["size"] == 10
    assert not auditor_home.exists()
    # the export itself was recorded, with the file's digest
    recorded = json.loads(cli("ledger", "show", "--action", "ledger.exported", "--json").out)
    assert recorded["entries"][0]["details"]["sha256"] == exported["sha256"]


# -- bad input ------------------------------------------------------------------------------


def _bad(result: Any) -> None:
    assert result.code == 2, result.err
    assert "error:" in result.err and "hint:" in result.err
    assert "Traceback" not in result.err and result.err.count("error:") == 1


def test_bad_input_garbage_checkpoint_file(busy: Path, cli: Cli, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.note"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    _bad(cli("ledger", "verify", "--checkpoint", str(garbage)))


def test_bad_input_malformed_public_key(busy: Path, cli: Cli) -> None:
    _bad(cli("ledger", "verify", "--public-key", "name+zz+notbase64"))


def test_bad_input_seq_out_of_range(busy: Path, cli: Cli) -> None:
    _bad(cli("ledger", "proof", "--seq", "1000"))


def test_bad_input_export_truncated_mid_line(busy: Path, cli: Cli, tmp_path: Path) -> None:
    export = tmp_path / "ledger.jsonl"
    assert cli("ledger", "export", "--out", str(export)).code == 0
    data = export.read_bytes()
    export.write_bytes(data[: len(data) - 30])
    _bad(cli("ledger", "verify", "--file", str(export), "--public-key", _vkey(cli)))


def test_app_fixture_still_works(app: App) -> None:
    assert app.ledger_identity() is not None


def test_ledger_consistency_proof_cli(busy: Path, cli: Cli) -> None:
    from affidavit.ledger.checkpoint import Checkpoint

    out = json.loads(cli("ledger", "consistency", "--old-size", "4", "--json").out)
    assert out["old_size"] == 4 and out["verified"] is True
    merkle.verify_consistency(
        4,
        out["new_size"],
        bytes.fromhex(out["old_root"]),
        bytes.fromhex(out["new_root"]),
        [bytes.fromhex(h) for h in out["proof"]],
    )
    text = out["checkpoint"].split("\n\n")[0] + "\n"
    assert Checkpoint.from_text(text).size == out["new_size"]
    human = cli("ledger", "consistency", "--old-size", "4")
    assert human.code == 0 and "verified" in human.out
    bad = cli("ledger", "consistency", "--old-size", "999999")
    assert bad.code == 2 and "old size must be" in bad.err
