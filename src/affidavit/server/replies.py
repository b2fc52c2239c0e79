"""What the API answers: JSON bodies (the CLI's ``--json`` shapes), and errors as
``{"error", "hint", "exit_code"}`` with the HTTP status that fits, never a traceback.

| error | status | ``exit_code`` |
| --- | --- | --- |
| ``StepUpRequired`` | 403, with ``"step_up_required": true`` | 2 |
| ``AccessDenied`` (and a failed CSRF check) | 403 | 2 |
| ``NotFound`` | 404 | 2 |
| ``AlreadyExists`` | 409 | 2 |
| ``InputError`` (others) | 400 | 2 |
| a body or query that does not validate | 422 | 2 |
| ``AuthenticationFailed`` | 401 (``WWW-Authenticate: Bearer``) | 3 |
| ``TooManyRequests`` | 429 | 3 |
| ``OperationError`` (others: a source, vault, catalog or key that cannot be used) | 503 | 3 |
| ``SubjectFailed`` (a proof or record that does not verify) | 409 | 1 |
| anything else | 500 (``internal error``; the detail goes to the server log only) | 4 |
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from affidavit.constants import ExitCode
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    ApprovalPending,
    AuthenticationFailed,
    Error,
    InputError,
    NotFound,
    OperationError,
    StepUpRequired,
    SubjectFailed,
    TooManyRequests,
)

log = logging.getLogger("affidavit.server")
JSON_TYPE: Final = "application/json"
_MAX_VALIDATION_ERRORS: Final = 5


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as JSON (datetimes as ISO 8601, as the CLI prints them)."""
    body = json.dumps(data, ensure_ascii=False, default=_default).encode("utf-8")
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def problem(
    message: str,
    *,
    status: int,
    exit_code: int = ExitCode.BAD_INPUT,
    hint: str | None = None,
    **extra: Any,
) -> Response:
    """An error reply."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": message, "hint": hint or None, "exit_code": int(exit_code), **extra}
    return reply(body, status, headers)


def status_of(exc: Error) -> int:
    """The HTTP status of one of affidavit's errors (see the module's table)."""
    for kind, status in (
        (StepUpRequired, 403),
        (AccessDenied, 403),
        (NotFound, 404),
        (AlreadyExists, 409),
        (InputError, 400),
        (AuthenticationFailed, 401),
        (TooManyRequests, 429),
        (OperationError, 503),
        (SubjectFailed, 409),
    ):
        if isinstance(exc, kind):
            return status
    return 500


def error_reply(exc: Error) -> Response:
    """The reply to an error a service raised."""
    status = status_of(exc)
    if status == 500:
        log.error("internal error: %s: %s", type(exc).__name__, exc.message)
        return problem("internal error", status=500, exit_code=ExitCode.INTERNAL)
    extra = {"step_up_required": True} if isinstance(exc, StepUpRequired) else {}
    return problem(
        exc.message, status=status, exit_code=exc.exit_code, hint=exc.hint or None, **extra
    )


async def _on_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Error)
    return error_reply(exc)


async def _on_pending(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApprovalPending)
    return reply(
        {"state": "pending", "message": exc.message, "hint": exc.hint, "request": exc.request},
        202,
    )


async def _on_invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for item in exc.errors()[:_MAX_VALIDATION_ERRORS]:  # never the input itself
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return problem(
        "invalid request: " + "; ".join(parts),
        status=422,
        hint="the API's schema: GET /api/v1/openapi.json",
    )


async def _on_http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such route", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return problem(message, status=exc.status_code, hint="the routes: GET /api/v1/openapi.json")


def install_handlers(app: FastAPI) -> None:
    """Map errors to replies (anything unforeseen is caught by ``hardening.Hardening``)."""
    app.add_exception_handler(Error, _on_error)
    app.add_exception_handler(ApprovalPending, _on_pending)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(HTTPException, _on_http)
