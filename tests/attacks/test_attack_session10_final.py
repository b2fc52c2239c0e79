"""Final attack pass on the fast-verification vouch (session 10): the catalog's
``LedgerRepository.find(..., subject=...)`` reads the row's ``subject`` column, which a
catalog writer can edit. With a second backup, a replayed entry and catalog edits, no run
of bytes that a deep run would fail may be fast, and an edited column must at worst make a
run deep (fail-safe), never an error."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_verify_segments import _data, _manifest, _verify, _writable, ingested, small_segments

from affidavit.config import load_settings
from affidavit.ledger import merkle
from affidavit.services.context import open_app
from affidavit.services.verify.vouch import deep_vouch

__all__ = ["ingested", "small_segments"]  # fixtures, used by name

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "catalog.sqlite")


def _manifest_sha256(home: Path, backup_id: str) -> str:
    with _db(home) as db:
        (digest,) = db.execute(
            "select manifest_sha256 from backups where id = ?", (backup_id,)
        ).fetchone()
    return str(digest)


def _vouch(home: Path, backup_id: str, manifest_sha256: str | None = None) -> int | None:
    with open_app(load_settings(home=home)) as app:
        return deep_vouch(app, backup_id, manifest_sha256 or _manifest_sha256(home, backup_id))


def _seq_of(home: Path, verification_id: str) -> int:
    with _db(home) as db:
        rows = db.execute(
            "select seq, entry from ledger_entries where action = 'verification.completed'"
        ).fetchall()
    (seq,) = [
        int(s)
        for s, e in rows
        if json.loads(bytes(e))["details"].get("verification_id") == verification_id
    ]
    return seq


def _second(cli: Any, tmp_path: Path) -> str:
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    return str(json.loads(r.out)["backup_id"])


def _deep(cli: Any, home: Path, backup_id: str) -> int:
    code, out = _verify(cli, backup_id)
    assert code == 0 and out["mode"] == "deep", out
    seq = _seq_of(home, out["id"])
    assert _vouch(home, backup_id) == seq
    return seq


def _relabel(home: Path, seq: int, subject: str) -> None:
    with _db(home) as db:
        db.execute("update ledger_entries set subject = ? where seq = ?", (subject, seq))


def _not_fast(cli: Any, backup_id: str) -> dict[str, Any]:
    """A ``verify --json`` run that must be deep (and not an error)."""
    r = cli("verify", backup_id, "--json")
    assert "Traceback" not in r.err
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    assert (out["mode"], out["vouched_by"]) == ("deep", None)
    return out


# (1) A's deep row relabelled to B --------------------------------------------------------------


def test_as_deep_row_relabelled_to_b_does_not_make_b_fast(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    a = ingested["backup_id"]
    seq_a = _deep(cli, home, a)
    b = _second(cli, tmp_path)
    _relabel(home, seq_a, f"backup:{b}")
    assert _vouch(home, b) is None
    assert _vouch(home, b, _manifest_sha256(home, a)) is None  # even under A's digest
    _not_fast(cli, b)


def test_as_deep_row_relabelled_to_b_with_b_holding_a_genuine_one(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """B has its own (older) deep pass; A's newer one relabelled to B is found first by the
    newest-first walk: it is skipped, B's own is what vouches (never A's seq)."""
    a = ingested["backup_id"]
    b = _second(cli, tmp_path)
    seq_b = _deep(cli, home, b)
    seq_a = _deep(cli, home, a)
    assert seq_a > seq_b
    _relabel(home, seq_a, f"backup:{b}")
    assert _vouch(home, b) == seq_b


# (2) B's own deep row relabelled away --------------------------------------------------------


@pytest.mark.parametrize("subject", ["backup:nobody", "", "BACKUP:{b}", "backup:{b} "])
def test_bs_own_deep_row_relabelled_away_runs_deep_not_an_error(
    cli: Any, home: Path, ingested: dict[str, Any], subject: str
) -> None:
    b = ingested["backup_id"]
    seq = _deep(cli, home, b)
    _relabel(home, seq, subject.format(b=b))
    assert _vouch(home, b) is None
    _not_fast(cli, b)


def test_bs_own_deep_row_with_its_subject_stored_as_a_blob_runs_deep(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """SQLite keeps the storage class a value was written with: the same characters as a
    BLOB do not equal the TEXT parameter, so the row is not found: deep, not an error."""
    b = ingested["backup_id"]
    seq = _deep(cli, home, b)
    with _db(home) as db:
        db.execute(
            "update ledger_entries set subject = ? where seq = ?",
            (f"backup:{b}".encode(), seq),
        )
    assert _vouch(home, b) is None
    _not_fast(cli, b)


def test_bs_own_deep_row_with_its_action_column_edited_runs_deep(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    b = ingested["backup_id"]
    seq = _deep(cli, home, b)
    with _db(home) as db:
        db.execute("update ledger_entries set action = 'backup.ingested' where seq = ?", (seq,))
    assert _vouch(home, b) is None
    _not_fast(cli, b)


# (3) replays and other ways --------------------------------------------------------------------


def test_as_genuine_entry_replayed_into_bs_row_does_not_vouch_b(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """B's deep row (a genuine, signed seq) has its entry bytes and leaf hash replaced with
    A's genuine deep entry: the bytes name A (and A's seq), so nothing vouches B."""
    a = ingested["backup_id"]
    b = _second(cli, tmp_path)
    seq_b = _deep(cli, home, b)
    seq_a = _deep(cli, home, a)
    with _db(home) as db:
        (entry_a, leaf_a) = db.execute(
            "select entry, leaf_hash from ledger_entries where seq = ?", (seq_a,)
        ).fetchone()
        db.execute(
            "update ledger_entries set entry = ?, leaf_hash = ? where seq = ?",
            (entry_a, leaf_a, seq_b),
        )
        # and A's own row now labelled B too
        db.execute("update ledger_entries set subject = ? where seq = ?", (f"backup:{b}", seq_a))
    assert _vouch(home, b) is None
    assert _vouch(home, b, _manifest_sha256(home, a)) is None
    r = cli("verify", b, "--json")
    assert "Traceback" not in r.err
    assert not (r.code == 0 and json.loads(r.out)["mode"] == "fast"), r.out


def test_as_genuine_entry_with_its_subject_rewritten_to_b_does_not_vouch(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """A's genuine deep entry rewritten to name B and carry B's manifest digest (column and
    bytes, leaf hash recomputed): its leaf is not the one the key signed."""
    a = ingested["backup_id"]
    b = _second(cli, tmp_path)
    seq_a = _deep(cli, home, a)
    with _db(home) as db:
        (raw,) = db.execute("select entry from ledger_entries where seq = ?", (seq_a,)).fetchone()
        event = json.loads(bytes(raw))
        event["subject"] = f"backup:{b}"
        event["details"]["manifest_sha256"] = _manifest_sha256(home, b)
        forged = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        db.execute(
            "update ledger_entries set entry = ?, leaf_hash = ?, subject = ? where seq = ?",
            (forged, merkle.leaf_hash(forged), f"backup:{b}", seq_a),
        )
    assert _vouch(home, b) is None


def test_a_genuine_entry_moved_to_another_row_still_names_its_own_seq(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """B's genuine deep entry copied over a *later* row's entry (the row's seq column is not
    what is proven: the entry's own seq is). It still vouches only B under B's digest, and
    never A."""
    a = ingested["backup_id"]
    b = _second(cli, tmp_path)
    seq_b = _deep(cli, home, b)
    seq_a = _deep(cli, home, a)
    with _db(home) as db:
        (entry_b, _leaf_b) = db.execute(
            "select entry, leaf_hash from ledger_entries where seq = ?", (seq_b,)
        ).fetchone()
        db.execute(
            "update ledger_entries set entry = ?, subject = ? where seq = ?",
            (entry_b, f"backup:{a}", seq_a),
        )
    assert _vouch(home, a) is None
    assert _vouch(home, a, _manifest_sha256(home, b)) is None
    found = _vouch(home, b)
    assert found in (None, seq_b)


def test_as_bytes_swapped_in_for_bs_after_bs_deep_pass_are_found_fast(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """B vouched deep; then B's data artifact is replaced with A's (bytes a deep run of A
    passes, of the same plaintext): a fast run of B fails, as a deep one does."""
    a = ingested["backup_id"]
    b = _second(cli, tmp_path)
    _deep(cli, home, b)
    art_a = _data(_manifest(home, a))
    art_b = _data(_manifest(home, b))
    vault = ingested["vault"]
    path_b = _writable(vault / art_b.path)
    path_b.write_bytes((vault / art_a.path).read_bytes())
    code, fast = _verify(cli, b)
    assert code == 1 and fast["findings"], fast
    assert fast["mode"] == "fast"  # the vouch stood (the signed manifest is unchanged)
    code, deep = _verify(cli, b, "--deep")
    assert code == 1 and deep["mode"] == "deep"
    assert {f["code"] for f in fast["findings"]} == {f["code"] for f in deep["findings"]}


def test_a_vouch_survives_no_swap_of_the_backups_manifest_row(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """A vouched deep; the catalog's backups row of A then gets B's manifest (envelope and
    digest columns) copied in: the signed statement is B's, whose digest no entry of A
    vouches, so A does not run fast on it."""
    a = ingested["backup_id"]
    b = _second(cli, tmp_path)
    _deep(cli, home, a)
    with _db(home) as db:
        cols = [r[1] for r in db.execute("pragma table_info(backups)")]
        moved = [c for c in cols if c.startswith("manifest")]
        assert moved
        (values,) = [
            db.execute(f"select {', '.join(moved)} from backups where id = ?", (b,)).fetchone()
        ]
        db.execute(
            f"update backups set {', '.join(c + ' = ?' for c in moved)} where id = ?",
            (*values, a),
        )
    r = cli("verify", a, "--json")
    assert "Traceback" not in r.err
    if r.out:
        out = json.loads(r.out)
        assert out["mode"] == "deep" or r.code != 0, out
        assert not (r.code == 0 and out["mode"] == "fast")


# catalog corruption around the proof: the vouch itself must never raise ----------------------


@pytest.mark.parametrize(
    "corrupt",
    [
        "update ledger_entries set nodes = x'' where seq >= 0",
        "update ledger_entries set nodes = x'00' where seq >= 0",
        "update ledger_entries set leaf_hash = x'00' where seq >= 0",
        "update ledger_entries set nodes = 'text', leaf_hash = 'text' where seq >= 0",
        "delete from ledger_entries where seq = 0",
        "update ledger_entries set seq = seq + 1000 where seq = 0",
    ],
    ids=["nodes-empty", "nodes-short", "leaf-short", "text", "gap", "moved"],
)
def test_corrupted_subtree_hashes_never_vouch_nor_raise(
    cli: Any, home: Path, ingested: dict[str, Any], corrupt: str
) -> None:
    """B's deep entry itself is untouched; the stored hashes its inclusion proof is built
    from are damaged. The proof then fails (or is built from the entries themselves and
    holds, which proves the same entry): the vouch answers, it does not raise."""
    b = ingested["backup_id"]
    seq = _deep(cli, home, b)
    with _db(home) as db:
        try:
            db.execute(corrupt)
        except sqlite3.IntegrityError:
            pytest.skip("the schema refuses it")
    found = _vouch(home, b)  # no exception
    assert found in (None, seq)
    r = cli("verify", b, "--json")
    assert "Traceback" not in r.err and r.code != 4, r.err
    if r.code == 0 and found is None:
        assert json.loads(r.out)["mode"] == "deep"


def test_a_deleted_old_ledger_row_off_the_proof_path_is_named_by_ledger_verify(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """Deleting ledger entry 0 leaves B's deep entry provably in the signed tree (its proof
    needs only stored subtree hashes, not row 0): the vouch holds — rightly, that deep pass
    happened — and the run is fast on the genuine bytes. The deletion itself must not go
    unnoticed: ``ledger verify`` names it."""
    b = ingested["backup_id"]
    seq = _deep(cli, home, b)
    with _db(home) as db:
        db.execute("delete from ledger_entries where seq = 0")
    assert _vouch(home, b) == seq
    r = cli("verify", b, "--json")
    assert "Traceback" not in r.err
    checked = cli("ledger", "verify")
    assert r.code == 0 and json.loads(r.out)["mode"] == "fast"
    assert checked.code != 0 and "does not verify" in checked.err
