"""Approvals are what the ledger says, not what a catalog row says.

A policy version or an exception counts as approved only when the ledger holds the approval
event, made by an actor other than the proposer's or requester's own event, for the same
content. Someone who can edit the catalog but not forge ledger events (they would break its
signed checkpoints) therefore cannot approve anything by editing a row.

The same holds for what was approved: the policy version in force is the newest one the
ledger records approved (not the newest row with an approval), and it is applied only with a
text whose SHA-256 is the one its events recorded; the baseline in force is the newest one a
``baseline.approved`` event records, with the content whose SHA-256 that event recorded. Every
policy or baseline row that disagrees with its events is a
:class:`~affidavit.policy.facts.CatalogMismatch` for ``ledger.integrity``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto.digest import sha256_hex
from affidavit.models.governance import (
    Baseline,
    ExceptionStatus,
    PolicyException,
    PolicyVersion,
    same_person,
)
from affidavit.models.ledger import Event
from affidavit.policy.facts import CatalogMismatch
from affidavit.services.policy_vouch import at_seq, read_events


def _events(uow: UnitOfWork, actions: Iterable[str]) -> dict[str, list[Event]]:
    """The events of ``actions`` by subject (one query per action; an entry that does not
    parse is skipped: ``ledger verify`` reports it)."""
    by_subject: dict[str, list[Event]] = {}
    for action in actions:
        for event in read_events(uow.ledger, action):
            by_subject.setdefault(event.subject, []).append(event)
    return by_subject


def _first(events: list[Event], action: str) -> Event | None:
    return next((e for e in events if e.action == action), None)


def _short(digest: object) -> str:
    return f"{digest[:16]}..." if isinstance(digest, str) else repr(digest)


# -- the policy version in force ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyInForce:
    """The newest policy version the ledger records approved by a second person, and its
    text when the catalog still holds the text that was approved."""

    version: int
    sha256: str  # what policy.proposed and policy.approved recorded
    proposed_by: str  # the actors of those events
    approved_by: str
    seq: int  # policy.approved
    text: str | None  # None: the catalog's text is gone or is not the approved one
    problem: str | None = None  # why ``text`` is None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyStanding:
    """The policy in force as the ledger records it, and every policy row that disagrees with
    its events (for ``ledger.integrity``, subject ``policy:vN``)."""

    in_force: PolicyInForce | None
    mismatches: tuple[CatalogMismatch, ...] = ()


def policy_standing(uow: UnitOfWork) -> PolicyStanding:
    """The policy version in force: the newest one whose ``policy.proposed`` and
    ``policy.approved`` events were made by two different people for the same SHA-256,
    whatever the rows say. And every policy row that disagrees with its events: an approval
    cleared, added or changed in the catalog, a text or SHA-256 altered, a version the ledger
    does not record, a version the catalog lost. Two queries, whatever the number of
    versions."""
    events = _events(uow, ("policy.proposed", "policy.approved"))
    rows = {v.version: v for v in uow.governance.policy_versions()}
    signed: dict[int, tuple[Event | None, Event | None]] = {}
    for subject, own in events.items():
        number = _version_of(subject)
        if number is not None:
            signed[number] = (_first(own, "policy.proposed"), _first(own, "policy.approved"))
    mismatches = []
    for number in sorted(set(rows) | set(signed)):
        proposed, approved = signed.get(number, (None, None))
        messages = list(_policy_differences(rows.get(number), proposed, approved))
        if messages:
            seq = next((e.seq for e in (proposed, approved) if e is not None), None)
            subject = f"policy:v{number}"
            mismatches.append(CatalogMismatch(subject=subject, message="; ".join(messages),
                                              seq=seq))  # fmt: skip
    backed = [n for n, (p, a) in signed.items() if _two_person(p, a)]
    if not backed:
        return PolicyStanding(in_force=None, mismatches=tuple(mismatches))
    number = max(backed)
    proposed, approved = signed[number]
    assert proposed is not None  # _two_person
    assert approved is not None
    digest = str(proposed.details["sha256"])
    row = rows.get(number)
    text, problem = None, None
    if row is None:
        problem = f"the text of version {number} is missing from the catalog"
    elif _text_sha256(row.text) != digest:
        problem = (
            f"the catalog's text of version {number} was altered: its SHA-256 is "
            f"{_short(_text_sha256(row.text))}, not the {_short(digest)} that {at_seq(proposed)} "
            f"and {at_seq(approved)} recorded"
        )
    else:
        text = row.text
    in_force = PolicyInForce(
        version=number,
        sha256=digest,
        proposed_by=proposed.actor,
        approved_by=approved.actor,
        seq=approved.seq,
        text=text,
        problem=problem,
    )
    return PolicyStanding(in_force=in_force, mismatches=tuple(mismatches))


def _text_sha256(text: str) -> str:
    """The SHA-256 ``policy propose`` recorded for a text (of its UTF-8)."""
    return sha256_hex(text.encode("utf-8", "surrogatepass"))


def _version_of(subject: str) -> int | None:
    number = subject.removeprefix("policy:v")
    if number == subject or not number.isdecimal() or len(number) > 12:
        return None
    return int(number)


def _two_person(proposed: Event | None, approved: Event | None) -> bool:
    """Both events exist, by different people, for the same SHA-256."""
    digest = proposed.details.get("sha256") if proposed is not None else None
    return (
        proposed is not None
        and approved is not None
        and isinstance(digest, str)
        and approved.details.get("sha256") == digest
        and not same_person(proposed.actor, approved.actor)
    )


def _policy_differences(
    row: PolicyVersion | None, proposed: Event | None, approved: Event | None
) -> Iterable[str]:
    """Every way a policy row differs from its events."""
    if proposed is None:
        if row is not None:
            approval = " (and approved there)" if row.approved else ""
            yield (f"the catalog holds this version{approval}, but no policy.proposed event "
                   "records it: not counted")  # fmt: skip
        if approved is not None:
            yield f"{at_seq(approved)} approves a version no policy.proposed event records"
        return
    digest = proposed.details.get("sha256")
    if row is None:
        approval = f", approved by {approved.actor!r} ({at_seq(approved)})" if approved else ""
        yield f"missing from the catalog: the ledger records it ({at_seq(proposed)}{approval})"
        return
    if row.sha256 != digest:
        yield (f"the SHA-256 is {_short(row.sha256)} in the catalog but {_short(digest)} in "
               f"{at_seq(proposed)}")  # fmt: skip
    if _text_sha256(row.text) != digest:
        yield (f"the text was altered: its SHA-256 is {_short(_text_sha256(row.text))}, not "
               f"the {_short(digest)} {at_seq(proposed)} recorded")  # fmt: skip
    if not same_person(row.proposed_by, proposed.actor):
        yield (f"the proposer is {row.proposed_by!r} in the catalog but {proposed.actor!r} in "
               f"{at_seq(proposed)}")  # fmt: skip
    if not _two_person(proposed, approved):
        if row.approved:
            yield (f"approved by {row.approved_by!r} in the catalog, but the ledger holds no "
                   "policy.approved of it by a second person for the same content: not "
                   "counted")  # fmt: skip
        return
    assert approved is not None  # _two_person
    if not row.approved:
        yield (f"the approval was cleared in the catalog, but {at_seq(approved)} records it by "
               f"{approved.actor!r}: the ledger's approval counts")  # fmt: skip
    elif not same_person(row.approved_by, approved.actor):
        yield (f"the approver is {row.approved_by!r} in the catalog but {approved.actor!r} in "
               f"{at_seq(approved)}")  # fmt: skip
    elif row.approval_seq != approved.seq:
        yield (f"the approval's ledger seq is {row.approval_seq} in the catalog but "
               f"{approved.seq}")  # fmt: skip


def backed_exceptions(
    uow: UnitOfWork, exceptions: Iterable[PolicyException]
) -> tuple[list[PolicyException], list[str]]:
    """``(usable, rejected ids)``: approved exceptions whose request and approval events
    exist (different people, same control, subject and expiry) and that were not revoked in
    the ledger. Requested or revoked ones are returned unchanged (they excuse nothing)."""
    events = _events(uow, ("exception.requested", "exception.approved", "exception.revoked"))
    usable, rejected = [], []
    for exc in exceptions:
        if exc.status is not ExceptionStatus.APPROVED:
            usable.append(exc)
            continue
        own = events.get(f"exception:{exc.id}", [])
        requested = _first(own, "exception.requested")
        approved = _first(own, "exception.approved")
        ok = (
            requested is not None
            and approved is not None
            and _first(own, "exception.revoked") is None
            and _matches(requested.details, exc)
            and same_person(requested.actor, exc.requested_by)
            and same_person(approved.actor, exc.approved_by)
            and not same_person(requested.actor, approved.actor)
        )
        if ok:
            usable.append(exc)
        else:
            rejected.append(exc.id)
    return usable, rejected


def _matches(details: Mapping[str, Any], exc: PolicyException) -> bool:
    return (
        details.get("control") == exc.control
        and details.get("subject") == exc.subject
        and details.get("expires") == exc.expires_at.isoformat()
    )


# -- the baseline in force ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineStanding:
    """The configuration baseline in force as the ledger records it, and every baseline row
    that disagrees with its ``baseline.approved`` event (for ``ledger.integrity``, subject
    ``baseline:ID``)."""

    baseline: Baseline | None  # the newest approved one, holding the content approved
    problem: str | None = None  # why the newest approved baseline cannot be used
    baseline_id: int | None = None  # the row of the newest approved baseline, if any
    seq: int | None = None  # the newest baseline.approved
    mismatches: tuple[CatalogMismatch, ...] = ()


def baseline_content_sha256(content: Mapping[str, Any]) -> str | None:
    """The SHA-256 of a baseline's canonical JSON (RFC 8785), as ``baseline approve``
    recorded it; None when the content cannot be encoded canonically."""
    try:
        return sha256_hex(rfc8785.dumps(content))
    except (rfc8785.CanonicalizationError, ValueError, TypeError, RecursionError):
        return None


def baseline_standing(uow: UnitOfWork) -> BaselineStanding:
    """The baseline in force: the row of the newest ``baseline.approved`` event (the row's
    ``seq``), used only when its canonical content has the SHA-256 that event recorded. And
    every baseline row that disagrees with its event, a row no event records, and approved
    baselines whose rows are gone. One query."""
    events = read_events(uow.ledger, "baseline.approved")
    by_seq = {e.seq: e for e in events}
    claimed: dict[int, Baseline] = {}  # event seq -> its row
    mismatches = []
    for row in uow.governance.baselines():
        event = by_seq.get(row.seq) if row.seq is not None else None
        messages = []
        if event is None:
            messages.append(f"the catalog holds this baseline (ledger seq {row.seq}), but no "
                            "baseline.approved event records it: not counted")  # fmt: skip
        elif event.seq in claimed:
            messages.append(f"baseline {claimed[event.seq].id} already holds what "
                            f"{at_seq(event)} approved: not counted")  # fmt: skip
        else:
            claimed[event.seq] = row
            messages.extend(_baseline_differences(row, event))
        if messages:
            mismatches.append(CatalogMismatch(subject=f"baseline:{row.id}",
                                              message="; ".join(messages),
                                              seq=event.seq if event else None))  # fmt: skip
    lost = [e for e in events if e.seq not in claimed]
    if lost:
        said = ", ".join(f"the baseline {at_seq(e)} approved (by {e.actor!r})" for e in lost)
        mismatches.append(CatalogMismatch(subject="baseline",
                                          message=f"missing from the catalog: {said}",
                                          seq=lost[-1].seq))  # fmt: skip
    if not events:
        return BaselineStanding(baseline=None, mismatches=tuple(mismatches))
    newest = events[-1]
    current = claimed.get(newest.seq)
    problem = None
    if current is None:
        problem = f"the baseline {at_seq(newest)} approved is missing from the catalog"
    elif (digest := baseline_content_sha256(current.content)) != newest.details.get("sha256"):
        problem = (
            f"baseline {current.id} is not the configuration {at_seq(newest)} approved: its "
            f"content's SHA-256 is {_short(digest)}, not the "
            f"{_short(newest.details.get('sha256'))} recorded (its content was altered in the "
            "catalog)"
        )
    return BaselineStanding(
        baseline=current if problem is None else None,
        problem=problem,
        baseline_id=current.id if current is not None else None,
        seq=newest.seq,
        mismatches=tuple(mismatches),
    )


def _baseline_differences(row: Baseline, event: Event) -> Sequence[str]:
    """Every way a baseline row differs from the event that approved it."""
    signed = event.details.get("sha256")
    out = []
    digest = baseline_content_sha256(row.content)
    if digest != signed:
        out.append(f"its content was altered: the SHA-256 of its canonical JSON is "
                   f"{_short(digest)}, not the {_short(signed)} {at_seq(event)} "
                   "recorded")  # fmt: skip
    if row.sha256 != signed:
        out.append(f"the SHA-256 is {_short(row.sha256)} in the catalog but {_short(signed)} "
                   f"in {at_seq(event)}")  # fmt: skip
    if not same_person(row.approved_by, event.actor):
        out.append(f"the approver is {row.approved_by!r} in the catalog but {event.actor!r} "
                   f"in {at_seq(event)}")  # fmt: skip
    return out
