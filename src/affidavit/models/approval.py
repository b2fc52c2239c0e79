"""Multi-party approval: the operations that need a second person, the rule each one follows,
and the request that waits for approval.

A destructive or disclosing operation (:class:`GatedOperation`) asked for by an authenticated
identity does not run at once: it becomes an :class:`ApprovalRequest` that other people
approve or veto under the operation's :class:`ApprovalRule` (how many approvers, holding which
role, within how long; then how long the requester has to execute it). Expiry rejects; it
never approves.

A request is nothing but its ledger events (``request.created``, ``request.approved``,
``request.vetoed``, ``request.cancelled``, ``request.expired``, ``request.executed``):
:func:`fold` rebuilds it from them. There is no catalog row that someone who can write the
database could edit into an approval; forging an event breaks the ledger's signed
checkpoints. The modelling follows Veeam's Four-Eyes authorization (pending requests with an
expiry), Rubrik's Quorum authorization (a number of approvers of a role) and NetApp's
multi-admin verification (the requester executes an approved request within an execution
window; a veto ends it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from affidavit.errors import InputError
from affidavit.models.ledger import Event
from affidavit.models.permissions import ROLES, Permission, Role


class GatedOperation(StrEnum):
    """An operation that needs the approval of other people (when its rule asks for any)."""

    BACKUP_DELETE = "backup.delete"
    HOLD_RELEASE = "hold.release"
    KEYS_ROTATE = "keys.rotate"
    KEYS_EXPORT_IDENTITY = "keys.export_identity"
    SOURCE_REMOVE = "source.remove"
    ROLE_GRANT = "role.grant"
    ROLE_REVOKE = "role.revoke"
    ACCOUNT_DISABLE = "account.disable"
    POLICY_APPROVE = "policy.approve"
    EXCEPTION_APPROVE = "exception.approve"
    RULE_CHANGE = "approval.rule_change"
    EXPORT_RUN = "export.run"


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    """What asking for one gated operation takes: the permission the requester must hold (and
    still hold when executing it), and whether both steps need a fresh MFA check."""

    permission: Permission
    mfa: bool


GATES: Final[Mapping[GatedOperation, Gate]] = MappingProxyType(
    {
        GatedOperation.BACKUP_DELETE: Gate(permission=Permission.BACKUP_DELETE, mfa=False),
        GatedOperation.HOLD_RELEASE: Gate(permission=Permission.HOLD_RELEASE, mfa=False),
        GatedOperation.KEYS_ROTATE: Gate(permission=Permission.KEYS_ROTATE, mfa=True),
        GatedOperation.KEYS_EXPORT_IDENTITY: Gate(
            permission=Permission.KEYS_EXPORT_IDENTITY, mfa=True
        ),
        GatedOperation.SOURCE_REMOVE: Gate(permission=Permission.SOURCE_MANAGE, mfa=False),
        GatedOperation.ROLE_GRANT: Gate(permission=Permission.ROLE_GRANT, mfa=True),
        GatedOperation.ROLE_REVOKE: Gate(permission=Permission.ROLE_GRANT, mfa=True),
        GatedOperation.ACCOUNT_DISABLE: Gate(permission=Permission.ACCOUNT_MANAGE, mfa=True),
        GatedOperation.POLICY_APPROVE: Gate(permission=Permission.POLICY_APPROVE, mfa=True),
        GatedOperation.EXCEPTION_APPROVE: Gate(permission=Permission.EXCEPTION_APPROVE, mfa=True),
        GatedOperation.RULE_CHANGE: Gate(permission=Permission.APPROVAL_RULES, mfa=True),
        GatedOperation.EXPORT_RUN: Gate(permission=Permission.EXPORT_RUN, mfa=True),
    }
)
"""The permission each gated operation needs, and whether it needs a fresh MFA check."""

MAX_APPROVERS: Final = 5
MAX_WINDOW: Final = timedelta(days=30)
MIN_WINDOW: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRule:
    """How one gated operation is approved: ``approvers`` other people (0: no approval),
    each holding ``role``, within ``approval_window`` of the request; the requester then
    executes it within ``execution_window`` of the approval that completed it."""

    operation: GatedOperation
    approvers: int
    role: Role
    approval_window: timedelta
    execution_window: timedelta

    def __post_init__(self) -> None:
        if not 0 <= self.approvers <= MAX_APPROVERS:
            raise InputError(
                f"an approval rule asks for 0 to {MAX_APPROVERS} approvers, not {self.approvers}",
                hint="0 turns the approval off (that change needs approval itself)",
            )
        if self.operation is GatedOperation.RULE_CHANGE and self.approvers < 1:
            raise InputError(
                "changes to the approval rules always need at least one approver",
                hint="otherwise one person could turn every approval off alone",
            )
        if not (ROLE_APPROVES[self.role]):
            raise InputError(
                f"the role {self.role.value} approves nothing",
                hint="approver roles: "
                + ", ".join(r.value for r in ROLE_APPROVES if ROLE_APPROVES[r]),
            )
        for what, window in (
            ("approval", self.approval_window),
            ("execution", self.execution_window),
        ):
            if not MIN_WINDOW <= window <= MAX_WINDOW:
                raise InputError(
                    f"the {what} window must lie between 5 minutes and 30 days",
                    hint="give it in hours, e.g. --approval-hours 24",
                )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the ``approval.rule_changed`` event's details)."""
        return {
            "operation": self.operation.value,
            "approvers": self.approvers,
            "role": self.role.value,
            "approval_window_s": int(self.approval_window.total_seconds()),
            "execution_window_s": int(self.execution_window.total_seconds()),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovalRule:
        """The rule ``data`` describes; raises :class:`InputError` (or ValueError, KeyError,
        TypeError for a shape that is not a rule at all)."""
        return cls(
            operation=GatedOperation(str(data["operation"])),
            approvers=_int(data["approvers"]),
            role=Role(str(data["role"])),
            approval_window=timedelta(seconds=_int(data["approval_window_s"])),
            execution_window=timedelta(seconds=_int(data["execution_window_s"])),
        )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


ROLE_APPROVES: Final[Mapping[Role, bool]] = MappingProxyType(
    {role: Permission.REQUEST_APPROVE in ROLES[role] for role in Role}
)
"""Which roles may be named as a rule's approver role (those that hold
``request.approve``)."""

_DAY: Final = timedelta(hours=24)


def _rule(operation: GatedOperation, role: Role) -> ApprovalRule:
    return ApprovalRule(
        operation=operation,
        approvers=1,
        role=role,
        approval_window=_DAY,
        execution_window=_DAY,
    )


DEFAULT_RULES: Final[Mapping[GatedOperation, ApprovalRule]] = MappingProxyType(
    {
        GatedOperation.BACKUP_DELETE: _rule(GatedOperation.BACKUP_DELETE, Role.SECURITY_OFFICER),
        GatedOperation.HOLD_RELEASE: _rule(GatedOperation.HOLD_RELEASE, Role.SECURITY_OFFICER),
        GatedOperation.KEYS_ROTATE: _rule(GatedOperation.KEYS_ROTATE, Role.SECURITY_OFFICER),
        GatedOperation.KEYS_EXPORT_IDENTITY: _rule(
            GatedOperation.KEYS_EXPORT_IDENTITY, Role.SECURITY_OFFICER
        ),
        GatedOperation.SOURCE_REMOVE: _rule(GatedOperation.SOURCE_REMOVE, Role.ADMIN),
        GatedOperation.ROLE_GRANT: _rule(GatedOperation.ROLE_GRANT, Role.ADMIN),
        GatedOperation.ROLE_REVOKE: _rule(GatedOperation.ROLE_REVOKE, Role.ADMIN),
        GatedOperation.ACCOUNT_DISABLE: _rule(GatedOperation.ACCOUNT_DISABLE, Role.ADMIN),
        GatedOperation.POLICY_APPROVE: _rule(GatedOperation.POLICY_APPROVE, Role.APPROVER),
        GatedOperation.EXCEPTION_APPROVE: _rule(GatedOperation.EXCEPTION_APPROVE, Role.APPROVER),
        GatedOperation.RULE_CHANGE: _rule(GatedOperation.RULE_CHANGE, Role.ADMIN),
        GatedOperation.EXPORT_RUN: _rule(GatedOperation.EXPORT_RUN, Role.APPROVER),
    }
)
"""The rules in force until an approved ``approval.rule_changed`` event replaces one: every
gated operation needs one other person of the role that fits it, within a day, and is
executed within a day of its approval."""


class RequestState(StrEnum):
    """Where a request stands."""

    PENDING = "pending"  # waiting for approvals
    APPROVED = "approved"  # enough approvals: the requester may execute it
    VETOED = "vetoed"  # an approver said no: final
    EXPIRED = "expired"  # not approved, or not executed, in time: final
    EXECUTED = "executed"  # done: final
    CANCELLED = "cancelled"  # withdrawn by the requester: final


FINAL_STATES: Final = frozenset(
    {RequestState.VETOED, RequestState.EXPIRED, RequestState.EXECUTED, RequestState.CANCELLED}
)
REQUEST_ACTIONS: Final = (
    "request.created",
    "request.approved",
    "request.vetoed",
    "request.cancelled",
    "request.expired",
    "request.executed",
)
RULE_CHANGED: Final = "approval.rule_changed"
"""The event of an executed rule change (its details: the new rule, and the request that
changed it). :func:`fold` reads it too: it supersedes the requests its operation had open."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """One approval (or the veto) of a request: who, when, with which note; ``seq`` is its
    ledger event."""

    name: str
    account_id: str
    at: datetime
    seq: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "name": self.name,
            "account_id": self.account_id,
            "at": self.at.isoformat(),
            "seq": self.seq,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequest:
    """A gated operation asked for by one identity, as its ledger events tell it."""

    id: str
    operation: GatedOperation
    target: str  # what it acts on, e.g. ``backup:bk-...`` or ``account:alice``
    params: Mapping[str, Any]  # the operation's parameters (never a secret)
    params_sha256: str  # of their RFC 8785 form, as request.created recorded it
    reason: str
    requested_by: str
    requester_id: str
    requester_oidc: tuple[str, str] | None  # (issuer, subject) of the requester's account
    created_at: datetime
    seq: int  # request.created
    rule: ApprovalRule  # the rule in force when it was created
    excluded: frozenset[str] = frozenset()  # accounts that may not approve it (by name)
    eligible: frozenset[str] = frozenset()  # who could approve it when it was asked for
    asked_approvers: int | None = None  # the rule's count, when fewer could approve
    approvals: tuple[Approval, ...] = ()
    veto: Approval | None = None
    cancelled: Approval | None = None
    expired_at: datetime | None = None  # when a request.expired event recorded it
    executed: Approval | None = None
    superseded: int | None = None  # seq of the rule change that replaced its rule while open
    problems: tuple[str, ...] = field(default=())  # events that did not fit (not counted)

    @property
    def approve_by(self) -> datetime:
        """The end of the approval window."""
        return self.created_at + self.rule.approval_window

    @property
    def approved_at(self) -> datetime | None:
        """When the approval that completed it came (None while it has too few)."""
        if self.rule.approvers == 0:
            return self.created_at
        if len(self.approvals) < self.rule.approvers:
            return None
        return self.approvals[self.rule.approvers - 1].at

    @property
    def execute_by(self) -> datetime | None:
        """The end of the execution window (None until approved)."""
        approved = self.approved_at
        return None if approved is None else approved + self.rule.execution_window

    def state(self, now: datetime) -> RequestState:
        """The state at ``now``: a final event wins; otherwise it is approved (until the
        execution window ends), or pending (until the approval window ends), else expired."""
        if self.executed is not None:
            return RequestState.EXECUTED
        if self.veto is not None:
            return RequestState.VETOED
        if self.cancelled is not None or self.superseded is not None:
            return RequestState.CANCELLED
        if self.expired_at is not None:
            return RequestState.EXPIRED
        execute_by = self.execute_by
        if execute_by is not None:
            return RequestState.APPROVED if now < execute_by else RequestState.EXPIRED
        return RequestState.PENDING if now < self.approve_by else RequestState.EXPIRED

    def to_json(self, now: datetime) -> dict[str, Any]:
        """JSON-ready, with the state at ``now``."""

        def _opt(value: Approval | None) -> dict[str, Any] | None:
            return value.to_json() if value is not None else None

        execute_by = self.execute_by
        return {
            "id": self.id,
            "state": self.state(now).value,
            "operation": self.operation.value,
            "target": self.target,
            "params": dict(self.params),
            "params_sha256": self.params_sha256,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "created_at": self.created_at.isoformat(),
            "seq": self.seq,
            "rule": self.rule.to_json(),
            "approve_by": self.approve_by.isoformat(),
            "execute_by": execute_by.isoformat() if execute_by else None,
            "excluded": sorted(self.excluded),
            "eligible": sorted(self.eligible),
            "asked_approvers": self.asked_approvers,
            "approvals": [a.to_json() for a in self.approvals],
            "vetoed": _opt(self.veto),
            "cancelled": _opt(self.cancelled),
            "superseded_by_rule_change": self.superseded,
            "expired_at": self.expired_at.isoformat() if self.expired_at else None,
            "executed": _opt(self.executed),
            "problems": list(self.problems),
        }


def _time(event: Event) -> datetime:
    """When the step happened: the ``at`` the service recorded (the time it judged the step
    by), else the event's own time."""
    for text in (event.details.get("at"), event.time):
        if isinstance(text, str):
            try:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            if value.tzinfo is not None:
                return value
    raise ValueError("an event without a time")


def _created(event: Event) -> ApprovalRequest:
    d = event.details
    oidc = d.get("requester_oidc")
    params = d["params"]
    if not isinstance(params, Mapping):
        raise TypeError("params is not an object")
    excluded = d.get("excluded", [])
    if not isinstance(excluded, list):
        raise TypeError("excluded is not a list")
    eligible = d.get("eligible", [])
    if not isinstance(eligible, list):
        raise TypeError("eligible is not a list")
    asked = d.get("asked_approvers")
    return ApprovalRequest(
        id=event.subject.removeprefix("request:"),
        operation=GatedOperation(str(d["operation"])),
        target=str(d["target"]),
        params=MappingProxyType(dict(params)),
        params_sha256=str(d["params_sha256"]),
        reason=str(d.get("reason", "")),
        requested_by=event.actor,
        requester_id=str(d["requester_id"]),
        requester_oidc=(str(oidc[0]), str(oidc[1])) if isinstance(oidc, list) else None,
        created_at=_time(event),
        seq=event.seq,
        rule=ApprovalRule.from_json(d["rule"]),
        excluded=frozenset(str(x) for x in excluded),
        eligible=frozenset(str(x) for x in eligible),
        asked_approvers=asked if isinstance(asked, int) and not isinstance(asked, bool) else None,
    )


def _step(event: Event) -> Approval:
    return Approval(
        name=event.actor,
        account_id=str(event.details.get("account_id", "")),
        at=_time(event),
        seq=event.seq,
        note=str(event.details.get("note", "")),
    )


@dataclass(frozen=True, slots=True)
class Folded:
    """The requests a ledger's ``request.*`` events tell of, by id, and the events that tell
    of none (they count for nothing)."""

    requests: dict[str, ApprovalRequest]
    orphans: tuple[str, ...]


def fold(events: Iterable[Event]) -> Folded:
    """The requests that ``events`` (any ``request.*`` and ``approval.rule_changed`` events,
    in any order) tell of.

    Only what the rules allow counts, whatever the events say: an approval by the requester,
    by an excluded account, by an account that approved already, after the approval window,
    or after a final event is listed in ``problems`` and not counted; so is an event of a
    request that was never created, and a ``request.created`` that does not parse. The
    services never write such events; a ledger holding one was written by something else."""
    requests: dict[str, ApprovalRequest] = {}
    orphans: list[str] = []
    for event in sorted(events, key=lambda e: e.seq):
        if event.action == RULE_CHANGED:
            _supersede(requests, event)
            continue
        request_id = event.subject.removeprefix("request:")
        if event.action == "request.created":
            try:
                requests[request_id] = _created(event)
            except (KeyError, TypeError, ValueError, InputError):
                orphans.append(f"request.created #{event.seq} does not describe a request")
            continue
        request = requests.get(request_id)
        if request is None:
            orphans.append(f"{event.action} #{event.seq} names no request")
            continue
        try:
            requests[request_id] = _apply(request, event)
        except ValueError:
            orphans.append(f"{event.action} #{event.seq} has no time")
    return Folded(requests, tuple(orphans))


def _supersede(requests: dict[str, ApprovalRequest], event: Event) -> None:
    """A rule change (``approval.rule_changed``) ends every request of its operation still
    open (pending, or approved and not executed) when it is recorded, but the one whose
    execution made it: they were asked for under the rule it replaced, and would otherwise
    be judged by a rule no longer in force (a tightening must reach requests filed before it;
    their requesters ask again). A change that does not name its operation supersedes
    nothing."""
    try:
        operation = GatedOperation(str(event.details.get("operation")))
        at = _time(event)
    except ValueError:
        return
    approval = event.details.get("approval")
    changer = approval.get("request") if isinstance(approval, Mapping) else None
    for request_id, request in list(requests.items()):
        if (
            request.operation is operation
            and request_id != changer
            and request.seq < event.seq
            and request.state(at) not in FINAL_STATES
        ):
            requests[request_id] = replace(request, superseded=event.seq)


def _apply(request: ApprovalRequest, event: Event) -> ApprovalRequest:
    step = _step(event)
    at = step.at
    state = request.state(at)

    def refused(why: str) -> ApprovalRequest:
        return replace(request, problems=(*request.problems, f"{event.action} #{event.seq}: {why}"))

    if event.action == "request.expired":
        if state is RequestState.EXPIRED and request.expired_at is None:
            return replace(request, expired_at=at)
        return refused(f"recorded while {state.value}")
    if state in FINAL_STATES:
        return refused(f"after the request was {state.value}")
    if event.action in ("request.approved", "request.vetoed"):
        if state is not RequestState.PENDING and event.action == "request.approved":
            return refused(f"an approval while {state.value}")
        if step.account_id == request.requester_id or step.name == request.requested_by:
            return refused(f"{step.name} asked for it")
        if step.name in request.excluded:
            return refused(f"{step.name} may not approve it")
        if request.eligible and step.name not in request.eligible:
            return refused(f"{step.name} could not approve it when it was asked for")
        if any(a.account_id == step.account_id for a in request.approvals):
            return refused(f"{step.name} approved it already")
        if event.action == "request.vetoed":
            return replace(request, veto=step)
        return replace(request, approvals=(*request.approvals, step))
    if event.action == "request.cancelled":
        return replace(request, cancelled=step)
    if event.action == "request.executed":
        if state is not RequestState.APPROVED:
            return refused(f"executed while {state.value}")
        return replace(request, executed=step)
    return refused("not a request step")
