"""``POST /uploads``: a file streamed to the server for a later command (docs/server.md,
"Uploads"; :mod:`affidavit.services.uploads`).

The body is the file itself (``application/octet-stream``) with its ``Content-Length`` (411
without one, 413 above the ``max_upload_bytes`` setting: both refused by the hardening layer
before a byte is read) and its SHA-256 in ``X-Content-SHA256`` (400 when the bytes that
arrive do not match; nothing is kept). The answer is the upload's id, size, SHA-256 and
expiry (201); ``POST /backups/ingests``, ``POST /audit/requests/{id}/answers`` and
``POST /fingerprints`` then name it in their JSON.

The gate lets any authenticated identity in, and the route itself refuses (403, before the
body is read) one that holds none of the permissions an upload is for: ``backup.ingest``,
``audit.respond``, ``fingerprint.run``. The upload belongs to the caller's account.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from affidavit.errors import AccessDenied, InputError
from affidavit.models.identity import Principal
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow_self
from affidavit.server.hardening import body_problem
from affidavit.server.replies import reply
from affidavit.services import uploads

router = APIRouter(tags=["uploads"])
SHA256_HEADER: Final = "X-Content-SHA256"
UPLOADERS: Final = (Permission.BACKUP_INGEST, Permission.AUDIT_RESPOND, Permission.FINGERPRINT_RUN)
"""The permissions an upload is for: an identity holding none of them may not upload."""
_WRITE_AT: Final = 1 << 20  # bytes gathered before they are written (on a worker thread)


def owner_of(principal: Principal) -> str:
    """Whose an upload is: the caller's account (its id; its name where it has none)."""
    return principal.account_id or principal.name


@router.post("/uploads", status_code=201)
async def upload(caller: Annotated[Caller, Depends(allow_self())], request: Request) -> Response:
    """Stream the body into a new upload of the caller (see the module docstring)."""
    principal = caller.principal
    if not any(principal.holds(p) for p in UPLOADERS):
        raise AccessDenied(
            f"{principal.name} may not upload: an upload is for "
            + ", ".join(p.value for p in UPLOADERS),
            hint="ask an administrator for a role that holds one of them",
        )
    declared = request.headers.get(SHA256_HEADER)
    if declared is None:
        raise InputError(
            f"an upload must declare its SHA-256 in {SHA256_HEADER}",
            hint="the CLI sends it; a client of the API computes it before it sends",
        )
    size = int(request.headers["content-length"])  # present and a number: the hardening layer
    home = caller.app.settings.home
    await run_in_threadpool(uploads.sweep, home)
    receiver = await run_in_threadpool(
        lambda: uploads.Receiver(home, owner_of(principal), size=size, sha256=declared)
    )
    try:
        gathered = bytearray()
        async for chunk in request.stream():
            gathered += chunk
            if len(gathered) >= _WRITE_AT:
                await run_in_threadpool(receiver.write, bytes(gathered))
                gathered.clear()
        await run_in_threadpool(receiver.write, bytes(gathered))
        done = await run_in_threadpool(receiver.finish)
    except ClientDisconnect:
        receiver.abort()
        raise InputError(
            body_problem(request.scope) or "the upload was cut short (the client went away)",
            hint="send the whole file again; nothing was kept",
        ) from None
    except BaseException:
        receiver.abort()
        raise
    return reply(done.to_json(), 201)
