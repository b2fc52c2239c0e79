"""``GET /baseline`` (``policy.read``): the configuration baseline in force (``baseline
show``); ``POST /baselines`` (``baseline.approve`` with a fresh MFA check): read every source's
and vault's configuration now and approve it (``baseline approve``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import baseline
from affidavit.services.views import baseline_json

router = APIRouter(tags=["baselines"])


class Approval(BaseModel):
    """Why this configuration is right (recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str = Field(max_length=2000)


@router.get("/baseline")
def show(caller: Annotated[Caller, Depends(allow(Permission.POLICY_READ))]) -> Response:
    """The baseline in force (``baseline show --json``)."""
    with caller.acting() as app:
        found = baseline.baseline_in_force(app)
    return reply(baseline_json(found))


@router.post("/baselines", status_code=201)
def approve(
    caller: Annotated[Caller, Depends(allow(Permission.BASELINE_APPROVE, mfa=True))],
    body: Approval,
) -> Response:
    """Approve the configuration read now (``baseline approve --json``)."""
    with caller.acting() as app:
        approved = baseline.approve_baseline(app, note=body.note)
    return reply(baseline_json(approved), 201)
