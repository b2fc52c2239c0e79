"""Multi-party approval: the gate every gated operation passes, and the steps of a request
(approve, veto, cancel; execution is :mod:`affidavit.services.gated`).

Every service that performs a :class:`~affidavit.models.approval.GatedOperation` calls
:func:`gate` first, with the operation's parameters. For an authenticated identity (the
server, or the CLI with ``--as``) the gate

- checks that the identity holds the operation's permission (and passed a fresh MFA check
  when the operation asks for one);
- reads the operation's rule in force (:func:`rules_in_force`: the defaults, as changed by
  approved ``approval.rule_changed`` events);
- when the rule asks for approvers and enough people could approve it, records a pending
  request (``request.created``) and raises :class:`~affidavit.errors.ApprovalPending`:
  nothing else happens until the requester executes the approved request;
- when fewer people could approve it than the rule asks for (an organisation with one
  administrator, say), lets the operation run **with the waiver recorded**
  (``approval.waived``, in the operation's own transaction) and reported by the
  ``access.segregation_of_duties`` control: loud, never silent;
- lets it run when the rule asks for no approver (a rule changed to 0 was itself approved).

In local mode (no authenticated identity: the OS user at the terminal) the gate enforces
nothing, as local mode enforces no role: the operation runs as before and its events say
``local-os-user``; the controls report it as not authenticated.

Who may approve. An approver is another human identity: not the requester's account, not an
account linked to the requester's OIDC subject, not a service account or an API token, holding
the rule's role (as the ledger vouches for it), with a TOTP (or IdP MFA) check within the
step-up window, and not excluded by the operation (the account a role grant or a disablement
is for; the people who started or completed a backup, for its deletion, hold release or key
export). Each person approves once. Expiry rejects: a request not approved within its
approval window, or not executed within its execution window, is expired, and the first
attempt to act on it records ``request.expired``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import rfc8785

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto import tokens
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import AccessDenied, ApprovalPending, InputError, NotFound
from affidavit.models.approval import (
    DEFAULT_RULES,
    FINAL_STATES,
    GATES,
    REQUEST_ACTIONS,
    RULE_CHANGED,
    ApprovalRequest,
    ApprovalRule,
    GatedOperation,
    RequestState,
    fold,
)
from affidavit.models.identity import Account, AccountKind, AuthMethod, Principal
from affidavit.models.permissions import Permission
from affidavit.services.context import App, Change
from affidavit.services.exports.samples import sweep_samples
from affidavit.services.ledger import require_verified_ledger
from affidavit.services.policy_vouch import read_events
from affidavit.services.principals import (
    authorize,
    is_service,
    ledger_roles,
    ledger_services,
    require_fresh_mfa,
    vouched_roles,
)

RULE_ACTION: Final = RULE_CHANGED
WAIVED_ACTION: Final = "approval.waived"
MAX_REASON: Final = 500
_BACKUP_OPERATIONS: Final = frozenset(
    {
        GatedOperation.BACKUP_DELETE,
        GatedOperation.HOLD_RELEASE,
        GatedOperation.KEYS_EXPORT_IDENTITY,
    }
)
_REMOVING: Final = frozenset({GatedOperation.ROLE_REVOKE, GatedOperation.ACCOUNT_DISABLE})
_ACCOUNT_OPERATIONS: Final = frozenset(
    {GatedOperation.ROLE_GRANT, GatedOperation.ROLE_REVOKE, GatedOperation.ACCOUNT_DISABLE}
)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the RFC 8785 form of an operation's parameters."""
    return sha256_hex(rfc8785.dumps(dict(params)))


# -- reading ---------------------------------------------------------------------------------


def read_requests(uow: UnitOfWork) -> dict[str, ApprovalRequest]:
    """Every request, as its ledger events and the rule changes tell it (one query per
    action; a rule change supersedes the requests its operation had open)."""
    actions = (*REQUEST_ACTIONS, RULE_CHANGED)
    return fold(e for action in actions for e in read_events(uow.ledger, action)).requests


