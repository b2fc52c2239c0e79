"""The one signed-manifest check (issue 14), attacked: a flipped byte, another key, another
backup's manifest, another payload or predicate type, subjects that are not the artifacts, a
valid signature over a malformed predicate, a catalog or ledger that disagrees. Each is an
issue with its code, never a traceback. The genuine envelopes are those of
tests/unit/models/assets (signed by the key of its ledger.vkey)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import sign_envelope
from affidavit.crypto.note import NoteVerifier
from affidavit.crypto.signing import SigningKey
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    STATEMENT_TYPE,
    VERIFICATION_PREDICATE_TYPE,
)
from affidavit.ledger.manifest_check import (
    CatalogManifest,
    ManifestCheck,
    ManifestDefect,
    check_backup_manifest,
    check_signed_manifest,
)
from affidavit.models.backup import (
    ArtifactRole,
    Backup,
    BackupArtifact,
    BackupDataset,
    BackupStatus,
)
from affidavit.models.checks import CheckCode
from affidavit.models.manifest import BackupManifest

ASSETS = Path(__file__).parents[1] / "models" / "assets"
ENVELOPES = sorted(ASSETS.glob("manifest-*.dsse.json"))
VERIFIER = NoteVerifier.from_vkey((ASSETS / "ledger.vkey").read_text().strip())
KEYID = f"{VERIFIER.key_id:08x}"
KEYS = {KEYID: VERIFIER.key}
FORGER = SigningKey.generate()  # a key an attacker holds; trusted only where a test says so
FORGER_KEYS = {"f0f0f0f0": FORGER.public_key}


def _genuine(path: Path = ENVELOPES[0]) -> tuple[bytes, dict[str, Any]]:
    data = path.read_bytes()
    statement = json.loads(base64.b64decode(json.loads(data)["payload"]))
    return data, statement


def _signed(statement: Any, *, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """``statement`` signed by the forger's key (trusted by the test that uses it)."""
    payload = statement if isinstance(statement, bytes) else rfc8785.dumps(statement)
    return sign_envelope(payload, payload_type, FORGER, "f0f0f0f0").to_json().encode()


def _defects(check: ManifestCheck) -> set[ManifestDefect]:
    return {issue.defect for issue in check.issues}


def _codes(check: ManifestCheck) -> set[str]:
    return {issue.code.value for issue in check.issues}


@pytest.mark.parametrize("path", ENVELOPES, ids=lambda p: p.name)
def test_a_genuine_envelope_passes_every_check(path: Path) -> None:
    data, statement = _genuine(path)
    payload = base64.b64decode(json.loads(data)["payload"])
    backup_id = statement["predicate"]["backup_id"]
    check = check_signed_manifest(
        data,
        KEYS,
        backup_id=backup_id,
        envelope_sha256=sha256_hex(data),
        manifest_sha256=sha256_hex(payload),
        catalog=CatalogManifest(
            statement=payload,
            statement_sha256=sha256_hex(payload),
            artifacts=[(s["name"], s["digest"]["sha256"]) for s in statement["subject"]],
            datasets={d["name"]: d["fingerprint"] for d in statement["predicate"]["datasets"]},
        ),
    )
    assert check.ok, check.issues
    assert isinstance(check.manifest, BackupManifest)
    assert check.manifest.backup_id == backup_id
    assert check.payload_sha256 == sha256_hex(payload)
    assert check.findings(backup_id) == []
    # as text, too (the catalog keeps the envelope as a string)
    assert check_signed_manifest(data.decode(), KEYS, backup_id=backup_id).ok


def test_no_envelope_is_missing() -> None:
    check = check_signed_manifest(None, KEYS, backup_id="bk-1")
    assert _defects(check) == {ManifestDefect.MISSING}
    assert _codes(check) == {CheckCode.MANIFEST_MISSING.value}
    assert check.manifest is None and not check.ok


def _flip(data: bytes, at: int) -> bytes:
    raw = bytearray(data)
    raw[at] ^= 0x01
    return bytes(raw)


