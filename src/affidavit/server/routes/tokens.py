"""``POST /tokens`` (``token.manage`` with a fresh MFA check): issue an API token to a
service account; its secret is in this answer only. ``GET /tokens`` (``account.read``): the
tokens, never their secrets; ``DELETE /tokens/{token_id}`` (``token.manage``): revoke one."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import identity

router = APIRouter(tags=["tokens"])


class TokenCreate(BaseModel):
    """What ``token create`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str = Field(min_length=1, max_length=200)
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=100)
    expires_in_days: float = Field(gt=0, le=3650)


def _scopes(values: list[str]) -> set[Permission]:
    out = set()
    for value in values:
        try:
            out.add(Permission(value.strip()))
        except ValueError:
            raise InputError(
                f"{value[:60]!r} is not a permission",
                hint="docs/identities.md lists them (e.g. backup.run)",
            ) from None
    return out


@router.post("/tokens", status_code=201)
def create_token(
    caller: Annotated[Caller, Depends(allow(Permission.TOKEN_MANAGE, mfa=True))],
    body: TokenCreate,
) -> Response:
    """Issue a token (``token create --json``: the token and its secret, shown once)."""
    scopes = _scopes(body.scopes)
    with caller.acting() as app:
        issued = identity.create_token(
            app, caller.principal, body.account, scopes, timedelta(days=body.expires_in_days)
        )
    return reply({"token": issued.token.to_json(), "secret": issued.secret}, 201)


@router.get("/tokens")
def list_tokens(
    caller: Annotated[Caller, Depends(allow(Permission.ACCOUNT_READ))],
    account: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The tokens, of one account or all (``token list --json``)."""
    with caller.acting() as app:
        found = identity.list_tokens(app, caller.principal, account)
    return reply({"tokens": [t.to_json() for t in found]})


@router.delete("/tokens/{token_id}")
def revoke_token(
    caller: Annotated[Caller, Depends(allow(Permission.TOKEN_MANAGE))], token_id: str
) -> Response:
    """Revoke a token (``token revoke --json``)."""
    with caller.acting() as app:
        token = identity.revoke_token(app, caller.principal, token_id)
    return reply({"token": token.to_json()})
