"""An account's credentials over the API (``affidavit user passwd|totp-enroll|totp-reset|
unlock|link-oidc``).

A person's own credentials, by their login session (``allow_session``; an API token never
changes a password or a TOTP): ``POST /me/password`` (with the current password),
``POST /me/totp`` and ``POST /me/totp/confirm`` (the enrolment: the ``otpauth://`` URI goes
to the person enrolling only, in this answer only), ``DELETE /me/totp`` (with a fresh MFA
check, asked by the service). Each body names the account, which must be the caller's own:
a confirmation that the person means themselves.

Someone else's, by an administrator: ``POST /accounts/{name}/password``,
``DELETE /accounts/{name}/totp`` and ``POST /accounts/{name}/oidc`` (``account.manage`` with a
fresh MFA check), ``POST /accounts/{name}/unlock`` (``account.manage``).

Passwords travel in the request body only (the CLI sends them over TLS or to a loopback
address); they are never answered, recorded or logged (the access log keeps the route, never
the body)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.identity import account_name
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow, allow_session
from affidavit.server.replies import reply
from affidavit.services import identity

router = APIRouter(tags=["credentials"])
Own = Annotated[Caller, Depends(allow_session())]
Manager = Annotated[Caller, Depends(allow(Permission.ACCOUNT_MANAGE, mfa=True))]


class Mine(BaseModel):
    """The account acted on: the caller's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str = Field(min_length=1, max_length=200)


class OwnPassword(Mine):
    """A new password for oneself, with the current one."""

    current_password: str = Field(max_length=1024, repr=False)
    password: str = Field(max_length=1024, repr=False)


class TotpCode(Mine):
    """The code the new authenticator shows."""

    code: str = Field(min_length=1, max_length=64)


class NewPassword(BaseModel):
    """Another person's new password, set by an administrator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password: str = Field(max_length=1024, repr=False)


class OidcLink(BaseModel):
    """The OpenID provider's issuer and the person's subject there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, max_length=2000)
    subject: str = Field(min_length=1, max_length=255)


def _own(caller: Caller, body: Mine) -> str:
    """The account of ``body``, refused unless it is the caller's."""
    name = account_name(body.account)
    if name != caller.principal.name:
        raise InputError(
            f"you are logged in as {caller.principal.name!r}, not {name!r}: here you change "
            "your own credentials only",
            hint="an administrator sets another account's (`affidavit user passwd NAME`, "
            "`user totp-reset NAME`)",
        )
    return name


@router.post("/me/password")
def change_own_password(caller: Own, body: OwnPassword) -> Response:
    """Change one's own password (``user passwd NAME`` as NAME); the other sessions end."""
    name = _own(caller, body)
    with caller.acting() as app:
        identity.set_password(
            app,
            caller.principal,
            name,
            body.password,
            current_password=body.current_password,
            client=caller.client,
        )
    return reply({"account": name, "password_set": True})


@router.post("/me/totp")
def begin_totp(caller: Own, body: Mine) -> Response:
    """Start one's TOTP enrolment: the ``otpauth://`` URI, to this caller only."""
    name = _own(caller, body)
    with caller.acting() as app:
        enrolment = identity.begin_totp(app, caller.principal, name)
    return reply({"account": name, "uri": enrolment.uri, "secret": enrolment.secret})


@router.post("/me/totp/confirm")
def confirm_totp(caller: Own, body: TotpCode) -> Response:
    """Confirm one's enrolment with a code: the recovery codes, in this answer only."""
    name = _own(caller, body)
    with caller.acting() as app:
        codes = identity.confirm_totp(app, caller.principal, name, body.code)
    return reply({"account": name, "totp_enrolled": True, "recovery_codes": list(codes)})


@router.delete("/me/totp")
def reset_own_totp(caller: Own, body: Mine) -> Response:
    """Remove one's own TOTP and recovery codes (a fresh MFA check, asked by the service)."""
    name = _own(caller, body)
    with caller.acting() as app:
        identity.reset_totp(app, caller.principal, name)
    return reply({"account": name, "totp_reset": True})


@router.post("/accounts/{name}/password")
def set_password(caller: Manager, name: str, body: NewPassword) -> Response:
    """Set another person's password (``user passwd NAME`` by an administrator)."""
    with caller.acting() as app:
        identity.set_password(app, caller.principal, name, body.password, client=caller.client)
    return reply({"account": account_name(name), "password_set": True})


@router.delete("/accounts/{name}/totp")
def reset_totp(caller: Manager, name: str) -> Response:
    """Remove another person's TOTP and recovery codes (``user totp-reset NAME``)."""
    with caller.acting() as app:
        identity.reset_totp(app, caller.principal, name)
    return reply({"account": account_name(name), "totp_reset": True})


@router.post("/accounts/{name}/unlock")
def unlock(
    caller: Annotated[Caller, Depends(allow(Permission.ACCOUNT_MANAGE))], name: str
) -> Response:
    """Lift a lockout after failed logins (``user unlock --json``)."""
    with caller.acting() as app:
        account = identity.unlock_account(app, caller.principal, name)
    return reply({"account": account.to_json()})


@router.post("/accounts/{name}/oidc")
def link_oidc(caller: Manager, name: str, body: OidcLink) -> Response:
    """Link a person's account to an OpenID provider's subject (``user link-oidc --json``)."""
    with caller.acting() as app:
        account = identity.link_oidc(
            app, caller.principal, name, issuer=body.issuer, subject=body.subject
        )
    return reply({"account": account.to_json()})
