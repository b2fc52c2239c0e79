"""The evidence package (issue 7) built from a real history — a Redis source backed up,
verified and drilled on real servers, a policy approved by two people, findings, an exception —
then verified offline and attacked: every tamper test of the issue, each caught."""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import os
import shutil
import tarfile
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from affidavit.cli.main import main
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import sign_envelope
from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.errors import AlreadyExists, FormatError, InputError, VaultError
from affidavit.evidence import package as package_module
from affidavit.evidence.package import (
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    SIGNATURE,
    manifest_bytes,
    read_package,
    write_package,
)
from affidavit.evidence.verify import EvidenceReport
from affidavit.models.period import Period
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import backup as backups
from affidavit.services import drill as drills
from affidavit.services import findings as findings_service
from affidavit.services import inventory as inv
from affidavit.services import keys as keys_service
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
    first_backup_started: datetime
    older_results: list[dict[str, Any]]  # the control results of an earlier policy check


def _as(settings: Settings, actor: str) -> Settings:
    return settings.model_copy(update={"actor": actor})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("evidence")
    home = root / "home"
    settings = load_settings(home=home, environ={}, overrides={"actor": "ops@example.com"})
    initialise(settings)
    with RedisScratch(replica_sync_delay=0) as cache:
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
            early = policy_service.check_policy(app)  # before the exception is approved
            findings_service.approve_exception(app, exc.id)
            keys_service.rotate_keys(app)
            check = policy_service.check_policy(app)
            unresolved = [*check.opened, *check.still_open]
            assert len(unresolved) >= 2, "the fixture needs findings"
            findings_service.acknowledge_finding(app, unresolved[0].id, note="on it")
            with app.read() as uow:
                runs = {r.id: r for r in uow.governance.check_runs()}
            older_results = list(runs[early.run_id].results)
            assert older_results != list(runs[check.run_id].results)
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
        first_backup_started=first.started_at,
        older_results=older_results,
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
    edit_manifest: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Copy the package with ``mutate`` applied to its files. With ``resign_with`` the
    manifest is recomputed (then ``edit_manifest`` applied to it) and signed again (an
    attacker holding that key, or the genuine key to test a check behind the signature)."""
    files = dict(read_package(built.package).files)
    manifest, signature = files.pop(MANIFEST), files.pop(SIGNATURE)
    mutate(files)
    if resign_with is not None:
        header = {k: v for k, v in json.loads(manifest).items() if k not in ("files", "format")}
        manifest = manifest_bytes(files, header=header)
        if edit_manifest is not None:
            document = json.loads(manifest)
            edit_manifest(document)
            manifest = rfc8785.dumps(document)
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
        # by the event's action: other events' text names it too (a finding's message)
        keep = [ln for ln in lines if b'\\"action\\":\\"policy.approved\\"' not in ln]
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


# -- hardening: hostile archives ----------------------------------------------------------------


def _header(name: str, size: int, kind: bytes) -> bytes:
    """One raw tar header block claiming ``size`` bytes of data of type ``kind``."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _raw_tgz(path: Path, *chunks: bytes) -> Path:
    path.write_bytes(gzip.compress(b"".join(chunks), mtime=0))
    return path


def _peak_bytes(read: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE]
)
def test_a_huge_extended_header_is_refused_before_tarfile_reads_it(
    built: Built, tmp_path: Path, kind: bytes
) -> None:
    # the reviewer's bomb: 1.5 GB of long name (or PAX records) that tarfile reads whole;
    # refused on its header, so a few KiB of the data are enough to show it
    bomb = _raw_tgz(tmp_path / "bomb.tgz", _header("././@LongLink", 1_500_000_000, kind),
                    b"\0" * 65_536)  # fmt: skip
    peak = _peak_bytes(lambda: read_package(bomb))
    assert peak < 8 * 1024 * 1024
    problems = read_package(bomb).problems
    assert [p[0] for p in problems] == ["archive-too-large"]
    assert "archive-too-large" in _codes(bomb, built.vkey)


def test_skipped_members_count_against_the_total(built: Built, tmp_path: Path) -> None:
    # a member that is never read (unsafe path, link, duplicate) still declares its size:
    # 3 GB of it is refused at its header, nothing decompressed
    bomb = _raw_tgz(tmp_path / "bomb.tgz", _header("../evil", 3 * 1024**3, tarfile.REGTYPE),
                    b"\0" * 65_536)  # fmt: skip
    assert [p[0] for p in read_package(bomb).problems] == ["archive-too-large"]


