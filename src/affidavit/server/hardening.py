"""The outermost layer of every request (a plain ASGI middleware): security headers on every
response, a limit on the size of request bodies, JSON-only bodies, and a last catch that turns
anything unforeseen into a JSON 500 without a traceback.

Headers set on every response (replacing any the app set):

- ``Strict-Transport-Security: max-age=31536000; includeSubDomains`` when served over TLS;
- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``, ``Cross-Origin-Opener-Policy: same-origin``,
  ``Cross-Origin-Resource-Policy: same-origin``;
- ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'; base-uri 'none';
  form-action 'none'`` (the API serves no page, script or style); the web pages (every path
  outside ``/api/``) get :data:`PAGE_CSP` instead: their own stylesheet and images, forms to
  this origin, no script and no inline style;
- ``Cache-Control: no-store`` (answers name people, backups and secrets: never cached).

Bodies: a request with a body must say ``Content-Type: application/json`` (415 otherwise:
an HTML form on another site cannot post one without a CORS preflight; a web page's form
may be ``application/x-www-form-urlencoded``, and carries the session's anti-CSRF token) and
may be at most
``max_body`` bytes (413, whether announced by ``Content-Length`` or streamed). The whole body
must arrive within ``body_timeout`` seconds (408: a client that stops mid-body holds nothing
longer), and a body the client abandoned midway is never handed to a route as if complete
(400).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from affidavit.constants import ExitCode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("affidavit.server")

DEFAULT_MAX_BODY: Final = 64 * 1024
DEFAULT_BODY_TIMEOUT: Final = 30.0
CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PAGE_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""The web pages' policy (every path outside ``/api/``): their own stylesheet and images
only, forms posted to this origin only; no script at all, inline or not, and no inline
style."""
API_PATHS: Final = "/api/"
FORM_TYPE: Final = b"application/x-www-form-urlencoded"
HSTS: Final = "max-age=31536000; includeSubDomains"
_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CSP.encode()),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


class _Refused(Exception):
    def __init__(self, status: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


class Hardening:
    """Wraps the app: see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tls: bool,
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.headers = _HEADERS + (((b"strict-transport-security", HSTS.encode()),) if tls else ())
        self.page_headers = tuple(
            (name, PAGE_CSP.encode() if name == b"content-security-policy" else value)
            for name, value in self.headers
        )
        self._names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        page = is_page(str(scope.get("path", "")))
        headers = self.page_headers if page else self.headers

        async def send_hardened(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                kept = [(k, v) for k, v in message.get("headers", []) if k not in self._names]
                message = {**message, "headers": kept + list(headers)}
            await send(message)

        try:
            replay = await self._read_body(scope, receive, page=page)
            await self.app(scope, replay, send_hardened)
        except _Refused as refused:
            await _send_problem(send_hardened, refused.status, refused.message, refused.hint)
        except Exception:
            log.exception("internal error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_problem(
                    send_hardened,
                    500,
                    "internal error",
                    "this is a bug in affidavit; the server's log has the details",
                    ExitCode.INTERNAL,
                )

    async def _read_body(self, scope: Scope, receive: Receive, *, page: bool) -> Receive:
        """Read the whole body (at most ``max_body`` bytes) and return a ``receive`` that
        hands it to the app; raise :class:`_Refused` for a body too large or not JSON (a web
        page's form may also be ``application/x-www-form-urlencoded``)."""
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise _Refused(
                    400, "Content-Length is not a number", "send a valid length"
                ) from None
            if length > self.max_body:
                raise _Refused(413, *self._too_large())
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            async with asyncio.timeout(self.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away midway
                        raise _Refused(
                            400,
                            "the request body was cut short (the client went away)",
                            "send the whole body",
                        )
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise _Refused(413, *self._too_large())
                    chunks.append(chunk)
                    more = bool(message.get("more_body", False))
        except TimeoutError:
            raise _Refused(
                408,
                f"the request body did not arrive within {self.body_timeout:g} seconds",
                "send the whole body at once",
            ) from None
        body = b"".join(chunks)
        if body:
            kind = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if kind != b"application/json" and not (page and kind == FORM_TYPE):
                raise _Refused(
                    415, "a request body must be JSON", "send Content-Type: application/json"
                )
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _too_large(self) -> tuple[str, str]:
        return (
            f"the request body exceeds {self.max_body} bytes",
            "requests carry small JSON documents only",
        )


async def _send_problem(
    send: Send, status: int, message: str, hint: str, exit_code: int = ExitCode.BAD_INPUT
) -> None:
    body = json.dumps({"error": message, "hint": hint, "exit_code": int(exit_code)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def is_page(path: str) -> bool:
    """Whether ``path`` is a web page's (everything outside ``/api/``, affidavit.server.web):
    it gets :data:`PAGE_CSP` and may carry a form."""
    return not path.startswith(API_PATHS)
