"""Single sign-on with the server's OpenID provider (all public: they establish who calls):

- ``GET /auth/oidc/start``: a browser's login; a 302 to the provider, and the cookie
  :data:`BINDING_COOKIE` (HttpOnly, Secure, ``SameSite=Lax``: it must come back with the
  provider's redirect, a cross-site navigation) that ties the answer to this browser;
- ``GET /auth/oidc/callback``: the provider's answer; for a browser's login, the session (the
  same cookie and anti-CSRF token as a password login; the secret stays in the cookie): as
  JSON to an API client, as a page that goes on to the dashboard when a browser navigates
  (``Sec-Fetch-Mode: navigate``); for a CLI's, a page with the one-time code to type into
  the CLI;
- ``POST /auth/oidc/cli``: a CLI's login: the provider's URL to open, the flow and its secret;
- ``POST /auth/oidc/cli/redeem``: ``{flow, flow_secret, code}`` → the session, as a password
  login answers.

The protocol and its refusals are :mod:`affidavit.services.oidc`; without a provider
configured (``oidc_issuer``) every route answers 404.
"""

from __future__ import annotations

import html
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import RedirectResponse, Response

from affidavit.errors import NotFound
from affidavit.models.identity import AuthMethod
from affidavit.server.access import note_identity
from affidavit.server.gates import PUBLIC, affidavit_app, client_of
from affidavit.server.replies import reply
from affidavit.server.routes.auth import session_reply
from affidavit.services import oidc
from affidavit.services.identity import ANONYMOUS

router = APIRouter(tags=["auth"])
Public = Annotated[None, Depends(PUBLIC)]

BINDING_COOKIE: Final = "__Host-affidavit-oidc"
STATE_KEY: Final = "oidc_logins"
"""Where the app's state keeps the server's :class:`~affidavit.services.oidc.OidcLogins`."""
_METHOD: Final = AuthMethod.OIDC.value


def _logins(request: Request) -> oidc.OidcLogins:
    logins = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(logins, oidc.OidcLogins):
        raise NotFound(
            "single sign-on (OpenID Connect) is not configured on this server",
            hint="log in with a password (POST /api/v1/auth/login); an operator sets "
            "oidc_issuer, oidc_client_id and oidc_redirect_uri (docs/server.md)",
        )
    return logins


@router.get("/auth/oidc/start")
def start(request: Request, _: Public) -> Response:
    """Begin a browser's login: redirect to the provider (state, nonce and PKCE kept here)."""
    note_identity(request.state, ANONYMOUS, _METHOD)
    begun = _logins(request).start_browser(
        affidavit_app(request), client_address=client_of(request).address
    )
    response = RedirectResponse(begun.url, status_code=302)
    response.set_cookie(
        BINDING_COOKIE,
        begun.binding,
        max_age=int(oidc.PENDING_TTL.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/auth/oidc/callback")
def callback(
    request: Request,
    _: Public,
    state: Annotated[str | None, Query(max_length=256)] = None,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    """The provider's answer: the browser's session, or the CLI flow's one-time code."""
    note_identity(request.state, ANONYMOUS, _METHOD)  # a refusal is logged so
    answered = _logins(request).answer(
        affidavit_app(request),
        state=state,
        code=code,
        error=error,
        iss=iss,
        binding=request.cookies.get(BINDING_COOKIE),
        client=client_of(request),
    )
    if answered.grant is not None:
        principal = answered.grant.principal
        note_identity(request.state, principal.name, principal.method.value)
        response = session_reply(answered.grant, with_secret=False)
        if _navigating(request):  # a person's browser: on to the dashboard
            from affidavit.server.web.pages import landing  # the web package imports this one

            response = _continue_page(response, principal.name, landing(principal))
        response.delete_cookie(BINDING_COOKIE, path="/", secure=True, httponly=True)
        return response
    shown = html.escape(answered.code or "")
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>affidavit login</title>"
        "<h1>Logged in at the identity provider</h1>"
        f'<p>Your one-time code: <code id="code">{shown}</code></p>'
        "<p>Type it into the <code>affidavit login --oidc</code> you started yourself. If you "
        "did not start one just now, close this page and give the code to nobody.</p></html>"
    )
    return Response(page, media_type="text/html; charset=utf-8")


def _navigating(request: Request) -> bool:
    """Whether a browser loads the callback as a page (fetch metadata; an ``Accept`` that
    asks for HTML from a browser without it), rather than an API client reading JSON."""
    if request.headers.get("sec-fetch-mode") == "navigate":
        return True
    return request.headers.get("accept", "").startswith("text/html")


def _continue_page(answered: Response, name: str, target: str) -> Response:
    """A page that sends the browser on to ``target`` (the dashboard, or an auditor's
    engagements: :func:`~affidavit.server.web.pages.landing`), with ``answered``'s cookies.

    Not a 303: the provider's redirect made this a cross-site navigation, and a browser
    sends no ``SameSite=Strict`` cookie on a redirect of that chain (Chromium does not), so
    the dashboard would see no session. A refresh from this page is a new navigation that
    this site starts, which carries the cookie (tested in Chromium)."""
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="0; url={html.escape(target)}">'
        "<title>affidavit: logged in</title>"
        f"<p>Logged in as {html.escape(name)}. "
        f'<a href="{html.escape(target)}">Continue</a>.</p></html>'
    )
    response = Response(page, media_type="text/html; charset=utf-8")
    for key, value in answered.raw_headers:
        if key == b"set-cookie":
            response.raw_headers.append((key, value))
    return response


@router.post("/auth/oidc/cli")
def cli_start(request: Request, _: Public) -> Response:
    """Begin a CLI's login: the provider's URL for the person, and the flow's secret."""
    note_identity(request.state, ANONYMOUS, _METHOD)
    begun = _logins(request).start_cli(
        affidavit_app(request), client_address=client_of(request).address
    )
    return reply(
        {
            "url": begun.url,
            "flow": begun.flow,
            "flow_secret": begun.flow_secret,
            "expires_at": begun.expires_at,
        }
    )


class Redeem(BaseModel):
    """A CLI's flow, its secret, and the one-time code the person typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: str = Field(min_length=1, max_length=128)
    flow_secret: str = Field(min_length=1, max_length=128, repr=False)
    code: str = Field(min_length=1, max_length=64, repr=False)


@router.post("/auth/oidc/cli/redeem")
def cli_redeem(request: Request, _: Public, body: Redeem) -> Response:
    """Open the CLI's session (the same answer as a password login)."""
    note_identity(request.state, ANONYMOUS, _METHOD)
    grant = _logins(request).redeem(
        affidavit_app(request),
        flow=body.flow,
        flow_secret=body.flow_secret,
        code=body.code,
        client=client_of(request),
    )
    note_identity(request.state, grant.principal.name, grant.principal.method.value)
    return session_reply(grant)
