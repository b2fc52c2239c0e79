"""``POST /backups/{backup_id}/drills`` (``drill.run``) and ``GET /drills``
(``backup.read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import drill
from affidavit.services.views import drill_json

router = APIRouter(tags=["drills"])


class DrillRun(BaseModel):
    """What ``drill run BACKUP`` takes through the API: a scratch target only (a URI target
    and probe files name things on the server's host: the CLI on that host offers them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rto_seconds: float | None = Field(default=None, gt=0, le=30 * 86400)


@router.post("/backups/{backup_id}/drills")
def run_drill(
    caller: Annotated[Caller, Depends(allow(Permission.DRILL_RUN))],
    backup_id: str,
    body: DrillRun | None = None,
) -> Response:
    """Restore a backup into a scratch server, prove and time it, record the signed result
    (``drill run --json``; a failed drill is a result, ``"ok": false``)."""
    options = body or DrillRun()
    with caller.acting() as app:
        result = drill.run_drill(app, backup_id, rto_seconds=options.rto_seconds)
    return reply(drill_json(result))


@router.get("/drills")
def list_drills(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_READ))],
    backup: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Recorded drills (of one backup), newest first (``drill list --json``)."""
    with caller.acting() as app:
        found = drill.list_drills(app, backup)
    return reply({"drills": [drill_json(d) for d in found]})
