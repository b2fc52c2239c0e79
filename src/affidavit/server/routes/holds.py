"""``POST /backups/{backup_id}/holds`` (``hold.add``),
``POST /backups/{backup_id}/holds/{case}/release`` (``hold.release`` with a fresh MFA check)
and ``GET /holds`` (``backup.read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import backup as backups
from affidavit.services.views import hold_json

router = APIRouter(tags=["holds"])


class HoldAdd(BaseModel):
    """A legal hold to place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    case: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class HoldRelease(BaseModel):
    """Why a hold ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=2000)


@router.post("/backups/{backup_id}/holds", status_code=201)
def add_hold(
    caller: Annotated[Caller, Depends(allow(Permission.HOLD_ADD))],
    backup_id: str,
    body: HoldAdd,
) -> Response:
    """Place a legal hold on a backup (``hold add --json``)."""
    with caller.acting() as app:
        hold = backups.add_hold(app, backup_id, case_id=body.case, reason=body.reason)
    return reply(hold_json(hold), 201)


@router.post("/backups/{backup_id}/holds/{case}/release")
def release_hold(
    caller: Annotated[Caller, Depends(allow(Permission.HOLD_RELEASE, mfa=True))],
    backup_id: str,
    case: str,
    body: HoldRelease,
) -> Response:
    """Release a legal hold (``hold release --json``); needs a TOTP check within the last
    five minutes."""
    with caller.acting() as app:
        hold = backups.release_hold(app, backup_id, case_id=case, reason=body.reason)
    return reply(hold_json(hold))


@router.get("/holds")
def list_holds(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_READ))],
    backup: Annotated[str | None, Query(max_length=200)] = None,
    active: bool = False,
) -> Response:
    """Holds (of one backup; only the active ones), oldest first (``hold list --json``)."""
    with caller.acting() as app:
        found = backups.list_holds(app, backup, active_only=active)
    return reply({"holds": [hold_json(h) for h in found]})
