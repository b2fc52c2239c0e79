"""Access reviews: who holds which role, which permissions they really used, and a person's
decision to keep or revoke each grant.

A review is nothing but its ledger events, like an approval request
(:mod:`affidavit.models.approval`):

- ``access_review.started`` holds the snapshot: every account holding a role (as the ledger
  vouches for it), the permissions it used in the look-back window (from the access log and
  the ledger's authenticated events) and so its unused roles and permissions, the privilege
  creep the review is about;
- ``access_review.decided``: one person's decision on one grant (``keep`` or ``revoke``, with a
  justification); a later decision on the same grant replaces an earlier one while the review
  is open;
- ``access_review.closed``: the outcome of every grant, with the approval request of each
  revocation that waits for another administrator.

:func:`fold` rebuilds the reviews from those events and applies the rules again, so a step the
rules forbid counts for nothing even when it is in the ledger: a decision by the reviewed
account itself (or by an account linked to its identity-provider subject), a decision on a
grant the review does not list, any step after the close, a second close.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from affidavit.errors import InputError
from affidavit.models.identity import AccountKind
from affidavit.models.ledger import Event
from affidavit.models.permissions import ROLES, Permission, Role, permissions_of

STARTED: Final = "access_review.started"
DECIDED: Final = "access_review.decided"
CLOSED: Final = "access_review.closed"
ACCESS_REVIEW_ACTIONS: Final = (STARTED, DECIDED, CLOSED)
SUBJECT_PREFIX: Final = "access-review:"
MIN_LOOKBACK_DAYS: Final = 1
MAX_LOOKBACK_DAYS: Final = 3660
MAX_JUSTIFICATION: Final = 500


class Verdict(StrEnum):
    """A reviewer's decision on one grant."""

    KEEP = "keep"
    REVOKE = "revoke"


class Outcome(StrEnum):
    """What closing a review did with one grant."""

    KEPT = "kept"  # decided keep
    REVOKED = "revoked"  # decided revoke, and revoked now (the rule asked for no approver, or
    #                      nobody could approve: a recorded waiver)
    PENDING = "pending"  # decided revoke: the revocation waits for another administrator
    NOT_HELD = "not-held"  # decided revoke, but the account no longer held the role
    REFUSED = "refused"  # decided revoke, and the revocation was refused (the last admin...)
    UNDECIDED = "undecided"  # nobody decided: the grant stays, the controls report it if unused


