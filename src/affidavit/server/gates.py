"""The one authorization choke point of the API: every route declares its :class:`Gate` as a
dependency, and the gate establishes who is calling before the route's body runs.

A gate is one of

- ``allow(PERMISSION)``: an authenticated identity that holds ``PERMISSION`` (the union of
  its roles' permissions, cut down to a token's scopes); ``mfa=True`` also needs a TOTP check
  within the step-up window (:func:`~affidavit.services.principals.require_fresh_mfa`);
- ``allow_self()``: any authenticated identity, acting on itself only (``whoami``);
- ``allow_session()``: a logged-in person's session, acting on itself only (logout, step-up);
- ``PUBLIC``: nobody needs to be known (login, health).

:func:`affidavit.server.app.check_gates` refuses to build an app with a route that declares
no gate, or more than one, so a route cannot arrive without a rule.

Credentials. ``Authorization: Bearer <secret>`` carries an API token (``afv_...``) or a session
secret (``afs_...``); otherwise the HttpOnly session cookie :data:`SESSION_COOKIE` carries a
session secret. A request that changes state (any method but GET, HEAD, OPTIONS) with the
cookie must also send the session's anti-CSRF token in :data:`CSRF_HEADER` (given at login):
a page on another site can make the browser send the cookie, but can neither read the token
nor set a custom header without the CORS permission this server never grants. Bearer requests
need no such token: a browser never adds an ``Authorization`` header by itself.

The order of checks: credentials (401), the CSRF token (403), the gate's rule (403), a fresh
MFA check (403 with ``step_up_required``). The gate returns a :class:`Caller`; the route runs
its service inside :meth:`Caller.acting`, so that every ledger event of the request names the
authenticated account and how it was authenticated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from affidavit.errors import AccessDenied, AuthenticationFailed
from affidavit.models.identity import Principal
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import Permission
from affidavit.server.access import RELEASE_KEY, note_identity
from affidavit.services import identity, principals
from affidavit.services.context import SYNC_THREADS, App

SESSION_COOKIE: Final = "__Host-affidavit-session"
"""The session cookie (``__Host-``: Secure, path ``/``, no domain: the browser keeps it to this
origin exactly)."""
CSRF_HEADER: Final = "X-Affidavit-CSRF"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_AGENT: Final = 200


class Via(StrEnum):
    """How the credentials came."""

    BEARER = "bearer"
    COOKIE = "cookie"


class GateKind(StrEnum):
    """What a gate asks of the caller."""

    PUBLIC = "public"
    SELF = "self"
    SESSION = "session"
    PERMISSION = "permission"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request."""

    principal: Principal
    client: ClientInfo
    via: Via
    app: App = field(repr=False)
    secret: str = field(repr=False)

    @contextmanager
    def acting(self) -> Iterator[App]:
        """The App with this caller acting (see :meth:`App.acting_as`)."""
        with self.app.acting_as(self.principal, client=self.client) as app:
            yield app


def affidavit_app(request: Request) -> App:
    """The process's :class:`App` (opened by the server's lifespan)."""
    app = getattr(request.app.state, "affidavit", None)
    if not isinstance(app, App):  # pragma: no cover - the lifespan always sets it
        raise RuntimeError("the server's App is not open")
    return app


def client_of(request: Request) -> ClientInfo:
    """The request's client address and user agent (printable, bounded), for the ledger."""
    agent = request.headers.get("user-agent", "")
    printable = "".join(ch for ch in agent[:_MAX_AGENT] if ch.isprintable())
    address = request.client.host if request.client is not None else None
    return ClientInfo(address=address, agent=f"api {printable}".strip())


def _credentials(request: Request) -> tuple[str, Via]:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed(
                "the Authorization header is not a bearer credential",
                hint="send Authorization: Bearer <API token or session secret>",
            )
        return value.strip(), Via.BEARER
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, Via.COOKIE
    raise AuthenticationFailed(
        "this request needs an authenticated identity",
        hint="log in (POST /api/v1/auth/login) or send Authorization: Bearer <API token>",
    )


