"""The signer never signs a tree it cannot prove extends the last tree it signed.

An attacker here can write the catalog database (SQLite) but not ``HOME/keys``. Each test
does one attack from issue 13 and checks that the next ordinary command refuses (exit 3,
nothing written), that ``ledger verify`` fails, and that the recovery path is loud.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import Settings
from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey, save_signing_key
from affidavit.errors import KeystoreError, SigningRefused
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, sign_checkpoint
from affidavit.models.ledger import Event
from affidavit.services.context import open_app
from affidavit.services.signer_memory import signed_path

pytestmark = pytest.mark.e2e

Cli = Callable[..., Any]


@contextmanager
def db(home: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


@pytest.fixture
def busy(settings: Settings, home: Path) -> Path:
    """The ``home`` ledger with six more events, each in its own change."""
    with open_app(settings) as app:
        for i in range(6):
            with app.change() as change:
                change.record("test.event", f"thing:{i}", {"i": i})
    return home


def _state(home: Path) -> tuple[int, int, int]:
    """(entries, checkpoints, vaults) in the catalog: what a refused command must not change."""
    with db(home) as con:
        entries = con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
        checkpoints = con.execute("SELECT count(*) FROM ledger_checkpoints").fetchone()[0]
        vaults = con.execute("SELECT count(*) FROM vaults").fetchone()[0]
    return int(entries), int(checkpoints), int(vaults)


def _append_well_formed(con: sqlite3.Connection, action: str, details: dict[str, Any]) -> int:
    """Append an event exactly as LedgerLog would (leaf and subtree hashes right), without
    the key: what an attacker who can compute SHA-256 but not sign can do."""
    rows = con.execute("SELECT leaf_hash FROM ledger_entries ORDER BY seq").fetchall()
    stack: list[bytes] = []
    for count, (leaf,) in enumerate(rows):
        digest, carry = bytes(leaf), count
        while carry & 1:
            digest = merkle.node_hash(stack.pop(), digest)
            carry >>= 1
        stack.append(digest)
    seq = len(rows)
    entry = Event(
        seq=seq,
        time="2026-12-01T00:00:00.000000Z",
        actor="mallory@example.com",
        action=action,
        subject="policy:v99",
        details=details,
    ).canonical()
    leaf = merkle.leaf_hash(entry)
    closed, digest, carry = bytearray(), leaf, seq
    while carry & 1:
        digest = merkle.node_hash(stack.pop(), digest)
        carry >>= 1
        closed += digest
    con.execute(
        "INSERT INTO ledger_entries (seq, time, actor, action, subject, entry, leaf_hash, nodes)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, "2026-12-01T00:00:00.000000Z", "mallory@example.com", action, "policy:v99",
         entry, leaf, bytes(closed)),
    )  # fmt: skip
    return seq


def _codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


def _verify(cli: Cli, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("ledger", "verify", "--json", *extra)
    return result.code, json.loads(result.out)


def _vault_add(cli: Cli, tmp_path: Path, name: str = "v1") -> Any:
    return cli("vault", "add", name, "--url", (tmp_path / name).as_uri())


# -- miss 1: a forged append with the checkpoints removed --------------------------------------


def test_forged_approval_with_checkpoints_deleted_is_never_signed(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    saved = tmp_path / "saved.note"
    assert cli("ledger", "checkpoint", "--out", str(saved)).code == 0
    with db(busy) as con:
        _append_well_formed(
            con, "policy.approved", {"version": 99, "sha256": "0" * 64, "approver": "mallory"}
        )
        con.execute("DELETE FROM ledger_checkpoints")
    before = _state(busy)
    # the next ordinary command: refused, exit 3, nothing written
    result = _vault_add(cli, tmp_path)
    assert result.code == 3, result.err
    assert "refusing to sign" in result.err and "never signed by this key" in result.err
    assert "hint:" in result.err and "Traceback" not in result.err
    assert _state(busy) == before
    # nor will it publish, build evidence or hand out a checkpoint over the forgery
    assert cli("ledger", "checkpoint", "--publish", str(tmp_path / "witness")).code == 3
    assert not (tmp_path / "witness" / "latest.note").exists()
    out = tmp_path / "q.tar.gz"
    built = cli("evidence", "build", "--from", "2026-01-01", "--to", "2027-01-01",
                "--out", str(out))  # fmt: skip
    assert built.code in (1, 3) and "refusing" in built.err  # the ledger does not verify
    assert not out.exists()
    assert _state(busy) == before
    # and the catalog verification fails, with or without the saved checkpoint: the signer's
    # own checkpoint still vouches for the history before the forgery, not for it
    code, report = _verify(cli)
    assert code == 1 and "unsigned-entries" in _codes(report)
    code, report = _verify(cli, "--checkpoint", str(saved))
    assert code == 1 and "unsigned-entries" in _codes(report)


def test_wiping_the_ledger_does_not_start_a_new_one(busy: Path, cli: Cli, tmp_path: Path) -> None:
    with db(busy) as con:
        con.execute("DELETE FROM ledger_entries")
        con.execute("DELETE FROM ledger_checkpoints")
    result = _vault_add(cli, tmp_path)
    assert result.code == 3 and "fewer than the" in result.err
    assert _state(busy) == (0, 0, 0)
    code, report = _verify(cli)
    assert code == 1 and report["size"] == 0
    assert "checkpoint-beyond-end" in _codes(report)  # the signer's own checkpoint


def test_truncating_the_tail_with_its_checkpoints_is_refused(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        con.execute("DELETE FROM ledger_entries WHERE seq >= 5")
        con.execute("DELETE FROM ledger_checkpoints WHERE size > 5")
    before = _state(busy)
    result = cli("ledger", "export", "--out", str(busy / "x.jsonl"))
    assert result.code == 3 and "fewer than the" in result.err
    assert _state(busy) == before and not (busy / "x.jsonl").exists()


def test_a_rewritten_tail_of_the_same_size_is_refused(busy: Path, cli: Cli, tmp_path: Path) -> None:
    """Delete the last entry and its checkpoint, append a well-formed replacement: same size
    as the signer remembers, but the catalog's newest checkpoint is not the signer's."""
    with db(busy) as con:
        size = con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
        con.execute("DELETE FROM ledger_entries WHERE seq = ?", (size - 1,))
        con.execute("DELETE FROM ledger_checkpoints WHERE size = ?", (size,))
        _append_well_formed(con, "test.event", {"i": 99})
    result = _vault_add(cli, tmp_path)
    assert result.code == 3 and "refusing to sign" in result.err


def test_seq_0_must_be_the_keys_own_creation(settings: Settings, home: Path) -> None:
    """A signer that has signed nothing yet (init cut short) still refuses a ledger whose
    first event is not its key's creation."""
    with open_app(settings) as app:
        memory = app.signer_memory()
        assert memory is not None
        with db(home) as con:
            con.execute("DELETE FROM ledger_entries")
            con.execute("DELETE FROM ledger_checkpoints")
        memory.save(memory.sign(0, merkle.EMPTY_ROOT), fork=True)
        with pytest.raises(SigningRefused, match="seq 0 is"), app.change() as change:
            change.record("catalog.initialized", "catalog:x", {})
        with db(home) as con:
            assert con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == 0


