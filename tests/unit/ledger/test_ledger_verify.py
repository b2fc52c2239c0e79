"""The independent verifier: every defect is a named finding; a clean ledger passes."""

from __future__ import annotations

import pytest

from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, sign_checkpoint
from affidavit.ledger.verify import (
    FindingCode,
    LedgerRecord,
    VerifyReport,
    decide,
    verify_ledger,
)
from affidavit.models.ledger import ClientInfo, Event

ORIGIN = "affidavit.local/test/0011aabb"
SIGNER = NoteSigner(ORIGIN, SigningKey.from_private_bytes(bytes(range(32))))
VERIFIER = SIGNER.verifier()


def _event(seq: int, **details: object) -> bytes:
    return Event(
        seq=seq,
        time=f"2026-01-01T00:00:{seq % 60:02d}.000000Z",
        actor="alice",
        action="test.event",
        subject=f"thing:{seq}",
        details={"n": seq, **details},
        client=ClientInfo(agent="pytest"),
    ).canonical()


def _records(n: int) -> list[LedgerRecord]:
    out = []
    for seq in range(n):
        entry = _event(seq)
        out.append(LedgerRecord(seq, entry, merkle.leaf_hash(entry)))
    return out


def _note(
    records: list[LedgerRecord], size: int, signer: NoteSigner = SIGNER, origin: str = ORIGIN
) -> str:
    root = merkle.root([merkle.leaf_hash(r.entry) for r in records[:size]])
    return sign_checkpoint(Checkpoint(origin=origin, size=size, root=root), signer)


def _codes(report: VerifyReport) -> list[FindingCode]:
    return [f.code for f in report.findings]


