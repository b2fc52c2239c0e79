"""Multi-party approval over the API: ``GET /requests`` and ``GET /requests/{id}``
(``request.read``), ``POST /requests/{id}/approve`` and ``/veto`` (``request.approve`` with a
fresh MFA check; the rule's role, a person, never the requester), ``POST /requests/{id}/cancel``
and ``/execute`` (the requester), ``GET /approval-rules`` (``request.read``) and
``POST /approval-rules`` (``approval.rules``, itself approved by another administrator).

A route of a gated operation (``DELETE /backups/{id}``, a hold release, a role grant...) that
needs approval answers **202** with ``{"state": "pending", "request": {...}}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.approval import ApprovalRule, GatedOperation, RequestState
from affidavit.models.permissions import Permission, Role
from affidavit.server.gates import Caller, allow, allow_self
from affidavit.server.replies import reply
from affidavit.services import gated, requests
from affidavit.services.exports import preview as export_preview

router = APIRouter(tags=["approvals"])
Reader = Annotated[Caller, Depends(allow(Permission.REQUEST_READ))]
Approver = Annotated[Caller, Depends(allow(Permission.REQUEST_APPROVE, mfa=True))]
Requester = Annotated[Caller, Depends(allow_self())]


class Judgement(BaseModel):
    """An approval's note, or a veto's reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str = Field(default="", max_length=500)


class Veto(BaseModel):
    """Why a request is vetoed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=500)


class Cancel(BaseModel):
    """Why a request is withdrawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(default="", max_length=500)


class RuleChange(BaseModel):
    """A new rule for one gated operation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation: GatedOperation
    approvers: int = Field(ge=0, le=5)
    role: Role
    approval_window_s: int = Field(ge=300, le=30 * 86400)
    execution_window_s: int = Field(ge=300, le=30 * 86400)
    reason: str = Field(default="", max_length=500)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/requests")
def list_requests(caller: Reader, state: RequestState | None = None) -> Response:
    """The requests, newest first (``request list --json``)."""
    with caller.acting() as app:
        found = requests.list_requests(app, caller.principal, state=state)
    now = _now()
    return reply({"requests": [r.to_json(now) for r in found]})


@router.get("/requests/{request_id}")
def show_request(caller: Requester, request_id: str) -> Response:
    """One request (``request show --json``): ``request.read``, or its requester."""
    with caller.acting() as app:
        found = requests.get_request(app, caller.principal, request_id)
        data = export_preview.request_view(app, caller.principal, found, _now())
    return reply(data)


@router.post("/requests/{request_id}/approve")
def approve(caller: Approver, request_id: str, body: Judgement) -> Response:
    """Approve a request (``request approve --json``)."""
    with caller.acting() as app:
        judged = requests.approve(app, caller.principal, request_id, note=body.note)
    return reply(judged.to_json(_now()))


@router.post("/requests/{request_id}/veto")
def veto(caller: Approver, request_id: str, body: Veto) -> Response:
    """Veto a request (``request veto --json``)."""
    with caller.acting() as app:
        judged = requests.veto(app, caller.principal, request_id, reason=body.reason)
    return reply(judged.to_json(_now()))


@router.post("/requests/{request_id}/cancel")
def cancel(caller: Requester, request_id: str, body: Cancel) -> Response:
    """Withdraw one's own request (``request cancel --json``)."""
    with caller.acting() as app:
        done = requests.cancel(app, caller.principal, request_id, reason=body.reason)
    return reply(done.to_json(_now()))


@router.post("/requests/{request_id}/execute")
def execute(caller: Requester, request_id: str) -> Response:
    """Execute one's own approved request (``request execute --json``)."""
    with caller.acting() as app:
        done = gated.execute(app, caller.principal, request_id)
    return reply({"request": done.request.to_json(_now()), "result": done.result})


@router.get("/approval-rules")
def list_rules(caller: Reader) -> Response:
    """The rule in force of each gated operation (``request rules --json``)."""
    with caller.acting() as app:
        found = requests.list_rules(app, caller.principal)
    return reply({"rules": [r.to_json() for r in found]})


@router.post("/approval-rules")
def change_rule(
    caller: Annotated[Caller, Depends(allow(Permission.APPROVAL_RULES, mfa=True))],
    body: RuleChange,
) -> Response:
    """Change one operation's rule: 202 with the request another administrator approves."""
    rule = ApprovalRule(
        operation=body.operation,
        approvers=body.approvers,
        role=body.role,
        approval_window=timedelta(seconds=body.approval_window_s),
        execution_window=timedelta(seconds=body.execution_window_s),
    )
    with caller.acting() as app:
        changed = requests.rule_change(app, caller.principal, rule, reason=body.reason)
    return reply(changed.to_json())
