"""Who holds what: the one authorization check, the MFA freshness check, and the roles an
account holds as the ledger vouches for them.

Below :mod:`affidavit.services.identity` (logins, sessions, accounts) and
:mod:`affidavit.services.requests` (multi-party approval), which both build on it. A role
counts only when its catalog row exists **and** the ledger's newest ``identity.bootstrapped``
/ ``role.granted`` / ``role.revoked`` event for that account and role grants it; an account
the ledger's ``account.created`` made a service account stays one whatever its row says.

What the ledger says of roles and service accounts is read once per ``App`` and kept
(:func:`ledger_roles`, :func:`ledger_services`): with the seq and leaf hash of the newest
entry among the actions it is read from, and used again by a unit of work only when its own
transaction finds that same newest entry (one index seek per action). Any new grant,
revocation, bootstrap, break-glass or account creation, whichever process records it, moves
that entry and the facts are read again; nothing a catalog row says is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

from affidavit.catalog.store import UnitOfWork
from affidavit.errors import AccessDenied, StepUpRequired
from affidavit.models.identity import Account, AccountKind, AuthMethod, Principal
from affidavit.models.permissions import HUMAN_ONLY_ROLES, Permission, Role
from affidavit.services.context import App
from affidavit.services.policy_vouch import read_events

STEP_UP_WINDOW: Final = timedelta(minutes=5)
"""How recent a TOTP (or identity-provider MFA) check must be for a step-up operation."""
_ROLE_ACTIONS: Final = ("identity.bootstrapped", "role.granted", "role.revoked")
_ACCOUNT_ACTIONS: Final = ("account.created",)
_MEMO_KEY: Final = "principals.ledger_facts"


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("naive datetime")
    return now


def local_principal(app: App) -> Principal:
    """The local OS user (``--actor`` or the login name) as a principal: not authenticated,
    no roles, no permissions. Local-mode commands are not authorized by role; whatever
    reports on them (controls, the server) must call them not authenticated."""
    return Principal(name=app.actor, kind=AccountKind.HUMAN, method=AuthMethod.LOCAL_OS_USER)


def authorize(
    principal: Principal, permission: Permission, *, self_service_for: str | None = None
) -> None:
    """Return when ``principal`` may do ``permission``; raise :class:`AccessDenied` (exit 2)
    otherwise. ``self_service_for`` names the account an operation acts on when its owner may
    do it without the permission (their own password): an authenticated principal of that
    name passes. Nothing else passes: no permission is held by default, and the local OS
    user holds none."""
    if principal.holds(permission):
        return
    if (
        self_service_for is not None
        and principal.authenticated
        and principal.name == self_service_for
    ):
        return
    if not principal.authenticated:
        raise AccessDenied(
            f"{permission.value} needs an authenticated identity; {principal.name!r} is the "
            "local OS user, whom affidavit does not verify",
            hint="act as an account that holds it: --as NAME (docs/identities.md)",
        )
    raise AccessDenied(
        f"{principal.name!r} may not {permission.value}: none of its roles grants it",
        hint="an administrator can grant a role that holds it (docs/identities.md lists them)",
    )


def require_fresh_mfa(principal: Principal, *, now: datetime | None = None) -> None:
    """Raise :class:`StepUpRequired` unless the principal passed a TOTP check (at login or by
    :func:`step_up`) within :data:`STEP_UP_WINDOW`."""
    at = _now(now)
    mfa = principal.mfa_at
    if mfa is None or not (at - STEP_UP_WINDOW <= mfa <= at + timedelta(seconds=5)):
        raise StepUpRequired(
            f"{principal.name!r} must confirm a current TOTP code first (step-up MFA)",
            hint="confirm a TOTP code (step-up) and retry within "
            f"{int(STEP_UP_WINDOW.total_seconds() // 60)} minutes",
        )


@dataclass(frozen=True, slots=True)
class _LedgerFacts:
    """What the ledger says of accounts, as of its newest entry among the actions read
    (``mark``: its seq and leaf hash; None when there is none)."""

    mark: tuple[int, bytes] | None
    held: Mapping[tuple[str, Role], bool]
    services: frozenset[str]


def _read_facts(uow: UnitOfWork, mark: tuple[int, bytes] | None) -> _LedgerFacts:
    """Read the facts from the ledger: one query per action; an entry that does not parse is
    skipped (``ledger verify`` reports it)."""
    events = [e for action in _ROLE_ACTIONS for e in read_events(uow.ledger, action)]
    held: dict[tuple[str, Role], bool] = {}
    for event in sorted(events, key=lambda e: e.seq):
        account_id = event.details.get("account_id")
        try:
            role = Role(str(event.details.get("role")))
        except ValueError:
            continue
        if isinstance(account_id, str):
            held[(account_id, role)] = event.action != "role.revoked"
    services = frozenset(
        str(e.details.get("account_id"))
        for action in _ACCOUNT_ACTIONS
        for e in read_events(uow.ledger, action)
        if e.details.get("kind") == AccountKind.SERVICE.value
    )
    return _LedgerFacts(mark=mark, held=MappingProxyType(held), services=services)


def _ledger_facts(uow: UnitOfWork) -> _LedgerFacts:
    """The facts as of this unit of work's own reading of the ledger: those kept for the
    catalog when its newest entry among the actions read is still the one they were read at
    (same seq, same leaf hash), else read now (and kept, when read by a reader: a writer's
    transaction may be appending events it has not committed)."""
    if uow.read_only:
        seen = uow.memo.get(_MEMO_KEY)  # a reader's snapshot does not move
        if isinstance(seen, _LedgerFacts):
            return seen
    mark = uow.ledger.newest_of((*_ROLE_ACTIONS, *_ACCOUNT_ACTIONS))
    kept = uow.catalog_memo.get(_MEMO_KEY)
    if isinstance(kept, _LedgerFacts) and kept.mark == mark:
        facts = kept
    else:
        facts = _read_facts(uow, mark)
        if uow.read_only:
            uow.catalog_memo[_MEMO_KEY] = facts
    if uow.read_only:
        uow.memo[_MEMO_KEY] = facts
    return facts


def ledger_roles(uow: UnitOfWork) -> dict[tuple[str, Role], bool]:
    """Whether the ledger's newest ``identity.bootstrapped`` / ``role.granted`` /
    ``role.revoked`` event for each (account id, role) grants it (an entry that does not
    parse is skipped: ``ledger verify`` reports it). Read once per change of those events
    (see the module docstring)."""
    return dict(_ledger_facts(uow).held)


def ledger_services(uow: UnitOfWork) -> frozenset[str]:
    """The ids of the accounts the ledger's ``account.created`` events made service accounts
    (an entry that does not parse is skipped: ``ledger verify`` reports it). Read once per
    change of the events :func:`ledger_roles` reads and of these."""
    return _ledger_facts(uow).services


def is_service(uow: UnitOfWork, account: Account, services: frozenset[str] | None = None) -> bool:
    """Whether ``account`` is a service account, by its catalog row **or** by the ledger
    event that created it (``services``: :func:`ledger_services`, read here when not given):
    a row edited from service to human behind affidavit's back stays a service account."""
    if account.kind is AccountKind.SERVICE:
        return True
    if services is None:
        services = ledger_services(uow)
    return account.id in services


