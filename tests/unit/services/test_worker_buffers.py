"""A cluster worker's segment memory (``services/verify/segments.py: _IdleBufferPool``):
reused from task to task while tasks come, returned to the system once idle."""

from __future__ import annotations

import time

import pytest

from affidavit.services.verify import segments


def test_buffers_are_reused_while_tasks_come_and_dropped_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(segments._IdleBufferPool, "IDLE", 0.2)
    pool = segments._IdleBufferPool()
    first = pool.take()
    first.views(1 << 20, 1 << 20)  # a segment's memory, mapped
    pool.give(first)
    again = pool.take()
    assert again is first  # the next task reuses it
    pool.give(again)
    deadline = time.monotonic() + 5
    while pool._pool._free and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pool._pool._free  # idle: given back
    fresh = pool.take()
    assert fresh is not first and fresh.sealed is None  # a new, empty set
    pool.give(fresh)


def test_a_task_taking_memory_stops_the_idle_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments._IdleBufferPool, "IDLE", 0.3)
    pool = segments._IdleBufferPool()
    one = pool.take()
    pool.give(one)
    held = pool.take()  # cancels the release
    time.sleep(0.6)
    pool.give(held)
    assert pool.take() is one  # still there