def rules_in_force(uow: UnitOfWork) -> dict[GatedOperation, ApprovalRule]:
    """The rule of each gated operation: the default, unless an ``approval.rule_changed``
    event (written only by an approved :data:`GatedOperation.RULE_CHANGE`) replaced it; the
    newest one wins. An event that does not describe a rule is skipped (``ledger verify``
    judges the ledger)."""
    rules = dict(DEFAULT_RULES)
    for event in read_events(uow.ledger, RULE_ACTION):
        try:
            rule = ApprovalRule.from_json(event.details)
        except (KeyError, TypeError, ValueError, InputError):
            continue
        rules[rule.operation] = rule
    return rules


def list_requests(
    app: App, principal: Principal, *, state: RequestState | None = None
) -> list[ApprovalRequest]:
    """The requests, newest first (``request.read``), only those in ``state`` when given."""
    authorize(principal, Permission.REQUEST_READ)
    now = _now(None)
    with app.read() as uow:
        found = sorted(read_requests(uow).values(), key=lambda r: r.seq, reverse=True)
    return [r for r in found if state is None or r.state(now) is state]


def get_request(app: App, principal: Principal, request_id: str) -> ApprovalRequest:
    """One request (``request.read``, or its requester). Anyone else is told it does not
    exist, as for an id that does not: no answer tells whether someone else's request is
    there."""
    with app.read() as uow:
        request = read_requests(uow).get(request_id)
    if request is None or not (
        principal.holds(Permission.REQUEST_READ)
        or (principal.authenticated and principal.account_id == request.requester_id)
    ):
        raise NotFound(
            f"no approval request {request_id[:40]!r}", hint="`affidavit request list` shows them"
        )
    return request


def list_rules(app: App, principal: Principal) -> list[ApprovalRule]:
    """The rules in force, by operation (``request.read``)."""
    authorize(principal, Permission.REQUEST_READ)
    with app.read() as uow:
        rules = rules_in_force(uow)
    return [rules[op] for op in GatedOperation]


# -- who may approve -------------------------------------------------------------------------


def excluded_approvers(
    uow: UnitOfWork, operation: GatedOperation, params: Mapping[str, Any]
) -> frozenset[str]:
    """The accounts (by name) that may not approve this operation whatever their roles: the
    account a role grant, revocation or disablement is for; the people who started or
    completed the backup that a deletion, hold release or key export concerns."""
    if operation in _ACCOUNT_OPERATIONS:
        return frozenset({str(params.get("account", ""))})
    if operation in _BACKUP_OPERATIONS:
        subject = f"backup:{params.get('backup_id', '')}"
        return frozenset(
            e.actor
            for action in ("backup.started", "backup.completed")
            for e in read_events(uow.ledger, action)
            if e.subject == subject
        )
    return frozenset()


def linked_subjects(uow: UnitOfWork) -> dict[str, set[tuple[str, str]]]:
    """Every identity-provider subject ``(issuer, subject)`` each account (by id) was ever
    linked to: its catalog row's, and every ``account.oidc_linked`` event's (so neither a
    catalog edit nor linking the account elsewhere later makes two accounts of one person
    two people)."""
    out: dict[str, set[tuple[str, str]]] = {}
    for event in read_events(uow.ledger, "account.oidc_linked"):
        issuer, subject = event.details.get("issuer"), event.details.get("subject")
        account_id = event.details.get("account_id")
        if isinstance(issuer, str) and isinstance(subject, str) and isinstance(account_id, str):
            out.setdefault(account_id, set()).add((issuer, subject))
    for account in uow.identities.accounts():
        if account.oidc_issuer is not None and account.oidc_subject is not None:
            out.setdefault(account.id, set()).add((account.oidc_issuer, account.oidc_subject))
    return out


def _same_person(
    account: Account, requester: Account, subjects: dict[str, set[tuple[str, str]]]
) -> bool:
    """The same account, or two accounts ever linked to one subject of one issuer."""
    if account.id == requester.id:
        return True
    return bool(subjects.get(account.id, set()) & subjects.get(requester.id, set()))


def eligible_approvers(
    uow: UnitOfWork, rule: ApprovalRule, requester: Account, excluded: frozenset[str]
) -> list[str]:
    """The names of the people who could approve a request of ``requester`` under ``rule``:
    enabled human accounts holding its role (as the ledger vouches), not the requester or
    linked to the requester's OIDC subject, not excluded. Whether they can pass an MFA check
    right now does not matter (they are asked for one when they approve): otherwise one
    administrator could reset the others' TOTP and act alone on waivers."""
    held, services = ledger_roles(uow), ledger_services(uow)
    subjects = linked_subjects(uow)
    out = []
    for account in uow.identities.accounts():
        if (
            account.disabled
            or account.name in excluded
            or _same_person(account, requester, subjects)
            or is_service(uow, account, services)
        ):
            continue
        if rule.role in vouched_roles(uow, account, held, services):
            out.append(account.name)
    return out


