"""``POST /policy/check`` (``policy.check``): evaluate every control and record the results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import policy

router = APIRouter(tags=["policy"])


class PolicyCheck(BaseModel):
    """What ``policy check`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offline: bool = False


@router.post("/policy/check")
def check(
    caller: Annotated[Caller, Depends(allow(Permission.POLICY_CHECK))],
    body: PolicyCheck | None = None,
) -> Response:
    """Evaluate every control; record results and findings (``policy check --json``;
    findings are a result, ``"ok": false``)."""
    options = body or PolicyCheck()
    with caller.acting() as app:
        outcome = policy.check_policy(app, live=not options.offline)
    return reply(outcome.to_json())