def test_a_flipped_payload_byte_breaks_the_signature() -> None:
    data, _ = _genuine()
    envelope = json.loads(data)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[len(payload) // 2] ^= 0x01
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    check = check_signed_manifest(json.dumps(envelope).encode(), KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SIGNATURE}
    (issue,) = check.issues
    assert issue.code is CheckCode.MANIFEST_SIGNATURE_INVALID
    assert issue.message.startswith("the manifest's signature does not verify with the ledger key")
    assert issue.details == {"keyid": KEYID}
    assert check.manifest is None


@pytest.mark.parametrize("at", range(0, 3000, 37))
def test_any_flipped_envelope_byte_is_an_issue_not_a_traceback(at: int) -> None:
    data, _ = _genuine()
    check = check_signed_manifest(_flip(data, at % len(data)), KEYS, backup_id=None)
    assert check.issues and check.manifest is None
    assert _codes(check) == {CheckCode.MANIFEST_SIGNATURE_INVALID.value}


@pytest.mark.parametrize(
    "keys",
    [{KEYID: FORGER.public_key}, FORGER_KEYS, {}],
    ids=["same-keyid-other-key", "other-keyid", "no-key"],
)
def test_another_key_does_not_verify(keys: dict[str, Any]) -> None:
    data, _ = _genuine()
    check = check_signed_manifest(data, keys, backup_id=None)
    assert _defects(check) == {ManifestDefect.SIGNATURE}


def test_a_manifest_resigned_by_another_key_does_not_verify() -> None:
    _, statement = _genuine()
    check = check_signed_manifest(_signed(statement), KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SIGNATURE}


def test_the_manifest_of_another_backup_is_a_mismatch() -> None:
    data, statement = _genuine()
    check = check_signed_manifest(data, KEYS, backup_id="bk-20200101T000000Z-000000")
    assert _defects(check) == {ManifestDefect.BACKUP_ID}
    (issue,) = check.issues
    assert issue.code is CheckCode.MANIFEST_MISMATCH
    assert statement["predicate"]["backup_id"] in issue.message
    assert check.manifest is not None  # the caller decides whether to go by it


@pytest.mark.parametrize(
    "payload_type", ["application/json", "application/vnd.affidavit.evidence+json", ""]
)
def test_another_payload_type_is_refused(payload_type: str) -> None:
    _, statement = _genuine()
    data = _signed(statement, payload_type=payload_type)
    check = check_signed_manifest(data, FORGER_KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SIGNATURE}
    assert "payload type" in check.issues[0].reason


def test_another_predicate_type_is_refused() -> None:
    _, statement = _genuine()
    data = _signed({**statement, "predicateType": VERIFICATION_PREDICATE_TYPE})
    check = check_signed_manifest(data, FORGER_KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SIGNATURE}
    assert "predicate type" in check.issues[0].reason


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"_type": STATEMENT_TYPE, "subject": "x"}).encode(),
        json.dumps(
            {
                "_type": STATEMENT_TYPE,
                "subject": [],
                "predicateType": BACKUP_PREDICATE_TYPE,
                "predicate": {},
            }
        ).encode(),
    ],
    ids=["empty", "null", "list", "object", "not-utf8", "deep", "subject-a-string", "no-subjects"],
)
def test_a_signed_payload_that_is_no_statement_is_refused(payload: bytes) -> None:
    check = check_signed_manifest(_signed(payload), FORGER_KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SIGNATURE}
    assert check.manifest is None


@pytest.mark.parametrize(
    "envelope",
    [
        b"",
        b"{",
        b"[]",
        b'{"payload": 1}',
        b"\x00" * 10,
        b"[" * 100_000,
        "\ud800",
        b'{"payload": "!!", "payloadType": "x", "signatures": []}',
    ],
    ids=["empty", "truncated", "list", "payload-int", "nul", "deep", "surrogate", "bad-b64"],
)
def test_a_hostile_envelope_is_an_issue(envelope: bytes | str) -> None:
    check = check_signed_manifest(envelope, KEYS, backup_id="bk-1")
    assert _defects(check) == {ManifestDefect.SIGNATURE}


