"""Segment memory reused by a verification's threads (issue 18): a set given back is the
one taken next (no new allocation per segment or per artifact); views have the sizes asked
for, the buffers grow when a larger segment comes, and an empty segment gets empty views."""

from __future__ import annotations

from affidavit.crypto.age_reader import SegmentBuffers
from affidavit.services.verify.segments import BufferPool


def test_a_set_given_back_is_taken_again() -> None:
    pool = BufferPool()
    first = pool.take()
    second = pool.take()
    assert first is not second  # two tasks at once: two sets
    pool.give(first)
    assert pool.take() is first
    pool.give(second)
    assert pool.take() is second


def test_views_and_growth() -> None:
    buffers = SegmentBuffers()
    sealed, plain = buffers.views(0, 0)
    assert (len(sealed), len(plain)) == (0, 0)
    sealed, plain = buffers.views(1000, 900)
    assert (len(sealed), len(plain)) == (1000, 900)
    sealed[:] = b"\x01" * 1000
    kept = buffers.sealed
    sealed, _ = buffers.views(500, 10)
    assert buffers.sealed is kept and bytes(sealed) == b"\x01" * 500  # reused, not zeroed
    sealed, _ = buffers.views(5000, 10)
    assert buffers.sealed is not kept and len(sealed) == 5000  # a larger segment: grown
