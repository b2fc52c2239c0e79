"""Attack pass on segment tables proven when written and a backup's first verification run
fast on that proof (issue 18, session 11: ``services/segment_tables.py``, ``PlainSide``,
``crypto/age_process.py``'s ``encrypt-file`` segments, ``services/verify/vouch.py``).

Tried here, each a test: another backup's completion entry relabelled (subject column) as
this one's; a completion entry whose ``tables_proven`` is ``"true"``, ``1``, ``1.0`` or
``false``; a backup whose status is no longer ``complete``; the setting
``verify_first_run`` with a bogus value (environment and file); a manifest re-signed with a
wrong plaintext digest in one segment (the whole digest right): the first run is deep and
finds it, and what fast mode sees when the ledger key itself vouches such a manifest
(nothing: documented); the plaintext side on a file that vanished, on a FIFO (it used to
block for ever, and so did its ``stop``), on a symbolic link swapped to another file; a
staged file rewritten while the child encrypts it (no table, or one that is the files');
staging stopped midway (no thread, no spool file left)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pyrage
import pytest
from test_attack_write_proof import _completion, _found
from test_verify_segments import (
    _documents,
    _resign,
    _verify,
    ingested,
    small_segments,
)

from affidavit.config import load_settings
from affidavit.crypto.age_process import EncryptionStopped, encrypt_file
from affidavit.models.backup import ArtifactRole
from affidavit.models.inventory import Vault, VaultName, parse_vault_url
from affidavit.services import artifacts, segment_tables
from affidavit.services.backup.spool import Spooler, stat_key
from affidavit.services.context import Change, open_app
from affidavit.services.verify import vouch
from affidavit.vaults.file import FileVault

__all__ = ["ingested", "small_segments"]  # fixtures, used by name


def _ingest(cli: Any, tmp_path: Path, name: str) -> str:
    folder = tmp_path / name / "shop"
    folder.mkdir(parents=True)
    (folder / "customers.bson").write_bytes(_documents())
    (folder / "customers.metadata.json").write_text(json.dumps({"options": {}, "indexes": []}))
    r = cli("backup", "ingest", str(tmp_path / name), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    return str(json.loads(r.out)["backup_id"])


# -- the vouch ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_another_backups_completion_entry_relabelled_as_this_ones_does_not_vouch(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """The subject column of backup B's genuine (signed, proven) completion entry is
    edited to name backup A, and A's own entry is relabelled away: the entry still says B
    (and B's manifest digest), so A's first run is deep."""
    a = ingested["backup_id"]
    b = _ingest(cli, tmp_path, "second")
    seq_a, _ = _completion(home, a)
    seq_b, _ = _completion(home, b)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update ledger_entries set subject = 'backup:x' where seq = ?", (seq_a,))
        db.execute("update ledger_entries set subject = ? where seq = ?", (f"backup:{a}", seq_b))
    assert _found(home, a) is None
    code, out = _verify(cli, a)
    assert code == 0 and (out["mode"], out["vouched_by"]) == ("deep", None)


@pytest.mark.e2e
@pytest.mark.parametrize("claim", ["true", 1, 1.0, False, None])
def test_a_completion_entry_whose_proof_is_not_exactly_true_vouches_nothing(
    cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim: object
) -> None:
    """A signed completion entry that says ``tables_proven`` as anything but JSON ``true``
    (a writer that got it wrong): the first run is deep."""
    plain_record = Change.record

    def record_claiming(self: Change, action: str, subject: str, details: Any = None) -> Any:
        if action == "backup.completed":
            details = {**details, "tables_proven": claim}
        return plain_record(self, action, subject, details)

    monkeypatch.setattr(Change, "record", record_claiming)
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    backup_id = _ingest(cli, tmp_path, "dump")
    monkeypatch.setattr(Change, "record", plain_record)
    assert _completion(home, backup_id)[1]["details"]["tables_proven"] == claim
    assert _found(home, backup_id) is None
    code, first = _verify(cli, backup_id)
    assert code == 0 and (first["mode"], first["vouched_by"]) == ("deep", None)


@pytest.mark.e2e
@pytest.mark.parametrize("status", ["failed", "deleted", "running"])
def test_a_backup_no_longer_complete_is_not_passed_by_a_fast_run(
    cli: Any, home: Path, ingested: dict[str, Any], status: str
) -> None:
    """The catalog's status edited: whatever the mode, the verification fails."""
    backup_id = ingested["backup_id"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update backups set status = ? where id = ?", (status, backup_id))
    r = cli("verify", backup_id, "--json")
    assert "Traceback" not in r.err
    assert r.code in (1, 2, 3), (r.code, r.out, r.err)
    if r.code == 1:
        assert json.loads(r.out)["ok"] is False


@pytest.mark.e2e
def test_a_bogus_first_run_setting_is_bad_input(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_id = ingested["backup_id"]
    for value in ("bogus", "DEEP", "", "fast "):
        monkeypatch.setenv("AFFIDAVIT_VERIFY_FIRST_RUN", value)
        r = cli("verify", backup_id)
        assert r.code == 2, (value, r.code, r.err)
        assert "Traceback" not in r.err
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert lines[0].startswith("error:") and "verify_first_run" in lines[0], r.err
        assert any(line.startswith("hint:") for line in lines), r.err
    monkeypatch.delenv("AFFIDAVIT_VERIFY_FIRST_RUN")
    (home / "affidavit.toml").write_text("verify_first_run = true\n")
    r = cli("verify", backup_id)
    assert r.code == 2 and "verify_first_run" in r.err and "Traceback" not in r.err, r.err


def _wrong_plain_digest(segments: dict[str, Any]) -> None:
    row = segments["table"][2]
    row["plain_sha256"] = hashlib.sha256(b"not this segment").hexdigest()


@pytest.mark.e2e
def test_a_manifest_re_signed_with_a_wrong_plain_digest_is_checked_deep_first(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """One segment's plaintext digest wrong, the whole-file digests right, re-signed with the
    ledger key: another manifest digest than the writer's completion entry proved, so the
    first run is deep, and it finds the segment."""
    backup_id = ingested["backup_id"]
    _resign(home, backup_id, _wrong_plain_digest)
    assert _found(home, backup_id) is None
    code, out = _verify(cli, backup_id, "--workers", "2")
    assert code == 1 and out["mode"] == "deep" and out["ok"] is False
    assert out["findings"], out


@pytest.mark.e2e
def test_fast_mode_does_not_see_a_wrong_plain_digest_the_ledger_key_vouched(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """The trust boundary, stated as a test: whoever holds the ledger key can re-sign a
    manifest with a wrong plaintext digest *and* record a completion entry saying its
    tables were proven. A fast run then passes (it computes no plaintext digest), and
    ``--deep`` finds the segment. Without the key neither entry can be made
    (test_attack_write_proof.py, test_attack_fast_verify.py)."""
    backup_id = ingested["backup_id"]
    _resign(home, backup_id, _wrong_plain_digest)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (digest,) = db.execute(
            "select manifest_sha256 from backups where id = ?", (backup_id,)
        ).fetchone()
    with open_app(load_settings(home=home)) as app, app.change() as change:
        change.record(
            "backup.completed",
            f"backup:{backup_id}",
            {"manifest_sha256": digest, "tables_proven": True},
        )
    assert _found(home, backup_id) is not None
    code, fast = _verify(cli, backup_id, "--workers", "2")
    assert fast["mode"] == "fast"
    assert "segment-mismatch" not in {f["code"] for f in fast["findings"]}
    code, deep = _verify(cli, backup_id, "--workers", "2", "--deep")
    assert code == 1 and deep["mode"] == "deep" and deep["ok"] is False


def test_the_vouch_takes_only_json_true_and_this_backup() -> None:
    good = {"tables_proven": True, "manifest_sha256": "ab"}
    assert vouch._written_vouches(
        "backup.completed", "backup:a", good, backup_id="a", manifest_sha256="ab"
    )
    for action, subject, details in (
        ("backup.completed", "backup:b", good),
        ("backup.started", "backup:a", good),
        ("backup.completed", "backup:a", {**good, "tables_proven": 1}),
        ("backup.completed", "backup:a", {**good, "tables_proven": "true"}),
        ("backup.completed", "backup:a", {**good, "manifest_sha256": "AB"}),
        ("backup.completed", "backup:a", {"tables_proven": True}),
    ):
        assert not vouch._written_vouches(
            action, subject, details, backup_id="a", manifest_sha256="ab"
        )


# -- the plaintext side ---------------------------------------------------------------------------


def _encrypted(tmp_path: Path, plain: Path, size: int) -> Any:
    cipher = tmp_path / "c.bson.age"
    cipher.touch()
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    return encrypt_file(recipient, plain, cipher, segment_size=size)


def test_the_plain_side_of_a_file_that_vanished_gives_no_table(tmp_path: Path) -> None:
    plain = tmp_path / "c.bson"
    plain.write_bytes(bson.encode({"_id": 1, "s": "v" * 3000}) * 50)
    done = _encrypted(tmp_path, plain, 1 << 16)
    plain.unlink()
    side = segment_tables.PlainSide(plain, 1 << 16)
    assert side.wait() is None
    assert segment_tables.table_of_staged("d/c.bson.age", ArtifactRole.DATA, done, side) is None


def test_the_plain_side_of_a_fifo_fails_instead_of_blocking(tmp_path: Path) -> None:
    """A FIFO swapped in for the file between its listing and its staging: opening it for
    reading waited for a writer for ever, and ``stop`` (a stopped ingest) with it."""
    fifo = tmp_path / "c.bson"
    os.mkfifo(fifo)
    side = segment_tables.PlainSide(fifo, 1 << 16)
    side._thread.join(10)
    alive = side._thread.is_alive()
    if alive:  # release the blocked open so the test leaves no thread behind
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert not alive
    assert side.wait() is None


def test_the_plain_side_of_a_link_swapped_to_another_file_gives_no_table(
    tmp_path: Path,
) -> None:
    """The child encrypted the file a symbolic link named; the link then names another file
    of the same size when the plaintext side reads it."""
    first, second = tmp_path / "a.bson", tmp_path / "b.bson"
    first.write_bytes(bson.encode({"_id": 1, "s": "a" * 5000}) * 40)
    second.write_bytes(bson.encode({"_id": 1, "s": "b" * 5000}) * 40)
    link = tmp_path / "c.bson"
    link.symlink_to(first)
    done = _encrypted(tmp_path, link, 1 << 16)
    link.unlink()
    link.symlink_to(second)
    side = segment_tables.PlainSide(link, 1 << 16)
    assert segment_tables.table_of_staged("d/c.bson.age", ArtifactRole.DATA, done, side) is None


def test_a_staged_file_rewritten_during_its_encryption_gets_no_table_or_the_files_one(
    tmp_path: Path,
) -> None:
    """A writer flips bytes of the plaintext while the child encrypts it and the plaintext
    side reads it. Each time: either no table, or the table an independent builder makes
    from the ciphertext written and the plaintext it decrypts to (what was encrypted)."""
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    size = 1 << 16
    plain = tmp_path / "c.bson"
    doc = bson.encode({"_id": 1, "s": "w" * 60000})
    for attempt in range(6):
        plain.write_bytes(doc * 200)  # 12 MB
        cipher = tmp_path / f"c{attempt}.bson.age"
        cipher.touch()
        stop = threading.Event()

        def scribble(n: int = attempt, stop: threading.Event = stop) -> None:
            with plain.open("r+b") as fh:
                k = 0
                while not stop.is_set():
                    fh.seek((k * 7919 + n) % (len(doc) * 200 - 1))
                    fh.write(b"\x01")
                    fh.flush()
                    k += 1
                    time.sleep(0.0005)

        writer = threading.Thread(target=scribble)
        side = segment_tables.PlainSide(plain, size)
        writer.start()
        try:
            done = encrypt_file(recipient, plain, cipher, segment_size=size)
        finally:
            stop.set()
            writer.join()
        table = segment_tables.table_of_staged("d/c.bson.age", ArtifactRole.DATA, done, side)
        if table is None:
            continue
        encrypted = pyrage.decrypt(cipher.read_bytes(), [identity])
        builder = segment_tables.TableBuilder("d/c.bson.age", ArtifactRole.DATA, size)
        builder.plain(encrypted)
        builder.cipher(cipher.read_bytes())
        assert table == builder.table(
            cipher_sha256=done.cipher_sha256, plain_sha256=done.plain_sha256
        )


def test_staging_stopped_midway_leaves_no_thread_and_no_spool_file(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    kind, url = parse_vault_url(f"file://{root}")
    vault = FileVault(
        Vault(name=VaultName("v"), kind=kind, url=url, region=None, immutable_days=None,
              created_at=datetime.now(UTC))
    )  # fmt: skip
    plain = tmp_path / "big.bson"
    plain.write_bytes(bson.encode({"_id": 1, "s": "s" * 1_000_000}) * 300)  # 300 MB
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(EncryptionStopped):
        artifacts.stage_file(vault, recipient, plain, stop=stop)
    left = [
        t for t in threading.enumerate() if t.ident not in before and t.name.startswith("affid")
    ]
    assert left == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".spool")] == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("tamper", "entry_intact"),
    [
        ("update ledger_entries set nodes = x''", True),
        ("update ledger_entries set nodes = x'00'", True),
        ("update ledger_entries set nodes = 'text'", True),
        ("update ledger_entries set leaf_hash = x''", True),
        ("update ledger_entries set leaf_hash = x'0102'", True),
        ("update ledger_entries set entry = x'ff00' where action = 'backup.completed'", False),
        ("update ledger_entries set entry = '[]' where action = 'backup.completed'", False),
        ("delete from ledger_entries where action = 'backup.started'", True),
        ("delete from ledger_entries where action = 'backup.completed'", False),
    ],
)
def test_a_mangled_ledger_table_gives_no_false_vouch_and_no_traceback(
    cli: Any, home: Path, ingested: dict[str, Any], tamper: str, entry_intact: bool
) -> None:
    """Stored subtree hashes, leaf hashes or entries mangled in the catalog (wrong types,
    wrong lengths, rows gone). The completion entry vouches only while its own bytes are
    intact and a proof from whatever is stored still reaches the signed root (a proof that
    verifies is one: the hashes it used are the tree's); otherwise nothing vouches and the
    run is deep. Never a traceback."""
    backup_id = ingested["backup_id"]
    seq, _ = _completion(home, backup_id)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(tamper)
    found = _found(home, backup_id)
    assert found is None or (entry_intact and found == (seq, vouch.WRITTEN)), found
    r = cli("verify", backup_id, "--json")
    assert "Traceback" not in r.err, r.err
    assert r.code in (0, 1, 3), (r.code, r.err)
    if r.out:
        out = json.loads(r.out)
        assert out["mode"] == ("deep" if found is None else "fast"), out


def test_ctrl_c_while_waiting_for_the_spooler_leaves_no_spool_file_and_no_thread(
    tmp_path: Path,
) -> None:
    """Ctrl-C while ingest waits for the staging to end (``Spooler.join``): on Python 3.11 a
    ``KeyboardInterrupt`` that interrupts ``Thread.join`` leaves the thread marked stopped, so
    the ``discard`` after it returned at once, the process went on to exit, and the staging
    file (and its ``encrypt-file`` child) outlived it. Now the discard waits for the staging
    to stop and removes its file."""
    root = tmp_path / "vault"
    kind, url = parse_vault_url(f"file://{root}")
    vault = FileVault(
        Vault(name=VaultName("v"), kind=kind, url=url, region=None, immutable_days=None,
              created_at=datetime.now(UTC))
    )  # fmt: skip
    plain = tmp_path / "big.bson"
    plain.write_bytes(bson.encode({"_id": 1, "s": "s" * 1_000_000}) * 200)  # 200 MB
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    spooler = Spooler(recipient, [(plain, stat_key(plain))], vault)
    main = threading.get_ident()
    # Ctrl-C as a terminal delivers it, also under a runner that started this process with
    # SIGINT ignored (an ignored SIGINT is inherited across exec)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))
    spooler.start()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            spooler.join()
            time.sleep(30)  # (the join returned first: the signal lands here)
    finally:
        timer.cancel()
        spooler.discard()
        signal.signal(signal.SIGINT, previous)
    spools = [p.name for p in root.iterdir() if p.name.startswith(".spool")]
    alive = [t.name for t in threading.enumerate() if t.name.startswith("affidavit-spool")]
    for thread in threading.enumerate():  # leave nothing behind for the next test
        if thread.name.startswith("affidavit-spool"):
            thread.join(60)
    leftover = [p.name for p in root.iterdir() if p.name.startswith(".spool")]
    for name in leftover:
        (root / name).unlink()
    assert (alive, spools, leftover) == ([], [], [])
