"""The pages' defences that the API does not need: anti-CSRF tokens in forms, the login
form's own token, the form body, and where a login may send the browser next.

- **Forms carry the session's anti-CSRF token** (``csrf_token``, the same token the API wants
  in ``X-Affidavit-CSRF``). :class:`FormTokens` lifts the field of a page's form into that
  header before the app sees the request, so that the route's gate checks it exactly as it
  checks an API request made with the cookie: one mechanism, one check, one answer (403)
  for a form posted without it (the upload form is ``multipart/form-data``: its
  ``csrf_token`` field, before the file, is read by :func:`multipart_field`, and the file is
  not read before the gate has let the caller in). A page on another site can make
  a browser post a form, but it cannot read the token (and the cookie is ``SameSite=Strict``
  besides).
- **The login form** has no session yet: it carries a token derived (as a session's is) from
  a random pre-session value kept in its own cookie, :data:`LOGIN_COOKIE` (HttpOnly, Secure,
  ``SameSite=Strict``, ``__Host-``), so that another site cannot log a browser into an account
  of its choosing (login CSRF). The value is used once: a login, good or bad, replaces it.
- **Session fixation**: a login never keeps a session id that came from the browser: it opens
  a new session, replaces the cookie, and ends the session the browser presented before.
- **Redirects** after a login go to a path of this site only (:func:`local_path`).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from affidavit.server.gates import CSRF_HEADER
from affidavit.server.hardening import (
    FORM_TYPE,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    body_problem,
    is_page,
)
from affidavit.services import identity

LOGIN_COOKIE: Final = "__Host-affidavit-login"
LOGIN_TTL_S: Final = 1800
CSRF_FIELD: Final = "csrf_token"
MULTIPART_TYPE: Final = b"multipart/form-data"
MAX_FIELDS: Final = 32
MULTIPART_HEAD: Final = 64 * 1024
"""How much of a file form :class:`FormTokens` reads, at most, looking for its token."""
_HEADER: Final = CSRF_HEADER.lower().encode()


class FormTokens:
    """Wraps the app (inside the hardening layer, which has read the whole body of a
    URL-encoded form): a page's form POST has its ``csrf_token`` field put in the
    ``X-Affidavit-CSRF`` header (replacing any), and nothing else changes. Of a file form
    (``multipart/form-data``, streamed by the hardening layer) only the head is read here, up
    to its token (at most :data:`MULTIPART_HEAD` bytes); the rest is left to the route, which
    reads it after its gate has let the caller in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not is_page(str(scope.get("path", "")))
        ):
            await self.app(scope, receive, send)
            return
        headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
        content_type = dict(headers).get(b"content-type", b"")
        kind = content_type.split(b";", 1)[0].strip().lower()
        if kind not in (FORM_TYPE, MULTIPART_TYPE):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        token = ""
        read = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                problem = body_problem(scope)  # a streamed upload that ended badly
                if problem is not None:
                    await PlainTextResponse(problem, status_code=400)(scope, receive, send)
                return  # else the client went away (the hardening layer has answered it)
            chunks.append(message.get("body", b""))
            read += len(chunks[-1])
            more = bool(message.get("more_body", False))
            if kind == MULTIPART_TYPE:
                # only the head of a file form is read here (its token comes before the
                # file): the rest streams to the route, after its gate, so that a caller
                # without a session never has a file's bytes held in memory
                token = multipart_field(b"".join(chunks), content_type, CSRF_FIELD, whole=not more)
                if token or read > MULTIPART_HEAD:
                    break
        body = b"".join(chunks)
        if kind == FORM_TYPE:
            token = parse_form(body).get(CSRF_FIELD, "")
        kept = [(k, v) for k, v in headers if k != _HEADER]
        if token:
            kept.append((_HEADER, token.encode("latin-1", "replace")))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        # the same scope, changed in place: the layers outside (the access log) read the
        # route and the identity that the app leaves in it
        scope["headers"] = kept
        await self.app(scope, replay, send)


def parse_form(body: bytes) -> dict[str, str]:
    """A URL-encoded form's fields (the first value of each; at most :data:`MAX_FIELDS`)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


_BOUNDARY: Final = re.compile(rb'boundary="?([0-9A-Za-z\'()+_,./:=? -]{1,70})"?')
_PART_NAME: Final = re.compile(rb'^content-disposition:\s*form-data;\s*name="([^"]*)"\s*$', re.I)


def multipart_field(body: bytes, content_type: bytes, name: str, *, whole: bool = True) -> str:
    """The value of the plain field ``name`` of a ``multipart/form-data`` body (the upload
    form's ``csrf_token``: a short text field before the file); "" when there is none or the
    body is not what the page's form sends (the gate then refuses the request). Only a part
    whose headers are exactly one ``Content-Disposition: form-data; name="..."`` counts: a
    file part never does. ``whole=False``: ``body`` is the head of a body still arriving,
    and a part counts only once the delimiter after it has arrived (never a value cut
    short)."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        return ""
    delimiter = b"--" + found.group(1).rstrip(b" ")
    parts = body.split(delimiter)
    if not whole:
        parts = parts[:-1]  # the last one may be cut short
    for part in parts[1 : MAX_FIELDS + 1]:
        head, sep, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not sep or len(lines) != 1:
            continue
        matched = _PART_NAME.match(lines[0])
        if matched is None or matched.group(1).decode("latin-1") != name:
            continue
        text = value.removesuffix(b"\r\n")
        if len(text) > 200:
            return ""
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            return ""
    return ""


async def form_of(request: Request) -> dict[str, str]:
    """The request's form fields (a dependency); empty for a body that is not a form."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != FORM_TYPE.decode():
        return {}
    return parse_form(await request.body())


def field(form: Mapping[str, str], name: str, *, limit: int = 500) -> str:
    """A form field, stripped and cut to ``limit`` characters ("" when absent)."""
    return form.get(name, "").strip()[:limit]


def new_login_value() -> str:
    """A fresh random pre-session value for :data:`LOGIN_COOKIE` (256 bits from the
    operating system's CSPRNG)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def login_token(value: str) -> str:
    """The login form's token for the pre-session ``value`` (derived like a session's)."""
    return identity.csrf_token(value)


def login_token_matches(request: Request, presented: str) -> bool:
    """Whether the login form's token matches the browser's :data:`LOGIN_COOKIE`."""
    value = request.cookies.get(LOGIN_COOKIE, "")
    return bool(value and presented) and identity.csrf_matches(value, presented)


def set_login_cookie(response: Response, value: str) -> None:
    """Keep the pre-session ``value`` in the browser for the login form."""
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=LOGIN_TTL_S,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def local_path(target: str | None) -> str:
    """``target`` when it is a path of this site (``/backups?source=x``), else ``/``: never
    another host (``//evil``, ``/\\evil``, ``https://...``)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ch in target for ch in "\r\n\\")
        or len(target) > 1000
    ):
        return "/"
    return target
