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

Streamed bodies (:func:`streamed_route`): the upload route (``POST /api/v1/uploads``,
``application/octet-stream``, at most ``max_upload`` bytes: the ``max_upload_bytes`` setting)
and the web pages' file forms (``POST /audit/requests/ID/upload``, ``multipart/form-data``, at
most :data:`affidavit.services.audit_files.MAX_FILE_BYTES` + 64 KiB) are not buffered here:
they must announce their ``Content-Length`` (411 without one, 413 above the cap, both before a
byte of the body is read; no ``Transfer-Encoding``), and the route reads them through a
``receive`` that never hands over more bytes than announced, and turns a body that stops
short, stalls for ``body_timeout`` seconds between two pieces or runs past its length into a
disconnect (the route keeps nothing of it), with the reason in :func:`body_problem`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
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
UPLOAD_PATH: Final = "/api/v1/uploads"
OCTET_TYPE: Final = b"application/octet-stream"
MULTIPART_TYPE: Final = b"multipart/form-data"
DEFAULT_MAX_UPLOAD: Final = 8 * 1024**3
"""The cap of an upload when none is given (the ``max_upload_bytes`` setting's default)."""
PAGE_UPLOAD: Final = re.compile(r"/audit/requests/[^/]+/upload")
"""The web pages' file forms (an answer's file to an evidence request)."""
PAGE_UPLOAD_SLACK: Final = 64 * 1024
"""What a multipart form may hold beside its file (boundaries, headers, other fields)."""
BODY_PROBLEM: Final = "affidavit.body_problem"
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
        max_upload: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
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
            streamed = streamed_route(scope, self.max_upload)
            if streamed is not None:
                replay = self._stream_body(scope, receive, *streamed)
            else:
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

    def _stream_body(self, scope: Scope, receive: Receive, cap: int, kind: bytes) -> Receive:
        """A ``receive`` for a streamed body (see the module docstring); raise
        :class:`_Refused` before a byte is read for a body without a length (411), longer
        than ``cap`` (413) or not of ``kind`` (415)."""
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if b"transfer-encoding" in headers:
            raise _Refused(411, "an upload is sent with a Content-Length, not in chunks",
                           "send Content-Length: SIZE and the body")  # fmt: skip
        declared = headers.get(b"content-length")
        if declared is None:
            raise _Refused(411, "an upload must announce its Content-Length",
                           "send Content-Length: SIZE and the body")  # fmt: skip
        if not declared.isdigit() or len(declared) > 20:
            raise _Refused(400, "Content-Length is not a number", "send a valid length")
        length = int(declared)
        if length > cap:
            raise _Refused(413, f"the upload exceeds {cap} bytes",
                           "a server's cap is its max_upload_bytes setting")  # fmt: skip
        given = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if given != kind:
            raise _Refused(415, f"this upload's body must be {kind.decode()}",
                           f"send Content-Type: {kind.decode()}")  # fmt: skip
        state = scope.setdefault("state", {})
        remaining = length
        ended = False
        timeout = self.body_timeout

        def refuse(message: str) -> Message:
            nonlocal ended
            ended = True
            state.setdefault(BODY_PROBLEM, message)
            return {"type": "http.disconnect"}

        async def bounded() -> Message:
            nonlocal remaining, ended
            if ended:
                return await receive()  # the app waits for the client to go away
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                return refuse(f"the upload stalled: no byte for {timeout:g} seconds")
            if message["type"] != "http.request":
                return refuse("the upload was cut short (the client went away)")
            remaining -= len(message.get("body", b""))
            if remaining < 0:
                return refuse("the upload holds more bytes than its Content-Length announced")
            if not message.get("more_body", False):
                ended = True
                if remaining > 0:
                    return refuse("the upload was cut short of its Content-Length")
            return message

        return bounded

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


def streamed_route(scope: Scope, max_upload: int) -> tuple[int, bytes] | None:
    """The cap and content type of a request whose body is streamed to its route (the
    module docstring), or None for one whose body is read here whole."""
    if scope.get("method") != "POST":
        return None
    path = str(scope.get("path", ""))
    if path == UPLOAD_PATH:
        return max_upload, OCTET_TYPE
    if PAGE_UPLOAD.fullmatch(path):
        from affidavit.services.audit_files import MAX_FILE_BYTES

        return MAX_FILE_BYTES + PAGE_UPLOAD_SLACK, MULTIPART_TYPE
    return None


def body_problem(scope: Scope) -> str | None:
    """Why a streamed body ended as a disconnect (stalled, cut short, longer than
    announced), when that was the reason."""
    problem = (scope.get("state") or {}).get(BODY_PROBLEM)
    return str(problem) if problem is not None else None


def is_page(path: str) -> bool:
    """Whether ``path`` is a web page's (everything outside ``/api/``, affidavit.server.web):
    it gets :data:`PAGE_CSP` and may carry a form."""
    return not path.startswith(API_PATHS)
