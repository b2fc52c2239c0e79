"""The OSCAL assessment-results rendering: valid against NIST's schema, deterministic, NIST ids
in OSCAL form, honest states, and untrusted text that cannot break the document."""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from affidavit.errors import InputError
from affidavit.evidence.content import EvidenceContent
from affidavit.evidence.oscal import NAMESPACE, assessment_results, nist_control_id
from affidavit.evidence.package import EVENTS, OSCAL
from affidavit.evidence.verify import RECORDS
from affidavit.policy.controls import FRAMEWORKS, NIST

Validator = Callable[[Any], list[str]]
Maker = Callable[..., EvidenceContent]


def _ar(document: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = document["assessment-results"]
    return body


def _result(document: dict[str, Any]) -> dict[str, Any]:
    results: list[dict[str, Any]] = _ar(document)["results"]
    assert len(results) == 1
    return results[0]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _props(node: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for prop in node.get("props", []):
        out.setdefault(prop["name"], []).append(prop["value"])
    return out


def _findings(document: dict[str, Any], control: str) -> dict[str, dict[str, Any]]:
    """The findings of one affidavit control, by NIST objective."""
    return {
        f["target"]["target-id"]: f
        for f in _result(document).get("findings", [])
        if _props(f)["control-id"] == [control]
    }


# --- the schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", [None, *sorted(FRAMEWORKS)])
def test_document_validates_against_nists_schema(
    oscal_validator: Validator, make_evidence: Maker, framework: str | None
) -> None:
    content = make_evidence(framework=framework)
    document = assessment_results(content, package_sha256_hint="ab" * 32)
    assert oscal_validator(document) == []


def test_document_validates_after_a_json_round_trip(
    content: EvidenceContent, oscal_validator: Validator
) -> None:
    text = json.dumps(assessment_results(content), ensure_ascii=False)
    assert oscal_validator(json.loads(text)) == []


def test_the_validator_accepts_nists_own_example(
    oscal_validator: Validator, oscal_example: Any
) -> None:
    assert oscal_validator(oscal_example) == []


def _break_uuid(doc: dict[str, Any]) -> None:
    _ar(doc)["uuid"] = "not-a-uuid"


def _break_observation_uuid(doc: dict[str, Any]) -> None:
    _result(doc)["observations"][0]["uuid"] = "12345678-1234-1234-1234-123456789abc"  # v1


def _break_empty_props(doc: dict[str, Any]) -> None:
    _ar(doc)["metadata"]["props"] = []


def _break_time_without_offset(doc: dict[str, Any]) -> None:
    _result(doc)["start"] = "2026-03-01T00:00:00"


def _break_title_with_newline(doc: dict[str, Any]) -> None:
    _result(doc)["title"] = "two\nlines"


def _break_token(doc: dict[str, Any]) -> None:
    _result(doc)["reviewed-controls"]["control-selections"][0]["include-controls"][0][
        "control-id"
    ] = "CP-9(1)"


def _break_state(doc: dict[str, Any]) -> None:
    _result(doc)["findings"][0]["target"]["status"]["state"] = "excepted"


def _break_unknown_key(doc: dict[str, Any]) -> None:
    _result(doc)["verdict"] = "trust me"


def _break_missing_required(doc: dict[str, Any]) -> None:
    del _result(doc)["reviewed-controls"]


def _break_href(doc: dict[str, Any]) -> None:
    _ar(doc)["import-ap"]["href"] = "records/not a uri.json"


def _break_blank_prop(doc: dict[str, Any]) -> None:
    _ar(doc)["metadata"]["props"][0]["value"] = " padded "


@pytest.mark.parametrize(
    "defect",
    [
        _break_uuid,
        _break_observation_uuid,
        _break_empty_props,
        _break_time_without_offset,
        _break_title_with_newline,
        _break_token,
        _break_state,
        _break_unknown_key,
        _break_missing_required,
        _break_href,
        _break_blank_prop,
    ],
)
def test_the_validator_rejects_a_broken_document(
    content: EvidenceContent, oscal_validator: Validator, defect: Callable[[Any], None]
) -> None:
    document = copy.deepcopy(assessment_results(content))
    assert oscal_validator(document) == []
    defect(document)
    assert oscal_validator(document), f"{defect.__name__} went unnoticed"


# --- determinism and identity -----------------------------------------------------------------


def test_building_twice_yields_identical_json(make_evidence: Maker) -> None:
    first = json.dumps(assessment_results(make_evidence()), sort_keys=False)
    second = json.dumps(assessment_results(make_evidence()), sort_keys=False)
    assert first == second


def test_uuids_are_unique_and_version_5(content: EvidenceContent) -> None:
    document = assessment_results(content)
    defined = [v for p, v in _walk(document) if p.endswith("/uuid")]
    assert len(defined) == len(set(defined))
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", u)
        for u in defined
    )


def test_references_point_at_defined_uuids(content: EvidenceContent) -> None:
    document = assessment_results(content)
    defined = {v for p, v in _walk(document) if p.endswith("/uuid")}
    refs = [
        v
        for p, v in _walk(document)
        if p.endswith(("-uuid", "/party-uuids/0")) and isinstance(v, str)
    ]
    assert refs
    assert set(refs) <= defined
    assert _ar(document)["import-ap"]["href"].removeprefix("#") in defined


def test_a_new_build_of_the_same_period_keeps_item_uuids_and_changes_the_document_uuid(
    content: EvidenceContent,
) -> None:
    later = replace(content, generated_at=datetime.fromisoformat("2026-04-02T00:00:00+00:00"))
    a, b = assessment_results(content), assessment_results(later)
    assert _ar(a)["uuid"] != _ar(b)["uuid"]
    assert _result(a)["uuid"] == _result(b)["uuid"]
    assert [o["uuid"] for o in _result(a)["observations"]] == [
        o["uuid"] for o in _result(b)["observations"]
    ]


# --- content ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("CP-9", "cp-9"),
        ("CP-9(1)", "cp-9.1"),
        ("CP-9(8)", "cp-9.8"),
        ("AU-9(2)", "au-9.2"),
        ("SC-28(1)", "sc-28.1"),
        ("CP-10(4)", "cp-10.4"),
        ("ac-6.1", "ac-6.1"),
        (" SI-12 ", "si-12"),
        ("CP-09", "cp-9"),
    ],
)
def test_nist_ids_take_oscal_form(requirement: str, expected: str) -> None:
    assert nist_control_id(requirement) == expected


