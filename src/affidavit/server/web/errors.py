"""Errors on a web page are pages: the API's error handlers answer JSON
(:mod:`affidavit.server.replies`); for a page's path these wrappers answer the same status
with an HTML page instead (the same message and hint, never a traceback), and send a browser
without a valid session to the login page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from affidavit.errors import ApprovalPending, AuthenticationFailed, Error
from affidavit.models.identity import Principal
from affidavit.server.gates import SESSION_COOKIE, affidavit_app
from affidavit.server.hardening import is_page
from affidavit.server.replies import status_of
from affidavit.server.web.pages import render
from affidavit.services import identity

Handler = Callable[[Request, Exception], Awaitable[Response]]

_TITLES = {
    400: "Bad request",
    401: "Not logged in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    500: "Internal error",
    503: "Unavailable",
}


def error_page(
    status: int, message: str, hint: str | None = None, *, principal: Principal | None = None
) -> Response:
    """An error as a page: with the navigation of ``principal`` (the browser's session, when
    it has a valid one), else none (the caller may be unknown)."""
    return render(
        "error.html.j2",
        principal=principal,
        status=status,
        title=_TITLES.get(status, "Error"),
        message=message,
        hint=hint,
        code=status,
    )


def _session_principal(request: Request) -> Principal | None:
    """Who the browser's valid session is (None: no valid session, or it cannot be told)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        return identity.authenticate_session(affidavit_app(request), secret)
    except Error:
        return None


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    where = "/login" if request.method != "GET" else f"/login?next={quote(target, safe='')}"
    return RedirectResponse(where, status_code=303)


async def _page_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AuthenticationFailed):
        return _login_redirect(request)
    if isinstance(exc, ApprovalPending):
        return render(
            "pending.html.j2",
            status=202,
            title="Waiting for approval",
            message=exc.message,
            hint=exc.hint,
            request=exc.request,
        )
    if isinstance(exc, Error):
        status = status_of(exc)
        if status == 500:
            return error_page(500, "internal error", "the server's log has the details")
        who = _session_principal(request) if status in (403, 404, 409) else None
        return error_page(status, exc.message, exc.hint or None, principal=who)
    if isinstance(exc, RequestValidationError):
        return error_page(400, "the page's parameters are not valid", "check the address")
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return error_page(404, "there is no such page", "start from the dashboard")
        return error_page(exc.status_code, str(exc.detail))
    return error_page(500, "internal error", "the server's log has the details")


def _wrap(original: Any) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if is_page(request.url.path):
            return await _page_error(request, exc)
        response: Response = await original(request, exc)
        return response

    return handle


def install_page_errors(api: FastAPI) -> None:
    """Wrap the API's handlers (installed first by ``replies.install_handlers``) so that a
    page's error is a page."""
    for kind in (Error, ApprovalPending, RequestValidationError, HTTPException):
        original = api.exception_handlers.get(kind)
        if original is None:  # pragma: no cover - install_handlers installs all four
            raise RuntimeError(f"no API handler for {kind.__name__} to wrap")
        api.add_exception_handler(kind, _wrap(original))
