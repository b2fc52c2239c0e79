"""The governance calendar over the API (docs/calendar.md): ``GET /calendar`` (``calendar
--json``) and ``GET /calendar.ics`` (the iCalendar feed, ``text/calendar``), both
``calendar.read``; ``POST /calendar/deadlines`` and ``DELETE /calendar/deadlines/{deadline_id}``
(``calendar.manage``: the regulatory deadlines, recorded in the ledger only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import calendar as svc
from affidavit.services.calendar_ics import MEDIA_TYPE, render_ics

router = APIRouter(tags=["calendar"])
Reader = Annotated[Caller, Depends(allow(Permission.CALENDAR_READ))]
Manager = Annotated[Caller, Depends(allow(Permission.CALENDAR_MANAGE))]
FromQuery = Annotated[str | None, Query(alias="from", max_length=40)]
ToQuery = Annotated[str | None, Query(alias="to", max_length=40)]


class DeadlineIn(BaseModel):
    """What ``calendar add`` takes (the service checks the date, the duration and the text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(max_length=1000)
    due: str = Field(max_length=40)
    every: str | None = Field(default=None, max_length=40)
    detail: str = Field(default="", max_length=4000)
    owner: str | None = Field(default=None, max_length=1000)


@router.get("/calendar")
def calendar(caller: Reader, start: FromQuery = None, end: ToQuery = None) -> Response:
    """Everything that recurs or falls due in the window (``calendar --json``)."""
    low, high = svc.window(start, end)
    with caller.acting() as app:
        found = svc.build_calendar(app, caller.principal, start=low, end=high)
    return reply(found.to_json())


@router.get("/calendar.ics")
def calendar_ics(caller: Reader, start: FromQuery = None, end: ToQuery = None) -> Response:
    """The same items as an iCalendar (RFC 5545) feed (``calendar ics``)."""
    low, high = svc.window(start, end)
    with caller.acting() as app:
        found = svc.build_calendar(app, caller.principal, start=low, end=high)
    return Response(render_ics(found), media_type=MEDIA_TYPE)


@router.post("/calendar/deadlines", status_code=201)
def add_deadline(caller: Manager, body: DeadlineIn) -> Response:
    """Enter a regulatory deadline (``calendar add --json``)."""
    with caller.acting() as app:
        deadline = svc.add_deadline(
            app,
            caller.principal,
            title=body.title,
            due=body.due,
            every=body.every,
            detail=body.detail,
            owner=body.owner,
        )
    return reply(deadline.to_json(), 201)


class Removal(BaseModel):
    """Why a deadline is removed (optional: met, withdrawn ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(default="", max_length=4000)


@router.delete("/calendar/deadlines/{deadline_id}")
def remove_deadline(caller: Manager, deadline_id: str, body: Removal | None = None) -> Response:
    """Remove a regulatory deadline (``calendar remove ID --json``)."""
    reason = (body or Removal()).reason
    with caller.acting() as app:
        deadline = svc.remove_deadline(app, caller.principal, deadline_id, reason=reason)
    return reply(deadline.to_json())
