"""The evidence package (issue 7) built from a real history — a Redis source backed up,
verified and drilled on real servers, a policy approved by two people, findings, an exception —
then verified offline and attacked: every tamper test of the issue, each caught."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.cli.main import main
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.crypto.dsse import sign_envelope
from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.errors import AlreadyExists, FormatError, InputError
from affidavit.evidence.package import (
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    SIGNATURE,
    manifest_bytes,
    read_package,
)
from affidavit.models.period import Period
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import backup as backups
from affidavit.services import drill as drills
from affidavit.services import findings as findings_service
from affidavit.services import inventory as inv
from affidavit.services import policy as policy_service
from affidavit.services import verify as verify_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import load_ledger_identity, open_app
from affidavit.services.evidence import build_evidence, verify_evidence
from affidavit.services.setup import initialise

POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)


@dataclass(frozen=True)
class Built:
    home: Path
    settings: Settings
    package: Path
    vkey: str
    key: SigningKey
    later_attestation: bytes  # a backup attestation from a second, later package
    period: Period


def _as(settings: Settings, actor: str) -> Settings:
    return settings.model_copy(update={"actor": actor})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("evidence")
    home = root / "home"
    settings = load_settings(home=home, environ={}, overrides={"actor": "ops@example.com"})
    initialise(settings)
    with RedisScratch() as cache:
        with engine_for_uri(EngineName.REDIS, ConnectionUri.parse(EngineName.REDIS, cache.uri),
                            password=None, timeout=5) as db:  # fmt: skip
            db.seed_sample(seed=3, scale=10)
        policy_file = root / "policy.toml"
        policy_file.write_text(POLICY, encoding="utf-8")
        with open_app(settings) as app:
            inv.add_source(app, name="cache", engine=EngineName.REDIS, uri=cache.uri,
                           secret=None, classification=Classification.INTERNAL,
                           region="eu-west-1", owner="sre@example.com")  # fmt: skip
            inv.add_vault(app, name="v1", url=f"file://{root / 'vault'}", region="eu-central-1")
            inv.take_inventory(app)
            first = backups.run_backup(app, "cache")
            verify_service.verify_backup(app, first.id)
            drills.run_drill(app, first.id, rto_seconds=600)
        with open_app(_as(settings, "alice")) as app:
            version = policy_service.propose_policy(app, policy_file)
            exc = findings_service.request_exception(
                app, "dataset.classified", "*", reason="classification review in Q1",
                expires=datetime.now(UTC) + timedelta(days=30),
            )  # fmt: skip
        with open_app(_as(settings, "bob")) as app:
            policy_service.approve_policy(app, version.version)
            findings_service.approve_exception(app, exc.id)
            check = policy_service.check_policy(app)
            assert check.opened, "the fixture needs findings"
            findings_service.acknowledge_finding(app, check.opened[0].id, note="on it")
            now = datetime.now(UTC)
            period = Period(now - timedelta(days=1), now + timedelta(minutes=30))
            package = root / "evidence.tar.gz"
            build_evidence(app, period=period, out=package)
            # a second package, later, with one more backup: its attestation is "foreign"
            second = backups.run_backup(app, "cache")
            later = root / "later.tar.gz"
            build_evidence(app, period=period, out=later)
    later_files = read_package(later).files
    identity = load_ledger_identity(home)
    assert identity is not None
    return Built(
        home=home,
        settings=settings,
        package=package,
        vkey=identity.vkey,
        key=identity.signer.key,
        later_attestation=later_files[f"attestations/backup/{second.id}.json"],
        period=period,
    )


def _codes(path: Path, vkey: str) -> set[str]:
    report = verify_evidence(path, vkey)
    assert not report.ok
    return {f.code for f in report.findings}


def _write_tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> None:
    """Write a tar.gz; each member is (name, data, kind) with kind file|symlink."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _rewrite(
    built: Built,
    dst: Path,
    mutate: Callable[[dict[str, bytes]], None],
    *,
    resign_with: SigningKey | None = None,
    keyid: str | None = None,
) -> Path:
    """Copy the package with ``mutate`` applied to its files. With ``resign_with`` the
    manifest is recomputed and signed again (an attacker holding that key), so the check
    under test is the one behind the manifest."""
    files = dict(read_package(built.package).files)
    manifest, signature = files.pop(MANIFEST), files.pop(SIGNATURE)
    mutate(files)
    if resign_with is not None:
        header = {k: v for k, v in json.loads(manifest).items() if k not in ("files", "format")}
        manifest = manifest_bytes(files, header=header)
        kid = keyid or f"{load_ledger_identity(built.home).signer.key_id:08x}"  # type: ignore[union-attr]
        signature = (
            sign_envelope(manifest, MANIFEST_PAYLOAD_TYPE, resign_with, kid).to_json().encode()
        )
    members: list[tuple[str, bytes | None, str]] = [
        (MANIFEST, manifest, "file"),
        (SIGNATURE, signature, "file"),
    ]
    members += [(name, data, "file") for name, data in sorted(files.items())]
    _write_tar(dst, members)
    return dst


