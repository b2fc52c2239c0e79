"""``evidence verify`` cross-checks the export records a package carries (issue 17): each line
of ``records/exports.json`` against its signed export manifest, the ``export.completed`` and
``attestation.created`` events it cites, and the ``export.*`` control results.

Every tamper here is re-signed with the genuine ledger key (a builder whose catalog was
edited signs whatever the catalog says), so the package's own signature and digests hold and
only the cross-checks can catch it. Real SecantusDB, real backups, real exports, real
packages."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.conftest import CliResult
from tests.e2e.test_export_cli import _customers, prepare, run_export

from affidavit.cli.main import main
from affidavit.config import load_settings
from affidavit.crypto.dsse import sign_envelope
from affidavit.crypto.signing import SigningKey
from affidavit.evidence.package import (
    EVENTS,
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    SIGNATURE,
    read_package,
    write_package,
)
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.context import load_ledger_identity
from affidavit.services.evidence import verify_evidence
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

RECORDS = "records/exports.json"
RESULTS = "records/control-results.json"


@dataclass(frozen=True)
class Story:
    home: Path
    package: Path
    vkey: str
    key: SigningKey
    keyid: str
    first: str  # export ids
    second: str


def _runner(home: Path) -> Callable[..., CliResult]:
    def run(*args: str, home_dir: Path | None = home) -> CliResult:
        argv = (["--home", str(home_dir)] if home_dir is not None else []) + list(args)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
        return CliResult(code=code, out=out.getvalue(), err=err.getvalue())

    return run


@pytest.fixture(scope="module")
def story(
    tmp_path_factory: pytest.TempPathFactory, mongo_scratch_class: type[SecantusScratch]
) -> Iterator[Story]:
    """One home with two exports delivered, a policy check, and a genuine package."""
    tmp = tmp_path_factory.mktemp("export-evidence")
    with pytest.MonkeyPatch.context() as mp, mongo_scratch_class() as server:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                mp.delenv(var)
        mp.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        home = tmp / "home"
        initialise(load_settings(home=home))
        cli = _runner(home)
        s = prepare(cli, home, tmp, server.uri)
        first = run_export(cli)["export"]["id"]
        second = run_export(cli, "--output", "second.jsonl.age")["export"]["id"]
        assert cli("policy", "check", "--offline").code in (0, 1)
        package = tmp / "evidence.tar.gz"
        today = datetime.now(UTC).date()
        r = cli(
            "evidence", "build", "--from", str(today - timedelta(days=1)), "--to", str(today),
            "--out", str(package), "--json",
        )  # fmt: skip
        assert r.code == 0, r.err
        identity = load_ledger_identity(home)
        assert identity is not None
        yield Story(
            home=home,
            package=package,
            vkey=s.vkey,
            key=identity.signer.key,
            keyid=f"{identity.signer.key_id:08x}",
            first=first,
            second=second,
        )


def _resigned(story: Story, dst: Path, mutate: Callable[[dict[str, bytes]], None]) -> Path:
    """The genuine package with ``mutate`` applied to its files, signed again with the
    genuine ledger key."""
    files = dict(read_package(story.package).files)
    header = {
        k: v for k, v in json.loads(files.pop(MANIFEST)).items() if k not in ("files", "format")
    }
    files.pop(SIGNATURE)
    mutate(files)
    write_package(
        dst,
        files,
        header=header,
        sign=lambda m: sign_envelope(m, MANIFEST_PAYLOAD_TYPE, story.key, story.keyid).to_json(),
        mtime=datetime.now(UTC),
    )
    return dst


def _records(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in json.loads(files[RECORDS])}


def _put_records(files: dict[str, bytes], records: dict[str, dict[str, Any]]) -> None:
    files[RECORDS] = json.dumps(list(records.values()), indent=2).encode()


def _findings(story: Story, path: Path) -> list[tuple[str, str, str]]:
    report = verify_evidence(path, story.vkey)
    assert not report.ok
    assert report.summary["signature_verified"]  # the cross-checks caught it, not the seal
    return [(f.code, f.subject, f.message) for f in report.findings]


def test_the_genuine_package_with_two_exports_verifies(story: Story) -> None:
    report = verify_evidence(story.package, story.vkey)
    assert report.ok, [f.to_json() for f in report.findings]
    assert report.summary["exports"] == 2
    files = read_package(story.package).files
    assert set(_records(files)) == {story.first, story.second}
    # re-signing alone changes nothing: the tamper tests below differ only by their edit
    again = _resigned(story, story.package.with_name("same.tar.gz"), lambda files: None)
    assert verify_evidence(again, story.vkey).ok


def test_an_edited_count_in_the_record_is_caught(story: Story, tmp_path: Path) -> None:
    def edit(files: dict[str, bytes]) -> None:
        records = _records(files)
        records[story.first]["records"]["out"] -= 1
        _put_records(files, records)

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", edit))
    where = f"{RECORDS}#{story.first}"
    messages = [m for code, subject, m in found if code == "record-mismatch" and subject == where]
    assert any("export.completed" in m for m in messages)  # the event says otherwise
    assert any("its manifest" in m for m in messages)  # and so does the signed predicate


def test_another_exports_manifest_swapped_in_is_caught(story: Story, tmp_path: Path) -> None:
    def swap(files: dict[str, bytes]) -> None:
        files[f"exports/{story.first}.manifest.dsse.json"] = files[
            f"exports/{story.second}.manifest.dsse.json"
        ]

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", swap))
    where = f"{RECORDS}#{story.first}"
    codes = {code for code, subject, _ in found if subject == where}
    # the cited attestation.created is about another statement, and the export id differs
    assert "reference-mismatch" in codes
    assert any(
        "the export id" in m and story.second in m
        for code, subject, m in found
        if code == "record-mismatch" and subject == where
    )


def test_an_edited_predicate_breaks_the_manifest_signature(story: Story, tmp_path: Path) -> None:
    path = f"exports/{story.first}.manifest.dsse.json"

    def edit(files: dict[str, bytes]) -> None:
        envelope = json.loads(files[path])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["records"]["out"] -= 1
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        files[path] = json.dumps(envelope).encode()

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", edit))
    assert any(code == "attestation-invalid" and subject == path for code, subject, _ in found)


@pytest.mark.parametrize("cited", ["completed_seq", "attestation_seq"])
def test_a_dropped_cited_event_is_caught(story: Story, tmp_path: Path, cited: str) -> None:
    def drop(files: dict[str, bytes]) -> None:
        seq = _records(files)[story.first][cited]
        lines = files[EVENTS].splitlines(keepends=True)
        files[EVENTS] = b"".join(line for line in lines if json.loads(line)["seq"] != seq)

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", drop))
    assert any(
        code == "reference-missing" and subject == f"{RECORDS}#{story.first}"
        for code, subject, _ in found
    )


@pytest.mark.parametrize("cited", ["completed_seq", "attestation_seq"])
def test_a_record_citing_another_exports_event_is_caught(
    story: Story, tmp_path: Path, cited: str
) -> None:
    def point(files: dict[str, bytes]) -> None:
        records = _records(files)
        records[story.first][cited] = records[story.second][cited]
        _put_records(files, records)

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", point))
    mine = {code for code, subject, _ in found if subject == f"{RECORDS}#{story.first}"}
    assert "reference-mismatch" in mine


def test_a_record_whose_manifest_was_left_out_is_not_passed(story: Story, tmp_path: Path) -> None:
    """What the builder writes when the catalog's manifest is not the ledger's; the export's
    passing controls then stand on nothing in the package."""

    def leave_out(files: dict[str, bytes]) -> None:
        records = _records(files)
        del files[f"exports/{story.first}.manifest.dsse.json"]
        records[story.first].update(
            manifest=None,
            attestation_seq=None,
            manifest_problem="the catalog's manifest is not the one the ledger recorded",
        )
        _put_records(files, records)

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", leave_out))
    assert any(
        code == "export-manifest-missing" and subject == f"{RECORDS}#{story.first}"
        for code, subject, _ in found
    )
    passed = [
        subject
        for code, subject, _ in found
        if code == "export-control-inconsistent" and subject.endswith(f":export:{story.first}")
    ]
    assert passed  # export.minimised, export.contract_valid, ... passed for it
    assert not any(f"export:{story.second}" in subject for _, subject, _ in found)


def test_a_manifest_no_record_cites_is_caught(story: Story, tmp_path: Path) -> None:
    def plant(files: dict[str, bytes]) -> None:
        files["exports/ex-0000000000000000.manifest.dsse.json"] = files[
            f"exports/{story.first}.manifest.dsse.json"
        ]

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", plant))
    assert ("export-manifest-unreferenced", "exports/ex-0000000000000000.manifest.dsse.json") in {
        (code, subject) for code, subject, _ in found
    }


def test_a_dropped_export_record_is_caught(story: Story, tmp_path: Path) -> None:
    def drop(files: dict[str, bytes]) -> None:
        records = _records(files)
        del records[story.first]
        _put_records(files, records)

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", drop))
    codes = {code for code, _, _ in found}
    assert {"record-missing", "export-manifest-unreferenced"} <= codes


def test_a_passing_approval_control_for_an_unapproved_run_is_caught(
    story: Story, tmp_path: Path
) -> None:
    """Local mode: the signed manifest says nobody approved the run, so ``export.approved``
    cannot have passed for it (the results' digest is caught too; this names the export)."""

    def flip(files: dict[str, bytes]) -> None:
        results = json.loads(files[RESULTS])
        for r in results:
            if r["control"] == "export.approved" and r["subject"] == f"export:{story.first}":
                assert r["status"] == "fail"
                r["status"] = "pass"
        files[RESULTS] = json.dumps(results).encode()

    found = _findings(story, _resigned(story, tmp_path / "p.tgz", flip))
    assert any(
        code == "export-control-inconsistent" and "local-os-user" in message
        for code, _, message in found
    )


def test_the_cli_fails_a_tampered_package_with_exit_1(story: Story, tmp_path: Path) -> None:
    def edit(files: dict[str, bytes]) -> None:
        records = _records(files)
        records[story.second]["recipient"] = "someone-else"
        _put_records(files, records)

    forged = _resigned(story, tmp_path / "p.tgz", edit)
    r = _runner(tmp_path / "no-home")("evidence", "verify", str(forged), "--public-key",
                                      story.vkey, "--json", home_dir=None)  # fmt: skip
    assert r.code == 1, r.out + r.err
    out = json.loads(r.out)
    assert out["ok"] is False
    assert any(f["subject"] == f"{RECORDS}#{story.second}" for f in out["findings"])