def authenticate(request: Request) -> Caller:
    """Establish the caller of ``request`` (401 when it cannot be) and check the CSRF token
    of a state-changing request made with the session cookie (403)."""
    app = affidavit_app(request)
    secret, via = _credentials(request)
    if via is Via.COOKIE:
        principal = identity.authenticate_session(app, secret)  # never a token in a cookie
        if request.method not in SAFE_METHODS:
            presented = request.headers.get(CSRF_HEADER, "")
            if not presented or not identity.csrf_matches(secret, presented):
                raise AccessDenied(
                    "a state-changing request with the session cookie needs the session's "
                    f"anti-CSRF token in the {CSRF_HEADER} header",
                    hint="send the csrf_token given at login, or use Authorization: Bearer",
                )
    else:
        principal = identity.authenticate(app, secret)
    return Caller(principal=principal, client=client_of(request), via=via, app=app, secret=secret)


class Gate:
    """A route's declared rule; FastAPI calls it (as a dependency) for each request."""

    def __init__(
        self, kind: GateKind, permission: Permission | None = None, *, mfa: bool = False
    ) -> None:
        if (kind is GateKind.PERMISSION) != (permission is not None):
            raise ValueError("a permission gate names exactly one permission")
        self.kind = kind
        self.permission = permission
        self.mfa = mfa

    def __repr__(self) -> str:
        rule = self.permission.value if self.permission is not None else self.kind.value
        return f"Gate({rule}{', mfa' if self.mfa else ''})"

    def describe(self) -> str:
        """The rule in a few words (the routes table of docs/server.md)."""
        if self.permission is not None:
            return f"`{self.permission.value}`" + (" + fresh MFA" if self.mfa else "")
        return {
            GateKind.PUBLIC: "public",
            GateKind.SELF: "any authenticated identity (itself)",
            GateKind.SESSION: "a logged-in person (own session)",
        }[self.kind]

    async def __call__(self, request: Request) -> Caller | None:
        if self.kind is GateKind.PUBLIC:
            return None
        caller = await run_in_threadpool(self._check, request)
        await _take_share(request, caller.principal)
        return caller

    def _check(self, request: Request) -> Caller:
        """Authenticate and apply the rule (on a worker thread: it reads the catalog)."""
        caller = authenticate(request)
        principal = caller.principal
        note_identity(request.state, principal.name, principal.method.value)
        if self.kind is GateKind.SESSION and principal.session_id is None:
            raise AccessDenied(
                "only a logged-in person's session can do this (not an API token)",
                hint="log in with a password and a TOTP code",
            )
        if self.permission is not None:
            principals.authorize(principal, self.permission)
        if self.mfa:
            principals.require_fresh_mfa(principal)
        return caller


IDENTITY_SHARE: Final = SYNC_THREADS // 2
"""How many of one identity's requests a server process serves at once (half its threads):
the rest wait on the event loop, holding no thread, so that one identity's slow requests (a
source that never answers, long backups) cannot take every worker thread from the others."""
SHARES_KEY: Final = "identity_shares"
"""Where the app's state keeps each identity's share (a semaphore per account)."""


async def _take_share(request: Request, principal: Principal) -> None:
    """Wait for one of the principal's :data:`IDENTITY_SHARE` places in this process, and
    leave on the request's state how to give it back (the access-log layer calls it once the
    answer is ready: :func:`affidavit.server.access.release_share`)."""
    shares: dict[str, asyncio.Semaphore] = getattr(request.app.state, SHARES_KEY, None) or {}
    if not hasattr(request.app.state, SHARES_KEY):
        setattr(request.app.state, SHARES_KEY, shares)
    key = principal.account_id or principal.name
    share = shares.get(key)
    if share is None:
        share = shares[key] = asyncio.Semaphore(IDENTITY_SHARE)
    await share.acquire()
    setattr(request.state, RELEASE_KEY, share.release)


PUBLIC: Final = Gate(GateKind.PUBLIC)
"""The gate of a route that anyone may call."""


def allow(permission: Permission, *, mfa: bool = False) -> Gate:
    """The gate of a route that needs ``permission`` (and a fresh MFA check with ``mfa``)."""
    return Gate(GateKind.PERMISSION, permission, mfa=mfa)


def allow_self() -> Gate:
    """The gate of a route where any authenticated identity acts on itself."""
    return Gate(GateKind.SELF)


def allow_session() -> Gate:
    """The gate of a route where a logged-in person acts on their own session."""
    return Gate(GateKind.SESSION)
