"""Session 10 attack pass on the evidence package's export cross-checks, the sweep of sealed
preview samples, and the S3 upload's digest check (commit 4b86769).

Evidence: every tamper is re-signed with the genuine ledger key (a builder with a bug or a
partly compromised key signs whatever it is given), so only the cross-checks can catch it.
Sweep: real homes, real accounts with TOTP, real age-sealed samples on a real file system;
time is injected, never slept. S3: a real moto server. Nothing is mocked."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from pymongo import MongoClient
from tests.e2e import test_export_evidence_crosscheck as crosscheck
from tests.e2e.test_export_cli import _customers, prepare
from tests.e2e.test_export_evidence_crosscheck import (
    RECORDS,
    Story,
    _put_records,
    _records,
    _resigned,
    _runner,
)
from tests.e2e.test_export_preview import _people

from affidavit.config import load_settings
from affidavit.crypto.dsse import sign_envelope
from affidavit.errors import ApprovalPending, IntegrityError, VaultError
from affidavit.evidence.package import (
    EVENTS,
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    SIGNATURE,
    read_package,
    write_package,
)
from affidavit.models.identity import Principal
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import requests
from affidavit.services.context import App
from affidavit.services.evidence import verify_evidence
from affidavit.services.exports import preview as export_preview
from affidavit.services.exports import samples
from affidavit.services.exports.destinations import s3_backend, upload
from affidavit.services.exports.run import run_export as run_export_service
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

# the module-scoped fixture of the cross-check tests: one home, two exports, a package
story = crosscheck.story


def _found(story: Story, path: Path) -> list[tuple[str, str, str]]:
    report = verify_evidence(path, story.vkey)
    assert not report.ok
    assert report.summary["signature_verified"]  # the cross-checks caught it, not the seal
    return [(f.code, f.subject, f.message) for f in report.findings]


def _on(story: Story, found: list[tuple[str, str, str]], export_id: str) -> list[str]:
    return [f"{code}: {m}" for code, subject, m in found if subject == f"{RECORDS}#{export_id}"]


# -- evidence: what did not hold ----------------------------------------------------------------


def test_a_record_naming_another_output_is_caught(story: Story, tmp_path: Path) -> None:
    """The record's ``output`` (where the export went, shown to the auditor) was never
    compared with anything: a record could send the export anywhere."""

    def elsewhere(files: dict[str, bytes]) -> None:
        records = _records(files)
        records[story.first]["output"] = "s3://attacker-bucket/dump.jsonl.age"
        records[story.second]["output"] = None
        _put_records(files, records)

    found = _found(story, _resigned(story, tmp_path / "p.tgz", elsewhere))
    for export_id in (story.first, story.second):
        assert any(
            "the output" in m and "record-mismatch" in m for m in _on(story, found, export_id)
        )


def test_an_export_outside_the_packages_period_is_caught(story: Story, tmp_path: Path) -> None:
    """A package for last year that carries this year's exports says they were delivered in
    a period they were not (the builder takes only the period's ``export.completed``)."""

    files = dict(read_package(story.package).files)
    header = {k: v for k, v in json.loads(files[MANIFEST]).items() if k not in ("files", "format")}
    header["period"] = {"from": "2020-01-01T00:00:00+00:00", "to": "2020-02-01T00:00:00+00:00"}
    forged = _resigned_with_header(story, tmp_path / "p.tgz", header)
    found = _found(story, forged)
    for export_id in (story.first, story.second):
        assert any("period" in m for m in _on(story, found, export_id)), found


def _resigned_with_header(story: Story, dst: Path, header: dict[str, Any]) -> Path:
    files = dict(read_package(story.package).files)
    files.pop(MANIFEST)
    files.pop(SIGNATURE)
    write_package(
        dst,
        files,
        header=header,
        sign=lambda m: sign_envelope(m, MANIFEST_PAYLOAD_TYPE, story.key, story.keyid).to_json(),
        mtime=datetime.now(UTC),
    )
    return dst


# -- evidence: what held (each must stay caught) --------------------------------------------------


def _tricked_id(real: str, trick: str) -> Any:
    return {
        "upper": real.upper(),
        "fullwidth": real.replace("e", "\uff45"),
        "trailing-space": real + " ",
        "zero-width": real[:3] + "\u200b" + real[3:],
        "climbing": f"../{real}",
        "int": 17,
        "null": None,
    }[trick]


@pytest.mark.parametrize(
    "trick", ["upper", "fullwidth", "trailing-space", "zero-width", "climbing", "int", "null"]
)
def test_an_id_trick_in_a_record_is_caught(story: Story, tmp_path: Path, trick: str) -> None:
    def rename(files: dict[str, bytes]) -> None:
        records = json.loads(files[RECORDS])
        for r in records:
            if r["id"] == story.first:
                r["id"] = _tricked_id(story.first, trick)
        files[RECORDS] = json.dumps(records).encode()

    found = _found(story, _resigned(story, tmp_path / "p.tgz", rename))
    codes = {code for code, _, _ in found}
    # the genuine export's event and manifest now stand for no record
    assert codes & {"record-malformed", "reference-mismatch", "record-mismatch"}
    assert "record-missing" in codes or "export-manifest-unreferenced" in codes


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("version", "1"),
        ("version", True),
        ("version", 1.5),
        ("records", {"in": "40", "out": 40, "excluded": {}, "fields_dropped": 40}),
        ("records", {"in": 40, "out": 40, "excluded": {}}),  # a key left out
        ("records", None),
        ("recipient", None),
        ("recipient", "ACME"),
        ("output_sha256", "C" * 64),
        ("completed_seq", "17"),
        ("completed_seq", True),
        ("attestation_seq", 1),  # a seq of another kind of event
        ("manifest", "exports/../records/exports.json"),
        ("manifest", None),
    ],
)
def test_a_wrong_value_type_or_null_in_a_record_is_caught(
    story: Story, tmp_path: Path, key: str, value: Any
) -> None:
    def edit(files: dict[str, bytes]) -> None:
        records = _records(files)
        records[story.first][key] = value
        _put_records(files, records)

    found = _found(story, _resigned(story, tmp_path / "p.tgz", edit))
    assert _on(story, found, story.first), found


