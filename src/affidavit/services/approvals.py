"""Approvals are what the ledger says, not what a catalog row says.

A policy version or an exception counts as approved only when the ledger holds the approval
event, made by an actor other than the proposer's or requester's own event, for the same
content. Someone who can edit the catalog but not forge ledger events (they would break its
signed checkpoints) therefore cannot approve anything by editing a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from affidavit.catalog.store import UnitOfWork
from affidavit.models.governance import (
    ExceptionStatus,
    PolicyException,
    PolicyVersion,
    same_person,
)
from affidavit.models.ledger import Event


def _events(uow: UnitOfWork, actions: Iterable[str]) -> dict[str, list[Event]]:
    by_subject: dict[str, list[Event]] = {}
    for action in actions:
        for stored in uow.ledger.find(action=action):
            event = Event.from_canonical(stored.entry)
            by_subject.setdefault(event.subject, []).append(event)
    return by_subject


def _first(events: list[Event], action: str) -> Event | None:
    return next((e for e in events if e.action == action), None)


def policy_is_backed(uow: UnitOfWork, version: PolicyVersion) -> bool:
    """The version's proposal and approval events exist, name its text's SHA-256, and were
    made by two different people matching the catalog row."""
    events = _events(uow, ("policy.proposed", "policy.approved")).get(
        f"policy:v{version.version}", []
    )
    proposed, approved = _first(events, "policy.proposed"), _first(events, "policy.approved")
    return (
        proposed is not None
        and approved is not None
        and proposed.details.get("sha256") == version.sha256
        and approved.details.get("sha256") == version.sha256
        and same_person(proposed.actor, version.proposed_by)
        and same_person(approved.actor, version.approved_by)
        and not same_person(proposed.actor, approved.actor)
    )


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
