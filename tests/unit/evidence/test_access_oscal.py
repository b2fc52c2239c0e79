"""The access controls (issue 15) reach the OSCAL assessment results: their NIST objectives,
their outcomes and their framework requirements, in a document NIST's schema accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from affidavit.evidence.content import EvidenceContent
from affidavit.evidence.oscal import assessment_results
from affidavit.policy.controls import BY_ID

ACCESS = ("access.reviewed", "access.least_privilege", "access.mfa_enforced",
          "access.segregation_of_duties")  # fmt: skip


def _with_access_results(content: EvidenceContent) -> EvidenceContent:
    def result(control: str, subject: str, status: str, message: str, evidence: list[str]) -> Any:
        spec = BY_ID[control]
        return {"control": control, "subject": subject, "status": status, "message": message,
                "severity": spec.severity.value, "owner": "security@example.com",
                "evidence": evidence, "exception": None}  # fmt: skip

    results = [
        result("access.reviewed", "access-review", "pass", "review ar-1 closed 3 days ago",
               ["ledger:50", "ledger:61"]),
        result("access.least_privilege", "account:erin", "fail",
               "holds operator + security_officer, so it makes backups and deletes them", []),
        result("access.mfa_enforced", "account:bob", "fail", "no TOTP <script>", ["ledger:3"]),
        result("access.segregation_of_duties", "ledger:12", "fail",
               "backup.deleted of backup:bk-1 by 'root': not authenticated (local mode)",
               ["ledger:12"]),
    ]  # fmt: skip
    return replace(
        content,
        controls=[*content.controls, *(BY_ID[c].to_json() for c in ACCESS)],
        results=[*content.results, *results],
    )


def _findings(document: dict[str, Any], control: str) -> dict[str, dict[str, Any]]:
    (result,) = document["assessment-results"]["results"]
    return {
        f["target"]["target-id"]: f
        for f in result["findings"]
        if any(p["name"] == "control-id" and p["value"] == control for p in f.get("props", []))
    }


@pytest.mark.parametrize("framework", [None, "iso-27001", "soc2"])
def test_the_access_controls_validate_and_target_their_nist_objectives(
    oscal_validator: Callable[[Any], list[str]],
    make_evidence: Callable[..., EvidenceContent],
    framework: str | None,
) -> None:
    content = _with_access_results(make_evidence(framework=framework))
    document = assessment_results(content)
    assert oscal_validator(document) == []
    reviewed = _findings(document, "access.reviewed")
    assert set(reviewed) == {"ac-2_obj", "ac-2.3_obj", "ac-6.7_obj"}
    assert {f["target"]["status"]["state"] for f in reviewed.values()} == {"satisfied"}
    assert set(_findings(document, "access.mfa_enforced")) == {"ia-2.1_obj", "au-2_obj"}
    sod = _findings(document, "access.segregation_of_duties")
    assert set(sod) == {"ac-5_obj", "au-2_obj", "au-9_obj"}
    assert {f["target"]["status"]["state"] for f in sod.values()} == {"not-satisfied"}
    (result,) = document["assessment-results"]["results"]
    reviewed_controls = {
        c["control-id"]
        for selection in result["reviewed-controls"]["control-selections"]
        for c in selection["include-controls"]
    }
    assert {"ac-2", "ac-2.3", "ac-5", "ac-6.7", "ia-2.1", "au-2", "au-9"} <= reviewed_controls
    if framework == "iso-27001":
        props = [p for f in sod.values() for p in f["props"] if p["name"] == "requirement"]
        assert {p["value"] for p in props} == {"A.5.3", "A.5.15"}