def test_a_duplicated_record_and_a_dropped_key_are_caught(story: Story, tmp_path: Path) -> None:
    def duplicate(files: dict[str, bytes]) -> None:
        records = json.loads(files[RECORDS])
        lying = dict(records[0], recipient="someone-else")
        del lying["spec"]
        files[RECORDS] = json.dumps([*records, lying]).encode()

    found = _found(story, _resigned(story, tmp_path / "p.tgz", duplicate))
    assert any(code == "record-duplicate" for code, _, _ in found)


def test_a_completed_seq_of_another_kind_of_event_is_caught(story: Story, tmp_path: Path) -> None:
    def point(files: dict[str, bytes]) -> None:
        events = [json.loads(line) for line in files[EVENTS].splitlines()]
        other = next(e for e in events if "backup.completed" in json.dumps(e))
        records = _records(files)
        records[story.first]["completed_seq"] = other["seq"]
        _put_records(files, records)

    found = _found(story, _resigned(story, tmp_path / "p.tgz", point))
    assert any(m.startswith("reference-mismatch") for m in _on(story, found, story.first))


def test_a_huge_export_records_file_is_checked_without_a_crash(
    story: Story, tmp_path: Path
) -> None:
    def flood(files: dict[str, bytes]) -> None:
        records = json.loads(files[RECORDS])
        bogus = [
            {"id": f"ex-{n:016x}", "completed_seq": n, "records": [[[]]]} for n in range(20_000)
        ]
        files[RECORDS] = json.dumps([*records, *bogus]).encode()

    started = datetime.now(UTC)
    found = _found(story, _resigned(story, tmp_path / "p.tgz", flood))
    assert sum(1 for _, subject, _ in found if subject.startswith(f"{RECORDS}#ex-")) >= 20_000
    assert datetime.now(UTC) - started < timedelta(minutes=5)  # no quadratic walk

    def deep(files: dict[str, bytes]) -> None:
        text = files[RECORDS].decode().rstrip().removesuffix("]")
        files[RECORDS] = (
            f'{text}, {{"id": "ex-deep", "records": {"[" * 50_000}{"]" * 50_000}}}]'.encode()
        )

    found = _found(story, _resigned(story, tmp_path / "q.tgz", deep))
    assert ("record-malformed", RECORDS) in {(code, subject) for code, subject, _ in found}