@pytest.mark.parametrize("bad", ["", "CP9", "A.8.13", "CP-9(1", "Art. 32(1)(c)", "CP-9(1)(a)"])
def test_a_non_nist_id_is_refused(bad: str) -> None:
    with pytest.raises(InputError):
        nist_control_id(bad)


def test_reviewed_controls_are_every_mapped_nist_control(content: EvidenceContent) -> None:
    document = assessment_results(content)
    selection = _result(document)["reviewed-controls"]["control-selections"]
    reviewed = [c["control-id"] for c in selection[0]["include-controls"]]
    expected = {nist_control_id(i) for c in content.controls for i in c["mappings"][NIST]}
    assert set(reviewed) == expected
    assert len(reviewed) == len(expected)
    assert reviewed.index("cp-9") < reviewed.index("cp-9.1") < reviewed.index("cp-10")


@pytest.mark.parametrize(
    ("control", "state", "reason", "outcome"),
    [
        ("policy.approved", "satisfied", "pass", "pass"),
        ("dataset.protected", "not-satisfied", "fail", "fail"),  # one pass, one fail
        ("backup.encrypted", "not-satisfied", "other", "excepted"),
        ("dataset.classified", "satisfied", "other", "not-applicable"),
        ("keys.rotated", "not-satisfied", "other", "not-evaluated"),
        ("drill.rto", "not-satisfied", "fail", "fail"),
    ],
)
def test_findings_state_each_control_against_its_nist_objectives(
    content: EvidenceContent, control: str, state: str, reason: str, outcome: str
) -> None:
    findings = _findings(assessment_results(content), control)
    mapped = next(c for c in content.controls if c["id"] == control)["mappings"][NIST]
    assert set(findings) == {f"{nist_control_id(m)}_obj" for m in mapped}
    for finding in findings.values():
        assert finding["target"]["type"] == "objective-id"
        assert finding["target"]["status"] == {"state": state, "reason": reason}
        assert _props(finding)["outcome"] == [outcome]


def test_a_control_without_results_is_not_satisfied(content: EvidenceContent) -> None:
    quiet = replace(content, results=[r for r in content.results if r["control"] != "backup.rpo"])
    for finding in _findings(assessment_results(quiet), "backup.rpo").values():
        assert finding["target"]["status"]["state"] == "not-satisfied"
        assert "related-observations" not in finding


def test_one_observation_per_result_linked_from_its_findings(content: EvidenceContent) -> None:
    result = _result(assessment_results(content))
    observations = result["observations"]
    assert len(observations) == len(content.results)
    by_uuid = {o["uuid"]: o for o in observations}
    for finding in result["findings"]:
        control = _props(finding)["control-id"]
        for link in finding.get("related-observations", []):
            assert _props(by_uuid[link["observation-uuid"]])["control-id"] == control
    methods = {_props(o)["control-id"][0]: o["methods"] for o in observations}
    assert methods["drill.rto"] == ["TEST"]
    assert methods["verify.recent"] == ["TEST"]
    assert methods["backup.encrypted"] == ["EXAMINE"]


