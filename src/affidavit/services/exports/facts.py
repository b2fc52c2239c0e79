"""The facts of the ``export.*`` controls, from the ledger: each ``export.completed`` event
and the ``recipient.verified`` events before it. A catalog row edited later changes none of
them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from affidavit.catalog.store import UnitOfWork
from affidavit.models.ledger import Event
from affidavit.policy.facts import ExportFacts
from affidavit.services.exports.recipients import VERIFIED_ACTION
from affidavit.services.policy_vouch import read_events


def _time(event: Event) -> datetime:
    try:
        moment = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _facts(event: Event, proofs: list[Event]) -> ExportFacts:
    d = event.details
    approval, spec_approval = _map(d.get("approval")), _map(d.get("spec_approval"))
    records = _map(d.get("records"))
    excluded = _map(records.get("excluded"))
    fields = d.get("fields")
    fields = fields if isinstance(fields, list) else []
    recipient, key = str(d.get("recipient", "")), str(d.get("public_key", ""))
    proof = [
        p.seq
        for p in proofs
        if p.seq < event.seq
        and p.subject == f"recipient:{recipient}"
        and p.details.get("public_key") == key
    ]
    return ExportFacts(
        id=event.subject.removeprefix("export:"),
        seq=event.seq,
        at=_time(event),
        actor=event.actor,
        spec=str(d.get("spec", "")),
        version=_int(d.get("version")),
        approval=_str(approval.get("standing")),
        request=_str(approval.get("request")),
        spec_proposed_by=_str(spec_approval.get("proposed_by")),
        spec_approved_by=_str(spec_approval.get("approved_by")),
        purpose=str(d.get("purpose", "")),
        legal_basis=str(d.get("legal_basis", "")),
        consent_sha256=_str(d.get("consent_sha256")),
        fields_transformed=sum(
            1 for f in fields if isinstance(f, Mapping) and f.get("transform") != "keep"
        ),
        fields_dropped=_int(records.get("fields_dropped")),
        contract_passed=d.get("contract_passed") is True,
        contract_excluded=_int(excluded.get("contract")),
        recipient=recipient,
        public_key=key,
        recipient_verified_seq=max(proof) if proof else None,
        classification=str(d.get("classification", "")),
        dpa=_str(d.get("dpa")),
        **_performance(_map(d.get("performance"))),
    )


def _performance(figures: Mapping[str, Any]) -> dict[str, Any]:
    """What ``export.slo`` reads of a run's recorded figures."""
    missed = figures.get("slo_missed")
    shown = ", ".join(
        f"{k} {figures[k]}" for k in ("docs_per_s", "duration_s", "error_rate") if k in figures
    )
    return {
        "slo_missed": (
            tuple(str(m) for m in missed)
            if isinstance(missed, list) and isinstance(figures.get("slo"), Mapping)
            else None
        ),
        "performance": shown,
    }


def gather_export_facts(uow: UnitOfWork) -> tuple[ExportFacts, ...]:
    """Every delivered export, in ledger order."""
    proofs = read_events(uow.ledger, VERIFIED_ACTION)
    return tuple(_facts(e, proofs) for e in read_events(uow.ledger, "export.completed"))