def _raw_package(story: Story, dst: Path, extra: tarfile.TarInfo, data: bytes = b"") -> Path:
    """The genuine package's members, plus one member write_package would refuse."""
    files = read_package(story.package).files
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        tar.addfile(extra, io.BytesIO(data) if data else None)
    dst.write_bytes(buffer.getvalue())
    return dst


@pytest.mark.parametrize("kind", ["traversal", "symlink", "hardlink", "absolute"])
def test_a_planted_member_in_the_exports_folder_is_refused(
    story: Story, tmp_path: Path, kind: str
) -> None:
    manifest = read_package(story.package).files[f"exports/{story.first}.manifest.dsse.json"]
    name = {
        "traversal": "exports/../exports/ex-0.manifest.dsse.json",
        "symlink": "exports/ex-1.manifest.dsse.json",
        "hardlink": "exports/ex-2.manifest.dsse.json",
        "absolute": "/exports/ex-3.manifest.dsse.json",
    }[kind]
    info = tarfile.TarInfo(name)
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        data = b""
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, f"exports/{story.first}.manifest.dsse.json"
        data = b""
    else:
        info.size, data = len(manifest), manifest
    report = verify_evidence(_raw_package(story, tmp_path / "p.tgz", info, data), story.vkey)
    assert not report.ok
    assert {f.code for f in report.findings} & {"member-path-unsafe", "member-not-regular"}


@pytest.mark.parametrize("what", ["folder", "fifo", "missing", "not-gzip", "bad-key"])
def test_bad_input_to_evidence_verify_is_one_line_with_a_hint(
    story: Story, tmp_path: Path, what: str
) -> None:
    target, key = tmp_path / "package.tgz", story.vkey
    if what == "folder":
        target.mkdir()
    elif what == "fifo":
        os.mkfifo(target)
    elif what == "not-gzip":
        target.write_bytes(b"PK\x03\x04 a zip file")
    elif what == "bad-key":
        shutil.copy(story.package, target)
        key = "affidavit+deadbeef+AAAA"
    r = _runner(tmp_path / "no-home")(
        "evidence", "verify", str(target), "--public-key", key, home_dir=None
    )
    assert r.code in (2, 3), r.out + r.err
    assert "Traceback" not in r.err and r.out == ""
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, r.err  # the message, and its hint
    assert "hint" in r.err.lower() or len(lines) == 2


# -- the sweep and the sealed samples -------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def _ask(app: App, olga: Principal) -> tuple[str, str]:
    with app.acting_as(olga), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme")
    request = pending.value.request
    return str(request["id"]), str(request["params"]["preview"]["sample_sha256"])


def _sealed(home: Path, digest: str) -> Path:
    return home / samples.PREVIEW_DIR / f"{digest}.json"


