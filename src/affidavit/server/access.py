"""The access log's layer: every request, allowed or not, becomes one entry of the access log
(:mod:`affidavit.services.access_log`) before its answer leaves the server.

A plain ASGI middleware outside everything else, so that requests refused by the hardening
layer (413, 415) and by a gate (401, 403) are logged as well as the ones that ran. The answer
is held back (API answers are small JSON) until the entry is recorded: when it cannot be
recorded (the catalog is unreachable, or the signer refuses because the access log was
altered behind its back), the client gets a 503 instead of the answer, for serving requests
that cannot be logged is what an attacker would want (NIST AU-5).

Who asked: the gate puts the authenticated identity on the request's state
(:data:`IDENTITY_KEY`); the login route puts the name that was tried (a failed login is logged
under it). The route is the matched route's template (``/api/v1/backups/{backup_id}``), never
the raw path, and the subject comes from its path parameters (``backup:bk-...``): every read
of a backup, of a ledger proof or of anything else through the API is an entry naming what
was read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from starlette.concurrency import run_in_threadpool

from affidavit.constants import ExitCode
from affidavit.errors import Error
from affidavit.models.access import AccessEntry, Outcome
from affidavit.server.hardening import ASGIApp, Message, Receive, Scope, Send
from affidavit.services import access_log
from affidavit.services.context import App

log = logging.getLogger("affidavit.server")

IDENTITY_KEY: Final = "access_identity"
"""The request-state key under which a gate or the login route leaves ``(identity, method)``."""
LOGIN_ROUTES: Final = frozenset(
    {
        "/api/v1/auth/login",
        "/api/v1/auth/step-up",
        "/api/v1/auth/oidc/callback",
        "/api/v1/auth/oidc/cli/redeem",
        "/login",  # the web pages' login form (affidavit.server.web)
    }
)
PARSER_REFUSAL_ROUTE: Final = "(refused by the HTTP parser)"
"""The route of an access-log entry for a request the HTTP parser refused (400, 431; 408: a
head that did not arrive in time)."""
SUBJECT_KINDS: Final = {"/api/v1/ledger/proof/{seq}": "ledger-proof"}
"""Routes whose first path parameter names a subject of another kind than the parameter's
name says (a proof's ``seq`` is ``ledger-proof:SEQ``, as :func:`access_log.record_read`
names a read of a proof)."""


RELEASE_KEY: Final = "release_share"
"""The request-state key under which a gate leaves the callable that gives back the
identity's share it took (``server/gates.py``); :func:`release_share` calls it."""


def release_share(scope: Scope) -> None:
    """Give back the identity's share the request's gate took, if it took one (once; on the
    event loop, where the gate took it)."""
    state = scope.get("state")
    release = state.pop(RELEASE_KEY, None) if isinstance(state, dict) else None
    if release is not None:
        release()


def note_identity(state: Any, identity: str, method: str) -> None:
    """Say who is asking (on ``request.state``), for the request's access-log entry."""
    setattr(state, IDENTITY_KEY, (identity, method))


def record_refusal(
    server: object, *, client_ip: str | None, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    """Log a request that the HTTP parser refused before it became a request for the app
    (a head over the size bound: 431; bytes that are not HTTP: 400; a head not complete in
    time: 408): one entry with the route
    ``(refused by the HTTP parser)``. Called on the event loop by the connection's protocol
    (:mod:`affidavit.server.http_limits`) once the refusal is written; the entry is recorded
    on a worker thread, and a failure to record it is in the server's log (the connection is
    already closed: nothing was served)."""
    app = _affidavit_app({"app": server})
    if app is None:  # the lifespan has not opened the home yet (or has closed it)
        return
    agent = next((v for k, v in headers if k.lower() == b"user-agent"), b"")
    entry = access_log.request_entry(
        started=datetime.now(UTC),
        identity=None,
        auth_method=None,
        client_ip=client_ip,
        user_agent=agent.decode("latin-1"),
        method="",
        route=PARSER_REFUSAL_ROUTE,
        outcome=Outcome.DENIED,
        status=status,
    )

    def recorded(done: asyncio.Future[Any]) -> None:
        failure = done.exception()
        if failure is not None:
            why = failure.message if isinstance(failure, Error) else type(failure).__name__
            log.error("the access log cannot record a refused request: %s", why)

    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, access_log.record, app, [entry]).add_done_callback(recorded)


class AccessLogging:
    """Wraps the app: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, clock = datetime.now(UTC), time.perf_counter()
        held: list[Message] = []
        status = 500

        async def hold(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            held.append(message)

        try:
            await self.app(scope, receive, hold)
        finally:
            release_share(scope)  # the answer is ready: the identity's next request may run
            app = _affidavit_app(scope)
            if app is not None:
                entry = _entry(scope, started, clock, status)
                try:
                    await run_in_threadpool(access_log.record, app, [entry])
                except Exception as exc:
                    why = exc.message if isinstance(exc, Error) else type(exc).__name__
                    log.error("the access log cannot record %s: %s", entry.route, why)
                    held = _unavailable()
        for message in held:
            await send(message)


def _affidavit_app(scope: Scope) -> App | None:
    server = scope.get("app")
    state = getattr(server, "state", None)
    app = getattr(state, "affidavit", None)
    return app if isinstance(app, App) else None


def _entry(scope: Scope, started: datetime, clock: float, status: int) -> AccessEntry:
    route = scope.get("route")
    templates = getattr(getattr(scope.get("app"), "state", None), "route_templates", {})
    template = templates.get(id(route)) if route is not None else None
    state: Mapping[str, Any] = scope.get("state") or {}
    identity, method = state.get(IDENTITY_KEY) or (None, None)
    headers = {k.lower(): v for k, v in scope.get("headers", [])}
    client = scope.get("client")
    params = scope.get("path_params") or {}
    return access_log.request_entry(
        started=started,
        identity=identity,
        auth_method=method,
        client_ip=client[0] if client else None,
        user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
        method=str(scope.get("method", "")),
        route=str(template) if template else "(no route)",
        subject=_subject(template, params),
        outcome=access_log.outcome_for_status(status, login=template in LOGIN_ROUTES),
        status=status,
        latency_us=int((time.perf_counter() - clock) * 1e6),
    )


def _subject(template: str | None, params: Mapping[str, Any]) -> str | None:
    kind = SUBJECT_KINDS.get(template or "")
    if kind is not None and params:
        return f"{kind}:{next(iter(params.values()))}"
    return access_log.subject_from_params(params)


def _unavailable() -> list[Message]:
    body = json.dumps(
        {
            "error": "the access log cannot record this request, so it is not answered",
            "hint": "check the server's log and `affidavit access-log verify` on the server host",
            "exit_code": int(ExitCode.CANNOT_RUN),
        }
    ).encode()
    return [
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]