def test_an_interrupted_init_records_the_key_creation_on_the_next_init(
    settings: Settings, home: Path, cli: Cli
) -> None:
    with open_app(settings) as app:
        memory = app.signer_memory()
        assert memory is not None
        with db(home) as con:
            con.execute("DELETE FROM ledger_entries")
            con.execute("DELETE FROM ledger_checkpoints")
        memory.save(memory.sign(0, merkle.EMPTY_ROOT), fork=True)
    assert cli("init").code == 0
    actions = [e["action"] for e in json.loads(cli("ledger", "show", "--json").out)["entries"]]
    assert actions[0] == "ledger.key_created"
    assert cli("ledger", "verify").code == 0


def test_a_new_key_never_adopts_an_existing_history(busy: Path, cli: Cli) -> None:
    shutil.rmtree(busy / "keys")
    result = cli("init")
    assert result.code == 3 and "ledger entries" in result.err
    assert not (busy / "keys" / "ledger.key").exists()


# -- the memory itself ---------------------------------------------------------------------


def test_a_lagging_memory_rolls_forward_only_over_the_keys_own_signatures(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    """A crash between a commit and the memory's update leaves the memory behind: the next
    command adopts the catalog's newer checkpoint because the key signed it."""
    path = signed_path(busy)
    old = path.read_text()
    assert _vault_add(cli, tmp_path, "v1").code == 0
    path.write_text(old)  # as if the update after the commit never happened
    assert _vault_add(cli, tmp_path, "v2").code == 0
    assert path.read_text() != old
    assert cli("ledger", "verify").code == 0


def test_a_lagging_memory_is_not_rolled_forward_over_a_foreign_checkpoint(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    path = signed_path(busy)
    old = path.read_text()
    with db(busy) as con:
        seq = _append_well_formed(con, "test.event", {"i": 100})
        root = _root(con)
        mallory = NoteSigner(old.split("\n")[0], SigningKey.generate())
        note = sign_checkpoint(Checkpoint(origin=mallory.name, size=seq + 1, root=root), mallory)
        con.execute(
            "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, 'x')",
            (seq + 1, root, note),
        )
    result = _vault_add(cli, tmp_path)
    assert result.code == 3 and "not signed by this ledger's key" in result.err


def _root(con: sqlite3.Connection) -> bytes:
    leaves = [bytes(r[0]) for r in con.execute("SELECT leaf_hash FROM ledger_entries ORDER BY seq")]
    return merkle.root(leaves)


def test_a_swapped_memory_file_stops_the_signer(busy: Path, cli: Cli, tmp_path: Path) -> None:
    signed_path(busy).write_text("not a checkpoint\n")
    before = _state(busy)
    result = _vault_add(cli, tmp_path)
    assert result.code == 3 and "ledger.signed" in result.err
    assert _state(busy) == before


def test_a_missing_memory_is_rebuilt_from_the_keys_own_checkpoint(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    """A home set up before the memory existed: the catalog's newest checkpoint, signed by the
    key, becomes the memory; entries beyond it are still refused."""
    signed_path(busy).unlink()
    assert _vault_add(cli, tmp_path, "v1").code == 0
    assert signed_path(busy).exists()
    signed_path(busy).unlink()
    with db(busy) as con:
        _append_well_formed(con, "test.event", {"i": 7})
    assert _vault_add(cli, tmp_path, "v2").code == 3


def test_a_missing_memory_with_no_checkpoint_is_refused(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    signed_path(busy).unlink()
    with db(busy) as con:
        con.execute("DELETE FROM ledger_checkpoints")
    result = _vault_add(cli, tmp_path)
    assert result.code == 3 and "nothing says which history" in result.err


def test_memory_never_moves_backwards(settings: Settings, busy: Path) -> None:
    with open_app(settings) as app:
        memory = app.signer_memory()
        assert memory is not None
        newest = memory.load()
        assert newest is not None
        memory.save(memory.sign(1, b"\x00" * 32))
        again = memory.load()
        assert again is not None and again.size == newest.size


def test_a_memory_signed_by_another_key_is_refused(settings: Settings, busy: Path) -> None:
    other = NoteSigner("elsewhere/log", SigningKey.generate())
    note = sign_checkpoint(Checkpoint(origin="elsewhere/log", size=3, root=b"\x01" * 32), other)
    signed_path(busy).write_text(note)
    with open_app(settings) as app:
        memory = app.signer_memory()
        assert memory is not None
        with pytest.raises(KeystoreError):
            memory.load()


# -- key pinning and stored subtree hashes ---------------------------------------------------


def test_a_swapped_key_file_with_re_signed_checkpoints_fails_verification(
    busy: Path, cli: Cli
) -> None:
    origin = (busy / "keys" / "ledger.origin").read_text().strip()
    key = SigningKey.generate()
    save_signing_key(busy / "keys" / "ledger.key", key, overwrite=True)
    signer = NoteSigner(origin, key)
    with db(busy) as con:
        for size, root in con.execute("SELECT size, root FROM ledger_checkpoints").fetchall():
            note = sign_checkpoint(Checkpoint(origin=origin, size=size, root=bytes(root)), signer)
            con.execute("UPDATE ledger_checkpoints SET note=? WHERE size=?", (note, size))
    signed_path(busy).unlink()  # even with the memory gone (it would betray the swap)
    code, report = _verify(cli)
    assert code == 1 and "key-not-creator" in _codes(report)
    assert report["key"]["vkey"] == cli("ledger", "key").out.strip()
    assert report["key"]["from"] == "the home's key file"


def test_a_corrupted_interior_subtree_hash_is_found(busy: Path, cli: Cli, tmp_path: Path) -> None:
    """Level-1 hash of entries 0-1 lives in row 1; it is not on the frontier of a tree of
    size 8, so only a check of every stored hash finds it; evidence build must refuse to sign
    a package whose proofs pass through it."""
    with db(busy) as con:
        size = con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
        assert size == 8
        (nodes,) = con.execute("SELECT nodes FROM ledger_entries WHERE seq = 1").fetchone()
        bad = bytes([nodes[0] ^ 1]) + bytes(nodes[1:])
        con.execute("UPDATE ledger_entries SET nodes=? WHERE seq = 1", (bad,))
    code, report = _verify(cli)
    assert code == 1 and "stored-nodes-mismatch" in _codes(report)
    assert [f["seq"] for f in report["findings"] if f["code"] == "stored-nodes-mismatch"] == [1]
    out = tmp_path / "q.tar.gz"
    result = cli(
        "evidence", "build", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(out)
    )
    assert result.code == 1 and "refusing to sign the package" in result.err
    assert not out.exists()


def test_an_untampered_ledger_names_the_key_it_was_verified_with(busy: Path, cli: Cli) -> None:
    code, report = _verify(cli)
    assert code == 0 and report["findings"] == []
    assert report["key"]["vkey"] == cli("ledger", "key").out.strip()
    assert "verified with" in cli("ledger", "verify").out


# -- recovery --------------------------------------------------------------------------------


def test_recover_restores_removed_checkpoints_without_a_fork(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    with db(busy) as con:
        con.execute("DELETE FROM ledger_checkpoints")
    assert _vault_add(cli, tmp_path).code == 3
    result = cli(
        "ledger", "recover", "--reason", "checkpoint rows lost in a bad migration", "--json"
    )
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["kind"] == "checkpoint-restored" and out["lost"] == 0
    assert _vault_add(cli, tmp_path).code == 0
    assert cli("ledger", "verify").code == 0
    shown = json.loads(cli("ledger", "show", "--action", "ledger.recovered", "--json").out)
    assert len(shown["entries"]) == 1


def test_recover_forks_from_a_restored_older_catalog_loudly(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    older = tmp_path / "catalog-backup.sqlite"
    shutil.copy(busy / "catalog.sqlite", older)
    saved = tmp_path / "later.note"
    assert _vault_add(cli, tmp_path, "v1").code == 0
    assert cli("ledger", "checkpoint", "--out", str(saved)).code == 0
    signed_size = int(saved.read_text().split("\n")[1])
    shutil.copy(older, busy / "catalog.sqlite")  # the disk died; last night's copy is back
    for suffix in ("-wal", "-shm"):
        (busy / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    result = _vault_add(cli, tmp_path, "v2")
    assert result.code == 3 and "restored from an older copy" in result.err
    assert cli("ledger", "recover", "--reason", "").code == 2
    result = cli("ledger", "recover", "--reason", "catalog disk lost; restored backup", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    catalog_size = out["catalog_size"]
    assert out["kind"] == "forked" and out["signed_size"] == signed_size
    assert out["lost"] == signed_size - catalog_size > 0
    assert Path(out["archived"]).exists()
    assert _vault_add(cli, tmp_path, "v2").code == 0
    assert cli("ledger", "verify").code == 0
    # whoever kept a checkpoint of the lost history sees the fork
    code, report = _verify(cli, "--checkpoint", str(saved))
    assert code == 1 and "old-checkpoint-inconsistent" in _codes(report)
    assert cli("ledger", "recover", "--reason", "again").code == 2  # nothing to recover


def test_recover_refuses_unsigned_entries(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        _append_well_formed(con, "test.event", {"i": 1})
    result = cli("ledger", "recover", "--reason", "try to launder a forgery")
    assert result.code == 3 and "cannot recover" in result.err


def test_recover_from_an_empty_catalog_begins_with_the_key(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    with db(busy) as con:
        con.execute("DELETE FROM ledger_entries")
        con.execute("DELETE FROM ledger_checkpoints")
    result = cli("ledger", "recover", "--reason", "catalog lost, no backup", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["seq"] == 0
    shown = json.loads(cli("ledger", "show", "--json").out)["entries"]
    assert shown[0]["action"] == "ledger.key_created"
    assert shown[0]["details"]["recovered"]["lost_entries"] == 8
    assert cli("ledger", "verify").code == 0


def test_a_corrupted_interior_subtree_hash_fails_the_integrity_control(
    busy: Path, cli: Cli
) -> None:
    with db(busy) as con:
        (nodes,) = con.execute("SELECT nodes FROM ledger_entries WHERE seq = 3").fetchone()
        con.execute("UPDATE ledger_entries SET nodes=? WHERE seq = 3", (bytes(64),))
        assert len(nodes) == 64  # seq 3 closes levels 1 and 2
    result = cli("policy", "check", "--json")
    out = json.loads(result.out)
    integrity = [r for r in out["results"] if r["control"] == "ledger.integrity"]
    assert any(r["status"] == "fail" and "stored subtree hashes" in r["message"]
               for r in integrity), integrity  # fmt: skip
    assert result.code == 1


def test_a_rewritten_action_column_is_found(busy: Path, cli: Cli) -> None:
    """The action column is what policy check looks events up by: hiding an event by
    renaming its copy is a finding of ledger verify (and so of ledger.integrity)."""
    with db(busy) as con:
        con.execute("UPDATE ledger_entries SET action='test.renamed' WHERE seq = 4")
    code, report = _verify(cli)
    assert code == 1 and "column-mismatch" in _codes(report)
    assert [f["seq"] for f in report["findings"] if f["code"] == "column-mismatch"] == [4]


def test_a_recovery_stays_visible_in_the_integrity_control(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        con.execute("DELETE FROM ledger_checkpoints")
    assert cli("ledger", "recover", "--reason", "rows lost in migration 42").code == 0
    out = json.loads(cli("policy", "check", "--json").out)
    recovered = [
        r for r in out["results"]
        if r["control"] == "ledger.integrity" and r["subject"].startswith("ledger:")
    ]  # fmt: skip
    assert len(recovered) == 1 and recovered[0]["status"] == "fail"
    assert "rows lost in migration 42" in recovered[0]["message"]
    # publishing the recovered ledger to a witness is the acknowledgement
    assert cli("ledger", "checkpoint", "--publish", str(busy / "witness")).code == 0
    out = json.loads(cli("policy", "check", "--json").out)
    again = [r for r in out["results"] if r["subject"] == recovered[0]["subject"]]
    assert [r["status"] for r in again] == ["pass"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("time", "2025-01-01T00:00:00.000000Z"),
        ("actor", "someone-else@example.com"),
        ("subject", "thing:elsewhere"),
    ],
)
def test_a_rewritten_query_column_is_found(busy: Path, cli: Cli, column: str, value: str) -> None:
    """Moving an event out of a period by its time column, or re-attributing it, is caught."""
    with db(busy) as con:
        con.execute(f"UPDATE ledger_entries SET {column}=? WHERE seq >= 5", (value,))
    code, report = _verify(cli)
    assert code == 1 and "column-mismatch" in _codes(report)
    assert [f["seq"] for f in report["findings"] if f["code"] == "column-mismatch"] == [5]


def test_a_checkpoint_row_holding_an_older_note_is_found_and_recovered(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    """The newest checkpoint row holds the note of an older size: every change is refused,
    ledger verify names the row, and ledger recover replaces it."""
    with db(busy) as con:
        con.execute(
            "UPDATE ledger_checkpoints SET note=(SELECT note FROM ledger_checkpoints WHERE size=3)"
            " WHERE size=(SELECT max(size) FROM ledger_checkpoints)"
        )
    assert _vault_add(cli, tmp_path).code == 3
    code, report = _verify(cli)
    assert code == 1 and "column-mismatch" in _codes(report)
    result = cli("ledger", "recover", "--reason", "a bad restore of one table", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["kind"] == "checkpoint-restored"
    assert _vault_add(cli, tmp_path).code == 0
    assert cli("ledger", "verify").code == 0


def test_a_key_rotation_over_a_forged_ledger_makes_no_new_kek_version(busy: Path, cli: Cli) -> None:
    assert cli("keys", "rotate").code == 0  # a first version exists
    kek = busy / "keys" / "kek.json"
    before = kek.read_bytes()
    with db(busy) as con:
        _append_well_formed(con, "test.event", {"i": 5})
    result = cli("keys", "rotate")
    assert result.code == 3 and "refusing to sign" in result.err
    assert kek.read_bytes() == before  # no version whose rotation event could not be recorded


def test_checkpoint_files_that_are_fifos_or_huge_do_not_hang(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    fifo = tmp_path / "saved.note"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.note"
    with huge.open("wb") as fh:
        fh.truncate(20 * 1024**3)  # sparse: reading it whole would take 20 GiB
    witness = tmp_path / "witness"
    witness.mkdir()
    os.mkfifo(witness / "latest.note")
    base = [sys.executable, "-m", "affidavit", "--home", str(busy)]
    for args in (
        ["ledger", "verify", "--checkpoint", str(fifo)],
        ["ledger", "verify", "--checkpoint", str(huge)],
        ["ledger", "checkpoint", "--publish", str(witness)],
    ):
        done = subprocess.run(
            [*base, *args], check=False, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_an_entry_rewritten_as_text_is_read_as_its_bytes(busy: Path, cli: Cli) -> None:
    """SQLite keeps whatever storage class a value was written with: an entry stored back as
    TEXT (what a plain UPDATE ... SET entry='{...}' does) is read as the same bytes, so it
    verifies when unchanged and is a finding, never a crash, when changed."""
    with db(busy) as con:
        con.execute("UPDATE ledger_entries SET entry=CAST(entry AS TEXT) WHERE seq=3")
        con.execute("UPDATE ledger_entries SET nodes=CAST(nodes AS TEXT) WHERE seq=5")
    assert cli("ledger", "verify").code == 0
    assert cli("ledger", "show", "--json").code == 0
    with db(busy) as con:
        con.execute("UPDATE ledger_entries SET entry='{\"seq\":4}' WHERE seq=4")
    code, report = _verify(cli)
    assert code == 1 and report["findings"]


def test_a_policy_text_stored_as_bytes_fails_the_check_without_a_crash(
    home: Path, cli: Cli
) -> None:
    policy = Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml"
    assert cli("--actor", "alice", "policy", "propose", str(policy)).code == 0
    assert cli("--actor", "bob", "policy", "approve", "1").code == 0
    with db(home) as con:
        con.execute("UPDATE policy_versions SET text=x'ff00ff' WHERE version=1")
    result = cli("policy", "check", "--json")
    assert result.code == 1 and "Traceback" not in result.err
    assert cli("policy", "show", "1").code == 0


def test_recover_refuses_a_wiped_ledger_while_the_catalog_holds_rows(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    assert _vault_add(cli, tmp_path).code == 0
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", "redis://127.0.0.1:1/0",
               "--classification", "internal").code == 0  # fmt: skip
    with db(busy) as con:
        con.execute("DELETE FROM ledger_entries")
        con.execute("DELETE FROM ledger_checkpoints")
    result = cli("ledger", "recover", "--reason", "launder a wipe")
    assert result.code == 3 and "the ledger was wiped" in result.err


def test_storage_classes_of_seq_and_root_do_not_crash_or_stop_the_tool(
    busy: Path, cli: Cli, tmp_path: Path
) -> None:
    """A checkpoint root stored as TEXT is still its bytes; a seq stored as TEXT or REAL is
    still its number: no exit 4, no misleading 'cannot write the catalog'."""
    with db(busy) as con:
        con.execute("UPDATE ledger_checkpoints SET root=CAST(root AS TEXT)")
    assert cli("ledger", "verify").code == 0
    assert _vault_add(cli, tmp_path, "v1").code == 0
    with db(busy) as con:  # a table without column types keeps what it is given
        con.executescript(
            "CREATE TABLE le2 AS SELECT * FROM ledger_entries; DROP TABLE ledger_entries; "
            "CREATE TABLE ledger_entries (seq, time, actor, action, subject, entry, leaf_hash, "
            "nodes); INSERT INTO ledger_entries SELECT * FROM le2; DROP TABLE le2;"
        )
        con.execute("UPDATE ledger_entries SET seq=CAST(seq AS TEXT) WHERE seq=4")
        con.execute("UPDATE ledger_entries SET seq=3.0 WHERE seq=3")
    result = cli("ledger", "verify")
    assert result.code in (0, 1) and "Traceback" not in result.err


def test_recover_removes_a_checkpoint_row_of_an_impossible_size(busy: Path, cli: Cli) -> None:
    with db(busy) as con:
        con.execute(
            "INSERT INTO ledger_checkpoints SELECT 4611686018427387904, root, note, created_at "
            "FROM ledger_checkpoints WHERE size=(SELECT max(size) FROM ledger_checkpoints)"
        )
    assert cli("ledger", "verify").code == 1
    result = cli("ledger", "recover", "--reason", "a forged row", "--json")
    assert result.code == 0, result.err
    assert cli("ledger", "verify").code == 0
