"""Findings and exceptions over the API (``affidavit finding ...``, ``affidavit exception
...``): ``GET /findings`` and ``GET /findings/{finding_id}`` (``policy.read``),
``POST /findings/{finding_id}/ack`` and ``/resolve`` (``finding.manage``), ``GET /exceptions``
(``policy.read``), ``POST /exceptions`` (``exception.request``) and
``POST /exceptions/{exception_id}/revoke`` (``exception.revoke``). Approving an exception is
the gated ``POST /exceptions/{exception_id}/approve`` (``routes/custody.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.governance import FindingStatus
from affidavit.models.period import parse_moment
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import findings

router = APIRouter(tags=["findings"])
Reader = Annotated[Caller, Depends(allow(Permission.POLICY_READ))]
Manager = Annotated[Caller, Depends(allow(Permission.FINDING_MANAGE))]


class Note(BaseModel):
    """What was done, and why (the service checks it is one line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str = Field(max_length=4000)


class ExceptionAsked(BaseModel):
    """What ``exception add`` takes; ``expires``: ``YYYY-MM-DD`` (through that day, UTC) or
    an RFC 3339 time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    control: str = Field(min_length=1, max_length=200)
    subject: str = Field(max_length=1000)
    reason: str = Field(max_length=4000)
    expires: str = Field(min_length=1, max_length=64)


class Revocation(BaseModel):
    """Why an exception ends early."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(max_length=4000)


@router.get("/findings")
def list_findings(
    caller: Reader, status: Annotated[list[FindingStatus] | None, Query()] = None
) -> Response:
    """Findings of the given statuses, or all (``finding list --json``)."""
    with caller.acting() as app:
        found = findings.list_findings(app, status=status)
    return reply({"findings": [f.to_json() for f in found]})


@router.get("/findings/{finding_id}")
def show_finding(caller: Reader, finding_id: str) -> Response:
    """One finding with its remediation trail (``finding show --json``)."""
    with caller.acting() as app:
        found = findings.get_finding(app, finding_id)
    return reply(found.to_json())


@router.post("/findings/{finding_id}/ack")
def acknowledge(caller: Manager, finding_id: str, body: Note) -> Response:
    """Acknowledge an open finding (``finding ack --json``)."""
    with caller.acting() as app:
        found = findings.acknowledge_finding(app, finding_id, note=body.note)
    return reply(found.to_json())


@router.post("/findings/{finding_id}/resolve")
def resolve(caller: Manager, finding_id: str, body: Note) -> Response:
    """Resolve a finding with its corrective action (``finding resolve --json``)."""
    with caller.acting() as app:
        found = findings.resolve_finding(app, finding_id, note=body.note)
    return reply(found.to_json())


@router.get("/exceptions")
def list_exceptions(caller: Reader) -> Response:
    """Every exception (``exception list --json``)."""
    with caller.acting() as app:
        found = findings.list_exceptions(app)
    return reply({"exceptions": [e.to_json() for e in found]})


@router.post("/exceptions", status_code=201)
def request_exception(
    caller: Annotated[Caller, Depends(allow(Permission.EXCEPTION_REQUEST))],
    body: ExceptionAsked,
) -> Response:
    """Request an exception; another person approves it (``exception add --json``)."""
    until = parse_moment(body.expires, flag="--expires", end_of_day=True)
    with caller.acting() as app:
        asked = findings.request_exception(
            app, body.control, body.subject, reason=body.reason, expires=until
        )
    return reply(asked.to_json(), 201)


@router.post("/exceptions/{exception_id}/revoke")
def revoke_exception(
    caller: Annotated[Caller, Depends(allow(Permission.EXCEPTION_REVOKE))],
    exception_id: str,
    body: Revocation,
) -> Response:
    """Withdraw an exception before it expires (``exception revoke --json``)."""
    with caller.acting() as app:
        revoked = findings.revoke_exception(app, exception_id, reason=body.reason)
    return reply(revoked.to_json())
