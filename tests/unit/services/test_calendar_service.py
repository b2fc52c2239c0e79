"""The governance calendar over a real home (SQLite catalog and ledger): what each source
yields, deadlines recorded as ledger events only (and nothing recorded for bad input), a
source another module appends, and the iCalendar feed parsed back with ``icalendar``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import icalendar
import pytest

from affidavit.config import load_settings
from affidavit.errors import InputError, NotFound
from affidavit.models.calendar import CalendarItem, ItemKind, ItemState, Recurrence
from affidavit.services import calendar as cal
from affidavit.services import policy as policies
from affidavit.services.calendar_ics import item_uid, render_ics
from affidavit.services.context import App, open_app
from affidavit.services.principals import local_principal

POLICY = (Path(__file__).resolve().parents[1] / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)
NOW = datetime.now(UTC)


def _actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [r[0] for r in db.execute("SELECT action FROM ledger_entries ORDER BY seq")]


def _by_id(app: App, **kw: object) -> dict[str, CalendarItem]:
    return {i.id: i for i in cal.build_calendar(app, **kw).items}  # type: ignore[arg-type]


def test_a_new_home_has_its_policy_check_due_and_its_reviews_ahead(app: App) -> None:
    now = datetime.now(UTC)
    items = _by_id(app, now=now)
    check = items["control:policy-check"]
    assert check.state is ItemState.DUE
    assert check.recurrence == Recurrence(days=1)
    assert "no approved policy" in check.detail
    rotation, review = items["key-rotation:kek"], items["access-review:roles"]
    for item in (rotation, review):  # one period after the home began: not due yet
        assert item.state is ItemState.UPCOMING
        assert timedelta(days=89) < item.due - now <= timedelta(days=90)
        assert item.recurrence == Recurrence(days=90)
    assert not any(i.kind is ItemKind.POLICY_REVIEW for i in items.values())


def test_the_policy_in_force_sets_the_periods(app: App, home: Path) -> None:
    version = policies.propose_policy_text(app, POLICY, name="policy.toml")
    with open_app(load_settings(home=home, overrides={"actor": "bob"})) as other:
        policies.approve_policy(other, version.version)
    policies.check_policy(app, live=False)
    items = _by_id(app, now=datetime.now(UTC))
    rotation = items["key-rotation:kek"]
    assert rotation.recurrence == Recurrence(days=365)
    assert "policy" in rotation.detail and rotation.owner == "platform@example.com"
    review = items["policy-review:policy"]
    assert review.recurrence == Recurrence(days=365)
    assert review.subject == "policy:v1" and review.link is not None
    done = [i for i in items.values() if i.state is ItemState.DONE]
    assert {i.kind for i in done} == {ItemKind.CONTROL, ItemKind.POLICY_REVIEW}
    check = items["control:policy-check"]
    assert check.state is ItemState.UPCOMING and check.last_done is not None
    assert check.link is not None and check.link.startswith("ledger:")


def test_deadlines_are_ledger_events_only(app: App, home: Path) -> None:
    me = local_principal(app)
    before = _actions(home)
    past = cal.add_deadline(app, me, title="Board sign-off", due="2020-03-31", owner="cfo@x")
    yearly = cal.add_deadline(
        app, me, title="DORA register of information", due="2020-04-30", every="P1Y"
    )
    assert _actions(home)[len(before) :] == ["calendar.deadline_added"] * 2
    items = _by_id(app, now=NOW)
    one_off = items[f"deadline:{past.id}"]
    assert one_off.state is ItemState.OVERDUE and one_off.all_day
    assert one_off.due == datetime(2020, 3, 31, tzinfo=UTC) and one_off.owner == "cfo@x"
    recurring = items[f"deadline:{yearly.id}"]
    assert recurring.due.date() >= NOW.date() and (recurring.due.month, recurring.due.day) == (
        4,
        30,
    )
    assert recurring.state in (ItemState.UPCOMING, ItemState.DUE)
    removed = cal.remove_deadline(app, me, past.id, reason="met")
    assert not removed.active and removed.removal_reason == "met"
    assert f"deadline:{past.id}" not in _by_id(app, now=NOW)
    assert [d.id for d in cal.list_deadlines(app)] == [past.id, yearly.id]
    assert _actions(home)[-1] == "calendar.deadline_removed"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"due": "2026-02-30"}, "is not a date"),
        ({"due": "31/12/2026"}, "is not a date"),
        ({"due": "2026-12-31", "every": "yearly"}, "not an ISO 8601 duration"),
        ({"due": "2026-12-31", "every": "PT1H"}, "by days at least"),
        ({"due": "2026-12-31", "title": " "}, "must not be empty"),
        ({"due": "2026-12-31", "title": "x" * 201}, "at most 200"),
        ({"due": "2026-12-31", "owner": "a\x1bb"}, "control characters"),
    ],
)
def test_bad_input_records_nothing(app: App, home: Path, kw: dict[str, str], message: str) -> None:
    before = _actions(home)
    args = {"title": "t", **kw}
    with pytest.raises(InputError, match=message) as refused:
        cal.add_deadline(app, local_principal(app), **args)  # type: ignore[arg-type]
    assert refused.value.exit_code == 2
    assert _actions(home) == before


def test_removing_an_unknown_or_removed_deadline_records_nothing(app: App, home: Path) -> None:
    me = local_principal(app)
    deadline = cal.add_deadline(app, me, title="t", due="2030-01-01")
    cal.remove_deadline(app, me, deadline.id)
    before = _actions(home)
    for unknown in ("dl-0000000000000000", deadline.id):
        with pytest.raises(NotFound):
            cal.remove_deadline(app, me, unknown)
    assert _actions(home) == before


def test_the_window_keeps_what_falls_in_it(app: App) -> None:
    me = local_principal(app)
    inside = cal.add_deadline(app, me, title="in", due="2031-06-15")
    outside = cal.add_deadline(app, me, title="out", due="2031-07-01")
    low, high = cal.window("2031-06-01", "2031-06-30")
    ids = {i.id for i in cal.build_calendar(app, start=low, end=high, now=NOW).items}
    assert ids == {f"deadline:{inside.id}"}
    assert f"deadline:{outside.id}" not in ids
    edge = cal.window("2031-07-01", "2031-07-01")
    assert {i.id for i in cal.build_calendar(app, start=edge[0], end=edge[1]).items} == {
        f"deadline:{outside.id}"
    }
    for start, end in (
        ("2031-07-01", "2031-06-01"),
        ("2031-13-01", None),
        ("2000-01-01", "2031-01-01"),
    ):
        with pytest.raises(InputError):
            cal.window(start, end)


def test_another_module_adds_a_source(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    def engagements(ctx: cal.CalendarContext) -> Iterable[CalendarItem]:
        due = ctx.now + timedelta(days=3)
        yield CalendarItem(
            id="audit:eng-1",
            title="SOC 2 fieldwork ends",
            kind=ItemKind.AUDIT,
            subject="engagement:eng-1",
            due=due,
            state=ItemState.UPCOMING,
        )

    monkeypatch.setattr(cal, "CALENDAR_SOURCES", [*cal.CALENDAR_SOURCES, engagements])
    items = _by_id(app, now=NOW)
    assert items["audit:eng-1"].kind is ItemKind.AUDIT
    assert "control:policy-check" in items


def test_the_ics_feed_parses_back_event_by_event_and_is_stable(app: App) -> None:
    me = local_principal(app)
    yearly = cal.add_deadline(app, me, title="DORA; register, of \"info\"", due="2020-04-30",
                              every="P1Y", detail="line one\nline two")  # fmt: skip
    late = cal.add_deadline(app, me, title="Late one", due="2020-01-15")
    calendar = cal.build_calendar(app, now=NOW)
    feed = render_ics(calendar)
    assert feed == render_ics(cal.build_calendar(app, now=NOW))  # byte-stable
    parsed = icalendar.Calendar.from_ical(feed)
    assert str(parsed["VERSION"]) == "2.0" and "affidavit" in str(parsed["PRODID"])
    events = {str(e["UID"]): e for e in parsed.walk("VEVENT")}
    assert len(events) == len(calendar.items)
    for item in calendar.items:
        event = events[item_uid(item, calendar.origin)]
        assert event.decoded("DTSTAMP") == calendar.stamp.replace(microsecond=0)
        start = event.decoded("DTSTART")
        if item.all_day:
            assert start == item.due.date() and not isinstance(start, datetime)
            assert event.decoded("DTEND") == item.due.date() + timedelta(days=1)
        else:
            assert start == item.due.replace(microsecond=0)
        categories = [str(c) for c in event["CATEGORIES"].cats]
        assert categories == [item.kind.value, item.state.value]
        summary = str(event["SUMMARY"])
        assert summary.endswith(item.title)
        assert summary.startswith("OVERDUE:") == (item.state is ItemState.OVERDUE)
        if item.recurrence is not None and item.state is not ItemState.DONE:
            rule = event["RRULE"]
            expected = item.recurrence.rrule()
            assert rule["FREQ"] == [expected["FREQ"]] and rule["INTERVAL"] == [expected["INTERVAL"]]
        else:
            assert "RRULE" not in event
        assert str(event["STATUS"]) == "CONFIRMED"
    recurring = events[item_uid(next(i for i in calendar.items if i.id.endswith(yearly.id)),
                                calendar.origin)]  # fmt: skip
    assert str(recurring["SUMMARY"]) == 'DORA; register, of "info"'
    assert str(recurring["DESCRIPTION"]).endswith("line one line two")
    overdue = next(i for i in calendar.items if i.id.endswith(late.id))
    assert str(events[item_uid(overdue, calendar.origin)]["SUMMARY"]) == "OVERDUE: Late one"
    # a later state of the ledger gives another stamp, the same UIDs
    cal.add_deadline(app, me, title="later", due="2040-01-01")
    again = cal.build_calendar(app, now=NOW)
    assert again.stamp >= calendar.stamp
    assert {item_uid(i, again.origin) for i in calendar.items} <= {
        item_uid(i, again.origin) for i in again.items
    }
    assert date(2040, 1, 1) in {i.due.date() for i in again.items}
