"""The governance calendar as an iCalendar feed (RFC 5545), for calendar clients to subscribe
to (``affidavit calendar ics``, ``GET /api/v1/calendar.ics``). The only module that imports
``icalendar``.

One VEVENT per item: ``UID`` is the item's id at the ledger's origin (stable across feeds, so a
client moves an event whose due date moved instead of adding one), ``DTSTAMP`` the time of the
newest ledger event the calendar reflects (the same ledger gives the same bytes), ``DTSTART`` the
due time (a date for all-day items), ``RRULE`` the item's recurrence, ``CATEGORIES`` its kind
and state, ``STATUS`` CONFIRMED (CANCELLED never appears: removed deadlines leave the feed),
and an overdue item's ``SUMMARY`` starts with ``OVERDUE:``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final
from urllib.parse import quote

import icalendar

from affidavit.models.calendar import CalendarItem, ItemState
from affidavit.services.calendar import Calendar

PRODID: Final = "-//affidavit//governance calendar//EN"
MEDIA_TYPE: Final = "text/calendar; charset=utf-8"


def item_uid(item: CalendarItem, origin: str) -> str:
    """The stable UID of an item's event (RFC 5545 §3.8.4.7)."""
    return f"{quote(item.id, safe=':._-')}@{quote(origin, safe='._-')}"


def _summary(item: CalendarItem) -> str:
    if item.state is ItemState.OVERDUE:
        return f"OVERDUE: {item.title}"
    if item.state is ItemState.DONE:
        return f"Done: {item.title}"
    return item.title


def _event(item: CalendarItem, calendar: Calendar) -> icalendar.Event:
    event = icalendar.Event()
    event.add("uid", item_uid(item, calendar.origin))
    event.add("dtstamp", calendar.stamp.replace(microsecond=0))
    if item.all_day:
        event.add("dtstart", item.due.date())
        event.add("dtend", item.due.date() + timedelta(days=1))
    else:
        event.add("dtstart", item.due.replace(microsecond=0))
    event.add("summary", _summary(item))
    lines = [
        f"Kind: {item.kind.value}",
        f"Subject: {item.subject}",
        f"State: {item.state.value}",
    ]
    if item.recurrence is not None:
        lines.append(f"Every: {item.recurrence.text}")
    if item.owner:
        lines.append(f"Owner: {item.owner}")
    if item.link:
        lines.append(f"Record: {item.link}")
    if item.last_done is not None:
        lines.append(f"Last done: {item.last_done.isoformat()}")
    if item.detail:
        lines.append(item.detail)
    event.add("description", "\n".join(lines))
    event.add("categories", [item.kind.value, item.state.value])
    event.add("status", "CONFIRMED")
    event.add("transp", "TRANSPARENT")
    if item.recurrence is not None and item.state is not ItemState.DONE:
        event.add("rrule", item.recurrence.rrule())
    event.add("x-affidavit-state", item.state.value)
    if item.link:
        event.add("x-affidavit-record", item.link)
    return event


def render_ics(calendar: Calendar) -> bytes:
    """The feed of ``calendar``: the same calendar gives the same bytes."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", f"affidavit: {calendar.origin}")
    for item in calendar.items:
        cal.add_component(_event(item, calendar))
    return bytes(cal.to_ical())