def test_the_genuine_package_verifies_offline_with_the_public_key_only(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = verify_evidence(built.package, built.vkey)
    assert report.ok, [f.to_json() for f in report.findings]
    s = report.summary
    assert s["signature_verified"] and s["checkpoint_verified"]
    assert s["backups"] >= 1 and s["verifications"] >= 1 and s["drills"] >= 1
    assert s["findings"] >= 1 and s["attestations"] >= 3 and s["events"] > 10
    files = read_package(built.package).files
    assert {"records/control-results.json", "oscal/assessment-results.json",
            "report/index.html", "checkpoint.note", "ledger/events.jsonl"} <= set(files)  # fmt: skip
    findings = json.loads(files["records/findings.json"])
    acked = [f for f in findings if any(s["status"] == "acknowledged" for s in f["trail"])]
    assert acked and acked[0]["trail"][-1]["actor"] == "bob"
    versions = json.loads(files["records/policy-versions.json"])
    assert versions[0]["proposed_by"] == "alice" and versions[0]["approved_by"] == "bob"
    assert json.loads(files["records/exceptions.json"])[0]["status"] == "approved"
    # the CLI needs no home at all: copy the package somewhere else and verify it there
    elsewhere = tmp_path / "auditor" / "package.tar.gz"
    elsewhere.parent.mkdir()
    shutil.copy(built.package, elsewhere)
    capsys.readouterr()
    code = main(["--home", str(tmp_path / "no-home"), "evidence", "verify", str(elsewhere),
                 "--public-key", built.vkey, "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] is True and out["findings"] == []
    assert not (tmp_path / "no-home").exists()


def test_an_edited_file_is_caught(built: Built, tmp_path: Path) -> None:
    def edit(files: dict[str, bytes]) -> None:
        drills_ = json.loads(files["records/drills.json"])
        drills_[0]["restore_seconds"] = 0.001  # a better RTO story
        files["records/drills.json"] = json.dumps(drills_).encode()

    assert "file-altered" in _codes(_rewrite(built, tmp_path / "a.tgz", edit), built.vkey)
    # even re-signed (the key is stolen), the signed drill attestation disagrees
    resigned = _rewrite(built, tmp_path / "b.tgz", edit, resign_with=built.key)
    assert _codes(resigned, built.vkey) == {"record-mismatch"}


def test_a_dropped_file_is_caught(built: Built, tmp_path: Path) -> None:
    def drop(files: dict[str, bytes]) -> None:
        del files["report/index.html"]

    assert "file-missing" in _codes(_rewrite(built, tmp_path / "a.tgz", drop), built.vkey)


def test_an_added_file_is_caught(built: Built, tmp_path: Path) -> None:
    def add(files: dict[str, bytes]) -> None:
        files["records/extra-proof.json"] = b'{"all": "fine"}'

    assert _codes(_rewrite(built, tmp_path / "a.tgz", add), built.vkey) == {"file-unlisted"}


def test_an_attestation_from_another_package_is_caught(built: Built, tmp_path: Path) -> None:
    def swap(files: dict[str, bytes]) -> None:
        path = next(p for p in files if p.startswith("attestations/backup/"))
        files[path] = built.later_attestation

    assert "file-altered" in _codes(_rewrite(built, tmp_path / "a.tgz", swap), built.vkey)
    # validly signed by the same key, hashes fixed up: still not cited by this package
    codes = _codes(_rewrite(built, tmp_path / "b.tgz", swap, resign_with=built.key), built.vkey)
    assert "attestation-uncited" in codes


def test_a_proof_that_does_not_match_the_checkpoint_is_caught(built: Built, tmp_path: Path) -> None:
    def bend(files: dict[str, bytes]) -> None:
        lines = files["ledger/events.jsonl"].splitlines()
        obj = json.loads(lines[-1])
        first = obj["proof"][0]
        obj["proof"][0] = ("0" if first[0] != "0" else "1") + first[1:]
        lines[-1] = json.dumps(obj).encode()
        files["ledger/events.jsonl"] = b"\n".join(lines) + b"\n"

    codes = _codes(_rewrite(built, tmp_path / "a.tgz", bend, resign_with=built.key), built.vkey)
    assert "proof-invalid" in codes


def test_an_altered_event_is_caught_by_its_proof(built: Built, tmp_path: Path) -> None:
    def alter(files: dict[str, bytes]) -> None:
        lines = files["ledger/events.jsonl"].splitlines()
        obj = json.loads(lines[0])
        obj["entry"] = obj["entry"].replace('"actor":"', '"actor":"x')
        lines[0] = json.dumps(obj).encode()
        files["ledger/events.jsonl"] = b"\n".join(lines) + b"\n"

    codes = _codes(_rewrite(built, tmp_path / "a.tgz", alter, resign_with=built.key), built.vkey)
    assert "proof-invalid" in codes


def test_a_removed_event_breaks_the_records_that_cite_it(built: Built, tmp_path: Path) -> None:
    def remove(files: dict[str, bytes]) -> None:
        lines = files["ledger/events.jsonl"].splitlines()
        keep = [ln for ln in lines if b"policy.approved" not in ln]
        assert len(keep) == len(lines) - 1
        files["ledger/events.jsonl"] = b"\n".join(keep) + b"\n"

    codes = _codes(_rewrite(built, tmp_path / "a.tgz", remove, resign_with=built.key), built.vkey)
    assert "reference-missing" in codes


def test_a_package_signed_by_another_key_is_caught(built: Built, tmp_path: Path) -> None:
    other = SigningKey.generate()
    resigned = _rewrite(built, tmp_path / "a.tgz", lambda f: None, resign_with=other)
    assert "signature-invalid" in _codes(resigned, built.vkey)
    # and the genuine package against someone else's verifier key fails everywhere
    with open_app(_as(built.settings, "x")) as app:
        origin = app.ledger_identity().origin  # type: ignore[union-attr]
    impostor = NoteSigner(origin, other).verifier().vkey()
    codes = _codes(built.package, impostor)
    assert {"signature-invalid", "checkpoint-invalid"} <= codes


def test_a_forged_checkpoint_is_caught(built: Built, tmp_path: Path) -> None:
    def forge(files: dict[str, bytes]) -> None:
        text = files["checkpoint.note"].decode()
        lines = text.split("\n")
        lines[1] = str(int(lines[1]) + 1)  # claim a bigger tree
        files["checkpoint.note"] = "\n".join(lines).encode()

    codes = _codes(_rewrite(built, tmp_path / "a.tgz", forge, resign_with=built.key), built.vkey)
    assert "checkpoint-invalid" in codes


def test_hostile_and_damaged_archives(built: Built, tmp_path: Path) -> None:
    raw = built.package.read_bytes()
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(raw[: len(raw) // 2])
    codes = _codes(truncated, built.vkey)
    assert codes & {"archive-unreadable", "archive-truncated"}

    files = read_package(built.package).files
    hostile = tmp_path / "hostile.tgz"
    members: list[tuple[str, bytes | None, str]] = [
        (n, d, "file") for n, d in sorted(files.items())
    ]
    members += [("../../escape.txt", b"x", "file"), ("link", None, "symlink"),
                ("report/index.html", b"<p>dup</p>", "file")]  # fmt: skip
    _write_tar(hostile, members)
    codes = _codes(hostile, built.vkey)
    assert {"member-path-unsafe", "member-not-regular", "member-duplicate"} <= codes
    assert not (tmp_path.parent / "escape.txt").exists()

    not_a_package = tmp_path / "report.html"
    not_a_package.write_bytes(files["report/index.html"])
    with pytest.raises(FormatError):
        verify_evidence(not_a_package, built.vkey)
    with pytest.raises(FormatError):
        verify_evidence(built.package, "not a key")


def test_build_refuses_bad_input_and_records_nothing(built: Built, tmp_path: Path) -> None:
    with open_app(built.settings) as app:
        with app.read() as uow:
            before = uow.ledger.size()
        with pytest.raises(AlreadyExists):
            build_evidence(app, period=built.period, out=built.package)
        with pytest.raises(InputError):
            build_evidence(app, period=built.period, out=tmp_path / "x.tgz", framework="pci")
        with app.read() as uow:
            assert uow.ledger.size() == before
    with pytest.raises(InputError):
        Period.parse("2026-10-01", "2026-09-01")
    with pytest.raises(InputError):
        Period.parse("last quarter", "2026-09-01")
    assert not (tmp_path / "x.tgz").exists()


def test_the_packaged_oscal_document_validates_against_nists_schema(
    built: Built, oscal_validator: Callable[[Any], list[str]]
) -> None:
    files = read_package(built.package).files
    document = json.loads(files["oscal/assessment-results.json"])
    assert oscal_validator(document) == []
    result = document["assessment-results"]["results"][0]
    reviewed = {
        c["control-id"]
        for sel in result["reviewed-controls"]["control-selections"]
        for c in sel["include-controls"]
    }
    assert {"cp-9", "cp-9.1", "au-9", "cp-10.4"} <= reviewed
    report = files["report/index.html"].decode()
    assert "<script" not in report.lower()
