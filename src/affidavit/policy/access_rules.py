"""The rules of the access controls (``access.*``) over :class:`~affidavit.policy.facts.
AccessFacts`: access reviews, least privilege, MFA and separation of duties. Registered with
the other rules in :mod:`affidavit.policy.rules`; like them they yield every failing subject.

"The period" of these controls is the policy's ``access_review_max_days`` (a policy-wide key
under ``[policy]``, default 90): a review must have been closed within it, and a waived
approval, a gated operation done in local mode, a critical action on a password alone and a
break-glass are reported for as long as it covers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from affidavit.models.access_review import AccessReview, Verdict
from affidavit.models.permissions import Role, conflicting_duties
from affidavit.policy.document import Policy
from affidavit.policy.facts import AccessEventFacts, AccountFacts, Facts

if TYPE_CHECKING:
    from affidavit.policy.rules import ControlResult


class Context(Protocol):
    """What the access rules need of :class:`affidavit.policy.rules._Context`."""

    facts: Facts
    policy: Policy | None
    now: datetime

    def ok(self, control: str, subject: str, message: str, **kw: Any) -> ControlResult: ...

    def fail(self, control: str, subject: str, message: str, **kw: Any) -> ControlResult: ...


def _period(ctx: Context) -> timedelta:
    assert ctx.policy is not None
    return timedelta(days=ctx.policy.access_review_max_days)


def _days(ctx: Context) -> int:
    assert ctx.policy is not None
    return ctx.policy.access_review_max_days


def _ago(now: datetime, then: datetime) -> str:
    days = max(0.0, (now - then).total_seconds()) / 86400
    return f"{days:.1f} days" if days >= 1 else f"{days * 24:.1f} h"


def _holders(ctx: Context) -> list[AccountFacts]:
    """Enabled accounts that hold a role, as the ledger says."""
    return [a for a in ctx.facts.access.accounts if a.roles and not a.disabled]


def _roles(account: AccountFacts) -> set[Role]:
    known = {r.value for r in Role}
    return {Role(r) for r in account.roles if r in known}


def _newest_closed(ctx: Context) -> AccessReview | None:
    """The review closed last (None: none was closed)."""
    closed = [(r.closed.at, r.seq, r) for r in ctx.facts.access.reviews if r.closed is not None]
    return max(closed, key=lambda c: (c[0], c[1]))[2] if closed else None


def _recent(ctx: Context, events: tuple[AccessEventFacts, ...]) -> list[AccessEventFacts]:
    period = _period(ctx)
    return sorted((e for e in events if ctx.now - e.at <= period), key=lambda e: e.seq)


def access_reviewed(ctx: Context) -> Iterator[ControlResult]:
    """A review closed within the period, whose events the rules accept; not applicable while
    no enabled account holds a role."""
    cid = "access.reviewed"
    holders = _holders(ctx)
    if not holders:
        return
    period, days = _period(ctx), _days(ctx)
    review = _newest_closed(ctx)
    if review is None or review.closed is None:
        yield ctx.fail(cid, "access-review", f"no access review was ever closed; "
                       f"{len(holders)} account(s) hold roles (period {days} days)")  # fmt: skip
        return
    closed = review.closed
    evidence = [f"ledger:{review.seq}", f"ledger:{closed.seq}"]
    decided = len(review.decisions)
    text = (
        f"review {review.id} (started by {review.started_by}, closed by {closed.by} "
        f"{_ago(ctx.now, closed.at)} ago): {len(review.grants)} grant(s) of "
        f"{len(review.accounts)} account(s), {decided} decided"
    )
    unreviewed = sorted(a.name for a in holders if review.usage(a.name) is None)
    if unreviewed:
        text += f"; not in it (roles granted since): {', '.join(unreviewed)}"
    if review.problems:
        yield ctx.fail(cid, "access-review", f"{text}; its events hold steps the rules refuse: "
                       f"{'; '.join(review.problems)}", evidence=evidence)  # fmt: skip
    elif ctx.now - closed.at <= period:
        yield ctx.ok(cid, "access-review", f"{text} (period {days} days)", evidence=evidence)
    else:
        yield ctx.fail(cid, "access-review", f"{text}, beyond the period of {days} days",
                       evidence=evidence)  # fmt: skip


def least_privilege(ctx: Context) -> Iterator[ControlResult]:
    """Per enabled account holding a role: no duties that must stay apart, and after the
    newest closed review no unused role nobody decided on and no revocation decided but not
    done."""
    cid = "access.least_privilege"
    review = _newest_closed(ctx)
    for account in sorted(_holders(ctx), key=lambda a: a.name):
        held = _roles(account)
        problems = [f"holds {' + '.join(sorted(r.value for r in held))}, so it {conflict}"
                    for conflict in conflicting_duties(held)]  # fmt: skip
        evidence = [f"ledger:{account.seq}"]
        if review is not None and review.closed is not None:
            evidence.append(f"ledger:{review.closed.seq}")
            outcomes = {(o.account, o.role): o for o in review.closed.outcomes}
            for name, role in review.unused_grants:
                if name == account.name and role in held and (name, role) not in review.decisions:
                    problems.append(f"role {role.value} was unused in access review {review.id} "
                                    "and nobody decided on it")  # fmt: skip
            for (name, role), decision in review.decisions.items():
                if name != account.name or role not in held:
                    continue
                if decision.verdict is Verdict.REVOKE:
                    done = outcomes.get((name, role))
                    how = f"{done.outcome.value}" if done else "not applied"
                    if done is not None and done.request:
                        how += f" as request {done.request}"
                    problems.append(f"access review {review.id} decided to revoke role "
                                    f"{role.value}, still held ({how})")  # fmt: skip
        roles = ", ".join(sorted(r.value for r in held))
        if problems:
            yield ctx.fail(cid, account.subject, f"roles {roles}: {'; '.join(problems)}",
                           evidence=evidence)  # fmt: skip
        else:
            reviewed = f"; reviewed in {review.id}" if review is not None else ""
            yield ctx.ok(cid, account.subject, f"roles {roles}: no duties that must stay "
                         f"apart, no unused role left undecided{reviewed}",
                         evidence=evidence)  # fmt: skip


def mfa_enforced(ctx: Context) -> Iterator[ControlResult]:
    """Every enabled person holding a role has TOTP or single sign-on; no gated or critical
    action in the period by an identity that logged in with a password alone."""
    cid = "access.mfa_enforced"
    for account in sorted(_holders(ctx), key=lambda a: a.name):
        if not account.human:
            continue  # service accounts authenticate with tokens only and approve nothing
        roles = ", ".join(sorted(account.roles))
        evidence = [f"ledger:{account.seq}"]
        if account.totp or account.oidc:
            how = "TOTP" if account.totp else "single sign-on through an OpenID provider"
            yield ctx.ok(cid, account.subject, f"holds {roles}; MFA by {how}",
                         evidence=evidence)  # fmt: skip
        else:
            yield ctx.fail(cid, account.subject, f"holds {roles} but has neither TOTP nor "
                           "single sign-on: it cannot pass a step-up MFA check",
                           evidence=evidence)  # fmt: skip
    for event in _recent(ctx, ctx.facts.access.password_critical):
        yield ctx.fail(cid, event.ref, f"{event.action} of {event.subject} by {event.actor} "
                       "with a password alone (no MFA)", evidence=[event.ref])  # fmt: skip


def segregation_of_duties(ctx: Context) -> Iterator[ControlResult]:
    """Every waived approval, every gated operation done in local mode (not authenticated) and
    every break-glass in the period is a failure of its own (an exception may accept one, by
    its subject ``ledger:SEQ``); none at all passes."""
    cid = "access.segregation_of_duties"
    access, days = ctx.facts.access, _days(ctx)
    found = 0
    for event in _recent(ctx, access.waivers):
        found += 1
        yield ctx.fail(cid, event.ref, f"approval waived for {event.subject} (asked by "
                       f"{event.actor}): {event.note}", evidence=[event.ref])  # fmt: skip
    for event in _recent(ctx, access.local_gated):
        found += 1
        yield ctx.fail(cid, event.ref, f"{event.action} of {event.subject} by {event.actor!r}: "
                       "not authenticated (local mode): no approval was enforced",
                       evidence=[event.ref])  # fmt: skip
    for event in _recent(ctx, access.break_glass):
        found += 1
        yield ctx.fail(cid, event.ref, f"break-glass: {event.subject} made an administrator "
                       f"on the host without approval; {event.note}",
                       evidence=[event.ref])  # fmt: skip
    if not found:
        yield ctx.ok(cid, "access-events", "no waived approval, gated operation in local mode "
                     f"or break-glass in the last {days} days")  # fmt: skip