def test_a_sample_with_a_future_time_is_not_kept_forever(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """Clock skew (a clock that ran ahead when the sample was sealed), or a touched file: a
    sample whose time lies in the future would never age past the grace, and its personal
    data would be kept for as long as the home exists."""
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    orphan = "ab" * 32  # a dry pass whose request was never recorded
    export_preview._seal(app, orphan, b'[{"_id":"x"}]')
    far = datetime(2100, 1, 1, tzinfo=UTC).timestamp()
    for name in (digest, orphan):
        os.utime(_sealed(home, name), (far, far))
    requests.cancel(app, people["olga"], request_id, reason="asked by mistake")
    later = datetime.now(UTC) + samples.GRACE + timedelta(minutes=1)
    export_preview.sweep(app, now=later)
    assert not _sealed(home, digest).exists()  # its request ended
    assert not _sealed(home, orphan).exists()  # no request names it, long past the grace


def test_the_writer_does_not_follow_a_planted_partial_symlink(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """The partial file's name is predictable (digest + pid): a symbolic link planted there
    made the sealing write the sample over any file the service may write."""
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    requests.cancel(app, people["olga"], request_id, reason="again")
    assert not _sealed(home, digest).exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = home / samples.PREVIEW_DIR
    (folder / f".{digest}.{os.getpid()}.partial").symlink_to(victim)
    _, again = _ask(app, people["olga"])  # the same records: the same digest
    assert again == digest
    assert victim.read_text() == "precious"
    assert _sealed(home, digest).is_file() and not _sealed(home, digest).is_symlink()
    assert len(export_preview.open_sample(app, digest)) == 5


def test_a_symlinked_samples_folder_is_refused_not_written_through(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """The sweep leaves a samples folder that is a symbolic link alone; the writer followed
    it, so samples went somewhere no sweep would ever remove them."""
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = home / samples.PREVIEW_DIR
    if folder.exists():
        shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    with app.acting_as(people["olga"]), pytest.raises(VaultError, match="symbolic link") as err:
        run_export_service(app, "customers-to-acme")
    assert err.value.hint
    assert list(outside.iterdir()) == []  # no personal data written outside the home
    with app.read() as uow:  # and no request recorded for a sample that was never sealed
        assert requests.read_requests(uow) == {}


def test_weird_entries_in_the_samples_folder_are_left_alone_and_stop_nothing(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    folder = home / samples.PREVIEW_DIR
    victim = tmp_path / "victim.json"
    victim.write_text("not the sweep's")
    os.mkfifo(folder / f"{'11' * 32}.json")  # a fifo with a sample's name: never opened
    (folder / f"{'22' * 32}.json").symlink_to(victim)  # out of the folder: never followed
    (folder / f".{'33' * 32}.1.partial").symlink_to(victim)
    dead = folder / f".{'55' * 32}.{os.getpid()}-{'ab' * 8}.partial"  # a writer that died
    dead.write_text("{")
    nested = folder / "sub"
    nested.mkdir()
    (nested / f"{'44' * 32}.json").write_text("{}")
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    for entry in (folder / f"{'22' * 32}.json", folder / f".{'33' * 32}.1.partial", dead):
        os.utime(entry, (old, old), follow_symlinks=False)
    requests.cancel(app, people["olga"], request_id, reason="no")  # the sweep runs here
    later = datetime.now(UTC) + samples.GRACE + timedelta(hours=1)
    assert export_preview.sweep(app, now=later) == []
    assert not _sealed(home, digest).exists()
    assert victim.read_text() == "not the sweep's"
    assert (folder / f"{'11' * 32}.json").exists()
    assert (nested / f"{'44' * 32}.json").exists()
    assert not dead.exists()  # the writer's own partial file, named as it names them now


class TestOnAFileSystemWithAnyTime:
    """tmpfs keeps any 64-bit time; a file whose time no ``datetime`` can hold made the
    sweep raise, and the sweep runs inside the user's operations (export run, a decision,
    an execution) after their change: the operation failed, or its next step was lost."""

    @pytest.fixture
    def home(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
        if not Path("/dev/shm").is_dir():
            pytest.skip("no tmpfs at /dev/shm")
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                monkeypatch.delenv(var)
        monkeypatch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        top = Path(tempfile.mkdtemp(prefix="affidavit-s10-", dir="/dev/shm"))
        try:
            initialise(load_settings(home=top / "home"))
            yield top / "home"
        finally:
            shutil.rmtree(top, ignore_errors=True)

    def test_a_sample_time_out_of_range_fails_no_operation(
        self, app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
    ) -> None:
        prepare(cli, home, tmp_path, mongo)
        people = _people(app, {})
        folder = home / samples.PREVIEW_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        odd = folder / f"{'99' * 32}.json"
        odd.write_text("{}")
        os.utime(odd, (2**40, 2**40))  # the year 36812
        request_id, digest = _ask(app, people["olga"])  # the sweep runs before sealing
        cancelled = requests.cancel(app, people["olga"], request_id, reason="no")
        assert cancelled.cancelled is not None
        assert not _sealed(home, digest).exists()
        assert not odd.exists()  # a time nobody can have written it at is not believed


# -- the S3 upload's digest check ------------------------------------------------------------------

BUCKET = "exports-session10"


@pytest.fixture
def bucket(s3_env: str) -> Any:
    s3 = boto3.client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET in existing:
        for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    else:
        s3.create_bucket(Bucket=BUCKET)
    return s3


def _envelope(name: str, digest: str) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest}}],
        "predicateType": "https://affidavit.dev/attestations/export/v1",
        "predicate": {"output": {"file": name, "sha256": digest}},
    }
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(
        {"payload": payload, "payloadType": "application/vnd.in-toto+json", "signatures": []}
    ).encode()


def test_the_upload_checks_the_digest_its_manifest_signs(bucket: Any, tmp_path: Path) -> None:
    """``export run`` calls ``upload()`` without ``sha256``: the digest check was never on.
    The manifest it uploads names the output's digest, so the check needs nothing more."""
    partial = tmp_path / ".out.age.partial-x"
    signed = b"the encrypted output the manifest signs"
    partial.write_bytes(b"something else put in its place")
    with pytest.raises(IntegrityError, match="not the file its manifest signs"):
        upload(
            s3_backend(f"s3://{BUCKET}/p"),
            partial=partial,
            name="out.age",
            manifest_name="out.age.manifest.dsse.json",
            manifest=_envelope("out.age", hashlib.sha256(signed).hexdigest()),
        )
    assert bucket.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []
    # and the signed bytes go up whole
    partial.write_bytes(signed)
    assert upload(
        s3_backend(f"s3://{BUCKET}/p"),
        partial=partial,
        name="out.age",
        manifest_name="out.age.manifest.dsse.json",
        manifest=_envelope("out.age", hashlib.sha256(signed).hexdigest()),
    ) == ["out.age", "out.age.manifest.dsse.json"]


def test_a_fifo_in_place_of_an_open_requests_sample_does_not_hang_its_viewer(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """``request show`` opens the sealed sample: a named pipe planted under its name made
    the approver's view (a server worker) wait for a writer for ever."""
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    sealed = _sealed(home, digest)
    sealed.unlink()
    os.mkfifo(sealed)
    request = requests.get_request(app, people["paul"], request_id)
    seen: list[dict[str, Any]] = []
    viewer = threading.Thread(
        target=lambda: seen.append(
            export_preview.request_view(app, people["paul"], request, datetime.now(UTC))
        ),
        daemon=True,
    )
    viewer.start()
    viewer.join(timeout=20)
    hung = viewer.is_alive()
    if hung:  # let the stuck reader go before failing
        with open(sealed, "wb"):
            pass
        viewer.join(timeout=20)
    assert not hung, "the view waited on a named pipe"
    preview = seen[0]["preview"]
    assert preview["sample"] is None
    assert "cannot be read" in preview["sample_withheld"]
    assert sealed.exists()  # not the sweep's: an open request names it


def test_at_the_expiry_boundary_the_sweep_and_the_request_agree(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """The sample goes exactly when the request can no longer be judged: one microsecond
    before its approval window closes it is kept (the request is still pending), at the
    close it is swept (the request is expired)."""
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    request = requests.get_request(app, people["olga"], request_id)
    edge = request.approve_by
    before = edge - timedelta(microseconds=1)
    assert request.state(before).value == "pending"
    assert export_preview.sweep(app, now=before) == []
    assert _sealed(home, digest).is_file()
    assert request.state(edge).value == "expired"
    assert export_preview.sweep(app, now=edge) == [digest]
