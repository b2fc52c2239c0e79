"""The governance calendar's values: what falls due (:class:`CalendarItem`), how often it recurs
(:class:`Recurrence`, an ISO 8601 duration), and the regulatory deadlines an administrator
enters (:class:`Deadline`), which are nothing but their ledger events.

A deadline is recorded ``calendar.deadline_added`` (its title, due date, recurrence, detail and
owner) and ends with ``calendar.deadline_removed``; :func:`fold` rebuilds the deadlines from
those events, as :func:`affidavit.models.approval.fold` rebuilds approval requests. There is no
catalog table to edit: a forged deadline breaks the ledger's signed checkpoints.
"""

from __future__ import annotations

import calendar as _gregorian
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final

from affidavit.errors import InputError
from affidavit.models.ledger import Event

DEADLINE_ADDED: Final = "calendar.deadline_added"
DEADLINE_REMOVED: Final = "calendar.deadline_removed"
DEADLINE_ACTIONS: Final = (DEADLINE_ADDED, DEADLINE_REMOVED)
SUBJECT_PREFIX: Final = "deadline:"
MAX_TITLE: Final = 200
MAX_DETAIL: Final = 2000
MAX_OWNER: Final = 254
OVERDUE_GRACE: Final = timedelta(hours=1)
"""A timed item not done within this time after it fell due is overdue (the schedule's grace:
``services.schedule.OVERDUE_GRACE``)."""

_DURATION = re.compile(
    r"P(?:(?P<y>\d{1,4})Y)?(?:(?P<mo>\d{1,5})M)?(?:(?P<w>\d{1,5})W)?(?:(?P<d>\d{1,6})D)?"
    r"(?:T(?:(?P<h>\d{1,7})H)?(?:(?P<mi>\d{1,9})M)?)?"
)
# control characters but tab, line feed and carriage return (whitespace, collapsed), and the
# bidirectional overrides and isolates
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_DURATION_HINT = "an ISO 8601 duration: P1Y (yearly), P6M, P3M, P2W, P30D"


class ItemKind(StrEnum):
    """Where an item comes from."""

    CONTROL = "control"  # a policy check (its controls' frequencies)
    VERIFICATION = "verification"  # a backup's verification cadence
    DRILL = "drill"  # a source's restore-drill cadence
    KEY_ROTATION = "key-rotation"  # the key-encryption key's rotation period
    ACCESS_REVIEW = "access-review"  # the policy's access-review period
    POLICY_REVIEW = "policy-review"  # the policy in force, reviewed this often
    LEGAL_HOLD = "legal-hold"  # an active hold's review date
    DEADLINE = "deadline"  # a regulatory deadline an administrator entered
    AUDIT = "audit"  # an audit engagement and its requests (another module adds these)