def _subjects(statement: dict[str, Any]) -> list[dict[str, Any]]:
    subjects: list[dict[str, Any]] = statement["subject"]
    return subjects


@pytest.mark.parametrize(
    "change",
    [
        lambda s: _subjects(s).pop(),
        lambda s: _subjects(s).append(copy.deepcopy(_subjects(s)[0])),
        lambda s: _subjects(s)[0]["digest"].update(sha256="0" * 64),
        lambda s: _subjects(s)[0].update(name="elsewhere/x.age"),
        lambda s: s["predicate"]["artifacts"].pop(),
        lambda s: s.update(
            subject=[{"name": "orders-db/x/empty", "digest": {"sha256": sha256_hex(b"")}}]
        ),
    ],
    ids=[
        "subject-dropped",
        "subject-twice",
        "subject-digest",
        "subject-name",
        "artifact-dropped",
        "empty-subject",
    ],
)
def test_subjects_that_are_not_the_artifacts_are_a_mismatch(change: Any) -> None:
    _, statement = _genuine()
    change(statement)
    check = check_signed_manifest(_signed(statement), FORGER_KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SUBJECTS}
    assert _codes(check) == {CheckCode.SUBJECTS_MISMATCH.value}
    assert check.manifest is not None


def test_a_backup_without_artifacts_has_its_one_empty_subject() -> None:
    _, statement = _genuine()
    predicate = statement["predicate"]
    predicate["artifacts"] = []
    name = f"{predicate['source']['name']}/{predicate['backup_id']}/empty"
    statement["subject"] = [{"name": name, "digest": {"sha256": sha256_hex(b"")}}]
    assert check_signed_manifest(_signed(statement), FORGER_KEYS, backup_id=None).ok
    statement["subject"][0]["name"] = "other/empty"
    check = check_signed_manifest(_signed(statement), FORGER_KEYS, backup_id=None)
    assert _defects(check) == {ManifestDefect.SUBJECTS}


MALFORMED = [
    ("size-negative", lambda p: p["artifacts"][0].update(size=-1)),
    ("size-a-bool", lambda p: p["artifacts"][0].update(size=True)),
    ("digest-upper", lambda p: p["artifacts"][0].update(sha256="A" * 64)),
    ("datasets-missing", lambda p: p.pop("datasets")),
    ("extra-member", lambda p: p.update(approved=True)),
    ("kind-unknown", lambda p: p.update(kind="export")),
    ("retain-not-a-time", lambda p: p.update(retain_until="forever")),
    ("source-a-list", lambda p: p.update(source=["x"])),
    ("predicate-empty", lambda p: p.clear()),
]


