"""The calendar's values: ISO 8601 recurrences (parsed, written back, as RRULEs, added to
dates), the states of an item, due dates, and deadlines folded from hostile event lists."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from affidavit.errors import InputError
from affidavit.models.calendar import (
    DEADLINE_ADDED,
    DEADLINE_REMOVED,
    ItemState,
    Recurrence,
    clean_text,
    fold,
    parse_due,
    state_at,
)
from affidavit.models.ledger import Event

T0 = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "canonical", "rrule"),
    [
        ("P1Y", "P1Y", {"FREQ": "YEARLY", "INTERVAL": 1}),
        ("p3m", "P3M", {"FREQ": "MONTHLY", "INTERVAL": 3}),
        ("P1Y6M", "P18M", {"FREQ": "MONTHLY", "INTERVAL": 18}),
        ("P2W", "P2W", {"FREQ": "WEEKLY", "INTERVAL": 2}),
        ("P14D", "P2W", {"FREQ": "WEEKLY", "INTERVAL": 2}),
        ("P30D", "P30D", {"FREQ": "DAILY", "INTERVAL": 30}),
        ("PT6H", "PT6H", {"FREQ": "HOURLY", "INTERVAL": 6}),
        ("PT90M", "PT1H30M", {"FREQ": "MINUTELY", "INTERVAL": 90}),
        ("P1DT12H", "P1DT12H", {"FREQ": "HOURLY", "INTERVAL": 36}),
    ],
)
def test_a_recurrence_reads_writes_and_becomes_an_rrule(
    text: str, canonical: str, rrule: dict[str, object]
) -> None:
    every = Recurrence.parse(text)
    assert every.text == canonical
    assert every.rrule() == rrule
    assert Recurrence.parse(every.text) == every


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "1Y", "P1X", "P-1D", "P0D", "P1.5Y", "P1Y2D", "P1M1W", "P1DT", "x" * 50]
)
def test_what_is_not_a_recurrence_is_refused(text: str) -> None:
    with pytest.raises(InputError):
        Recurrence.parse(text)


def test_a_deadline_recurs_by_days_at_least() -> None:
    with pytest.raises(InputError, match="by days at least"):
        Recurrence.parse("PT6H", dates_only=True)
    assert Recurrence.parse("P1D", dates_only=True).days == 1


def test_months_keep_the_day_or_the_months_last() -> None:
    monthly = Recurrence(months=1)
    assert monthly.after(T0) == datetime(2026, 2, 28, 9, 0, tzinfo=UTC)
    assert monthly.after(T0, 2) == datetime(2026, 3, 31, 9, 0, tzinfo=UTC)  # from the start
    yearly = Recurrence(months=12)
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert yearly.after(leap) == datetime(2029, 2, 28, tzinfo=UTC)
    assert Recurrence(days=7).after(T0) == T0 + timedelta(days=7)


def test_the_next_occurrence_is_the_first_not_before() -> None:
    yearly = Recurrence(months=12)
    start = datetime(2020, 3, 15, tzinfo=UTC)
    assert yearly.next_from(start, datetime(2026, 3, 15, tzinfo=UTC)) == datetime(
        2026, 3, 15, tzinfo=UTC
    )
    assert yearly.next_from(start, datetime(2026, 3, 16, tzinfo=UTC)) == datetime(
        2027, 3, 15, tzinfo=UTC
    )
    assert yearly.next_from(start, datetime(2019, 1, 1, tzinfo=UTC)) == start
    days = Recurrence(days=10)
    got = days.next_from(start, start + timedelta(days=25))
    assert got == start + timedelta(days=30)


def test_states_at_a_moment() -> None:
    due = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert state_at(due, due - timedelta(seconds=1)) is ItemState.UPCOMING
    assert state_at(due, due + timedelta(minutes=59)) is ItemState.DUE
    assert state_at(due, due + timedelta(minutes=61)) is ItemState.OVERDUE
    day = datetime(2026, 6, 1, tzinfo=UTC)
    assert state_at(day, datetime(2026, 5, 31, 23, tzinfo=UTC), all_day=True) is ItemState.UPCOMING
    assert state_at(day, datetime(2026, 6, 1, 23, tzinfo=UTC), all_day=True) is ItemState.DUE
    assert state_at(day, datetime(2026, 6, 2, 0, tzinfo=UTC), all_day=True) is ItemState.OVERDUE


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "tomorrow", "", "2026-01-01T00:00"])
def test_a_due_date_that_does_not_parse_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="is not a date"):
        parse_due(text)
    assert parse_due(" 2026-02-28 ") == date(2026, 2, 28)


def test_text_is_cleaned_or_refused() -> None:
    assert clean_text("  a \n b ", "t", 10) == "a b"
    for bad in ("a\x1b[31m", "a\u202eb"):
        with pytest.raises(InputError, match="control characters"):
            clean_text(bad, "t", 10)
    with pytest.raises(InputError, match="at most 3"):
        clean_text("abcd", "t", 3)
    with pytest.raises(InputError, match="must not be empty"):
        clean_text("   ", "t", 3, required=True)


def _event(seq: int, action: str, subject: str, **details: object) -> Event:
    return Event(
        seq=seq,
        time=(T0 + timedelta(minutes=seq)).isoformat(),
        actor="admin",
        action=action,
        subject=subject,
        details=details,
    )


def test_deadlines_fold_from_their_events_and_nothing_else_counts() -> None:
    added = {"title": "DORA register", "due": "2027-01-31", "every": "P1Y", "owner": "x@y"}
    events = [
        _event(7, DEADLINE_REMOVED, "deadline:dl-1", reason="met"),  # out of order: fine
        _event(3, DEADLINE_ADDED, "deadline:dl-1", **added),
        _event(4, DEADLINE_ADDED, "deadline:dl-1", **added),  # a second add of one id
        _event(5, DEADLINE_ADDED, "deadline:dl-2", title="no due"),  # not a deadline
        _event(6, DEADLINE_ADDED, "deadline:dl-3", title="x", due="2027-01-01", every="P1X"),
        _event(8, DEADLINE_REMOVED, "deadline:dl-1"),  # removed twice
        _event(9, DEADLINE_REMOVED, "deadline:dl-9"),  # never added
        _event(10, DEADLINE_ADDED, "deadline:dl-4", title="GDPR DPIA", due="2026-06-30"),
    ]
    folded = fold(events)
    assert set(folded.deadlines) == {"dl-1", "dl-4"}
    first = folded.deadlines["dl-1"]
    assert first.every == Recurrence(months=12)
    assert not first.active
    assert (first.removed_seq, first.removal_reason) == (7, "met")
    assert folded.deadlines["dl-4"].active and folded.deadlines["dl-4"].every is None
    assert len(folded.orphans) == 5, folded.orphans
