"""Granting and revoking roles, and reading who holds what.

A grant or revocation needs ``role.grant`` and a fresh MFA check by the acting administrator,
who can never grant a role to their own account (another administrator must). A service
account can never be given a human-only role (:data:`~affidavit.models.permissions.
HUMAN_ONLY_ROLES`: every role that approves anything, and the custody roles), and the last
enabled administrator keeps ``admin``. Each is one ledger event, ``role.granted`` or
``role.revoked``, whose seq the grant row keeps: the roles that count are the ones the ledger
confirms (``services.principals.vouched_roles``).

Both are gated operations (:mod:`affidavit.services.requests`): when another administrator
could approve, the call records a request and raises
:class:`~affidavit.errors.ApprovalPending`; the requester executes the approved request
(``affidavit request execute``), which calls these again with its authority.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from affidavit.catalog.store import UnitOfWork
from affidavit.errors import AccessDenied, AlreadyExists, InputError
from affidavit.models.approval import GatedOperation
from affidavit.models.identity import Account, AccountKind, Principal, RoleGrant, account_name
from affidavit.models.permissions import HUMAN_ONLY_ROLES, ROLES, Permission, Role
from affidavit.services.context import App
from affidavit.services.policy_vouch import read_events
from affidavit.services.principals import (
    authorize,
    is_service,
    ledger_roles,
    ledger_services,
    require_fresh_mfa,
    vouched_holders,
    vouched_roles,
)
from affidavit.services.requests import Authority, gate


def _role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InputError(
            f"{str(value)[:40]!r} is not a role",
            hint="roles: " + ", ".join(r.value for r in Role),
        ) from None


def grant_role(
    app: App,
    principal: Principal,
    name: str,
    role: Role | str,
    *,
    authority: Authority | None = None,
    now: datetime | None = None,
) -> RoleGrant:
    """Give account ``name`` the role ``role`` (``role.grant`` with a fresh MFA check; a gated
    operation: another administrator approves it, :mod:`affidavit.services.requests`).
    Refused for one's own account, a disabled account, a role held already, and a
    human-only role for a service account. Recorded ``role.granted``."""
    authorize(principal, Permission.ROLE_GRANT)
    at = now or datetime.now(UTC)
    require_fresh_mfa(principal, now=at)
    target_name = account_name(name)
    wanted = _role(role)
    if target_name == principal.name:
        raise AccessDenied(
            "nobody grants a role to their own account",
            hint="another administrator must grant it",
        )
    with app.read() as uow:  # refused before a request is recorded
        _may_grant(uow, principal, target_name, wanted)
    allowed = gate(
        app,
        GatedOperation.ROLE_GRANT,
        {"account": target_name, "role": wanted.value},
        target=f"account:{target_name}",
        principal=principal,
        authority=authority,
        now=now,
    )
    with app.change() as change:
        change.actor = principal.name
        target = _may_grant(change.uow, principal, target_name, wanted)
        event = change.record(
            "role.granted",
            f"account:{target_name}",
            {
                "account_id": target.id,
                "role": wanted.value,
                "auth": principal.method.value,
                **allowed.event_details(),
            },
        )
        change.uow.identities.add_grant(target.id, wanted, at=at, by=principal.name, seq=event.seq)
        allowed.seal(change)
    return RoleGrant(
        account=target_name, role=wanted, granted_at=at, granted_by=principal.name, seq=event.seq
    )


def _may_grant(uow: UnitOfWork, principal: Principal, target_name: str, wanted: Role) -> Account:
    """The account to be granted ``wanted``; raises when the grant is refused."""
    ids = uow.identities
    target = ids.account(target_name)
    if target.disabled:
        raise InputError(
            f"the account {target_name!r} is disabled", hint="a disabled account gets no role"
        )
    if wanted in HUMAN_ONLY_ROLES and is_service(uow, target):
        raise AccessDenied(
            f"a service account can never hold the role {wanted.value}",
            hint="automation never approves, administers or holds key custody; "
            "give it operator, auditor or viewer",
        )
    if _made_by(uow, principal.name, target_name):
        raise AccessDenied(
            f"{principal.name!r} was created or given a role by {target_name!r}, so it "
            f"cannot grant {target_name!r} a role: one person must not promote themselves "
            "through a second account",
            hint="another administrator, not made by this account, must grant it",
        )
    if wanted in ids.roles(target.id):
        raise AlreadyExists(
            f"{target_name!r} holds the role {wanted.value} already",
            hint="`affidavit role list` shows the grants",
        )
    return target


def _made_by(uow: UnitOfWork, grantor: str, grantee: str) -> bool:
    """Whether the ledger shows ``grantee`` creating the account ``grantor`` or granting it a
    role: then ``grantor`` may be ``grantee``'s second account, and its grant to ``grantee``
    would be a self-grant in disguise."""
    subject = f"account:{grantor}"
    return any(
        event.subject == subject and event.actor == grantee
        for action in ("account.created", "role.granted")
        for event in read_events(uow.ledger, action)
    )


def revoke_role(
    app: App,
    principal: Principal,
    name: str,
    role: Role | str,
    *,
    authority: Authority | None = None,
    now: datetime | None = None,
) -> None:
    """Take the role ``role`` from account ``name`` (``role.grant`` with a fresh MFA check;
    a gated operation, :mod:`affidavit.services.requests`). The last enabled administrator
    keeps ``admin``. Recorded ``role.revoked``."""
    authorize(principal, Permission.ROLE_GRANT)
    at = now or datetime.now(UTC)
    require_fresh_mfa(principal, now=at)
    target_name = account_name(name)
    wanted = _role(role)
    with app.read() as uow:  # refused before a request is recorded
        _may_revoke(uow, target_name, wanted)
    allowed = gate(
        app,
        GatedOperation.ROLE_REVOKE,
        {"account": target_name, "role": wanted.value},
        target=f"account:{target_name}",
        principal=principal,
        authority=authority,
        now=now,
    )
    with app.change() as change:
        change.actor = principal.name
        target = _may_revoke(change.uow, target_name, wanted)
        change.record(
            "role.revoked",
            f"account:{target_name}",
            {
                "account_id": target.id,
                "role": wanted.value,
                "auth": principal.method.value,
                **allowed.event_details(),
            },
        )
        change.uow.identities.remove_grant(target.id, wanted)
        allowed.seal(change)


def _may_revoke(uow: UnitOfWork, target_name: str, wanted: Role) -> Account:
    ids = uow.identities
    target = ids.account(target_name)
    if wanted not in ids.roles(target.id):
        raise InputError(
            f"{target_name!r} does not hold the role {wanted.value}",
            hint="`affidavit role list` shows the grants",
        )
    if wanted is Role.ADMIN and vouched_holders(uow, Role.ADMIN) == [target.id]:
        raise AccessDenied(
            f"{target_name!r} is the last enabled administrator",
            hint="grant admin to another person first",
        )
    return target


@dataclass(frozen=True, slots=True, kw_only=True)
class Holding:
    """What one account holds: the grants whose rows exist, and which of them the ledger
    confirms (the others count for nothing)."""

    account: str
    kind: AccountKind
    disabled: bool
    grants: tuple[RoleGrant, ...]
    effective: frozenset[Role]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the grants, and the roles the ledger confirms (``effective``)."""
        return {
            "account": self.account,
            "kind": self.kind.value,
            "disabled": self.disabled,
            "grants": [g.to_json() for g in self.grants],
            "effective": sorted(r.value for r in self.effective),
        }


