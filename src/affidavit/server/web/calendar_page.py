"""The governance calendar as a month (docs/web.md, docs/calendar.md): ``GET
/calendar?month=YYYY-MM`` (``calendar.read``), a table of weeks (Monday first) whose days
list the items falling due on them (UTC), each linking to the record behind it when the
viewer may read that record, overdue ones marked; links to the previous and next months and
to the iCalendar feed (``/api/v1/calendar.ics``, which the session's cookie opens too).

The items are :func:`affidavit.services.calendar.build_calendar`'s for the month's days, the
same as ``affidavit calendar --from --to`` and the API's answer."""

from __future__ import annotations

import calendar as stdlib_calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.calendar import CalendarItem, ItemState
from affidavit.models.identity import Principal
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.web.pages import render
from affidavit.services import calendar as svc

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(allow(Permission.CALENDAR_READ))]
WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ITEMS_PER_DAY: Final = 8
MIN_YEAR: Final = 1970
MAX_YEAR: Final = 9000


@dataclass(frozen=True, slots=True)
class Shown:
    """One item in a day's cell: the item and where it leads (None: nowhere the viewer may
    go)."""

    item: CalendarItem
    href: str | None

    @property
    def overdue(self) -> bool:
        return self.item.state is ItemState.OVERDUE


@dataclass(frozen=True, slots=True)
class Day:
    """One cell of the grid."""

    day: date
    in_month: bool
    today: bool
    items: tuple[Shown, ...]

    @property
    def overdue(self) -> int:
        return sum(1 for s in self.items if s.overdue)


def parse_month(text: str | None, today: date) -> date:
    """The first day of ``YYYY-MM`` (this month when absent); :class:`InputError` otherwise."""
    if not text:
        return today.replace(day=1)
    try:
        year, month = (int(part) for part in text.split("-", 1))
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise ValueError(year)
        return date(year, month, 1)
    except ValueError:
        raise InputError(
            f"month {text[:20]!r} is not YYYY-MM", hint="e.g. ?month=2026-12"
        ) from None


def _shift(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def link_of(item: CalendarItem, who: Principal) -> str | None:
    """The page of the record behind ``item`` that ``who`` may open (None: none)."""
    kind, _, value = item.subject.partition(":")
    if value and who.holds(Permission.AUDIT_READ):
        if kind == "audit":
            return f"/audit/engagements/{quote(value, safe='')}"
        if kind == "audit-request":
            return f"/audit/requests/{quote(value, safe='')}"
    link_kind, _, link_value = (item.link or "").partition(":")
    if link_kind == "backup" and link_value and who.holds(Permission.BACKUP_READ):
        return f"/backups/{quote(link_value, safe='')}"
    if kind == "backup" and value and who.holds(Permission.BACKUP_READ):
        return f"/backups/{quote(value, safe='')}"
    if link_kind == "ledger" and link_value.isdigit() and who.holds(Permission.LEDGER_READ):
        return f"/ledger#seq-{link_value}"
    return None


def month_grid(
    first: date, items: tuple[CalendarItem, ...], who: Principal, today: date
) -> list[list[Day]]:
    """The weeks (Monday first) that hold ``first``'s month, each day with its items."""
    by_day: dict[date, list[Shown]] = {}
    for item in items:
        by_day.setdefault(item.due.astimezone(UTC).date(), []).append(
            Shown(item, link_of(item, who))
        )
    weeks = stdlib_calendar.Calendar(firstweekday=0).monthdatescalendar(first.year, first.month)
    return [
        [
            Day(
                day=d,
                in_month=d.month == first.month,
                today=d == today,
                items=tuple(by_day.get(d, ())) if d.month == first.month else (),
            )
            for d in week
        ]
        for week in weeks
    ]


@router.get("/calendar")
def calendar_page(
    caller: Reader, month: Annotated[str | None, Query(max_length=20)] = None
) -> Response:
    """One month of the governance calendar as a grid of days."""
    now = datetime.now(UTC)
    first = parse_month(month, now.date())
    last = _shift(first, 1) - timedelta(days=1)
    with caller.acting() as app:
        found = svc.build_calendar(app, caller.principal, start=first, end=last, now=now)
    weeks = month_grid(first, found.items, caller.principal, now.date())
    overdue = sum(1 for i in found.items if i.state is ItemState.OVERDUE)
    return render(
        "calendar.html.j2",
        caller=caller,
        title=f"Calendar · {first:%B %Y}",
        active="/calendar",
        first=first,
        weeks=weeks,
        weekdays=WEEKDAYS,
        total=len(found.items),
        overdue=overdue,
        per_day=ITEMS_PER_DAY,
        previous=f"{_shift(first, -1):%Y-%m}",
        next_month=f"{_shift(first, 1):%Y-%m}",
        this_month=f"{now:%Y-%m}",
        ics=f"/api/v1/calendar.ics?from={first.isoformat()}&to={last.isoformat()}",
    )