def test_evidence_hrefs_resolve_to_files_in_the_package(content: EvidenceContent) -> None:
    result = _result(assessment_results(content))
    hrefs = {
        e["href"] for o in result["observations"] for e in o["relevant-evidence"] if "href" in e
    }
    here = posixpath.dirname(OSCAL)
    resolved = {posixpath.normpath(posixpath.join(here, h.partition("#")[0])) for h in hrefs}
    assert "records/backups.json" in resolved
    assert "attestations/backup/bk-2.json" in resolved
    assert "attestations/drill/dr-2.json" in resolved
    assert all(not p.startswith("..") for p in resolved)
    # the same file names the package writer and the verifier use
    assert resolved <= {*RECORDS.values(), EVENTS} | {
        p for p in resolved if p.startswith("attestations/")
    }
    rlinks = {
        r["href"] for r in _ar(assessment_results(content))["back-matter"]["resources"][0]["rlinks"]
    }
    assert {posixpath.normpath(posixpath.join(here, h)) for h in rlinks} == {
        RECORDS["controls"],
        RECORDS["policy_versions"],
    }
    assert "../records/backups.json#bk-1" in hrefs
    assert "../records/verifications.json#vf-1" in hrefs
    assert "../records/drills.json#dr-2" in hrefs


def test_subjects_are_inventory_items(content: EvidenceContent) -> None:
    result = _result(assessment_results(content))
    items = {i["uuid"]: i for i in result["local-definitions"]["inventory-items"]}
    for observation in result["observations"]:
        for subject in observation.get("subjects", []):
            assert subject["type"] == "inventory-item"
            assert _props(items[subject["subject-uuid"]])["subject"] == [subject["title"]]
    na = next(
        o for o in result["observations"] if _props(o)["control-id"] == ["dataset.classified"]
    )
    assert "subjects" not in na  # the "*" of a not-applicable control is no subject


def test_another_frameworks_requirements_are_props_beside_the_nist_target(
    make_evidence: Maker,
) -> None:
    document = assessment_results(make_evidence(framework="iso-27001"))
    findings = _findings(document, "backup.encrypted")
    assert set(findings) == {"sc-28_obj", "sc-28.1_obj", "cp-9.8_obj"}
    for finding in findings.values():
        reqs = [p for p in finding["props"] if p["name"] == "requirement"]
        assert [(p["value"], p["class"], p["ns"]) for p in reqs] == [
            ("A.8.13", "iso-27001", NAMESPACE),
            ("A.8.24", "iso-27001", NAMESPACE),
        ]
    assert _props(_ar(document)["metadata"])["framework"] == ["iso-27001"]


def test_nist_packages_carry_no_requirement_props(content: EvidenceContent) -> None:
    for finding in _result(assessment_results(content))["findings"]:
        assert "requirement" not in _props(finding)


def test_metadata_names_the_period_origin_and_checkpoint(content: EvidenceContent) -> None:
    document = assessment_results(content, package_sha256_hint="AB" * 32)
    metadata = _ar(document)["metadata"]
    assert "2026-03-01 to 2026-04-01" in metadata["title"]
    assert metadata["last-modified"] == "2026-04-01T06:30:00Z"
    props = _props(metadata)
    assert props["ledger-origin"] == [content.origin]
    assert props["checkpoint-size"] == ["42"]
    assert props["checkpoint-root"] == [content.checkpoint_root]
    assert props["package-sha256"] == ["ab" * 32]
    assert metadata["parties"][0]["name"] == content.origin
    result = _result(document)
    assert (result["start"], result["end"]) == ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    assert _props(result)["check-run"] == ["run-2"]  # the newest, by time, not by text
    assert result["observations"][0]["collected"] == "2026-03-31T21:00:00.500000Z"


def test_a_bad_package_hash_is_refused(content: EvidenceContent) -> None:
    with pytest.raises(InputError):
        assessment_results(content, package_sha256_hint="not-hex")


def test_hostile_text_cannot_inject_markup_or_break_lines(
    content: EvidenceContent, oscal_validator: Validator, hostile: str
) -> None:
    document = assessment_results(content)
    assert oscal_validator(document) == []
    texts = [(p, v) for p, v in _walk(document) if isinstance(v, str)]
    markup = [v for p, v in texts if p.endswith(("/title", "/description", "/remarks"))]
    assert any("script" in v for v in markup)  # the hostile text is there ...
    for value in markup:
        assert re.search(r"(?<!\\)[<>\[\]&]", value) is None, value  # ... escaped
    for path, value in texts:
        if not path.endswith(("/description", "/remarks")):
            assert "\n" not in value and "\x00" not in value, path
    failing = next(
        o for o in _result(document)["observations"] if _props(o)["control-id"] == ["drill.rto"]
    )
    assert failing["description"] == "first line second line third"
    protected = next(
        o
        for o in _result(document)["observations"]
        if _props(o)["subject"] == ["dataset:shop/users"]
    )
    assert protected["description"] == re.sub(r"([\\`*\[\]<>&|#])", r"\\\1", hostile)


def test_a_period_without_nist_controls_is_refused(empty_content: EvidenceContent) -> None:
    with pytest.raises(InputError, match="NIST"):
        assessment_results(empty_content)


def test_a_time_without_offset_is_refused(content: EvidenceContent) -> None:
    runs = [{**content.check_runs[0], "at": "2026-03-20T00:00:00"}]
    with pytest.raises(InputError, match="offset"):
        assessment_results(replace(content, check_runs=runs))
