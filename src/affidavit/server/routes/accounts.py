"""``GET /accounts`` (``account.read``), ``POST /accounts/{name}/roles`` and
``DELETE /accounts/{name}/roles/{role}`` (``role.grant`` with a fresh MFA check)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import identity, roles

router = APIRouter(tags=["accounts"])
Granter = Annotated[Caller, Depends(allow(Permission.ROLE_GRANT, mfa=True))]


class RoleGrant(BaseModel):
    """The role to grant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(min_length=1, max_length=64)


@router.get("/accounts")
def list_accounts(
    caller: Annotated[Caller, Depends(allow(Permission.ACCOUNT_READ))],
) -> Response:
    """Every account (``user list --json``)."""
    with caller.acting() as app:
        found = identity.list_accounts(app, caller.principal)
    return reply({"accounts": [a.to_json() for a in found]})


@router.post("/accounts/{name}/roles", status_code=201)
def grant_role(caller: Granter, name: str, body: RoleGrant) -> Response:
    """Grant a role (never to oneself; ``role grant --json``)."""
    with caller.acting() as app:
        grant = roles.grant_role(app, caller.principal, name, body.role)
    return reply({"grant": grant.to_json()}, 201)


@router.delete("/accounts/{name}/roles/{role}")
def revoke_role(caller: Granter, name: str, role: str) -> Response:
    """Revoke a role (the last enabled administrator keeps ``admin``)."""
    with caller.acting() as app:
        roles.revoke_role(app, caller.principal, name, role)
    return reply({"revoked": {"account": name, "role": role}})