# -- the gate --------------------------------------------------------------------------------


class Standing(StrEnum):
    """On what authority a gated operation runs."""

    LOCAL = "local-os-user"  # local mode: nothing enforced (and reported so)
    NOT_REQUIRED = "not-required"  # the rule in force asks for no approver
    WAIVED = "waived"  # too few people could approve it: recorded, reported
    APPROVED = "approved"  # an approved request, executed by its requester


@dataclass(frozen=True, slots=True, kw_only=True)
class Authority:
    """What lets one gated operation run now; the operation's last transaction calls
    :meth:`seal` (which, for a request, checks once more under the writer lock that it is
    approved and not yet executed, and records ``request.executed``)."""

    operation: GatedOperation
    target: str
    params: Mapping[str, Any]
    standing: Standing
    principal: Principal | None = None
    request_id: str | None = None
    waiver: str | None = None
    now: datetime | None = None

    def event_details(self) -> dict[str, Any]:
        """What the operation's own event says about its approval: ``{"approval": {...}}``
        with the standing, the request or the waiver; nothing in local mode (its events carry
        no ``details.auth`` either: that is how the controls tell local-mode actions)."""
        if self.standing is Standing.LOCAL:
            return {}
        out: dict[str, Any] = {"standing": self.standing.value}
        if self.request_id is not None:
            out["request"] = self.request_id
        if self.waiver is not None:
            out["waiver"] = self.waiver
        return {"approval": out}

    def seal(self, change: Change) -> None:
        """Record, in the operation's transaction, how it was authorised: ``request.executed``
        for an approved request (refused, rolling the operation back, when another execution
        came first or the request expired meanwhile), ``approval.waived`` for a waiver."""
        at = _now(self.now)
        if self.standing is Standing.WAIVED:
            change.record(
                WAIVED_ACTION,
                self.target,
                {
                    "operation": self.operation.value,
                    "params": dict(self.params),
                    "waiver": self.waiver,
                    "at": at.isoformat(),
                },
            )
        elif self.standing is Standing.APPROVED:
            assert self.request_id is not None
            request = read_requests(change.uow).get(self.request_id)
            state = request.state(at) if request is not None else None
            if request is None or state is not RequestState.APPROVED:
                raise AccessDenied(
                    f"request {self.request_id} is {state.value if state else 'gone'}: "
                    "it cannot be executed",
                    hint="`affidavit request show ID` says why",
                )
            change.record(
                "request.executed",
                f"request:{request.id}",
                {
                    "operation": request.operation.value,
                    "target": request.target,
                    "account_id": self.principal.account_id if self.principal else None,
                    "at": at.isoformat(),
                },
            )


def _reason(reason: str) -> str:
    text = " ".join(reason.split())
    if len(text) > MAX_REASON:
        raise InputError(f"a reason holds at most {MAX_REASON} characters")
    return text