def test_the_decompressed_stream_is_capped_whoever_reads_it(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = 1024 * 1024
    monkeypatch.setattr(package_module, "MAX_TOTAL_BYTES", cap)
    # PAX headers below the header limit, each followed by an empty member: only the
    # decompression counter sees these bytes (no member declares them)
    pax = _header("././@PaxHeader", 60 * 1024, tarfile.XHDTYPE) + b"\0" * 60 * 1024
    chunks = [pax + _header(f"m{i}", 0, tarfile.REGTYPE) for i in range(40)]
    many = _raw_tgz(tmp_path / "pax.tgz", *chunks)
    assert ("archive-too-large", "", f"more than {cap} bytes once decompressed") in (
        read_package(many).problems
    )
    # and unread members' declared sizes add up: three skipped members of 400 KiB
    skipped = [
        _header(f"../skip{i}", 400 * 1024, tarfile.REGTYPE) + b"\0" * 400 * 1024 for i in range(3)
    ]
    problems = read_package(_raw_tgz(tmp_path / "skip.tgz", *skipped)).problems
    assert [p[0] for p in problems] == ["member-path-unsafe"] * 2 + ["archive-too-large"]


def test_folders_sparse_files_and_global_headers_are_not_regular_files(
    built: Built, tmp_path: Path
) -> None:
    files = read_package(built.package).files
    members = [_header(n, len(d), tarfile.REGTYPE) + d + b"\0" * (-len(d) % 512)
               for n, d in sorted(files.items())]  # fmt: skip
    folder = _raw_tgz(tmp_path / "folder.tgz", *members, _header("records", 0, tarfile.DIRTYPE))
    assert "member-not-regular" in _codes(folder, built.vkey)
    for kind in (tarfile.GNUTYPE_SPARSE, tarfile.XGLTYPE):
        odd = _raw_tgz(tmp_path / "odd.tgz", _header("x", 512, kind), b"\0" * 1024)
        assert [p[0] for p in read_package(odd).problems] == ["member-not-regular"]


# -- hardening: writing races -------------------------------------------------------------------


def _write_small(out: Path) -> str:
    return write_package(out, {"records/a.json": b"[]\n"}, header={"origin": "o"},
                         sign=lambda m: "{}", mtime=datetime.now(UTC))  # fmt: skip


def test_a_planted_temporary_file_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = tmp_path / ".pkg.tgz.tmp"
    planted.symlink_to(victim)
    monkeypatch.setattr(package_module, "_temporary_path", lambda out: planted)
    with pytest.raises(VaultError):
        _write_small(tmp_path / "pkg.tgz")
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert not (tmp_path / "pkg.tgz").exists()


def test_a_destination_that_appears_while_writing_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "pkg.tgz"
    real_fsync = os.fsync

    def plant_then_sync(fd: int) -> None:
        if not os.path.lexists(out):
            out.symlink_to(victim)  # the race: between the check and the publication
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", plant_then_sync)
    with pytest.raises(AlreadyExists):
        _write_small(out)
    assert victim.read_text() == "precious" and out.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg.tgz", "victim.txt"]
    monkeypatch.undo()
    fresh = tmp_path / "fresh.tgz"
    assert _write_small(fresh) == sha256_hex(fresh.read_bytes())


# -- hardening: completeness ----------------------------------------------------------------------


def _report(path: Path, vkey: str) -> EvidenceReport:
    report = verify_evidence(path, vkey)
    assert not report.ok
    return report


def _edit(path: str, change: Callable[[Any], Any]) -> Callable[[dict[str, bytes]], None]:
    """A mutation of one JSON file: ``change`` edits the parsed value in place or returns a
    replacement."""

    def mutate(files: dict[str, bytes]) -> None:
        value = json.loads(files[path])
        changed = change(value)
        files[path] = json.dumps(value if changed is None else changed).encode()

    return mutate


def _resigned(built: Built, tmp_path: Path, mutate: Callable[[dict[str, bytes]], None],
              **kwargs: Any) -> Path:  # fmt: skip
    """The package with ``mutate`` applied and signed again with the genuine key: what a
    catalog writer could make the builder produce, so the check under test is the one
    behind the signature."""
    return _rewrite(built, tmp_path / "resigned.tgz", mutate, resign_with=built.key, **kwargs)


def _seq_of(built: Built, action: str) -> list[int]:
    lines = read_package(built.package).files["ledger/events.jsonl"].splitlines()
    events = [json.loads(json.loads(line)["entry"]) for line in lines]
    return [e["seq"] for e in events if e["action"] == action]


def test_a_dropped_backup_record_is_caught(built: Built, tmp_path: Path) -> None:
    report = _report(_resigned(built, tmp_path, _edit("records/backups.json", lambda v: [])),
                     built.vkey)  # fmt: skip
    missing = [f for f in report.findings if f.code == "record-missing"]
    (seq,) = _seq_of(built, "backup.completed")
    assert [f.details["seq"] for f in missing] == [seq]
    assert {f.code for f in report.findings} == {"record-missing", "attestation-unreferenced"}


def test_a_dropped_finding_is_caught(built: Built, tmp_path: Path) -> None:
    def drop_acknowledged(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [f for f in findings if f["status"] != "acknowledged"]

    report = _report(
        _resigned(built, tmp_path, _edit("records/findings.json", drop_acknowledged)), built.vkey
    )
    assert {f.code for f in report.findings} == {"record-missing"}
    assert set(_seq_of(built, "finding.acknowledged")) <= {
        f.details["seq"] for f in report.findings
    }


def test_a_finding_without_its_opening_is_caught(built: Built, tmp_path: Path) -> None:
    def cut(findings: list[dict[str, Any]]) -> None:
        findings[0]["trail"] = findings[0]["trail"][1:]
        findings[-1]["trail"] = []

    codes = _codes(_resigned(built, tmp_path, _edit("records/findings.json", cut)), built.vkey)
    assert {"reference-missing", "record-missing"} <= codes


def test_an_exception_without_its_request_is_caught(built: Built, tmp_path: Path) -> None:
    (requested,) = _seq_of(built, "exception.requested")

    def cut(exceptions: list[dict[str, Any]]) -> None:
        exceptions[0]["seqs"].remove(requested)

    report = _report(_resigned(built, tmp_path, _edit("records/exceptions.json", cut)), built.vkey)
    assert {f.code for f in report.findings} == {"reference-missing", "record-missing"}
    assert any("exception.requested" in f.message for f in report.findings)


def test_an_attestation_must_back_exactly_one_record(built: Built, tmp_path: Path) -> None:
    def orphan(drills: list[dict[str, Any]]) -> None:
        drills[0]["attestation"] = None

    codes = _codes(_resigned(built, tmp_path, _edit("records/drills.json", orphan)), built.vkey)
    assert codes == {"reference-missing", "attestation-unreferenced"}

    def twice(verifications: list[dict[str, Any]]) -> None:
        verifications.append({**verifications[0], "id": "vf-copy"})

    report = _report(
        _resigned(built, tmp_path, _edit("records/verifications.json", twice)), built.vkey
    )
    assert any(f.code == "attestation-unreferenced" and "2 records" in f.message
               for f in report.findings)  # fmt: skip


def test_a_package_without_control_results_fails(built: Built, tmp_path: Path) -> None:
    def no_checks(files: dict[str, bytes]) -> None:
        files["records/check-runs.json"] = b"[]"
        files["records/control-results.json"] = b"[]"

    codes = _codes(_resigned(built, tmp_path, no_checks), built.vkey)
    assert codes == {"control-results-missing", "record-missing"}  # the policy.checked events
    empty = _resigned(built, tmp_path, _edit("records/control-results.json", lambda v: []))
    assert "control-results-missing" in _codes(empty, built.vkey)


def test_the_newest_check_run_is_the_one_with_the_highest_seq(built: Built, tmp_path: Path) -> None:
    reordered = _resigned(built, tmp_path, _edit("records/check-runs.json", lambda v: v[::-1]))
    report = verify_evidence(reordered, built.vkey)
    assert report.ok, [f.to_json() for f in report.findings]  # the order of the list is moot

    def older(files: dict[str, bytes]) -> None:  # the earlier run's results, its run last
        files["records/control-results.json"] = json.dumps(built.older_results).encode()
        files["records/check-runs.json"] = json.dumps(
            sorted(json.loads(files["records/check-runs.json"]), key=lambda r: -r["seq"])
        ).encode()

    report = _report(_resigned(built, tmp_path, older), built.vkey)
    assert [f.code for f in report.findings] == ["record-mismatch"]
    assert f"seq {max(_seq_of(built, 'policy.checked'))}" in report.findings[0].message


def test_events_out_of_order_are_caught(built: Built, tmp_path: Path) -> None:
    def swap(files: dict[str, bytes]) -> None:
        lines = files["ledger/events.jsonl"].splitlines()
        lines[0], lines[1] = lines[1], lines[0]
        files["ledger/events.jsonl"] = b"\n".join(lines) + b"\n"

    assert _codes(_resigned(built, tmp_path, swap), built.vkey) == {"event-out-of-order"}


def test_a_path_listed_twice_in_the_manifest_is_caught(built: Built, tmp_path: Path) -> None:
    def twice(manifest: dict[str, Any]) -> None:
        manifest["files"].append(manifest["files"][0])

    resigned = _resigned(built, tmp_path, lambda files: None, edit_manifest=twice)
    assert _codes(resigned, built.vkey) == {"manifest-malformed"}


# -- hardening: what a record says must be what the ledger and the attestations say -------------


def _acked(findings: list[dict[str, Any]]) -> dict[str, Any]:
    return next(f for f in findings if f["status"] == "acknowledged")


def _set(obj: dict[str, Any], key: str, value: Any) -> None:
    obj[key] = value


FIELD_EDITS: list[tuple[str, str, Callable[[Any], Any], str]] = [
    ("finding-step-actor", "findings", lambda v: _set(_acked(v)["trail"][-1], "actor", "carol"),
     "actor"),
    ("finding-step-note", "findings", lambda v: _set(_acked(v)["trail"][-1], "note", "fixed"),
     "note"),
    ("finding-opening-note", "findings", lambda v: _set(v[0]["trail"][0], "note", "minor"),
     "note"),
    ("finding-severity", "findings", lambda v: _set(v[1], "severity", "info"), "severity"),
    ("finding-control", "findings", lambda v: _set(v[1], "control", "backup.rpo"), "control"),
    ("finding-subject", "findings", lambda v: _set(v[1], "subject", "source:x"), "subject"),
    ("finding-status", "findings", lambda v: _set(_acked(v), "status", "resolved"), "status"),
    ("exception-requester", "exceptions", lambda v: _set(v[0], "requested_by", "carol"),
     "requester"),
    ("exception-reason", "exceptions", lambda v: _set(v[0], "reason", "approved by CISO"),
     "reason"),
    ("exception-expiry", "exceptions", lambda v: _set(v[0], "expires_at", "2099-01-01T00:00:00+00:00"),
     "expiry"),
    ("exception-control", "exceptions", lambda v: _set(v[0], "control", "backup.encrypted"),
     "control"),
    ("exception-approver", "exceptions", lambda v: _set(v[0], "approved_by", "carol"),
     "approver"),
    ("exception-status", "exceptions", lambda v: _set(v[0], "status", "requested"),
     "approved or revoked"),
    ("policy-proposer", "policy-versions", lambda v: _set(v[0], "proposed_by", "carol"),
     "proposer"),
    ("policy-approver", "policy-versions", lambda v: _set(v[0], "approved_by", "carol"),
     "approver"),
    ("check-actor", "check-runs", lambda v: _set(v[0], "actor", "carol"), "actor"),
    ("check-ok", "check-runs", lambda v: _set(v[0], "ok", True), "ok"),
    ("check-version", "check-runs", lambda v: _set(v[0], "policy_version", 7), "policy_version"),
    ("backup-retention", "backups",
     lambda v: _set(v[0], "retain_until", "2099-01-01T00:00:00+00:00"), "retain_until"),
    ("backup-source", "backups", lambda v: _set(v[0], "source", "orders"), "source"),
    ("backup-vault", "backups", lambda v: _set(v[0], "vault", "s3-locked"), "vault"),
    ("backup-kind", "backups", lambda v: _set(v[0], "kind", "ingest"), "kind"),
    ("backup-started", "backups", lambda v: _set(v[0], "started_at", "2020-01-01T00:00:00+00:00"),
     "started_at"),
    ("backup-artifact-digest", "backups",
     lambda v: _set(v[0]["artifacts"][0], "sha256", "0" * 64), "sha256"),
    ("backup-artifact-dropped", "backups", lambda v: _set(v[0], "artifacts", v[0]["artifacts"][1:]),
     "not in the record"),
    ("backup-artifact-added", "backups",
     lambda v: v[0]["artifacts"].append({**v[0]["artifacts"][0], "path": "cache/x.age"}),
     "not in its attestation"),
    ("backup-classification", "backups",
     lambda v: _set(v[0]["datasets"][0], "classification", "public"), "datasets"),
    ("verification-kind", "verifications", lambda v: _set(v[0], "kind", "against-source"),
     "kind"),
    ("verification-findings", "verifications",
     lambda v: _set(v[0], "findings", [{"code": "x", "message": "y", "subject": "z"}]),
     "finding"),
    ("verification-ok", "verifications", lambda v: _set(v[0], "ok", not v[0]["ok"]), "ok"),
    ("drill-fingerprints", "drills",
     lambda v: _set(v[0], "fingerprint_match", not v[0]["fingerprint_match"]),
     "fingerprint_match"),
    ("drill-phases", "drills", lambda v: _set(v[0], "phases", {"restore": 0.5}), "phases"),
    ("drill-rto", "drills", lambda v: _set(v[0], "rto_seconds", 86400), "rto_seconds"),
    ("rotation-version", "key-rotations", lambda v: _set(v[0], "new_version", 9), "new_version"),
    ("rotation-actor", "key-rotations", lambda v: _set(v[0], "actor", "carol"), "actor"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change", "what"), [e[1:] for e in FIELD_EDITS], ids=[e[0] for e in FIELD_EDITS]
)
def test_a_record_that_says_something_else_is_caught(
    built: Built, tmp_path: Path, name: str, change: Callable[[Any], Any], what: str
) -> None:
    path = f"records/{name}.json"
    report = _report(_resigned(built, tmp_path, _edit(path, change)), built.vkey)
    assert {f.code for f in report.findings} == {"record-mismatch"}, [
        f.to_json() for f in report.findings
    ]
    assert all(f.subject.startswith(path) for f in report.findings)
    assert any(what in f.message for f in report.findings), [f.message for f in report.findings]


# -- hardening: hostile JSON never crashes the verifier -----------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("records/findings.json", "record-malformed"),
        ("records/control-results.json", "record-malformed"),
        ("ledger/events.jsonl", "event-malformed"),
        ("oscal/assessment-results.json", "oscal-malformed"),
        ("attestations/backup/*", "attestation-invalid"),
    ],
)
def test_deeply_nested_json_is_a_finding_not_a_crash(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, code: str
) -> None:
    def nest(files: dict[str, bytes]) -> None:
        target = next(p for p in files if p == path or fnmatch.fnmatch(p, path))
        files[target] = DEEP

    resigned = _resigned(built, tmp_path, nest)
    assert code in _codes(resigned, built.vkey)
    capsys.readouterr()
    exit_code = main(["evidence", "verify", str(resigned), "--public-key", built.vkey, "--json"])
    assert exit_code == 1 and json.loads(capsys.readouterr().out)["ok"] is False


def test_a_deeply_nested_manifest_or_signature_is_a_finding(built: Built, tmp_path: Path) -> None:
    files = read_package(built.package).files
    for name in (MANIFEST, SIGNATURE):
        members: list[tuple[str, bytes | None, str]] = [
            (n, DEEP if n == name else d, "file") for n, d in sorted(files.items())
        ]
        _write_tar(tmp_path / "deep.tgz", members)
        codes = _codes(tmp_path / "deep.tgz", built.vkey)
        assert "signature-invalid" in codes or "manifest-malformed" in codes
        (tmp_path / "deep.tgz").unlink()


WRONG_TYPES: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("trail-a-string", "findings", lambda v: _set(v[0], "trail", "opened, then fixed")),
    ("trail-steps-ints", "findings", lambda v: _set(v[0], "trail", [1, 2])),
    ("datasets-an-int", "backups", lambda v: _set(v[0], "datasets", 5)),
    ("artifacts-an-object", "backups", lambda v: _set(v[0], "artifacts", {"a": 1})),
    ("seqs-a-string", "exceptions", lambda v: _set(v[0], "seqs", "17,25")),
    ("findings-an-int", "verifications", lambda v: _set(v[0], "findings", 3)),
    ("drill-findings-a-string", "drills", lambda v: _set(v[0], "findings", "none")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change"), [e[1:] for e in WRONG_TYPES], ids=[e[0] for e in WRONG_TYPES]
)
def test_wrong_nested_types_are_reported_and_the_other_records_still_checked(
    built: Built, tmp_path: Path, name: str, change: Callable[[Any], Any]
) -> None:
    def mutate(files: dict[str, bytes]) -> None:
        _edit(f"records/{name}.json", change)(files)
        # and another record elsewhere says something else: it must still be caught
        _edit("records/key-rotations.json", lambda v: _set(v[0], "actor", "carol"))(files)

    report = _report(_resigned(built, tmp_path, mutate), built.vkey)
    codes = {f.code: f.subject for f in report.findings}
    assert codes["record-malformed"].startswith(f"records/{name}.json#")
    assert codes["record-mismatch"].startswith("records/key-rotations.json#")


def test_one_malformed_finding_does_not_hide_the_next(built: Built, tmp_path: Path) -> None:
    def mutate(findings: list[dict[str, Any]]) -> None:
        findings[0]["trail"] = "opened, then fixed"
        findings[-1]["severity"] = "info"

    report = _report(_resigned(built, tmp_path, _edit("records/findings.json", mutate)),
                     built.vkey)  # fmt: skip
    by_code = {f.code: f.subject for f in report.findings}
    assert set(by_code) >= {"record-malformed", "record-mismatch"}
    assert by_code["record-malformed"] != by_code["record-mismatch"]


# -- hardening: the builder ---------------------------------------------------------------------


def test_a_package_cites_only_the_completions_of_the_records_it_holds(
    built: Built, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    quiet = Period(now + timedelta(hours=1), now + timedelta(hours=2))  # nothing happened
    out = tmp_path / "quiet.tgz"
    with open_app(built.settings) as app:
        result = build_evidence(app, period=quiet, out=out)
    assert any("control-results-missing" in w for w in result.warnings)
    events = read_package(out).files["ledger/events.jsonl"].decode()
    for action in ("backup.completed", "verification.completed", "drill.completed"):
        assert f'\\"action\\":\\"{action}\\"' not in events
    # still-open findings, the exception in force and the policy are there, completely;
    # with no policy check in the period the package fails closed
    report = verify_evidence(out, built.vkey)
    assert {f.code for f in report.findings} == {"control-results-missing"}


def test_a_backup_completed_in_the_period_is_in_the_package(built: Built, tmp_path: Path) -> None:
    # the first backup started just before the period and completed inside it
    start = built.first_backup_started + timedelta(microseconds=1)
    out = tmp_path / "from-the-middle.tgz"
    with open_app(built.settings) as app:
        build_evidence(app, period=Period(start, datetime.now(UTC) + timedelta(hours=1)), out=out)
    report = verify_evidence(out, built.vkey)
    assert report.ok, [f.to_json() for f in report.findings]
    backups = json.loads(read_package(out).files["records/backups.json"])
    started = [datetime.fromisoformat(b["started_at"]) for b in backups]
    assert min(started) == built.first_backup_started


def test_build_refuses_a_missing_folder_and_periods_out_of_range(
    built: Built, tmp_path: Path
) -> None:
    with open_app(built.settings) as app:
        with app.read() as uow:
            before = uow.ledger.size()
        with pytest.raises(InputError):
            build_evidence(app, period=built.period, out=tmp_path / "no" / "such" / "x.tgz")
        with app.read() as uow:
            assert uow.ledger.size() == before
    for start, end in (("0999-01-01", "2026-01-01"), ("1969-12-31", "2026-01-01"),
                       ("2026-01-01", "9999-12-31"), ("2026-01-01", "9999-12-31T23:59:59-05:00"),
                       ("0001-01-01T00:00:00+01:00", "2026-01-01")):  # fmt: skip
        with pytest.raises(InputError):
            Period.parse(start, end)
    with pytest.raises(InputError):
        Period(datetime(999, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