@pytest.mark.parametrize("change", [c for _, c in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_a_valid_signature_over_a_malformed_predicate_is_refused(change: Any) -> None:
    _, statement = _genuine()
    change(statement["predicate"])
    check = check_signed_manifest(_signed(statement), FORGER_KEYS, backup_id="bk-1")
    assert _defects(check) == {ManifestDefect.MALFORMED}
    (issue,) = check.issues
    assert issue.code is CheckCode.MANIFEST_SIGNATURE_INVALID
    assert issue.message.startswith("the signed manifest is malformed: manifest")
    assert check.manifest is None and check.statement is not None


def test_the_digests_the_ledger_recorded_must_match() -> None:
    data, _ = _genuine()
    check = check_signed_manifest(
        data, KEYS, backup_id=None, envelope_sha256="0" * 64, manifest_sha256="1" * 64
    )
    assert _defects(check) == {ManifestDefect.ENVELOPE_DIGEST, ManifestDefect.PAYLOAD_DIGEST}
    assert _codes(check) == {CheckCode.MANIFEST_MISMATCH.value}


# -- the catalog's copy -----------------------------------------------------------------------


def _backup(**changes: Any) -> Backup:
    data, statement = _genuine()
    payload = base64.b64decode(json.loads(data)["payload"])
    predicate = statement["predicate"]
    artifacts = (
        *(
            BackupArtifact(
                path=a["path"],
                role=ArtifactRole(a["role"]),
                size=a["size"],
                sha256=a["sha256"],
                dataset=a["dataset"],
            )
            for a in predicate["artifacts"]
        ),
        BackupArtifact(
            path="x/manifest.dsse.json", role=ArtifactRole.MANIFEST, size=1, sha256=sha256_hex(data)
        ),
    )
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": predicate["backup_id"],
        "source": "session-cache",
        "vault": "v",
        "kind": "run",
        "format": "rdb",
        "status": BackupStatus.COMPLETE,
        "started_at": now,
        "finished_at": now,
        "retain_until": now,
        "manifest": payload,
        "manifest_sha256": sha256_hex(payload),
        "envelope": data.decode(),
        "artifacts": artifacts,
        "datasets": tuple(
            BackupDataset(
                name=d["name"],
                records=d["records"],
                fingerprint=d["fingerprint"],
                classification=d["classification"],
            )
            for d in predicate["datasets"]
        ),
    }
    values.update(changes)
    return Backup(**values)


def test_a_catalog_row_that_agrees_passes() -> None:
    check = check_backup_manifest(_backup(), KEYS)
    assert check.ok, check.issues


@pytest.mark.parametrize(
    ("changes", "defects"),
    [
        ({"manifest": None}, {ManifestDefect.MISSING}),
        ({"manifest": b"{}"}, {ManifestDefect.STATEMENT}),
        ({"manifest_sha256": "0" * 64}, {ManifestDefect.STATEMENT}),
        ({"artifacts": ()}, {ManifestDefect.ARTIFACTS}),
        ({"datasets": ()}, {ManifestDefect.DATASETS}),
        ({"id": "bk-20200101T000000Z-000000"}, {ManifestDefect.BACKUP_ID}),
        ({"envelope": None}, {ManifestDefect.MISSING}),
    ],
    ids=[
        "statement-missing",
        "statement-edited",
        "digest-edited",
        "artifact-rows-deleted",
        "dataset-rows-deleted",
        "phantom-row",
        "envelope-missing",
    ],
)
def test_a_catalog_row_that_disagrees_is_an_issue(
    changes: dict[str, Any], defects: set[ManifestDefect]
) -> None:
    check = check_backup_manifest(_backup(**changes), KEYS)
    assert _defects(check) == defects


def test_an_edited_artifact_row_or_fingerprint_names_what_differs() -> None:
    genuine = _backup()
    first = genuine.artifacts[0]
    edited = (
        BackupArtifact(path=first.path, role=first.role, size=first.size, sha256="0" * 64),
        *genuine.artifacts[1:],
    )
    dataset = genuine.datasets[0]
    fingerprint = "afp1:exact:b12:n0:" + "0" * 64
    check = check_backup_manifest(
        _backup(
            artifacts=edited,
            datasets=(
                BackupDataset(
                    name=dataset.name,
                    records=0,
                    fingerprint=fingerprint,
                    classification=dataset.classification,
                ),
                *genuine.datasets[1:],
            ),
        ),
        KEYS,
    )
    by_defect = {issue.defect: issue for issue in check.issues}
    assert set(by_defect) == {ManifestDefect.ARTIFACTS, ManifestDefect.DATASETS}
    artifacts = by_defect[ManifestDefect.ARTIFACTS]
    assert artifacts.code is CheckCode.SUBJECTS_MISMATCH
    assert artifacts.details["only_signed"] == [first.path] == artifacts.details["only_in_catalog"]
    assert by_defect[ManifestDefect.DATASETS].details["differ"] == [dataset.name]
    findings = check.findings("bk-x")
    assert {f.code for f in findings} == {"subjects-mismatch", "manifest-mismatch"}
    assert all(f.subject == "bk-x" for f in findings)
