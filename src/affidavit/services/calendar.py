"""The governance calendar: everything that recurs or falls due, as dated items
(``affidavit calendar``, ``GET /api/v1/calendar``; the iCalendar feed is
:mod:`affidavit.services.calendar_ics`; docs/calendar.md).

Items come from the sources in :data:`CALENDAR_SOURCES`, each a function of a
:class:`CalendarContext` that yields :class:`~affidavit.models.calendar.CalendarItem` values;
another module adds its own by appending to that list (audit engagements will). The sources
here read what they judge from the ledger's events, as the schedule and the controls do:

- the **policy check** that evaluates the controls (``policy.checked``, every
  ``policy_check_every_days``), and any control whose frequency is an ISO 8601 duration;
- the **verification and drill cadences** (:func:`affidavit.services.schedule.scheduled`);
- the **key rotation** (``keys.rotated``; the shortest ``key_rotation_days`` of the policy in
  force, else :data:`affidavit.services.keys.ROTATION_PERIOD`);
- the **access review** (the newest closed one, every ``access_review_max_days`` of the policy);
- the **policy review** (the approval of the version in force, every
  ``policy_review_every_days``);
- each active **legal hold**'s review (every ``hold_review_every_days`` from its placing);
- the **regulatory deadlines** an administrator entered (:func:`add_deadline`), which are
  nothing but their ``calendar.deadline_added|removed`` events
  (:func:`affidavit.models.calendar.fold`).

Adding and removing deadlines needs ``calendar.manage`` for an authenticated identity (the
server, or ``--as``); in local mode the OS user who owns the home may, as for every other
local change, and the events say it was not authenticated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from affidavit.catalog.store import UnitOfWork
from affidavit.config import Settings
from affidavit.crypto import tokens
from affidavit.errors import InputError, NotFound
from affidavit.models.calendar import (
    DEADLINE_ACTIONS,
    DEADLINE_ADDED,
    DEADLINE_REMOVED,
    MAX_DETAIL,
    MAX_OWNER,
    MAX_TITLE,
    SUBJECT_PREFIX,
    CalendarItem,
    Deadline,
    ItemKind,
    ItemState,
    Recurrence,
    clean_text,
    fold,
    parse_due,
    start_of,
    state_at,
)
from affidavit.models.identity import AuthMethod, Principal
from affidavit.models.ledger import Event
from affidavit.models.permissions import Permission
from affidavit.policy.document import Policy
from affidavit.services import keys, schedule
from affidavit.services.access_reviews import read_reviews
from affidavit.services.context import App
from affidavit.services.policy import effective_policy, list_controls
from affidavit.services.policy_vouch import event_time, parse_entry, read_events
from affidavit.services.principals import authorize

DEFAULT_ACCESS_REVIEW_DAYS: Final = 90
"""The access-review period without an approved policy (the policy's own default)."""
MAX_WINDOW_DAYS: Final = 3660


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# -- who may --------------------------------------------------------------------------------


def require_unless_local(principal: Principal | None, permission: Permission) -> None:
    """An authenticated identity needs ``permission``; the local OS user (no server, no
    ``--as``) owns the home and is not asked, as for every local command."""
    if principal is None or principal.method is AuthMethod.LOCAL_OS_USER:
        return
    authorize(principal, permission)


# -- the context the sources read -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarContext:
    """What every source may read: the app (open its own ``app.read()``), the calendar's
    ``now``, the settings, the policy in force (None: none approved), the time the ledger
    began (the home's first event) and its origin."""

    app: App
    now: datetime
    settings: Settings
    policy: Policy | None
    policy_version: int | None
    policy_approved: Event | None  # the policy.approved event of the version in force
    began: datetime
    origin: str

    def last(self, action: str) -> Event | None:
        """The newest event of ``action`` (None: never)."""
        with self.app.read() as uow:
            found = read_events(uow.ledger, action)
        return found[-1] if found else None


CalendarSource = Callable[[CalendarContext], Iterable[CalendarItem]]


def _series(
    ctx: CalendarContext,
    *,
    kind: ItemKind,
    key: str,
    title: str,
    subject: str,
    every: Recurrence,
    last: Event | None,
    detail: str = "",
    owner: str | None = None,
    at_once: bool = False,
) -> list[CalendarItem]:
    """A recurring duty done by ``last``: the next occurrence, and the last one done. Never
    done: due one period after the ledger began (the home's key, its first roles), or from
    the start with ``at_once`` (a policy check)."""
    done_at = event_time(last) if last is not None else None
    if done_at is not None:
        due = every.after(done_at)
    else:
        due = ctx.began if at_once else every.after(ctx.began)
    items = [
        CalendarItem(
            id=f"{kind.value}:{key}",
            title=title,
            kind=kind,
            subject=subject,
            due=due,
            state=state_at(due, ctx.now),
            recurrence=every,
            link=f"ledger:{last.seq}" if last is not None else None,
            detail=detail if last is not None else (detail + "; never done").lstrip("; "),
            owner=owner,
            last_done=done_at,
        )
    ]
    if last is not None and done_at is not None:
        items.append(
            CalendarItem(
                id=f"{kind.value}:{key}:done:{last.seq}",
                title=title,
                kind=kind,
                subject=subject,
                due=done_at,
                state=ItemState.DONE,
                link=f"ledger:{last.seq}",
                detail=f"done by {last.actor}",
                owner=owner,
                last_done=done_at,
            )
        )
    return items


# -- the sources ------------------------------------------------------------------------------


def policy_check_items(ctx: CalendarContext) -> list[CalendarItem]:
    """The policy check that evaluates the controls, and each control whose frequency is an
    ISO 8601 duration of its own (none of the built-in ones: they are evaluated at every
    check)."""
    controls = list_controls()
    last = ctx.last("policy.checked")
    owner = ctx.policy.owner if ctx.policy is not None else None
    standing = (
        f"policy v{ctx.policy_version} in force"
        if ctx.policy is not None
        else "no approved policy: the controls are not evaluated"
    )
    every = Recurrence.every(timedelta(days=ctx.settings.policy_check_every_days))
    items = _series(
        ctx,
        kind=ItemKind.CONTROL,
        key="policy-check",
        title=f"Policy check ({len(controls)} controls)",
        subject="policy",
        every=every,
        last=last,
        detail=standing,
        owner=owner,
        at_once=True,
    )
    for control in controls:
        try:
            own = Recurrence.parse(control.frequency)
        except InputError:
            continue  # "every policy check": the item above
        items += _series(
            ctx,
            kind=ItemKind.CONTROL,
            key=control.id,
            title=f"Control {control.id}",
            subject=f"control:{control.id}",
            every=own,
            last=last,
            detail=control.title,
            owner=ctx.policy.owner_of(control.id) if ctx.policy is not None else None,
        )
    return items


_CHECK_KINDS: Final = {
    schedule.CheckKind.VERIFY_FULL: (ItemKind.VERIFICATION, "Full verification"),
    schedule.CheckKind.VERIFY_SAMPLE: (ItemKind.VERIFICATION, "Sample verification"),
    schedule.CheckKind.DRILL: (ItemKind.DRILL, "Restore drill"),
}


def schedule_items(ctx: CalendarContext) -> list[CalendarItem]:
    """The verification and drill cadences (``affidavit due --all``), one item per check."""
    s = ctx.settings
    every = {
        schedule.CheckKind.VERIFY_FULL: timedelta(days=s.verify_full_every_days),
        schedule.CheckKind.VERIFY_SAMPLE: timedelta(hours=s.verify_sample_every_hours),
        schedule.CheckKind.DRILL: timedelta(days=s.drill_every_days),
    }
    items = []
    for due in schedule.scheduled(ctx.app):
        kind, label = _CHECK_KINDS[due.kind]
        if due.kind is schedule.CheckKind.DRILL:
            group = due.source or "(no source)"
            key, subject = group, f"source:{group}"
            title = f"{label} of {group} (newest backup {due.backup_id})"
        else:
            key, subject = f"{due.kind.value}:{due.backup_id}", f"backup:{due.backup_id}"
            title = f"{label} of {due.backup_id}"
        state = (
            (ItemState.OVERDUE if due.overdue else ItemState.DUE)
            if due.is_due
            else ItemState.UPCOMING
        )
        items.append(
            CalendarItem(
                id=f"{kind.value}:{key}",
                title=title,
                kind=kind,
                subject=subject,
                due=due.due_at,
                state=state,
                recurrence=Recurrence.every(every[due.kind]),
                link=f"backup:{due.backup_id}",
                detail="never done" if due.last_done_at is None else "",
                last_done=due.last_done_at,
            )
        )
    return items


def key_rotation_items(ctx: CalendarContext) -> list[CalendarItem]:
    """The key-encryption key's rotation: every ``key_rotation_days`` (the shortest of the
    policy's levels), else the keystore's default period, from the last ``keys.rotated``."""
    if ctx.policy is not None:
        days = min(level.key_rotation_days for level in ctx.policy.levels.values())
        period, why = timedelta(days=days), f"key_rotation_days = {days} (policy)"
    else:
        period = keys.ROTATION_PERIOD
        why = f"{period.days} days (no approved policy: the default)"
    return _series(
        ctx,
        kind=ItemKind.KEY_ROTATION,
        key="kek",
        title="Rotate the key-encryption key",
        subject="keys:kek",
        every=Recurrence.every(period),
        last=ctx.last("keys.rotated"),
        detail=why,
        owner=ctx.policy.owner_of("keys.rotated") if ctx.policy is not None else None,
    )


def access_review_items(ctx: CalendarContext) -> list[CalendarItem]:
    """The access review: the newest closed review, every ``access_review_max_days``."""
    days = (
        ctx.policy.access_review_max_days if ctx.policy is not None else DEFAULT_ACCESS_REVIEW_DAYS
    )
    with ctx.app.read() as uow:
        closed = [r.closed for r in read_reviews(uow).values() if r.closed is not None]
        newest = max(closed, key=lambda c: c.seq) if closed else None
        last = _event_at(uow, newest.seq) if newest is not None else None
    return _series(
        ctx,
        kind=ItemKind.ACCESS_REVIEW,
        key="roles",
        title="Access review of every role holder",
        subject="access-review",
        every=Recurrence(days=days),
        last=last,
        detail=f"access_review_max_days = {days}",
        owner=ctx.policy.owner_of("access.reviewed") if ctx.policy is not None else None,
    )


def policy_review_items(ctx: CalendarContext) -> list[CalendarItem]:
    """The policy in force is reviewed every ``policy_review_every_days`` from its approval
    (nothing without an approved policy)."""
    if ctx.policy is None or ctx.policy_approved is None:
        return []
    days = ctx.settings.policy_review_every_days
    return _series(
        ctx,
        kind=ItemKind.POLICY_REVIEW,
        key="policy",
        title=f"Review the backup policy (v{ctx.policy_version} in force)",
        subject=f"policy:v{ctx.policy_version}",
        every=Recurrence(days=days),
        last=ctx.policy_approved,
        detail=f"policy_review_every_days = {days}",
        owner=ctx.policy.owner,
    )


def legal_hold_items(ctx: CalendarContext) -> list[CalendarItem]:
    """Each active legal hold (``hold.added`` not yet ``hold.released``) is reviewed every
    ``hold_review_every_days`` from its placing; the item is its next review (affidavit
    records no review of a hold: the release is the event that ends it)."""
    with ctx.app.read() as uow:
        events = [
            *read_events(uow.ledger, "hold.added"),
            *read_events(uow.ledger, "hold.released"),
        ]
    active: dict[tuple[str, str], Event] = {}
    for event in sorted(events, key=lambda e: e.seq):
        key = (event.subject.removeprefix("backup:"), str(event.details.get("case", "")))
        if event.action == "hold.added":
            active.setdefault(key, event)
        else:
            active.pop(key, None)
    every = Recurrence(days=ctx.settings.hold_review_every_days)
    today = start_of(ctx.now.astimezone(UTC).date())
    items = []
    for (backup_id, case), placed in sorted(active.items()):
        due = every.next_from(every.after(event_time(placed)), today)
        items.append(
            CalendarItem(
                id=f"{ItemKind.LEGAL_HOLD.value}:{backup_id}:{case}",
                title=f"Review legal hold {case} on {backup_id}",
                kind=ItemKind.LEGAL_HOLD,
                subject=f"backup:{backup_id}",
                due=due,
                state=state_at(due, ctx.now),
                recurrence=every,
                link=f"ledger:{placed.seq}",
                detail=str(placed.details.get("reason", "")),
                owner=placed.actor,
            )
        )
    return items


def deadline_items(ctx: CalendarContext) -> list[CalendarItem]:
    """The regulatory deadlines an administrator entered and did not remove: a recurring one
    at its next occurrence from today, a one-off one at its date (overdue once past, until
    it is removed)."""
    with ctx.app.read() as uow:
        deadlines = read_deadlines(uow)
    today = start_of(ctx.now.astimezone(UTC).date())
    items = []
    for deadline in sorted(deadlines.values(), key=lambda d: d.seq):
        if not deadline.active:
            continue
        first = start_of(deadline.due)
        due = deadline.every.next_from(first, today) if deadline.every else first
        items.append(
            CalendarItem(
                id=f"{ItemKind.DEADLINE.value}:{deadline.id}",
                title=deadline.title,
                kind=ItemKind.DEADLINE,
                subject=f"{SUBJECT_PREFIX}{deadline.id}",
                due=due,
                state=state_at(due, ctx.now, all_day=True),
                recurrence=deadline.every,
                all_day=True,
                link=f"ledger:{deadline.seq}",
                detail=deadline.detail,
                owner=deadline.owner,
            )
        )
    return items


CALENDAR_SOURCES: list[CalendarSource] = [
    policy_check_items,
    schedule_items,
    key_rotation_items,
    access_review_items,
    policy_review_items,
    legal_hold_items,
    deadline_items,
]
"""Every source of calendar items, in order. Append a function of a :class:`CalendarContext`
that yields :class:`CalendarItem` values to add a source (ids must be unique across sources:
prefix them with the item's kind)."""


def _event_at(uow: UnitOfWork, seq: int) -> Event | None:
    found = list(uow.ledger.entries(seq, seq + 1))
    event = parse_entry(found[0].entry) if found else None
    return event if event is not None and event.seq == seq else None


# -- the calendar -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Calendar:
    """The items of a window (every item when it has no bounds), by due time; ``stamp`` is
    the time of the newest ledger event they reflect (the .ics feed's DTSTAMP)."""

    generated_at: datetime
    origin: str
    ledger_size: int
    stamp: datetime
    start: date | None
    end: date | None
    items: tuple[CalendarItem, ...]

    def to_json(self) -> dict[str, Any]:
        """``calendar --json``: counts by state and every item."""
        counts = {s.value: 0 for s in ItemState}
        for item in self.items:
            counts[item.state.value] += 1
        return {
            "generated_at": self.generated_at.isoformat(),
            "origin": self.origin,
            "ledger_size": self.ledger_size,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "counts": counts,
            "items": [item.to_json() for item in self.items],
        }


def window(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    """``--from`` and ``--to`` as dates (each inclusive); :class:`InputError` when one does
    not parse, ``to`` comes before ``from``, or they lie more than ten years apart."""
    low = parse_due(start, what="--from") if start else None
    high = parse_due(end, what="--to") if end else None
    if low is not None and high is not None:
        if high < low:
            raise InputError(f"--to {high} comes before --from {low}", hint="swap them")
        if (high - low).days > MAX_WINDOW_DAYS:
            raise InputError(
                "a calendar window spans at most ten years", hint="ask for a shorter window"
            )
    return low, high


def _context(app: App, now: datetime) -> CalendarContext:
    effective = effective_policy(app)
    identity = app.ledger_identity()
    with app.read() as uow:
        first = list(uow.ledger.entries(0, 1))
        began_event = parse_entry(first[0].entry) if first else None
        approved = None
        if effective is not None and effective[0].approval_seq is not None:
            approved = _event_at(uow, effective[0].approval_seq)
    return CalendarContext(
        app=app,
        now=now,
        settings=app.settings,
        policy=effective[1] if effective is not None else None,
        policy_version=effective[0].version if effective is not None else None,
        policy_approved=approved,
        began=event_time(began_event) if began_event is not None else now,
        origin=identity.origin if identity is not None else "affidavit",
    )


def build_calendar(
    app: App,
    principal: Principal | None = None,
    *,
    start: date | None = None,
    end: date | None = None,
    now: datetime | None = None,
    sources: Iterable[CalendarSource] | None = None,
) -> Calendar:
    """Every item of every source (``calendar.read``) whose due time lies in ``[start,
    end]`` (days, inclusive; either open), by due time."""
    require_unless_local(
        principal if principal is not None else app.principal, Permission.CALENDAR_READ
    )
    at = _now(now)
    ctx = _context(app, at)
    low = start_of(start) if start is not None else None
    high = start_of(end) + timedelta(days=1) if end is not None else None
    items: dict[str, CalendarItem] = {}
    for source in CALENDAR_SOURCES if sources is None else sources:
        for item in source(ctx):
            if (low is None or item.due >= low) and (high is None or item.due < high):
                items.setdefault(item.id, item)
    with app.read() as uow:
        size = uow.ledger.size()
        newest = list(uow.ledger.entries(size - 1, size)) if size else []
    newest_event = parse_entry(newest[0].entry) if newest else None
    return Calendar(
        generated_at=at,
        origin=ctx.origin,
        ledger_size=size,
        stamp=event_time(newest_event) if newest_event is not None else at,
        start=start,
        end=end,
        items=tuple(sorted(items.values(), key=lambda i: (i.due, i.kind.value, i.id))),
    )


# -- regulatory deadlines ---------------------------------------------------------------------


def read_deadlines(uow: UnitOfWork) -> dict[str, Deadline]:
    """Every deadline, as its ledger events tell it (one query per action)."""
    return fold(e for action in DEADLINE_ACTIONS for e in read_events(uow.ledger, action)).deadlines


def list_deadlines(app: App, principal: Principal | None = None) -> list[Deadline]:
    """Every deadline, removed ones too, oldest first (``calendar.read``)."""
    require_unless_local(
        principal if principal is not None else app.principal, Permission.CALENDAR_READ
    )
    with app.read() as uow:
        return sorted(read_deadlines(uow).values(), key=lambda d: d.seq)


def add_deadline(
    app: App,
    principal: Principal,
    *,
    title: str,
    due: str,
    every: str | None = None,
    detail: str = "",
    owner: str | None = None,
    now: datetime | None = None,
) -> Deadline:
    """Enter a regulatory deadline (``calendar.manage``): recorded ``calendar.deadline_added``
    and nothing else. Everything is checked before anything is recorded."""
    require_unless_local(principal, Permission.CALENDAR_MANAGE)
    name = clean_text(title, "the title", MAX_TITLE, required=True)
    day = parse_due(due)
    recurrence = Recurrence.parse(every, dates_only=True) if every is not None else None
    text = clean_text(detail, "--detail", MAX_DETAIL)
    who = clean_text(owner, "--owner", MAX_OWNER) if owner is not None else ""
    at = _now(now)
    deadline_id = f"dl-{tokens.new_id()}"
    with app.change() as change:
        change.actor = principal.name
        change.record(
            DEADLINE_ADDED,
            f"{SUBJECT_PREFIX}{deadline_id}",
            {
                "title": name,
                "due": day.isoformat(),
                "every": recurrence.text if recurrence else None,
                "detail": text,
                "owner": who or None,
                "by_id": principal.account_id,
                "at": at.isoformat(),
                **auth_details(principal),
            },
        )
        return read_deadlines(change.uow)[deadline_id]


def auth_details(principal: Principal | None) -> dict[str, str]:
    """``details.auth`` of an authenticated identity's event (none in local mode: that is how
    the controls tell local-mode actions)."""
    if principal is None or principal.method is AuthMethod.LOCAL_OS_USER:
        return {}
    return {"auth": principal.method.value}


def remove_deadline(
    app: App,
    principal: Principal,
    deadline_id: str,
    *,
    reason: str = "",
    now: datetime | None = None,
) -> Deadline:
    """Remove a deadline (``calendar.manage``): recorded ``calendar.deadline_removed``.
    :class:`NotFound` (exit 2, nothing recorded) for an id that names no active deadline."""
    require_unless_local(principal, Permission.CALENDAR_MANAGE)
    why = clean_text(reason, "--reason", MAX_DETAIL)
    at = _now(now)
    with app.change() as change:
        known = read_deadlines(change.uow).get(deadline_id)
        if known is None or not known.active:
            raise NotFound(
                f"no deadline {deadline_id[:40]!r} to remove"
                + (" (it was removed already)" if known is not None else ""),
                hint="`affidavit calendar --json` lists the deadlines (kind: deadline)",
            )
        change.actor = principal.name
        change.record(
            DEADLINE_REMOVED,
            f"{SUBJECT_PREFIX}{deadline_id}",
            {
                "reason": why,
                "by_id": principal.account_id,
                "at": at.isoformat(),
                **auth_details(principal),
            },
        )
        return read_deadlines(change.uow)[deadline_id]


# audit engagements and their evidence requests' due dates (docs/audit.md): appended here,
# at the end, so that this module is complete when that one reads the calendar's types
from affidavit.services.audit_calendar import audit_items  # noqa: E402

CALENDAR_SOURCES.append(audit_items)
