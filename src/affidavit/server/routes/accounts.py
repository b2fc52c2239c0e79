"""``GET /accounts`` and ``GET /roles`` (``account.read``), ``POST /accounts``
(``account.manage``), ``POST /accounts/{name}/roles`` and ``DELETE /accounts/{name}/roles/{role}``
(``role.grant`` with a fresh MFA check; gated operations: the gate is in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.identity import AccountKind
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import identity, roles

router = APIRouter(tags=["accounts"])
Granter = Annotated[Caller, Depends(allow(Permission.ROLE_GRANT, mfa=True))]


class NewAccount(BaseModel):
    """What ``user add`` takes: a person's initial password, or a service account (none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    service: bool = False
    password: str | None = Field(default=None, max_length=1024, repr=False)
    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)


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


@router.post("/accounts", status_code=201)
def add_account(
    caller: Annotated[Caller, Depends(allow(Permission.ACCOUNT_MANAGE))], body: NewAccount
) -> Response:
    """Add an account with no role (``user add --json``; the first administrator is made on
    the server's host only)."""
    with caller.acting() as app:
        account = identity.create_account(
            app,
            caller.principal,
            body.name,
            kind=AccountKind.SERVICE if body.service else AccountKind.HUMAN,
            password=body.password,
            display_name=body.display_name,
            email=body.email,
        )
    return reply({"account": account.to_json(), "bootstrapped": False}, 201)


@router.get("/roles")
def list_roles(
    caller: Annotated[Caller, Depends(allow(Permission.ACCOUNT_READ))],
) -> Response:
    """Every role with its permissions and who holds it (``role list --json``)."""
    with caller.acting() as app:
        holdings = roles.list_grants(app, caller.principal)
    return reply(roles.grants_json(holdings))


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
