"""The ``export.*`` controls over export facts: a healthy export passes all six; each way an
export can go wrong fails its control, for that export only, and is named."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.policy.test_rules import NOW, POLICY, healthy

from affidavit.policy.facts import ExportFacts
from affidavit.policy.rules import ControlResult, Status, evaluate

GOOD = ExportFacts(
    id="ex-1",
    seq=90,
    at=NOW,
    actor="olga",
    spec="customers-to-acme",
    version=1,
    approval="approved",
    request="rq-1",
    spec_proposed_by="olga",
    spec_approved_by="paul",
    purpose="churn analysis",
    legal_basis="consent",
    consent_sha256="ab" * 32,
    fields_transformed=3,
    fields_dropped=40,
    contract_passed=True,
    contract_excluded=0,
    recipient="acme",
    public_key="age1xyz",
    recipient_verified_seq=12,
    classification="restricted",
    dpa="DPA-1",
    slo_missed=(),
    performance="docs_per_s 50000.0, duration_s 2.0, error_rate 0.0",
)


def results(*exports: ExportFacts) -> dict[tuple[str, str], ControlResult]:
    found = evaluate(replace(healthy(), exports=exports), POLICY)
    return {(r.control, r.subject): r for r in found if r.control.startswith("export.")}


def test_a_governed_export_passes_every_export_control() -> None:
    found = results(GOOD)
    assert len(found) == 6
    assert {r.status for r in found.values()} == {Status.PASS}
    assert "rq-1" in found["export.approved", "export:ex-1"].message


def test_without_exports_the_controls_are_not_applicable() -> None:
    found = results()
    assert {r.status for r in found.values()} == {Status.NOT_APPLICABLE}


def test_each_failure_fails_its_own_control_for_its_own_export() -> None:
    bad = {
        "export.approved": [
            replace(GOOD, id="a1", approval=None),
            replace(GOOD, id="a2", approval="waived"),
            replace(GOOD, id="a3", spec_approved_by="Olga "),
            replace(GOOD, id="a4", spec_approved_by=None),
        ],
        "export.minimised": [replace(GOOD, id="m1", fields_transformed=0, fields_dropped=0)],
        "export.consent": [
            replace(GOOD, id="c1", consent_sha256=None),
            replace(GOOD, id="c2", purpose=""),
        ],
        "export.contract_valid": [replace(GOOD, id="k1", contract_passed=False)],
        "export.recipient_verified": [
            replace(GOOD, id="r1", recipient_verified_seq=None),
            replace(GOOD, id="r2", dpa=None),
        ],
        "export.slo": [replace(GOOD, id="s1", slo_missed=("throughput 10 docs/s < 100",))],
    }
    everything = [e for group in bad.values() for e in group]
    found = results(GOOD, *everything)
    failing = {key for key, r in found.items() if r.status is Status.FAIL}
    expected = {(cid, f"export:{e.id}") for cid, group in bad.items() for e in group}
    assert failing == expected
    assert "local mode" in found["export.approved", "export:a1"].message
    assert "waived" in found["export.approved", "export:a2"].message
    assert "no consent list" in found["export.consent", "export:c1"].message
    assert "DPA" in found["export.recipient_verified", "export:r2"].message
    assert "throughput 10 docs/s" in found["export.slo", "export:s1"].message
    assert "SLO met" in found["export.slo", "export:ex-1"].message
    # no SLO declared: passes, saying so
    undeclared = results(replace(GOOD, slo_missed=None))
    assert undeclared["export.slo", "export:ex-1"].status is Status.PASS
    assert "no SLO declared" in undeclared["export.slo", "export:ex-1"].message
    # another legal basis needs no consent list
    other = results(replace(GOOD, legal_basis="contract", consent_sha256=None))
    assert other["export.consent", "export:ex-1"].status is Status.PASS
