"""Comparing two fingerprint indexes: the keys that are missing, extra or changed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from affidavit.errors import InputError
from affidavit.fingerprint.index import IndexEntry, IndexReader


class Change(StrEnum):
    """How a key differs between the left (expected) and right (actual) index."""

    MISSING = "missing"  # in left, not in right
    EXTRA = "extra"  # in right, not in left
    CHANGED = "changed"  # in both, different content
    DUPLICATE = "duplicate"  # the same key more than once on one side


@dataclass(frozen=True, slots=True)
class KeyDifference:
    """One differing key, with the key bytes as far as the index kept them."""

    change: Change
    key_hash: bytes
    key: bytes
    key_truncated: bool
    side: str = ""  # for duplicates: "left" or "right"


@dataclass(slots=True)
class DiffResult:
    """Counts of every kind of difference, and the first ``limit`` differences in key order."""

    left_count: int
    right_count: int
    counts: dict[Change, int] = field(default_factory=lambda: dict.fromkeys(Change, 0))
    differences: list[KeyDifference] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """True when no key differs."""
        return not any(self.counts.values())


def diff_indexes(left: IndexReader, right: IndexReader, *, limit: int | None = 100) -> DiffResult:
    """Merge-walk both indexes by key hash and classify every difference."""
    lf, rf = left.fingerprint, right.fingerprint
    if (lf.profile, lf.bucket_bits) != (rf.profile, rf.bucket_bits):
        raise InputError(
            f"the indexes are not comparable: {lf.profile}/b{lf.bucket_bits} vs "
            f"{rf.profile}/b{rf.bucket_bits}",
            hint="fingerprint both with the same --profile",
        )
    result = DiffResult(left_count=lf.count, right_count=rf.count)
    for diff in _walk(left.entries(), right.entries()):
        result.counts[diff.change] += 1
        if limit is None or len(result.differences) < limit:
            result.differences.append(diff)
    return result


def _grouped(entries: Iterator[IndexEntry]) -> Iterator[list[IndexEntry]]:
    group: list[IndexEntry] = []
    for entry in entries:
        if group and entry.key_hash != group[0].key_hash:
            yield group
            group = []
        group.append(entry)
    if group:
        yield group


def _walk(left: Iterator[IndexEntry], right: Iterator[IndexEntry]) -> Iterator[KeyDifference]:
    lg, rg = _grouped(left), _grouped(right)
    a, b = next(lg, None), next(rg, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0].key_hash < b[0].key_hash):
            assert a is not None
            yield _diff(Change.MISSING, a[0])
            yield from _dups(a, "left")
            a = next(lg, None)
        elif a is None or b[0].key_hash < a[0].key_hash:
            yield _diff(Change.EXTRA, b[0])
            yield from _dups(b, "right")
            b = next(rg, None)
        else:
            if sorted(e.record_hash for e in a) != sorted(e.record_hash for e in b):
                yield _diff(Change.CHANGED, a[0])
            yield from _dups(a, "left")
            yield from _dups(b, "right")
            a, b = next(lg, None), next(rg, None)


def _diff(change: Change, entry: IndexEntry, side: str = "") -> KeyDifference:
    return KeyDifference(change, entry.key_hash, entry.key, entry.key_truncated, side)


def _dups(group: list[IndexEntry], side: str) -> Iterator[KeyDifference]:
    if len(group) > 1:
        yield _diff(Change.DUPLICATE, group[0], side)