def gate(
    app: App,
    operation: GatedOperation,
    params: Mapping[str, Any],
    *,
    target: str,
    reason: str = "",
    principal: Principal | None = None,
    authority: Authority | None = None,
    now: datetime | None = None,
) -> Authority:
    """Let ``operation`` with ``params`` run, or record a request and raise
    :class:`ApprovalPending` (see the module docstring). ``principal``: the acting identity
    (default: the one :meth:`App.acting_as` set; none is local mode). ``authority``: what
    :func:`affidavit.services.gated.execute` hands over for an approved request; it must be
    for exactly this operation and these parameters."""
    if authority is not None:
        if authority.operation is not operation or params_digest(authority.params) != params_digest(
            params
        ):
            raise AccessDenied(
                f"the approval was given for another {operation.value}",
                hint="execute the request as it was approved",
            )
        return authority
    who = principal if principal is not None else app.principal
    base = Authority(operation=operation, target=target, params=params, standing=Standing.LOCAL)
    if who is None or not who.authenticated:
        return base
    needs = GATES[operation]
    authorize(who, needs.permission)
    at = _now(now)
    if needs.mfa:
        require_fresh_mfa(who, now=at)
    why = _reason(reason)
    with app.read() as uow:
        rule = rules_in_force(uow)[operation]
        if rule.approvers == 0:
            return _with(base, who, Standing.NOT_REQUIRED, at)
        requester = uow.identities.account_by_id(str(who.account_id))
        excluded = excluded_approvers(uow, operation, params)
        # taking power from someone: they may not approve it, but they still count against a
        # waiver (else one administrator could strip or disable the only other one alone)
        counted = frozenset() if operation in _REMOVING else excluded
        eligible = eligible_approvers(uow, rule, requester, counted)
    if not eligible:
        waiver = f"{rule.approvers} approver(s) of role {rule.role.value} needed, 0 could approve"
        return Authority(
            operation=operation,
            target=target,
            params=params,
            standing=Standing.WAIVED,
            principal=who,
            waiver=waiver,
            now=now,
        )
    # a rule asking for more people than could approve asks for all of them (never for
    # nobody: that would let a rule set too high turn approval off)
    asked = rule.approvers
    rule = replace(rule, approvers=min(rule.approvers, len(eligible)))
    request_id = f"rq-{tokens.new_id()}"
    with app.change() as change:
        change.actor = who.name
        change.record(
            "request.created",
            f"request:{request_id}",
            {
                "operation": operation.value,
                "target": target,
                "params": dict(params),
                "params_sha256": params_digest(params),
                "reason": why,
                "requester_id": requester.id,
                "requester_oidc": (
                    [requester.oidc_issuer, requester.oidc_subject]
                    if requester.oidc_subject is not None and requester.oidc_issuer is not None
                    else None
                ),
                "rule": rule.to_json(),
                "excluded": sorted(excluded),
                "eligible": sorted(eligible),
                "asked_approvers": asked if asked != rule.approvers else None,
                "at": at.isoformat(),
            },
        )
        request = read_requests(change.uow)[request_id]
    raise ApprovalPending(
        f"{operation.value} of {target} waits for {rule.approvers} approval(s) by "
        f"{rule.role.value} before {request.approve_by.isoformat(timespec='seconds')}: "
        f"request {request_id}",
        hint=f"an approver runs `affidavit request approve {request_id}`; then you run "
        f"`affidavit request execute {request_id}`",
        request=request.to_json(at),
    )


def _with(base: Authority, who: Principal, standing: Standing, at: datetime) -> Authority:
    return Authority(
        operation=base.operation,
        target=base.target,
        params=base.params,
        standing=standing,
        principal=who,
        now=at,
    )


# -- the steps -------------------------------------------------------------------------------


def _approver_check(principal: Principal, at: datetime) -> None:
    authorize(principal, Permission.REQUEST_APPROVE)
    if principal.kind is not AccountKind.HUMAN or principal.method is AuthMethod.TOKEN:
        raise AccessDenied(
            "only a person approves or vetoes: never a service account or an API token",
            hint="sign in as a person who holds the rule's role",
        )
    require_fresh_mfa(principal, now=at)


def _expire(app: App, principal: Principal, request: ApprovalRequest, at: datetime) -> None:
    """Record that ``request`` expired (once), then refuse."""
    if request.expired_at is None:
        with app.change() as change:
            change.actor = principal.name
            change.record(
                "request.expired",
                f"request:{request.id}",
                {"account_id": principal.account_id, "at": at.isoformat()},
            )
    raise AccessDenied(
        f"request {request.id} expired: expiry rejects, it never approves",
        hint="ask again: the operation needs a new request",
    )


def _load(change: Change, request_id: str) -> ApprovalRequest:
    request = read_requests(change.uow).get(request_id)
    if request is None:
        raise NotFound(
            f"no approval request {request_id[:40]!r}", hint="`affidavit request list` shows them"
        )
    return request