def grants_json(holdings: list[Holding]) -> dict[str, Any]:
    """``role list --json``: every role with its permissions, and who holds what."""
    return {
        "roles": {r.value: sorted(p.value for p in ROLES[r]) for r in Role},
        "accounts": [h.to_json() for h in holdings],
    }


def list_grants(app: App, principal: Principal) -> list[Holding]:
    """Every account with its grants and effective roles, by name (``account.read``)."""
    authorize(principal, Permission.ACCOUNT_READ)
    with app.read() as uow:
        grants = uow.identities.grants()
        held, services = ledger_roles(uow), ledger_services(uow)
        out = []
        for account in uow.identities.accounts():
            own = tuple(g for g in grants if g.account == account.name)
            out.append(
                Holding(
                    account=account.name,
                    kind=account.kind,
                    disabled=account.disabled,
                    grants=own,
                    effective=vouched_roles(uow, account, held, services) if own else frozenset(),
                )
            )
        return out


def roles_of(app: App, principal: Principal, name: str) -> frozenset[Role]:
    """The roles account ``name`` holds, as the ledger confirms them (``account.read``, or
    the account itself)."""
    target = account_name(name)
    authorize(principal, Permission.ACCOUNT_READ, self_service_for=target)
    with app.read() as uow:
        return vouched_roles(uow, uow.identities.account(target))
