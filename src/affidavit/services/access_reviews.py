"""Access reviews: ``affidavit access review start|show|decide|close``.

A review lists, per account holding a role (as the ledger vouches for it:
:func:`~affidavit.services.principals.vouched_roles`), the roles it holds, the permissions it
actually used in the look-back window and so its unused roles and permissions, the privilege
creep the review is about. Use is read from two signed logs:

- the **access log**: every API request an account made through the server that was allowed,
  mapped from its route to the permission the route's gate asks for
  (:data:`~affidavit.models.permissions.ROUTE_PERMISSIONS`, a pure table a test holds equal
  to the server's gates: the services do not import the server);
- the **ledger**: every event an authenticated identity recorded (the server's requests, and
  local commands run with ``--as``), mapped from its action to the permission it exercised
  (:func:`~affidavit.models.permissions.event_permission`). Local-mode events (no
  ``details.auth``) name an OS user affidavit did not verify and count for nobody.

Then a person decides, per grant, to keep or revoke it, with a justification; nobody decides on
their own access. Closing the review applies the revocations through the approval path
(:func:`affidavit.services.roles.revoke_role`): a revocation another administrator must approve
becomes a request, whose id the close records. A review is nothing but its ledger events
(``access_review.started``, ``access_review.decided``, ``access_review.closed``), folded by
:func:`affidavit.models.access_review.fold`; there is no catalog table to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto import tokens
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    ApprovalPending,
    FormatError,
    InputError,
    NotFound,
)
from affidavit.models.access import AccessEntry, Outcome
from affidavit.models.access_review import (
    ACCESS_REVIEW_ACTIONS,
    CLOSED,
    DECIDED,
    STARTED,
    SUBJECT_PREFIX,
    AccessReview,
    AccountUsage,
    GrantOutcome,
    Verdict,
    check_justification,
    check_lookback,
    fold,
)
from affidavit.models.access_review import Outcome as GrantResult
from affidavit.models.identity import Account, AccountKind, AuthMethod, Principal, account_name
from affidavit.models.ledger import rfc3339_utc
from affidavit.models.permissions import ROUTE_PERMISSIONS, Permission, Role, event_permission
from affidavit.services import roles
from affidavit.services.context import App
from affidavit.services.ledger import require_verified_ledger
from affidavit.services.policy_vouch import parse_entry, read_events
from affidavit.services.principals import (
    authorize,
    is_service,
    ledger_roles,
    ledger_services,
    require_fresh_mfa,
    vouched_roles,
)
from affidavit.services.requests import linked_subjects

DEFAULT_LOOKBACK_DAYS = 90
_UNAUTHENTICATED = frozenset({"", "none", AuthMethod.LOCAL_OS_USER.value})


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def read_reviews(uow: UnitOfWork) -> dict[str, AccessReview]:
    """Every review, as its ledger events tell it (one query per action)."""
    events = [e for action in ACCESS_REVIEW_ACTIONS for e in read_events(uow.ledger, action)]
    return fold(events).reviews


# -- what was used -----------------------------------------------------------------------------


@dataclass
class _Use:
    used: set[Permission] = field(default_factory=set)
    last: str | None = None

    def add(self, permission: Permission, at: str) -> None:
        self.used.add(permission)
        if self.last is None or at > self.last:
            self.last = at


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """The permissions each account (by name) used in a window, and what could not be read."""

    by_account: dict[str, frozenset[Permission]]
    last_used: dict[str, str]
    expired_entries: int  # access-log entries in the window whose payload expired: use unknown
    unmapped: tuple[str, ...]  # access-log actions the route table does not know


def permissions_used(uow: UnitOfWork, *, since: datetime, until: datetime) -> Usage:
    """What each authenticated identity did in ``[since, until)``: its allowed API requests
    (access log, by the route's gate) and its authenticated ledger events (by action)."""
    low, high = rfc3339_utc(since), rfc3339_utc(until)
    uses: dict[str, _Use] = {}
    unmapped: set[str] = set()
    expired = 0
    for row in uow.access_log.find(since=low, until=high):
        if row.entry is None:
            expired += 1
            continue
        try:
            entry = AccessEntry.from_canonical(row.entry)
        except FormatError:  # `access-log verify` reports it
            continue
        if not low <= entry.time < high:
            continue  # the time column is a copy: the signed payload decides
        if entry.outcome is not Outcome.ALLOWED or entry.auth_method in _UNAUTHENTICATED:
            continue
        if entry.action not in ROUTE_PERMISSIONS:
            unmapped.add(entry.action)
            continue
        permission = ROUTE_PERMISSIONS[entry.action]
        if permission is not None:
            uses.setdefault(entry.identity, _Use()).add(permission, entry.time)
    for stored in uow.ledger.find(since=low):
        event = parse_entry(stored.entry)
        if event is None or not low <= event.time < high:
            continue
        auth = event.details.get("auth")
        if not isinstance(auth, str) or auth in _UNAUTHENTICATED:
            continue  # local mode: the OS user is not an account
        permission = event_permission(event.action, event.details)
        if permission is not None:
            uses.setdefault(event.actor, _Use()).add(permission, event.time)
    return Usage(
        by_account={name: frozenset(u.used) for name, u in uses.items()},
        last_used={name: u.last for name, u in uses.items() if u.last is not None},
        expired_entries=expired,
        unmapped=tuple(sorted(unmapped)),
    )


def _oidc(account: Account) -> tuple[str, str] | None:
    if account.oidc_issuer is None or account.oidc_subject is None:
        return None
    return account.oidc_issuer, account.oidc_subject


def snapshot(uow: UnitOfWork, *, since: datetime, until: datetime) -> tuple[
    list[AccountUsage], Usage
]:  # fmt: skip
    """Every account holding a role (as the ledger vouches), with what it used."""
    usage = permissions_used(uow, since=since, until=until)
    held, services = ledger_roles(uow), ledger_services(uow)
    accounts = []
    for account in sorted(uow.identities.accounts(), key=lambda a: a.name):
        have = vouched_roles(uow, account, held, services)
        if not have:
            continue
        accounts.append(
            AccountUsage(
                account=account.name,
                account_id=account.id,
                kind=AccountKind.SERVICE if is_service(uow, account, services) else account.kind,
                disabled=account.disabled,
                roles=tuple(r for r in Role if r in have),
                used=usage.by_account.get(account.name, frozenset()),
                last_used=usage.last_used.get(account.name),
                oidc=_oidc(account),
            )
        )
    return accounts, usage


# -- the steps ---------------------------------------------------------------------------------


def _load(uow: UnitOfWork, review_id: str) -> AccessReview:
    review = read_reviews(uow).get(review_id)
    if review is None:
        raise NotFound(
            f"no access review {review_id[:40]!r}", hint="`affidavit access review show` lists them"
        )
    return review


def start_review(
    app: App,
    principal: Principal,
    *,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    now: datetime | None = None,
) -> AccessReview:
    """Start a review of every account holding a role, over the last ``lookback_days``
    (``access.review``). Recorded ``access_review.started`` with the whole snapshot."""
    authorize(principal, Permission.ACCESS_REVIEW)
    days = check_lookback(lookback_days)
    at = _now(now)
    since = at - timedelta(days=days)
    review_id = f"ar-{tokens.new_id()}"
    with app.change() as change:
        change.actor = principal.name
        accounts, usage = snapshot(change.uow, since=since, until=at)
        change.record(
            STARTED,
            f"{SUBJECT_PREFIX}{review_id}",
            {
                "by_id": principal.account_id,
                "lookback_days": days,
                "window": {"from": since.isoformat(), "to": at.isoformat()},
                "accounts": [a.to_json() for a in accounts],
                "expired_entries": usage.expired_entries,
                "unmapped_routes": list(usage.unmapped),
                "auth": principal.method.value,
                "at": at.isoformat(),
            },
        )
        return _load(change.uow, review_id)


def list_reviews(app: App, principal: Principal) -> list[AccessReview]:
    """Every review, newest first (``account.read``)."""
    authorize(principal, Permission.ACCOUNT_READ)
    with app.read() as uow:
        return sorted(read_reviews(uow).values(), key=lambda r: r.seq, reverse=True)


def get_review(app: App, principal: Principal, review_id: str) -> AccessReview:
    """One review (``account.read``)."""
    authorize(principal, Permission.ACCOUNT_READ)
    with app.read() as uow:
        return _load(uow, review_id)


def _open(review: AccessReview, verb: str) -> None:
    if review.closed is not None:
        raise AlreadyExists(
            f"access review {review.id} was closed at "
            f"{review.closed.at.isoformat(timespec='seconds')} by {review.closed.by}: "
            f"nothing to {verb}",
            hint="start a new review: `affidavit access review start`",
        )


def decide(
    app: App,
    principal: Principal,
    review_id: str,
    *,
    account: str,
    role: Role | str,
    verdict: Verdict | str,
    justification: str,
    now: datetime | None = None,
) -> AccessReview:
    """Decide to keep or revoke one grant of an open review (``access.review``), with a
    justification. Refused for a grant the review does not list and for one's own access
    (also under a second account linked to the same identity-provider subject). Recorded
    ``access_review.decided``; a later decision on the same grant replaces it."""
    authorize(principal, Permission.ACCESS_REVIEW)
    at = _now(now)
    name = account_name(account)
    try:
        wanted, judged = Role(role), Verdict(verdict)
    except ValueError:
        raise InputError(
            f"{str(role)[:40]!r} / {str(verdict)[:40]!r}: not a role and a decision",
            hint="decide keep or revoke on a role: " + ", ".join(r.value for r in Role),
        ) from None
    why = check_justification(justification)
    with app.change() as change:
        change.actor = principal.name
        review = _load(change.uow, review_id)
        _open(review, "decide")
        usage = review.usage(name)
        if usage is None or wanted not in usage.roles:
            raise InputError(
                f"{name!r} / {wanted.value} is not a grant of access review {review.id}",
                hint="`affidavit access review show ID` lists its grants",
            )
        me = change.uow.identities.account_by_id(str(principal.account_id))
        mine = _oidc(me)
        subjects = linked_subjects(change.uow)  # every link the ledger ever gave either
        theirs = subjects.get(usage.account_id, set()) | ({usage.oidc} if usage.oidc else set())
        if (
            me.id == usage.account_id
            or me.name == usage.account
            or bool((subjects.get(me.id, set()) | ({mine} if mine else set())) & theirs)
        ):
            raise AccessDenied(
                "nobody decides on their own access (nor under a second account linked to the "
                "same identity-provider subject)",
                hint=f"another reviewer decides on {name!r}",
            )
        change.record(
            DECIDED,
            f"{SUBJECT_PREFIX}{review.id}",
            {
                "account": name,
                "account_id": usage.account_id,
                "role": wanted.value,
                "decision": judged.value,
                "justification": why,
                "by_id": me.id,
                "by_oidc": list(mine) if mine is not None else None,
                "auth": principal.method.value,
                "at": at.isoformat(),
            },
        )
        return _load(change.uow, review.id)


def close_review(
    app: App, principal: Principal, review_id: str, *, now: datetime | None = None
) -> AccessReview:
    """Close an open review (``access.review``) and apply its revocations through the
    approval path (:func:`~affidavit.services.roles.revoke_role`, which needs ``role.grant``
    and a fresh MFA check: an administrator closes a review that revokes anything). Each
    grant's outcome is recorded in ``access_review.closed``: kept, revoked, pending (with the
    approval request's id), not held any more, refused (with why), or undecided. Refused on a
    ledger that does not verify: the decisions are nothing but its events."""
    authorize(principal, Permission.ACCESS_REVIEW)
    at = _now(now)
    with app.read() as uow:
        review = _load(uow, review_id)
    _open(review, "close")
    revoking = [d for d in review.decisions.values() if d.verdict is Verdict.REVOKE]
    if revoking:  # before anything is applied: all of them, or none
        authorize(principal, Permission.ROLE_GRANT)
        require_fresh_mfa(principal, now=at)
        if any(d.account == principal.name for d in revoking):
            raise AccessDenied(
                "nobody closes a review that revokes their own access: they would ask for "
                "their own revocation (and could withdraw it)",
                hint="another administrator closes it",
            )
    require_verified_ledger(app, refusing=f"to close access review {review.id}", nothing="revoked")
    outcomes = [_apply(app, principal, review, grant, at) for grant in review.grants]
    with app.change() as change:
        change.actor = principal.name
        again = _load(change.uow, review.id)
        _open(again, "close")  # a concurrent close came first
        change.record(
            CLOSED,
            f"{SUBJECT_PREFIX}{review.id}",
            {
                "by_id": principal.account_id,
                "outcomes": [o.to_json() for o in outcomes],
                "auth": principal.method.value,
                "at": at.isoformat(),
            },
        )
        return _load(change.uow, review.id)


def _apply(
    app: App,
    principal: Principal,
    review: AccessReview,
    grant: tuple[str, Role],
    at: datetime,
) -> GrantOutcome:
    account, role = grant
    decision = review.decisions.get(grant)
    if decision is None:
        return GrantOutcome(account=account, role=role, verdict=None,
                            outcome=GrantResult.UNDECIDED)  # fmt: skip
    if decision.verdict is Verdict.KEEP:
        return GrantOutcome(account=account, role=role, verdict=Verdict.KEEP,
                            outcome=GrantResult.KEPT, message=decision.justification)  # fmt: skip
    with app.read() as uow:
        target = uow.identities.find_account(account)
        still = target is not None and role in vouched_roles(uow, target)
    if not still:
        return GrantOutcome(account=account, role=role, verdict=Verdict.REVOKE,
                            outcome=GrantResult.NOT_HELD,
                            message="the account no longer holds the role")  # fmt: skip
    try:
        roles.revoke_role(app, principal, account, role, now=at)
    except ApprovalPending as pending:
        return GrantOutcome(account=account, role=role, verdict=Verdict.REVOKE,
                            outcome=GrantResult.PENDING, request=str(pending.request.get("id")),
                            message=pending.message)  # fmt: skip
    except InputError as refused:  # the last administrator, a lost step-up, ...
        return GrantOutcome(account=account, role=role, verdict=Verdict.REVOKE,
                            outcome=GrantResult.REFUSED, message=refused.message)  # fmt: skip
    return GrantOutcome(account=account, role=role, verdict=Verdict.REVOKE,
                        outcome=GrantResult.REVOKED, message=decision.justification)  # fmt: skip