def _judge(
    app: App, principal: Principal, request_id: str, *, veto: bool, note: str, now: datetime | None
) -> ApprovalRequest:
    at = _now(now)
    _approver_check(principal, at)
    text = _reason(note)
    if veto and not text:
        raise InputError("a veto needs a reason", hint="--reason TEXT")
    expired: ApprovalRequest | None = None
    with app.change() as change:
        change.actor = principal.name
        request = _load(change, request_id)
        state = request.state(at)
        if state is RequestState.EXPIRED:
            expired = request
        else:
            _may_judge(change.uow, principal, request, state, veto=veto)
            change.record(
                "request.vetoed" if veto else "request.approved",
                f"request:{request.id}",
                {
                    "account_id": principal.account_id,
                    "note": text,
                    "mfa_at": principal.mfa_at.isoformat() if principal.mfa_at else None,
                    "at": at.isoformat(),
                },
            )
            request = _load(change, request_id)
    sweep_decided(app, at)
    if expired is not None:
        _expire(app, principal, expired, at)
    return request


def sweep_decided(app: App, at: datetime) -> None:
    """Remove the sealed export samples that no open request needs any more (a decision
    may have ended one: :mod:`affidavit.services.exports.samples`)."""
    with app.read() as uow:
        every = read_requests(uow)
    sweep_samples(Path(app.settings.home), every.values(), now=at)


def _may_judge(
    uow: UnitOfWork,
    principal: Principal,
    request: ApprovalRequest,
    state: RequestState,
    *,
    veto: bool,
) -> None:
    verb = "veto" if veto else "approve"
    if state in FINAL_STATES or (state is RequestState.APPROVED and not veto):
        raise AccessDenied(
            f"request {request.id} is {state.value}: nothing to {verb}",
            hint="`affidavit request show ID`",
        )
    me = uow.identities.account_by_id(str(principal.account_id))
    requester = uow.identities.account_by_id(request.requester_id)
    if _same_person(me, requester, linked_subjects(uow)):
        raise AccessDenied(
            f"nobody may {verb} their own request (nor under a second account linked to the "
            "same identity-provider subject)",
            hint=f"a {request.rule.role.value} other than {request.requested_by!r} must",
        )
    if _credentials_set_by(uow, me, request.requested_by):
        raise AccessDenied(
            f"{request.requested_by!r} once set or reset {me.name!r}'s password, TOTP or "
            f"identity-provider link: {me.name!r} may not {verb} their requests",
            hint=f"another {request.rule.role.value} must (the credentials may be theirs now)",
        )
    if me.name in request.excluded:
        raise AccessDenied(
            f"{me.name!r} may not {verb} this {request.operation.value}: it concerns them "
            "(the account it is for, or who made the backup)",
            hint=f"another {request.rule.role.value} must",
        )
    if request.rule.role not in principal.roles:
        raise AccessDenied(
            f"{verb.capitalize()}ing a {request.operation.value} takes the role "
            f"{request.rule.role.value}",
            hint="the rule in force names the role: `affidavit request rules`",
        )
    if request.eligible and me.name not in request.eligible:
        raise AccessDenied(
            f"{me.name!r} could not approve this request when it was asked for (an account "
            "made or given the role since may not judge it)",
            hint=f"one of {', '.join(sorted(request.eligible))} must",
        )
    if any(a.account_id == me.id for a in request.approvals):
        raise AccessDenied(
            f"{me.name!r} approved request {request.id} already: each person counts once",
            hint=f"another {request.rule.role.value} must",
        )


_CREDENTIAL_ACTIONS: Final = (
    "account.password_set",
    "identity.totp_reset",
    "account.oidc_linked",
)


def _credentials_set_by(uow: UnitOfWork, account: Account, requester: str) -> bool:
    """Whether the ledger shows ``requester`` setting or resetting ``account``'s password,
    TOTP or identity-provider link: then the requester may hold those credentials, and an
    approval under that account could be their own."""
    subject = f"account:{account.name}"
    return any(
        event.subject == subject and event.actor == requester and event.actor != account.name
        for action in _CREDENTIAL_ACTIONS
        for event in read_events(uow.ledger, action)
    )


def approve(
    app: App, principal: Principal, request_id: str, *, note: str = "", now: datetime | None = None
) -> ApprovalRequest:
    """Approve a pending request (``request.approve``, a person holding the rule's role, a
    fresh MFA check, not the requester nor anyone it excludes, once). Recorded
    ``request.approved``."""
    return _judge(app, principal, request_id, veto=False, note=note, now=now)


def veto(
    app: App, principal: Principal, request_id: str, *, reason: str, now: datetime | None = None
) -> ApprovalRequest:
    """Veto a pending or approved request (as :func:`approve` asks of the approver): it can
    never be executed. Recorded ``request.vetoed``."""
    return _judge(app, principal, request_id, veto=True, note=reason, now=now)


