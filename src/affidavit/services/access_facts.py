"""Gather the :class:`~affidavit.policy.facts.AccessFacts` the access controls evaluate, from
the ledger alone (never from the catalog's account, grant or TOTP rows, which anyone who can
write the database could edit):

- accounts: ``identity.bootstrapped`` / ``account.created`` (name, kind), ``account.disabled``;
  roles: the newest ``identity.bootstrapped`` / ``role.granted`` / ``role.revoked`` event of
  each (account, role) (:func:`~affidavit.services.principals.ledger_roles`); MFA:
  ``identity.totp_enrolled`` not followed by ``identity.totp_reset``, or an
  ``account.oidc_linked``;
- access reviews: the ``access_review.*`` events, folded (:mod:`affidavit.models.access_review`);
- the events the controls report: ``approval.waived``; the gated operations' own events done
  without an authenticated identity (no ``details.auth``, or ``local-os-user``: local mode);
  gated and critical events done with ``details.auth`` = ``password`` (no MFA);
  ``identity.break_glass``.

An entry that does not parse is left out (``ledger verify`` reports it, so ``ledger.integrity``
fails in the same check).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from affidavit.catalog.store import UnitOfWork
from affidavit.models.identity import AccountKind, AuthMethod
from affidavit.models.ledger import Event
from affidavit.policy.facts import (
    CRITICAL_ACTIONS,
    LOCAL_MODE_GATED_ACTIONS,
    AccessEventFacts,
    AccessFacts,
    AccountFacts,
)
from affidavit.services.access_reviews import read_reviews
from affidavit.services.policy_vouch import event_time, read_events
from affidavit.services.principals import ledger_roles

_LOCAL = AuthMethod.LOCAL_OS_USER.value


def _events(uow: UnitOfWork, actions: Iterable[str]) -> list[Event]:
    return sorted(
        (e for action in actions for e in read_events(uow.ledger, action)), key=lambda e: e.seq
    )


def _auth(event: Event) -> str | None:
    auth = event.details.get("auth")
    return auth if isinstance(auth, str) and auth != _LOCAL else None


def _fact(event: Event, note: str = "") -> AccessEventFacts:
    return AccessEventFacts(
        seq=event.seq,
        at=event_time(event),
        action=event.action,
        actor=event.actor,
        subject=event.subject,
        auth=_auth(event),
        note=note,
    )


def _accounts(uow: UnitOfWork) -> tuple[AccountFacts, ...]:
    made: dict[str, tuple[str, bool, int]] = {}  # id -> (name, human, seq)
    for event in _events(uow, ("identity.bootstrapped", "account.created")):
        account_id = event.details.get("account_id")
        if isinstance(account_id, str) and account_id not in made:
            human = event.details.get("kind", AccountKind.HUMAN.value) != AccountKind.SERVICE.value
            made[account_id] = (event.subject.removeprefix("account:"), human, event.seq)
    disabled = {_id(e) for e in read_events(uow.ledger, "account.disabled")}
    totp: dict[str, bool] = {}
    for event in _events(uow, ("identity.totp_enrolled", "identity.totp_reset")):
        totp[_id(event)] = event.action == "identity.totp_enrolled"
    oidc = {
        _id(e): bool(e.details.get("subject"))
        for e in _events(uow, ("account.oidc_linked",))  # the newest link of each wins
    }
    held: dict[str, set[str]] = {}
    for (account_id, role), granted in ledger_roles(uow).items():
        if granted:
            held.setdefault(account_id, set()).add(role.value)
    return tuple(
        AccountFacts(
            name=name,
            id=account_id,
            human=human,
            disabled=account_id in disabled,
            roles=frozenset(held.get(account_id, ())),
            totp=totp.get(account_id, False),
            oidc=oidc.get(account_id, False),
            seq=seq,
        )
        for account_id, (name, human, seq) in made.items()
    )


def _id(event: Event) -> str:
    value: Any = event.details.get("account_id")
    return value if isinstance(value, str) else ""


def gather_access_facts(uow: UnitOfWork) -> AccessFacts:
    """Everything the access controls need, from the ledger (see the module docstring)."""
    waivers = tuple(
        _fact(e, f"{e.details.get('operation', '?')}: {e.details.get('waiver', '')}")
        for e in _events(uow, ("approval.waived",))
    )
    gated = _events(uow, CRITICAL_ACTIONS)
    local = tuple(
        _fact(e) for e in gated if e.action in LOCAL_MODE_GATED_ACTIONS and _auth(e) is None
    )
    password = tuple(_fact(e) for e in gated if _auth(e) == AuthMethod.PASSWORD.value)
    glass = tuple(
        _fact(
            e,
            f"reason: {e.details.get('reason', '')}; by the OS user "
            f"{e.details.get('os_user', e.actor)}",
        )
        for e in _events(uow, ("identity.break_glass",))
    )
    reviews = tuple(sorted(read_reviews(uow).values(), key=lambda r: r.seq))
    return AccessFacts(
        accounts=_accounts(uow),
        reviews=reviews,
        waivers=waivers,
        local_gated=local,
        password_critical=password,
        break_glass=glass,
    )