def _json_time(value: datetime) -> str:
    return value.isoformat()


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise TypeError("not a time")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time without an offset")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUsage:
    """One account in a review: the roles it held when the review started, the permissions it
    used in the look-back window, and when it last used one."""

    account: str
    account_id: str
    kind: AccountKind
    disabled: bool
    roles: tuple[Role, ...]
    used: frozenset[Permission]
    last_used: str | None = None  # RFC 3339 (UTC)
    oidc: tuple[str, str] | None = None  # (issuer, subject) of its single sign-on link

    @property
    def held(self) -> frozenset[Permission]:
        """What its roles let it do."""
        return permissions_of(set(self.roles))

    def role_used(self, role: Role) -> bool:
        """Whether it used any permission of ``role`` in the window."""
        return bool(ROLES[role] & self.used)

    @property
    def unused_roles(self) -> tuple[Role, ...]:
        """Roles none of whose permissions it used in the window (privilege creep)."""
        return tuple(r for r in self.roles if not self.role_used(r))

    @property
    def unused_permissions(self) -> tuple[Permission, ...]:
        """Permissions its roles give that it did not use in the window."""
        return tuple(sorted(self.held - self.used))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (also the snapshot in ``access_review.started``)."""
        return {
            "account": self.account,
            "account_id": self.account_id,
            "kind": self.kind.value,
            "disabled": self.disabled,
            "roles": [r.value for r in self.roles],
            "used": sorted(p.value for p in self.used),
            "unused_roles": [r.value for r in self.unused_roles],
            "unused_permissions": [p.value for p in self.unused_permissions],
            "last_used": self.last_used,
            "oidc": list(self.oidc) if self.oidc is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccountUsage:
        """The account ``data`` describes (raises KeyError, TypeError or ValueError)."""
        roles = data["roles"]
        used = data["used"]
        oidc = data.get("oidc")
        if not isinstance(roles, list) or not isinstance(used, list):
            raise TypeError("roles and used are lists")
        last = data.get("last_used")
        return cls(
            account=str(data["account"]),
            account_id=str(data["account_id"]),
            kind=AccountKind(str(data["kind"])),
            disabled=bool(data["disabled"]),
            roles=tuple(Role(str(r)) for r in roles),
            used=frozenset(Permission(str(p)) for p in used),
            last_used=last if isinstance(last, str) else None,
            oidc=(str(oidc[0]), str(oidc[1]))
            if isinstance(oidc, list) and len(oidc) == 2
            else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A reviewer's decision on one grant; ``seq`` is its ledger event."""

    account: str
    role: Role
    verdict: Verdict
    justification: str
    by: str
    by_id: str
    at: datetime
    seq: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "account": self.account,
            "role": self.role.value,
            "decision": self.verdict.value,
            "justification": self.justification,
            "by": self.by,
            "at": _json_time(self.at),
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantOutcome:
    """What closing the review did with one grant."""

    account: str
    role: Role
    verdict: Verdict | None
    outcome: Outcome
    request: str | None = None  # the approval request of a pending revocation
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (also the ``access_review.closed`` event's list)."""
        return {
            "account": self.account,
            "role": self.role.value,
            "decision": self.verdict.value if self.verdict is not None else None,
            "outcome": self.outcome.value,
            "request": self.request,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GrantOutcome:
        """The outcome ``data`` describes (raises KeyError, TypeError or ValueError)."""
        verdict = data.get("decision")
        request = data.get("request")
        return cls(
            account=str(data["account"]),
            role=Role(str(data["role"])),
            verdict=Verdict(str(verdict)) if verdict is not None else None,
            outcome=Outcome(str(data["outcome"])),
            request=str(request) if request is not None else None,
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Closure:
    """The close of a review: who, when, and each grant's outcome."""

    by: str
    by_id: str
    at: datetime
    seq: int
    outcomes: tuple[GrantOutcome, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "by": self.by,
            "at": _json_time(self.at),
            "seq": self.seq,
            "outcomes": [o.to_json() for o in self.outcomes],
        }


Grant = tuple[str, Role]
"""(account name, role): one grant under review."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessReview:
    """One access review, as its ledger events tell it."""

    id: str
    started_by: str
    started_by_id: str
    started_at: datetime
    seq: int  # access_review.started
    lookback_days: int
    window_from: datetime
    accounts: tuple[AccountUsage, ...]
    expired_entries: int = 0  # access-log entries of the window whose payload had expired
    unmapped: tuple[str, ...] = ()  # access-log actions that name no known route
    decisions: Mapping[Grant, Decision] = field(default_factory=lambda: MappingProxyType({}))
    closed: Closure | None = None
    problems: tuple[str, ...] = ()  # events that did not fit the rules (not counted)

    @property
    def grants(self) -> tuple[Grant, ...]:
        """Every grant under review, in the snapshot's order."""
        return tuple((a.account, r) for a in self.accounts for r in a.roles)

    def usage(self, account: str) -> AccountUsage | None:
        """The snapshot of ``account`` (None: not in the review)."""
        return next((a for a in self.accounts if a.account == account), None)

    @property
    def unused_grants(self) -> tuple[Grant, ...]:
        """Grants whose role the account did not use in the window (privilege creep)."""
        return tuple((a.account, r) for a in self.accounts for r in a.unused_roles)

    @property
    def undecided(self) -> tuple[Grant, ...]:
        """Grants nobody decided on."""
        return tuple(g for g in self.grants if g not in self.decisions)

    @property
    def state(self) -> str:
        """``open`` or ``closed``."""
        return "closed" if self.closed is not None else "open"

    def findings(self) -> list[str]:
        """The privilege-creep findings of the snapshot, one line each."""
        out: list[str] = []
        for a in self.accounts:
            for role in a.unused_roles:
                out.append(
                    f"{a.account}: role {role.value} unused in the last {self.lookback_days} days"
                )
            if a.unused_permissions and len(a.unused_roles) < len(a.roles):
                out.append(
                    f"{a.account}: {len(a.unused_permissions)} of {len(a.held)} permissions "
                    f"unused in the last {self.lookback_days} days: "
                    + ", ".join(p.value for p in a.unused_permissions)
                )
            if a.disabled and a.roles:
                out.append(f"{a.account}: disabled but holds {len(a.roles)} role(s)")
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "state": self.state,
            "started_by": self.started_by,
            "started_at": _json_time(self.started_at),
            "seq": self.seq,
            "lookback_days": self.lookback_days,
            "window": {"from": _json_time(self.window_from), "to": _json_time(self.started_at)},
            "accounts": [a.to_json() for a in self.accounts],
            "findings": self.findings(),
            "expired_entries": self.expired_entries,
            "unmapped_routes": list(self.unmapped),
            "decisions": [d.to_json() for d in self.decisions.values()],
            "undecided": [{"account": a, "role": r.value} for a, r in self.undecided],
            "closed": self.closed.to_json() if self.closed is not None else None,
            "problems": list(self.problems),
        }


def review_id_of(event: Event) -> str:
    """The review an ``access_review.*`` event is about (its subject without the prefix)."""
    return event.subject.removeprefix(SUBJECT_PREFIX)


def check_lookback(days: int) -> int:
    """``days`` when it is a valid look-back window; raises :class:`InputError`."""
    if isinstance(days, bool) or not MIN_LOOKBACK_DAYS <= days <= MAX_LOOKBACK_DAYS:
        raise InputError(
            f"a look-back window of {days} days is not between {MIN_LOOKBACK_DAYS} and "
            f"{MAX_LOOKBACK_DAYS}",
            hint="e.g. --lookback-days 90",
        )
    return days


def check_justification(text: str) -> str:
    """``text`` on one line; raises :class:`InputError` when empty or too long."""
    line = " ".join(text.split())
    if not line:
        raise InputError("a decision needs a justification", hint="--justification TEXT")
    if len(line) > MAX_JUSTIFICATION:
        raise InputError(f"a justification holds at most {MAX_JUSTIFICATION} characters")
    return line


def _started(event: Event) -> AccessReview:
    d = event.details
    accounts = d["accounts"]
    window = d["window"]
    unmapped = d.get("unmapped_routes", [])
    if not isinstance(accounts, list) or not isinstance(window, Mapping):
        raise TypeError("accounts is a list and window an object")
    if not isinstance(unmapped, list):
        raise TypeError("unmapped_routes is a list")
    lookback = d["lookback_days"]
    if isinstance(lookback, bool) or not isinstance(lookback, int):
        raise TypeError("lookback_days is an integer")
    expired = d.get("expired_entries", 0)
    return AccessReview(
        id=review_id_of(event),
        started_by=event.actor,
        started_by_id=str(d["by_id"]),
        started_at=_parse_time(d.get("at", event.time)),
        seq=event.seq,
        lookback_days=lookback,
        window_from=_parse_time(window["from"]),
        accounts=tuple(AccountUsage.from_json(a) for a in accounts),
        expired_entries=expired if isinstance(expired, int) else 0,
        unmapped=tuple(str(u) for u in unmapped),
    )


@dataclass(frozen=True, slots=True)
class Folded:
    """The reviews a ledger's ``access_review.*`` events tell of, by id, and the events that
    tell of none (they count for nothing)."""

    reviews: dict[str, AccessReview]
    orphans: tuple[str, ...]


def fold(events: Iterable[Event]) -> Folded:
    """The reviews ``events`` (any ``access_review.*`` events, in any order) tell of; only
    what the rules allow counts (see the module docstring)."""
    reviews: dict[str, AccessReview] = {}
    orphans: list[str] = []
    for event in sorted(events, key=lambda e: e.seq):
        review_id = review_id_of(event)
        if event.action == STARTED:
            if review_id in reviews:
                orphans.append(f"{STARTED} #{event.seq} starts review {review_id} again")
                continue
            try:
                reviews[review_id] = _started(event)
            except (KeyError, TypeError, ValueError, IndexError):
                orphans.append(f"{STARTED} #{event.seq} does not describe a review")
            continue
        review = reviews.get(review_id)
        if review is None:
            orphans.append(f"{event.action} #{event.seq} names no review")
            continue
        try:
            reviews[review_id] = _apply(review, event)
        except (KeyError, TypeError, ValueError, IndexError):
            reviews[review_id] = replace(
                review,
                problems=(*review.problems, f"{event.action} #{event.seq} does not parse"),
            )
    return Folded(reviews, tuple(orphans))


def _apply(review: AccessReview, event: Event) -> AccessReview:
    d = event.details

    def refused(why: str) -> AccessReview:
        return replace(review, problems=(*review.problems, f"{event.action} #{event.seq}: {why}"))

    if review.closed is not None:
        return refused("after the review was closed")
    at = _parse_time(d.get("at", event.time))
    by_id = str(d["by_id"])
    if event.action == CLOSED:
        outcomes = d["outcomes"]
        if not isinstance(outcomes, list):
            raise TypeError("outcomes is a list")
        return replace(
            review,
            closed=Closure(
                by=event.actor,
                by_id=by_id,
                at=at,
                seq=event.seq,
                outcomes=tuple(GrantOutcome.from_json(o) for o in outcomes),
            ),
        )
    if event.action != DECIDED:
        return refused("not a review step")
    account, role = str(d["account"]), Role(str(d["role"]))
    usage = review.usage(account)
    if usage is None or role not in usage.roles:
        return refused(f"{account} / {role.value} is not a grant of this review")
    oidc = d.get("by_oidc")
    by_oidc = (str(oidc[0]), str(oidc[1])) if isinstance(oidc, list) and len(oidc) == 2 else None
    if (
        by_id == usage.account_id
        or event.actor == usage.account
        or (by_oidc is not None and by_oidc == usage.oidc)
    ):
        return refused(f"{event.actor} decided on its own access")
    justification = str(d.get("justification", "")).strip()
    if not justification:
        return refused("a decision without a justification")
    decision = Decision(
        account=account,
        role=role,
        verdict=Verdict(str(d["decision"])),
        justification=justification,
        by=event.actor,
        by_id=by_id,
        at=at,
        seq=event.seq,
    )
    decisions = {**review.decisions, (account, role): decision}
    return replace(review, decisions=MappingProxyType(decisions))
