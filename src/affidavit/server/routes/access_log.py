"""``GET /access-log`` and ``GET /access-log/verify`` (``access_log.read``): the access
log's entries and its verification with the home's key (``affidavit access-log show|verify``).
Exporting and expiring it write files and change state on the server's host and stay with its
CLI."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import access_log

router = APIRouter(tags=["access log"])
Reader = Annotated[Caller, Depends(allow(Permission.ACCESS_LOG_READ))]


@router.get("/access-log")
def show(
    caller: Reader,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    identity: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """Entries in sequence order, the newest ``limit`` that match (``access-log show
    --json``)."""
    with caller.acting() as app:
        found = access_log.show(app, since=since, until=until, identity=identity, limit=limit)
    return reply({"entries": [item.to_json() for item in found]})


@router.get("/access-log/verify")
def verify(caller: Reader) -> Response:
    """Recompute every leaf and root and check every checkpoint with the home's key
    (``access-log verify --json``; a log that does not verify is a result, ``"ok": false``)."""
    with caller.acting() as app:
        report = access_log.verify(app)
    return reply(report.to_json())
