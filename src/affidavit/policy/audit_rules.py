"""The rule of the ``audit.requests_within_sla`` control over the evidence requests of audit
engagements (:class:`~affidavit.models.audit.EvidenceRequest`, folded from the ledger's
``audit.*`` events). Registered with the other rules in :mod:`affidavit.policy.rules`; it
yields every request that missed its due date."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from affidavit.models.audit import sla_status
from affidavit.policy.access_rules import Context

if TYPE_CHECKING:
    from affidavit.policy.rules import ControlResult


def requests_within_sla(ctx: Context) -> Iterator[ControlResult]:
    """Every evidence request handed in (submitted, and not returned since) by the end of its
    due day passes; one still waiting for its owners after that, or handed in late, fails
    with its id. A request not yet due is not evaluated; none at all: not applicable."""
    cid = "audit.requests_within_sla"
    for request in ctx.facts.audit_requests:
        met, why = sla_status(request, ctx.now)
        if met is None:
            continue
        subject = f"audit-request:{request.id}"
        evidence = [f"ledger:{request.seq}"]
        message = f"{request.title[:80]}: {why} (engagement {request.engagement})"
        if met:
            yield ctx.ok(cid, subject, message, evidence=evidence)
        else:
            yield ctx.fail(cid, subject, message, evidence=evidence)
