"""The audit engagements' source of the governance calendar (:data:`affidavit.services.
calendar.CALENDAR_SOURCES`): each open engagement's end of access, and each evidence request's
due date (done once handed in; overdue when its owners let the day pass)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from affidavit.models.audit import ENGAGEMENT_PREFIX, REQUEST_PREFIX, RequestState
from affidavit.models.calendar import CalendarItem, ItemKind, ItemState, start_of, state_at
from affidavit.services.audit import read_audit

if TYPE_CHECKING:
    from affidavit.services.calendar import CalendarContext

_HANDED_IN = frozenset({RequestState.SUBMITTED, RequestState.ACCEPTED, RequestState.CLOSED})


def audit_items(ctx: CalendarContext) -> list[CalendarItem]:
    """Open engagements' expiries and their evidence requests' due dates."""
    with ctx.app.read() as uow:
        folded = read_audit(uow)
    items: list[CalendarItem] = []
    for engagement in sorted(folded.engagements.values(), key=lambda e: e.seq):
        if not engagement.active(ctx.now):
            continue
        items.append(
            CalendarItem(
                id=f"{ItemKind.AUDIT.value}:{engagement.id}",
                title=f"Audit engagement {engagement.id} ({engagement.framework}, "
                f"{engagement.auditor}) ends",
                kind=ItemKind.AUDIT,
                subject=f"{ENGAGEMENT_PREFIX}{engagement.id}",
                due=engagement.expires_at,
                state=state_at(engagement.expires_at, ctx.now),
                link=f"ledger:{engagement.seq}",
            )
        )
        for request in sorted(folded.requests.values(), key=lambda r: r.seq):
            if request.engagement != engagement.id:
                continue
            due = start_of(request.due)
            done = request.state in _HANDED_IN
            items.append(
                CalendarItem(
                    id=f"{ItemKind.AUDIT.value}:{request.id}",
                    title=f"Evidence request: {request.title}",
                    kind=ItemKind.AUDIT,
                    subject=f"{REQUEST_PREFIX}{request.id}",
                    due=due,
                    state=ItemState.DONE if done else state_at(due, ctx.now, all_day=True),
                    all_day=True,
                    link=f"ledger:{request.seq}",
                    detail=request.state.value,
                    last_done=request.submitted_at if done else None,
                )
            )
    return items
