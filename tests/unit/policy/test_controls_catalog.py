"""The controls catalog is complete, mapped, and documented exactly as defined."""

from __future__ import annotations

from pathlib import Path

from affidavit.policy.controls import BY_ID, CONTROLS, FRAMEWORKS, NIST

DOC = Path(__file__).resolve().parents[3] / "docs" / "controls.md"

REQUIRED = {  # the controls issue 7 names, at least
    "dataset.protected", "backup.rpo", "backup.frequency", "backup.retention",
    "backup.encrypted", "backup.immutable", "backup.cross_region", "verify.recent",
    "drill.recent", "drill.rto", "ledger.integrity", "ledger.checkpoint_published",
    "keys.rotated", "deletion.lawful", "dataset.classified", "inventory.known_targets",
    "config.baseline",
}  # fmt: skip


def test_every_required_control_exists_once_with_a_nist_mapping() -> None:
    assert len(BY_ID) == len(CONTROLS)
    assert set(BY_ID) >= REQUIRED
    for c in CONTROLS:
        assert c.maps_to(NIST), c.id  # OSCAL needs a NIST control to point at
        assert c.rationale and c.title
        assert set(c.mappings) <= set(FRAMEWORKS)


def test_the_issues_framework_requirements_are_covered() -> None:
    mapped = {fw: {i for c in CONTROLS for i in c.maps_to(fw)} for fw in FRAMEWORKS}
    assert {"CP-9", "CP-9(1)", "CP-9(8)", "CP-10(4)", "AU-9", "AU-10", "SC-28"} <= mapped[NIST]
    assert "A.8.13" in mapped["iso-27001"]
    assert {"A1.2", "A1.3"} <= mapped["soc2"]
    assert {"164.308(a)(7)(ii)(A)", "164.308(a)(7)(ii)(B)", "164.308(a)(7)(ii)(D)"} <= mapped[
        "hipaa"
    ]
    assert {"Art. 32(1)(c)", "Art. 32(1)(d)"} <= mapped["gdpr"]
    assert any(i.startswith("Art. 12") for i in mapped["dora"])


def test_docs_controls_md_matches_the_catalog() -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = text.split("\n### `")[1:]
    documented = {s.split("`", 1)[0]: s for s in sections}
    assert list(documented) == [c.id for c in CONTROLS]
    for c in CONTROLS:
        section = documented[c.id]
        assert c.title in section, c.id
        assert f"**Severity**: {c.severity.value}" in section, c.id
        for fw, name in FRAMEWORKS.items():
            ids = c.maps_to(fw)
            if ids:
                assert f"{name}: {', '.join(ids)}" in section, (c.id, fw)