def cancel(
    app: App,
    principal: Principal,
    request_id: str,
    *,
    reason: str = "",
    now: datetime | None = None,
) -> ApprovalRequest:
    """Withdraw one's own pending or approved request. Recorded ``request.cancelled``."""
    at = _now(now)
    text = _reason(reason)
    with app.change() as change:
        change.actor = principal.name
        request = _load(change, request_id)
        _require_requester(principal, request, "cancel")
        state = request.state(at)
        if state in FINAL_STATES:
            raise AccessDenied(
                f"request {request.id} is {state.value}: nothing to cancel",
                hint="`affidavit request show ID`",
            )
        change.record(
            "request.cancelled",
            f"request:{request.id}",
            {"account_id": principal.account_id, "note": text, "at": at.isoformat()},
        )
        cancelled = _load(change, request_id)
    sweep_decided(app, at)
    return cancelled


def _require_requester(principal: Principal, request: ApprovalRequest, verb: str) -> None:
    if not principal.authenticated or principal.account_id != request.requester_id:
        raise AccessDenied(
            f"only {request.requested_by!r}, who asked for request {request.id}, may {verb} it",
            hint=f"sign in as {request.requested_by!r}",
        )


def approved_authority(
    app: App, principal: Principal, request_id: str, *, now: datetime | None = None
) -> tuple[ApprovalRequest, Authority]:
    """The authority to execute ``request_id``: the requester, still holding the
    operation's permission (and a fresh MFA check when it needs one), an approved request
    within its execution window, on a ledger that verifies in full (the request is nothing
    but its events: an entry edited behind affidavit's back must not approve anything). An
    expired one is recorded expired and refused."""
    at = _now(now)
    with app.read() as uow:
        request = read_requests(uow).get(request_id)
    if request is None:
        raise NotFound(
            f"no approval request {request_id[:40]!r}", hint="`affidavit request list` shows them"
        )
    _require_requester(principal, request, "execute")
    needs = GATES[request.operation]
    authorize(principal, needs.permission)
    if needs.mfa:
        require_fresh_mfa(principal, now=at)
    state = request.state(at)
    if state is RequestState.EXPIRED:
        _expire(app, principal, request, at)
    if state is RequestState.APPROVED:  # the events it stands on must be the signed ones
        require_verified_ledger(app, refusing=f"to execute request {request.id}", nothing="done")
    if state is not RequestState.APPROVED:
        raise AccessDenied(
            f"request {request.id} is {state.value}: only an approved request is executed",
            hint=f"it needs {request.rule.approvers} approval(s) by {request.rule.role.value}"
            if state is RequestState.PENDING
            else "ask again: the operation needs a new request",
        )
    return request, Authority(
        operation=request.operation,
        target=request.target,
        params=request.params,
        standing=Standing.APPROVED,
        principal=principal,
        request_id=request.id,
        now=now,
    )


def rule_change(
    app: App,
    principal: Principal,
    rule: ApprovalRule,
    *,
    reason: str,
    authority: Authority | None = None,
    now: datetime | None = None,
) -> ApprovalRule:
    """Change the rule of one operation (``approval.rules``; gated itself: another
    administrator approves it under the rule for rule changes). Recorded
    ``approval.rule_changed``."""
    authorize(principal, Permission.APPROVAL_RULES)
    if authority is None:
        with app.read() as uow:
            in_force = rules_in_force(uow)[rule.operation]
        if in_force == rule:  # it would change nothing, and supersede every open request
            raise InputError(
                f"that is the rule in force for {rule.operation.value} already",
                hint="`affidavit request rules` shows the rules; change a value, or leave it",
            )
    params = rule.to_json()
    allowed = gate(
        app,
        GatedOperation.RULE_CHANGE,
        params,
        target=f"approval-rule:{rule.operation.value}",
        reason=reason,
        principal=principal,
        authority=authority,
        now=now,
    )
    with app.change() as change:
        change.actor = principal.name
        change.record(
            RULE_ACTION,
            f"approval-rule:{rule.operation.value}",
            # "at": the time it takes effect, by which it supersedes the open requests
            {**params, **allowed.event_details(), "at": _now(now).isoformat()},
        )
        allowed.seal(change)
    return rule