class ItemState(StrEnum):
    """Where an item stands at the calendar's ``now``."""

    UPCOMING = "upcoming"
    DUE = "due"
    OVERDUE = "overdue"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Recurrence:
    """How often something recurs: ``months`` or ``days`` and ``minutes`` (never months with
    either of the others: one iCalendar RRULE must say it). Built with :meth:`parse` from an
    ISO 8601 duration (``P1Y``, ``P3M``, ``P2W``, ``P30D``, ``PT6H``)."""

    months: int = 0
    days: int = 0
    minutes: int = 0

    def __post_init__(self) -> None:
        if min(self.months, self.days, self.minutes) < 0 or not (
            self.months or self.days or self.minutes
        ):
            raise InputError("a recurrence must be longer than nothing", hint=_DURATION_HINT)
        if self.months and (self.days or self.minutes):
            raise InputError(
                "a recurrence counts either months (and years) or weeks, days and hours",
                hint=_DURATION_HINT,
            )

    @classmethod
    def parse(cls, text: str, *, dates_only: bool = False) -> Recurrence:
        """The recurrence an ISO 8601 duration names; :class:`InputError` for anything else
        (with ``dates_only``, a duration in hours or minutes too)."""
        found = _DURATION.fullmatch(text.strip().upper()) if len(text) <= 40 else None
        if found is None or text.strip().upper() in ("P", "PT") or text.strip().endswith("T"):
            raise InputError(
                f"--every {text[:40]!r} is not an ISO 8601 duration", hint=_DURATION_HINT
            )
        n = {k: int(v) if v else 0 for k, v in found.groupdict().items()}
        if dates_only and (n["h"] or n["mi"]):
            raise InputError(
                f"--every {text[:40]!r}: a deadline recurs by days at least", hint=_DURATION_HINT
            )
        return cls(
            months=n["y"] * 12 + n["mo"], days=n["w"] * 7 + n["d"], minutes=n["h"] * 60 + n["mi"]
        )

    @classmethod
    def every(cls, period: timedelta) -> Recurrence:
        """A recurrence of ``period`` (whole days when it is one, else minutes)."""
        minutes = round(period.total_seconds() / 60)
        if minutes % (24 * 60) == 0:
            return cls(days=minutes // (24 * 60))
        return cls(minutes=minutes)

    @property
    def text(self) -> str:
        """The canonical ISO 8601 duration."""
        if self.months:
            return f"P{self.months // 12}Y" if self.months % 12 == 0 else f"P{self.months}M"
        out = "P"
        if self.days:
            out += (
                f"{self.days // 7}W" if self.days % 7 == 0 and not self.minutes else f"{self.days}D"
            )
        if self.minutes:
            hours, minutes = divmod(self.minutes, 60)
            out += "T" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
        return out

    def rrule(self) -> dict[str, Any]:
        """The iCalendar RRULE (RFC 5545 §3.3.10) that says the same, as ``{"FREQ",
        "INTERVAL"}``."""
        if self.months:
            if self.months % 12 == 0:
                return {"FREQ": "YEARLY", "INTERVAL": self.months // 12}
            return {"FREQ": "MONTHLY", "INTERVAL": self.months}
        if not self.minutes:
            if self.days % 7 == 0:
                return {"FREQ": "WEEKLY", "INTERVAL": self.days // 7}
            return {"FREQ": "DAILY", "INTERVAL": self.days}
        total = self.days * 24 * 60 + self.minutes
        if total % 60 == 0:
            return {"FREQ": "HOURLY", "INTERVAL": total // 60}
        return {"FREQ": "MINUTELY", "INTERVAL": total}

    def after(self, start: datetime, times: int = 1) -> datetime:
        """``start`` plus ``times`` recurrences (months keep the day of the month, or the
        month's last day when it has fewer)."""
        if not self.months:
            return start + times * timedelta(days=self.days, minutes=self.minutes)
        total = start.month - 1 + times * self.months
        year, month = start.year + total // 12, total % 12 + 1
        day = min(start.day, _gregorian.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day)

    def next_from(self, start: datetime, not_before: datetime) -> datetime:
        """The first occurrence ``start + k * self`` (k >= 0) at or after ``not_before``."""
        if start >= not_before:
            return start
        if not self.months:
            step = timedelta(days=self.days, minutes=self.minutes)
            k = -((start - not_before) // step)  # ceiling division
            return start + k * step
        months = (not_before.year - start.year) * 12 + not_before.month - start.month
        k = max(0, months // self.months - 1)
        moment = self.after(start, k)
        while moment < not_before:
            k += 1
            moment = self.after(start, k)
        return moment


def parse_due(text: str, *, what: str = "--due") -> date:
    """A date given as ``YYYY-MM-DD``; :class:`InputError` for anything else."""
    value = text.strip()
    try:
        return date.fromisoformat(value) if len(value) == 10 else _bad_date(text, what)
    except ValueError:
        return _bad_date(text, what)


def _bad_date(text: str, what: str) -> date:
    raise InputError(f"{what} {text[:40]!r} is not a date", hint="give it as YYYY-MM-DD")


def start_of(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def clean_text(value: str, what: str, limit: int, *, required: bool = False) -> str:
    """``value`` with its whitespace collapsed; :class:`InputError` when longer than
    ``limit``, empty when ``required``, or holding control characters."""
    if _CONTROL.search(value):
        raise InputError(f"{what} holds control characters", hint="give plain text")
    text = " ".join(value.split())
    if required and not text:
        raise InputError(f"{what} must not be empty", hint="say what falls due")
    if len(text) > limit:
        raise InputError(
            f"{what} holds at most {limit} characters, not {len(text)}", hint="shorten it"
        )
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarItem:
    """One dated thing that falls due. ``id`` is stable for the series (the same item on the
    next day, with a new due date, has the same id: a calendar client updates it);
    ``link`` names the record behind it (``ledger:SEQ``, ``backup:ID``, ``control:ID`` ...)."""

    id: str
    title: str
    kind: ItemKind
    subject: str
    due: datetime
    state: ItemState
    recurrence: Recurrence | None = None
    all_day: bool = False
    link: str | None = None
    detail: str = ""
    owner: str | None = None
    last_done: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (``calendar --json``)."""
        return {
            "id": self.id,
            "title": self.title,
            "kind": self.kind.value,
            "subject": self.subject,
            "due": self.due.date().isoformat() if self.all_day else self.due.isoformat(),
            "all_day": self.all_day,
            "state": self.state.value,
            "recurrence": self.recurrence.text if self.recurrence else None,
            "link": self.link,
            "detail": self.detail,
            "owner": self.owner,
            "last_done": self.last_done.isoformat() if self.last_done else None,
        }


def state_at(due: datetime, now: datetime, *, all_day: bool = False) -> ItemState:
    """An item not yet done at ``now``: upcoming before its due time; due on its day (all-day)
    or within :data:`OVERDUE_GRACE` of its due time; overdue after."""
    if all_day:
        day, today = due.date(), now.astimezone(UTC).date()
        return (
            ItemState.UPCOMING
            if day > today
            else ItemState.DUE
            if day == today
            else ItemState.OVERDUE
        )
    if due > now:
        return ItemState.UPCOMING
    return ItemState.DUE if now - due <= OVERDUE_GRACE else ItemState.OVERDUE


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadline:
    """A regulatory deadline an administrator entered, as its ledger events tell it."""

    id: str
    title: str
    due: date
    every: Recurrence | None
    detail: str
    owner: str | None
    added_by: str
    added_at: datetime
    seq: int  # calendar.deadline_added
    removed_by: str | None = None
    removed_at: datetime | None = None
    removed_seq: int | None = None
    removal_reason: str = ""

    @property
    def active(self) -> bool:
        """Until removed."""
        return self.removed_seq is None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (``calendar add --json``)."""
        return {
            "id": self.id,
            "title": self.title,
            "due": self.due.isoformat(),
            "every": self.every.text if self.every else None,
            "detail": self.detail,
            "owner": self.owner,
            "added_by": self.added_by,
            "added_at": self.added_at.isoformat(),
            "seq": self.seq,
            "active": self.active,
            "removed_by": self.removed_by,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
            "removed_seq": self.removed_seq,
            "removal_reason": self.removal_reason,
        }


def _time(event: Event) -> datetime:
    for text in (event.details.get("at"), event.time):
        if isinstance(text, str):
            try:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            if value.tzinfo is not None:
                return value
    raise ValueError("an event without a time")


def _added(event: Event) -> Deadline:
    d: Mapping[str, Any] = event.details
    every = d.get("every")
    owner = d.get("owner")
    return Deadline(
        id=event.subject.removeprefix(SUBJECT_PREFIX),
        title=clean_text(str(d["title"]), "title", MAX_TITLE, required=True),
        due=date.fromisoformat(str(d["due"])),
        every=Recurrence.parse(every, dates_only=True) if isinstance(every, str) else None,
        detail=str(d.get("detail", "")),
        owner=owner if isinstance(owner, str) and owner else None,
        added_by=event.actor,
        added_at=_time(event),
        seq=event.seq,
    )


@dataclass(frozen=True, slots=True)
class Folded:
    """The deadlines the events tell of, by id, and the events that tell of none."""

    deadlines: dict[str, Deadline]
    orphans: tuple[str, ...] = field(default=())


def fold(events: Iterable[Event]) -> Folded:
    """The deadlines that ``events`` (``calendar.deadline_*``, in any order) tell of. An
    added event that does not describe a deadline, a second add of one id, a removal of an
    unknown or already removed deadline count for nothing and are listed in ``orphans``."""
    deadlines: dict[str, Deadline] = {}
    orphans: list[str] = []
    for event in sorted(events, key=lambda e: e.seq):
        deadline_id = event.subject.removeprefix(SUBJECT_PREFIX)
        if event.action == DEADLINE_ADDED:
            if deadline_id in deadlines:
                orphans.append(f"{DEADLINE_ADDED} #{event.seq} repeats {deadline_id}")
                continue
            try:
                deadlines[deadline_id] = _added(event)
            except (KeyError, TypeError, ValueError, InputError):
                orphans.append(f"{DEADLINE_ADDED} #{event.seq} does not describe a deadline")
            continue
        if event.action != DEADLINE_REMOVED:
            continue
        known = deadlines.get(deadline_id)
        if known is None or not known.active:
            orphans.append(f"{DEADLINE_REMOVED} #{event.seq} names no active deadline")
            continue
        try:
            at = _time(event)
        except ValueError:
            orphans.append(f"{DEADLINE_REMOVED} #{event.seq} has no time")
            continue
        deadlines[deadline_id] = replace(
            known,
            removed_by=event.actor,
            removed_at=at,
            removed_seq=event.seq,
            removal_reason=str(event.details.get("reason", "")),
        )
    return Folded(deadlines, tuple(orphans))
