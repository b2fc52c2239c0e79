"""``POST /tokens`` (``token.manage`` with a fresh MFA check): issue an API token to a
service account; its secret is in this answer only."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
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
