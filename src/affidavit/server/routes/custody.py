"""``GET /keys/status`` (``keys.status``), and the gated operations of custody and governance
that other routers do not hold:
``POST /keys/rotate`` (``keys.rotate`` + MFA), ``POST /backups/{backup_id}/identity``
(``keys.export_identity`` + MFA: the backup's age identity, in this answer only),
``DELETE /sources/{name}`` (``source.manage``), ``POST /accounts/{name}/disable``
(``account.manage`` + MFA), ``POST /policy/versions/{version}/approve`` (``policy.approve`` +
MFA) and ``POST /exceptions/{exception_id}/approve`` (``exception.approve`` + MFA).

Each is a gated operation (docs/approvals.md): when its rule needs another person's approval
the answer is 202 with the request, and the operation runs when its requester executes it
(``POST /requests/{id}/execute``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import findings, identity, inventory, keys, policy
from affidavit.services.views import policy_version_json, rotation_json

router = APIRouter(tags=["custody"])


class Reason(BaseModel):
    """Why (recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=500)


@router.get("/keys/status")
def key_status(
    caller: Annotated[Caller, Depends(allow(Permission.KEYS_STATUS))],
) -> Response:
    """KEK versions and when rotation is due (``keys status --json``)."""
    with caller.acting() as app:
        status = keys.key_status(app)
    return reply(status.to_json())


@router.post("/keys/rotate")
def rotate_keys(
    caller: Annotated[Caller, Depends(allow(Permission.KEYS_ROTATE, mfa=True))],
) -> Response:
    """A new KEK version, every backup key re-wrapped (``keys rotate --json``)."""
    with caller.acting() as app:
        result = keys.rotate_keys(app)
    return reply(rotation_json(result))


@router.post("/backups/{backup_id}/identity")
def export_identity(
    caller: Annotated[Caller, Depends(allow(Permission.KEYS_EXPORT_IDENTITY, mfa=True))],
    backup_id: str,
    body: Reason,
) -> Response:
    """The backup's age identity (``keys export-identity``); the disclosure is recorded
    first."""
    with caller.acting() as app:
        secret = keys.export_identity(app, backup_id, reason=body.reason)
    return reply({"backup_id": backup_id, "identity": secret})


@router.delete("/sources/{name}")
def remove_source(
    caller: Annotated[Caller, Depends(allow(Permission.SOURCE_MANAGE))],
    name: str,
    body: Reason,
) -> Response:
    """Unregister a source (``source remove --json``)."""
    with caller.acting() as app:
        inventory.remove_source(app, name, reason=body.reason)
    return reply({"removed": name})


@router.post("/accounts/{name}/disable")
def disable_account(
    caller: Annotated[Caller, Depends(allow(Permission.ACCOUNT_MANAGE, mfa=True))],
    name: str,
    body: Reason,
) -> Response:
    """Disable an account for good (``user disable --json``)."""
    with caller.acting() as app:
        account = identity.disable_account(app, caller.principal, name, reason=body.reason)
    return reply({"account": account.to_json()})


@router.post("/policy/versions/{version}/approve")
def approve_policy(
    caller: Annotated[Caller, Depends(allow(Permission.POLICY_APPROVE, mfa=True))],
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> Response:
    """Approve a proposed policy version (``policy approve --json``)."""
    with caller.acting() as app:
        approved = policy.approve_policy(app, version)
    return reply(policy_version_json(approved))


@router.post("/exceptions/{exception_id}/approve")
def approve_exception(
    caller: Annotated[Caller, Depends(allow(Permission.EXCEPTION_APPROVE, mfa=True))],
    exception_id: str,
) -> Response:
    """Approve an exception someone else requested (``exception approve --json``)."""
    with caller.acting() as app:
        exc = findings.approve_exception(app, exception_id)
    return reply(exc.to_json())