def _verify(records: list[LedgerRecord], notes: list[str], **kw: object) -> VerifyReport:
    return verify_ledger(records, notes, VERIFIER, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clean() -> tuple[list[LedgerRecord], list[str]]:
    records = _records(20)
    return records, [_note(records, n) for n in (3, 8, 13, 20)]


def test_verify_clean_ledger_passes(clean: tuple[list[LedgerRecord], list[str]]) -> None:
    records, notes = clean
    report = _verify(records, notes, full=True)
    assert report.ok and report.findings == ()
    assert report.size == 20
    assert report.root == merkle.root([merkle.leaf_hash(r.entry) for r in records])
    assert report.checkpoint is not None and report.checkpoint.size == 20
    assert report.to_json()["ok"] is True


def test_verify_empty_ledger_without_checkpoint_fails() -> None:
    report = _verify([], [])
    assert not report.ok
    assert _codes(report) == [FindingCode.NO_CHECKPOINT]


def test_verify_empty_ledger_with_signed_empty_checkpoint_passes() -> None:
    assert _verify([], [_note([], 0)]).ok


def test_verify_altered_entry_is_localised_by_checkpoints(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    forged = _event(10, n=999)
    records[10] = LedgerRecord(10, forged, merkle.leaf_hash(forged))  # leaf hash updated too
    report = _verify(records, notes)
    assert _codes(report) == [FindingCode.ROOT_MISMATCH]
    finding = report.findings[0]
    assert finding.seq == 8  # between the checkpoint of 8 (matches) and of 13 (does not)
    assert "8..12" in finding.message and "1 later" in finding.message
    assert report.checkpoint is not None and report.checkpoint.size == 8


def test_verify_stored_leaf_hash_mismatch(clean: tuple[list[LedgerRecord], list[str]]) -> None:
    records, notes = clean
    records[5] = records[5]._replace(leaf_hash=bytes(32))
    report = _verify(records, notes)
    assert _codes(report) == [FindingCode.STORED_LEAF_MISMATCH]
    assert report.findings[0].seq == 5


def test_verify_missing_entry_is_a_gap(clean: tuple[list[LedgerRecord], list[str]]) -> None:
    records, notes = clean
    del records[6]
    codes = _codes(_verify(records, notes))
    assert FindingCode.SEQ_GAP in codes and FindingCode.ROOT_MISMATCH in codes
    assert FindingCode.CHECKPOINT_BEYOND_END in codes  # 19 entries, checkpoint of 20


def test_verify_swapped_entries(clean: tuple[list[LedgerRecord], list[str]]) -> None:
    records, notes = clean
    a, b = records[4], records[9]
    records[4] = LedgerRecord(4, b.entry, b.leaf_hash)
    records[9] = LedgerRecord(9, a.entry, a.leaf_hash)
    report = _verify(records, notes)
    mismatched = [f.seq for f in report.findings if f.code is FindingCode.SEQ_MISMATCH]
    assert mismatched == [4, 9]
    assert FindingCode.ROOT_MISMATCH in _codes(report)


def test_verify_duplicate_and_out_of_order_rows(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    dup = [*records[:5], records[4], *records[5:]]
    assert FindingCode.SEQ_DUPLICATE in _codes(_verify(dup, notes))
    reordered = [*records[:5], records[7], records[5], records[6], *records[8:]]
    codes = _codes(_verify(reordered, notes))
    assert FindingCode.SEQ_OUT_OF_ORDER in codes and FindingCode.ROOT_MISMATCH in codes


def test_verify_unsigned_tail(clean: tuple[list[LedgerRecord], list[str]]) -> None:
    records, notes = clean
    extra = _event(20)
    records.append(LedgerRecord(20, extra, merkle.leaf_hash(extra)))
    report = _verify(records, notes)
    assert _codes(report) == [FindingCode.UNSIGNED_ENTRIES]
    assert report.findings[0].seq == 20


def test_verify_checkpoint_wrong_key_bad_signature_other_origin_malformed(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    other = NoteSigner(ORIGIN, SigningKey.generate())
    wrong_key = _note(records, 20, signer=other)
    bad_sig = notes[-1].replace("\n20\n", "\n19\n")
    other_origin = _note(records, 20, origin="elsewhere.example/log")
    report = _verify(records, [*notes[:-1], wrong_key, bad_sig, other_origin, "garbage"])
    codes = _codes(report)
    assert FindingCode.CHECKPOINT_WRONG_KEY in codes
    assert FindingCode.CHECKPOINT_BAD_SIGNATURE in codes
    assert FindingCode.CHECKPOINT_OTHER_ORIGIN in codes
    assert FindingCode.CHECKPOINT_MALFORMED in codes
    assert FindingCode.UNSIGNED_ENTRIES in codes  # the genuine checkpoint of 20 is gone


def test_verify_old_checkpoint_detects_truncation(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    old = notes[-1]
    report = _verify(records[:15], notes[:3], old_checkpoint=old)
    assert FindingCode.TRUNCATED in _codes(report)


def test_verify_old_checkpoint_detects_rewrite_to_same_size(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    old = _note(records, 15)
    rewritten = records[:12]
    for seq in range(12, 20):
        entry = _event(seq, forged=True)
        rewritten.append(LedgerRecord(seq, entry, merkle.leaf_hash(entry)))
    # the attacker cannot sign, so only the checkpoints up to 8 are left in the store
    report = _verify(rewritten, notes[:2], old_checkpoint=old)
    assert FindingCode.OLD_CHECKPOINT_INCONSISTENT in _codes(report)
    assert _verify(records, notes, old_checkpoint=old).ok


def test_verify_old_checkpoint_signed_by_another_key(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    old = _note(records, 10, signer=NoteSigner(ORIGIN, SigningKey.generate()))
    assert _codes(_verify(records, notes, old_checkpoint=old)) == [
        FindingCode.OLD_CHECKPOINT_INVALID
    ]


def test_verify_full_mode_flags_non_canonical_and_unparseable_entries() -> None:
    records = _records(4)
    loose = b'{"action":"x","seq":2}'
    records[2] = LedgerRecord(2, loose, merkle.leaf_hash(loose))
    junk = b"\xff\xfe not json"
    records[3] = LedgerRecord(3, junk, merkle.leaf_hash(junk))
    notes = [_note(records, 4)]
    cheap = _codes(_verify(records, notes))
    assert cheap == [FindingCode.ENTRY_UNPARSEABLE]  # only the entry without a seq
    full = _codes(_verify(records, notes, full=True))
    assert FindingCode.ENTRY_NOT_CANONICAL in full
    assert full.count(FindingCode.ENTRY_UNPARSEABLE) == 2


def test_verify_decide_is_false_for_any_finding(
    clean: tuple[list[LedgerRecord], list[str]],
) -> None:
    records, notes = clean
    assert decide([])
    report = _verify(records[:19], notes)
    assert not decide(report.findings)
    assert report.to_json()["findings"][0].keys() == {"code", "seq", "message"}


@pytest.mark.parametrize(
    "actor",
    ["alice@example.com", 'o"brien', "back\\slash", "tab\there", "zoë ✓", "bell\x07"],
)
def test_query_columns_match_their_entry_whatever_they_hold(actor: str) -> None:
    from affidavit.ledger.verify import _columns_match
    from affidavit.models.ledger import Event

    event = Event(
        seq=3, time="2026-12-01T00:00:00.000000Z", actor=actor, action="test.event",
        subject=f"thing:{actor}", details={"note": actor},
    )  # fmt: skip
    entry = event.canonical()
    assert _columns_match(entry, event.action, actor, event.subject, event.time)
    assert not _columns_match(entry, event.action, actor + "x", event.subject, event.time)
    assert not _columns_match(entry, "other.action", actor, event.subject, event.time)
    assert not _columns_match(entry, event.action, actor, event.subject, "2025-01-01T00:00:00Z")
