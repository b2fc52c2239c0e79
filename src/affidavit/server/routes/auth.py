"""``POST /auth/login`` (public), ``POST /auth/logout``, ``POST /auth/step-up`` (a logged-in
person's own session) and ``GET /whoami`` (any authenticated identity).

A login answers with the session secret (for ``Authorization: Bearer``), the session's
anti-CSRF token (for pages that use the cookie) and sets the session cookie: HttpOnly,
Secure, SameSite=Strict, ``__Host-`` prefixed, for the session's absolute lifetime."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.identity import Principal, SessionGrant, account_name
from affidavit.server.access import note_identity
from affidavit.server.gates import (
    PUBLIC,
    SESSION_COOKIE,
    Caller,
    affidavit_app,
    allow_self,
    allow_session,
    client_of,
)
from affidavit.server.replies import reply
from affidavit.services import identity, principals

router = APIRouter(tags=["auth"])
Session = Annotated[Caller, Depends(allow_session())]


class Login(BaseModel):
    """A person's credentials: name, password, and a TOTP or recovery code when enrolled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024, repr=False)
    totp: str | None = Field(default=None, max_length=64, repr=False)


class StepUp(BaseModel):
    """A current TOTP code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=1, max_length=64, repr=False)


def whoami_json(principal: Principal, now: datetime | None = None) -> dict[str, Any]:
    """The server's view of a principal: name, kind, roles, permissions, how it was
    authenticated, and how long ago its last MFA check was (None: none in this session)."""
    at = now or datetime.now(UTC)
    age = None if principal.mfa_at is None else round((at - principal.mfa_at).total_seconds())
    return {
        **principal.to_json(),
        "mfa_age_seconds": age,
        "step_up_window_seconds": int(principals.STEP_UP_WINDOW.total_seconds()),
    }


def _tried(name: str) -> str:
    """The account a login names, as the access log keeps it: the account's own name when
    the text is one (``Admin `` is ``admin``, so that a variant spelling hides no attempt
    from a search by name), else the text as it came."""
    try:
        return account_name(name)
    except InputError:
        return name


@router.post("/auth/login")
def login(request: Request, _: Annotated[None, Depends(PUBLIC)], body: Login) -> Response:
    """Log a person in; every refusal is one 401 with the same message (and counts towards
    the lockout)."""
    app = affidavit_app(request)
    note_identity(request.state, _tried(body.name), "password")  # a failure is logged so
    grant = identity.login(app, body.name, body.password, body.totp, client=client_of(request))
    note_identity(request.state, grant.principal.name, grant.principal.method.value)
    return session_reply(grant)


def session_reply(grant: SessionGrant, *, with_secret: bool = True) -> Response:
    """The answer to a login (password or single sign-on): the session secret (unless
    ``with_secret`` is false: a browser keeps it in the cookie only), the anti-CSRF token,
    the session and the principal, and the session cookie."""
    session = grant.session
    body: dict[str, Any] = {"secret": grant.secret} if with_secret else {}
    response = reply(
        {
            **body,
            "csrf_token": identity.csrf_token(grant.secret),
            "session": session.to_json(),
            "principal": whoami_json(grant.principal),
        }
    )
    max_age = int((session.absolute_expires_at - session.created_at).total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        grant.secret,
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/auth/logout")
def logout(caller: Session) -> Response:
    """End this session (and clear its cookie)."""
    with caller.acting() as app:
        identity.logout(app, caller.principal)
    response = reply({"logged_out": True, "session": caller.principal.session_id})
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/auth/step-up")
def step_up(caller: Session, body: StepUp) -> Response:
    """Confirm a current TOTP code: the session's MFA check is fresh again (a wrong code
    counts as a failed login)."""
    with caller.acting() as app:
        principal = identity.step_up(app, caller.principal, body.code, client=caller.client)
    return reply({"principal": whoami_json(principal)})


@router.get("/whoami")
def whoami(caller: Annotated[Caller, Depends(allow_self())]) -> Response:
    """Who the server takes the caller for."""
    return reply(whoami_json(caller.principal))
