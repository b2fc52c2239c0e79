"""``GET /schedule/due`` (``schedule.read``): the verifications and drills that are due
(``affidavit due``); ``POST /schedule/run-due`` (``schedule.run_due``): run them
(``affidavit run-due``; answers when they are done, a failed check is a result,
``"ok": false``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import schedule

router = APIRouter(tags=["schedule"])


@router.get("/schedule/due")
def due(
    caller: Annotated[Caller, Depends(allow(Permission.SCHEDULE_READ))],
    upcoming: Annotated[bool, Query(alias="all")] = False,
) -> Response:
    """The checks that are due or overdue; with ``all`` the upcoming ones too (``due
    --json``)."""
    with caller.acting() as app:
        items = schedule.due(app, include_upcoming=upcoming)
    return reply(schedule.due_json(items))


@router.post("/schedule/run-due")
def run_due(caller: Annotated[Caller, Depends(allow(Permission.SCHEDULE_RUN))]) -> Response:
    """Run every due verification and drill, alerting on failures (``run-due --json``)."""
    with caller.acting() as app:
        result = schedule.run_due(app)
    return reply(result.to_json())
