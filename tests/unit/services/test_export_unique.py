"""The ``unique`` rule's digest set in bounded memory: membership is exact across the memory
set and the spilled table (a duplicate is caught whether its first occurrence is in memory or
on disk), the spill lives in a private folder that is removed, memory stops growing with the
count, and the contract check catches a duplicate far past the spill threshold."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from affidavit.crypto.digest import sha256
from affidavit.models.export import Contract
from affidavit.private_temp import PREFIX
from affidavit.services.exports import unique
from affidavit.services.exports.records import ContractCheck
from affidavit.services.exports.unique import DigestSet


def _digests(n: int, salt: bytes = b"") -> list[bytes]:
    return [sha256(salt + i.to_bytes(8, "big")) for i in range(n)]


def _spill_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(f"{PREFIX}export-unique.*"))


def test_membership_is_exact_in_memory_and_on_disk() -> None:
    before = _spill_folders()
    found = DigestSet(memory_digests=100)
    inside = _digests(1050)
    for d in inside:
        assert d not in found
        found.add(d)
    assert found.spilled == 1000
    folders = _spill_folders() - before
    assert len(folders) == 1
    folder = folders.pop()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(d in found for d in inside)  # the first 1,000 only on disk
    outside = _digests(5000, salt=b"other")
    assert not any(d in found for d in outside)
    assert b"short" not in found and "text" not in found
    for d in inside[:100]:  # once more (on disk already): a spill that adds only the 50 new
        found.add(d)
    assert found.spilled == 1050
    assert inside[3] in found
    found.close()
    found.close()  # twice is fine
    assert not folder.exists()
    assert inside[0] not in found


def test_a_digest_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DigestSet().add(b"x" * 31)


def test_a_bloom_positive_that_is_not_in_the_table_is_not_a_member() -> None:
    found = DigestSet(memory_digests=1)
    first = sha256(b"first")
    found.add(first)  # spilled at once: its 4 bloom bits are set
    twin = first[:13] + bytes(b ^ 0xFF for b in first[13:16]) + first[16:]
    # the same low 104 bits: the same 4 bloom positions, another digest
    assert int.from_bytes(twin, "little") & ((1 << 104) - 1) == int.from_bytes(first, "little") & (
        (1 << 104) - 1
    )
    assert twin != first
    assert twin not in found  # the bloom filter says maybe; the table says no
    assert first in found
    found.close()


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_does_not_grow_with_the_count() -> None:
    found = DigestSet(memory_digests=20_000)
    for d in _digests(60_000):
        found.add(d)
    settled = _rss_kib()
    for d in _digests(300_000, salt=b"more"):
        found.add(d)
    grown = _rss_kib() - settled
    # a plain set would hold ~300,000 x ~110 bytes (~32 MiB) more; bounded: the set of at
    # most 20,000 digests and SQLite's cache
    assert grown < 12 * 1024, grown
    assert found.spilled >= 340_000
    found.close()


def _check(contract: Contract) -> ContractCheck:
    return ContractCheck(contract, frozenset({"_id", "email"}))


def test_the_contract_catches_a_duplicate_whose_first_occurrence_was_spilled(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(unique, "MEMORY_DIGESTS", 50)
    check = _check(Contract(schema={}, unique=("email",)))
    for i in range(500):
        assert check.check({"_id": i, "email": f"p{i}@example.com"})
    assert check._seen["email"].spilled >= 450
    assert not check.check({"_id": 1000, "email": "p3@example.com"})  # on disk
    assert not check.check({"_id": 1001, "email": "p499@example.com"})  # in memory
    assert check.check({"_id": 1002, "email": "new@example.com"})
    assert [v.rule for v in check.violations] == ["unique", "unique"]
    assert check.failed_records == 2
    check.finish(shipped=501)
    assert check.passed is False  # max_violations = 0
