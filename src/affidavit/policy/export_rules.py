"""The rules of the export controls (``export.*``, issue 17) over
:class:`~affidavit.policy.facts.ExportFacts`: every delivered export was approved by a second
person, minimised, lawful (consent where consent is the legal basis), met its contract, went
to a recipient that proved possession of its key, and met its spec's SLO. Registered with the
other rules in :mod:`affidavit.policy.rules`; each yields every failing export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from affidavit.constants import Classification
from affidavit.models.governance import same_person
from affidavit.policy.access_rules import Context

if TYPE_CHECKING:
    from affidavit.policy.rules import ControlResult


def approved(ctx: Context) -> Iterator[ControlResult]:
    """The spec version approved by someone other than its proposer, and the run approved
    through the multi-party path (a waiver or local mode is a failure)."""
    cid = "export.approved"
    for e in ctx.facts.exports:
        problems = []
        if e.spec_approved_by is None or same_person(e.spec_approved_by, e.spec_proposed_by):
            problems.append(f"spec {e.spec} v{e.version} has no second person's approval")
        if e.approval is None:
            problems.append("the run was not authenticated (local mode): nobody approved it")
        elif e.approval == "waived":
            problems.append("the run's approval was waived (too few people could approve)")
        if problems:
            yield ctx.fail(cid, e.subject, "; ".join(problems), evidence=[f"ledger:{e.seq}"])
        else:
            how = f"request {e.request}" if e.request else f"rule: {e.approval}"
            yield ctx.ok(
                cid,
                e.subject,
                f"spec approved by {e.spec_approved_by}; run {e.approval} ({how})",
                evidence=[f"ledger:{e.seq}"],
            )


def minimised(ctx: Context) -> Iterator[ControlResult]:
    """Something was left behind or transformed: an export of whole, unchanged records
    minimised nothing."""
    cid = "export.minimised"
    for e in ctx.facts.exports:
        if e.fields_dropped == 0 and e.fields_transformed == 0:
            yield ctx.fail(
                cid,
                e.subject,
                "every field of every record left unchanged: the allow-list minimised nothing",
                evidence=[f"ledger:{e.seq}"],
            )
        else:
            yield ctx.ok(
                cid,
                e.subject,
                f"{e.fields_dropped} field value(s) left behind, {e.fields_transformed} "
                "field(s) transformed",
                evidence=[f"ledger:{e.seq}"],
            )


def consent(ctx: Context) -> Iterator[ControlResult]:
    """A purpose and a legal basis; where the basis is consent, the consent list applied."""
    cid = "export.consent"
    for e in ctx.facts.exports:
        if not e.purpose or not e.legal_basis:
            yield ctx.fail(cid, e.subject, "no purpose or legal basis recorded")
        elif e.legal_basis == "consent" and e.consent_sha256 is None:
            yield ctx.fail(cid, e.subject, "legal basis consent, but no consent list applied")
        elif e.consent_sha256 is not None:
            yield ctx.ok(
                cid,
                e.subject,
                f"consent for {e.purpose!r} checked (list {e.consent_sha256[:12]}...)",
                evidence=[f"ledger:{e.seq}"],
            )
        else:
            yield ctx.ok(
                cid,
                e.subject,
                f"purpose {e.purpose!r}, legal basis {e.legal_basis} (not consent)",
                evidence=[f"ledger:{e.seq}"],
            )


def contract_valid(ctx: Context) -> Iterator[ControlResult]:
    """The output met its contract (records excluded under a tolerated threshold named)."""
    cid = "export.contract_valid"
    for e in ctx.facts.exports:
        if not e.contract_passed:
            yield ctx.fail(cid, e.subject, "delivered although its contract failed")
        else:
            note = f"; {e.contract_excluded} record(s) excluded" if e.contract_excluded else ""
            yield ctx.ok(cid, e.subject, "contract met" + note, evidence=[f"ledger:{e.seq}"])


def recipient_verified(ctx: Context) -> Iterator[ControlResult]:
    """The recipient proved possession of the key the export was encrypted to before it;
    restricted data went only to a recipient with a DPA reference."""
    cid = "export.recipient_verified"
    for e in ctx.facts.exports:
        problems = []
        if e.recipient_verified_seq is None:
            problems.append(f"recipient {e.recipient} never proved possession of this key")
        if e.classification == Classification.RESTRICTED.value and not e.dpa:
            problems.append("restricted data went to a recipient without a DPA reference")
        if problems:
            yield ctx.fail(cid, e.subject, "; ".join(problems), evidence=[f"ledger:{e.seq}"])
        else:
            yield ctx.ok(
                cid,
                e.subject,
                f"{e.recipient} proved its key (ledger:{e.recipient_verified_seq})",
                evidence=[f"ledger:{e.seq}", f"ledger:{e.recipient_verified_seq}"],
            )


def slo(ctx: Context) -> Iterator[ControlResult]:
    """Every export whose spec declares an SLO met it (throughput, duration, error rate, as
    its ``export.completed`` event recorded them); a spec without an SLO passes, named."""
    cid = "export.slo"
    for e in ctx.facts.exports:
        if e.slo_missed is None:
            yield ctx.ok(
                cid, e.subject, f"no SLO declared ({e.performance})", evidence=[f"ledger:{e.seq}"]
            )
        elif e.slo_missed:
            yield ctx.fail(
                cid,
                e.subject,
                "missed its SLO: " + "; ".join(e.slo_missed),
                evidence=[f"ledger:{e.seq}"],
            )
        else:
            yield ctx.ok(cid, e.subject, f"SLO met ({e.performance})", evidence=[f"ledger:{e.seq}"])
