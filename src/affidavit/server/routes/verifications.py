"""``POST /backups/{backup_id}/verify`` (``verify.run``) and ``GET /verifications``
(``backup.read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import verify
from affidavit.services.views import verification_json

router = APIRouter(tags=["verifications"])


class VerifyRun(BaseModel):
    """What ``verify BACKUP`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    against_source: bool = False
    sample_percent: float | None = Field(default=None, gt=0, le=100)
    seed: str | None = Field(default=None, min_length=1, max_length=200)
    deep: bool = False


@router.post("/backups/{backup_id}/verify")
def verify_backup(
    caller: Annotated[Caller, Depends(allow(Permission.VERIFY_RUN))],
    backup_id: str,
    body: VerifyRun | None = None,
) -> Response:
    """Verify a backup and record the signed result (``verify --json``; a backup that fails
    is a result, ``"ok": false``, not an error)."""
    options = body or VerifyRun()
    with caller.acting() as app:
        result = verify.verify_backup(
            app,
            backup_id,
            against_source=options.against_source,
            sample_percent=options.sample_percent,
            seed=options.seed,
            deep=options.deep,
        )
    return reply(verification_json(result))


@router.get("/verifications")
def list_verifications(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_READ))],
    backup: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Recorded verifications (of one backup), newest first (``verify list --json``)."""
    with caller.acting() as app:
        found = verify.list_verifications(app, backup)
    return reply({"verifications": [verification_json(v, brief=True) for v in found]})