def vouched_roles(
    uow: UnitOfWork,
    account: Account,
    held: Mapping[tuple[str, Role], bool] | None = None,
    services: frozenset[str] | None = None,
    *,
    rows: frozenset[Role] | None = None,
) -> frozenset[Role]:
    """The roles ``account`` holds: those with a catalog row (``rows``: read here when not
    given) that the ledger's newest grant or revocation event for that account and role
    confirms (``held``: :func:`ledger_roles`, read here when not given); for a service
    account (:func:`is_service`) never a human-only role."""
    if rows is None:
        rows = uow.identities.roles(account.id)
    if not rows:
        return frozenset()
    vouched = held if held is not None else _ledger_facts(uow).held
    roles = frozenset(r for r in rows if vouched.get((account.id, r), False))
    if is_service(uow, account, services):
        roles -= HUMAN_ONLY_ROLES
    return roles


def vouched_holders(uow: UnitOfWork, role: Role) -> list[str]:
    """The ids of the enabled accounts that hold ``role`` as the ledger confirms it
    (:func:`vouched_roles`): a grant row inserted behind affidavit's back does not make
    another administrator, so it cannot let the last real one go."""
    facts = _ledger_facts(uow)
    ids = uow.identities
    return [
        account_id
        for account_id in ids.holders(role)
        if role in vouched_roles(uow, ids.account_by_id(account_id), facts.held, facts.services)
    ]
