"""One suite over every vault backend: a folder, and S3 (moto server mode, Object Lock)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.errors import InputError, VaultError
from affidavit.models.inventory import Vault, VaultName, parse_vault_url
from affidavit.vaults.base import (
    ArtifactLocked,
    ArtifactNotFound,
    ArtifactReplaced,
    EntryKind,
    VaultBackend,
)
from affidavit.vaults.file import FileVault
from affidavit.vaults.s3 import PART_SIZE, S3Vault

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def make_vault(url: str) -> Vault:
    kind, normal = parse_vault_url(url)
    return Vault(
        name=VaultName("v"),
        kind=kind,
        url=normal,
        region=None,
        immutable_days=None,
        created_at=datetime.now(UTC),
    )


@dataclass
class Case:
    """A backend under test plus ways to look behind its back."""

    kind: str
    vault: VaultBackend
    stored_bytes: Callable[[], int]  # bytes already handed to storage by a put in progress
    leftovers: Callable[[], list[str]]  # anything a failed put could have left behind
    max_buffer: int  # bytes a put may hold before handing them to storage
    s3: Any = None


def new_bucket(s3: Any, *, object_lock: bool = True) -> str:
    bucket = f"affidavit-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
    return bucket


@pytest.fixture(params=["file", "s3"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "file":
        root = tmp_path / "vault"
        vault = FileVault(make_vault(f"file://{root}"))

        def partial_bytes() -> int:
            return sum(p.stat().st_size for p in root.rglob("*.partial"))

        def file_leftovers() -> list[str]:
            if not root.exists():
                return []
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())

        yield Case("file", vault, partial_bytes, file_leftovers, 1 * MIB)
        for path in root.rglob("*") if root.exists() else []:  # let tmp_path be cleaned
            path.chmod(0o755 if path.is_dir() else 0o644)
        return
    request.getfixturevalue("s3_env")
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = new_bucket(s3)

    def part_bytes() -> int:
        total = 0
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            parts = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            total += sum(p["Size"] for p in parts.get("Parts", []))
        return total

    def s3_leftovers() -> list[str]:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        versions = s3.list_object_versions(Bucket=bucket)
        found = [f"upload:{u['Key']}" for u in uploads]
        found += [f"version:{v['Key']}" for v in versions.get("Versions", [])]
        found += [f"marker:{m['Key']}" for m in versions.get("DeleteMarkers", [])]
        return found

    vault = S3Vault(make_vault(f"s3://{bucket}/backups"))
    yield Case("s3", vault, part_bytes, s3_leftovers, PART_SIZE, s3=s3)


def pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Source:
    """A chunk generator that records how far it runs ahead of what the vault stored."""

    def __init__(self, case: Case, chunks: list[bytes]) -> None:
        self.case = case
        self.chunks = chunks
        self.produced = 0
        self.max_in_flight = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            in_flight = self.produced - self.case.stored_bytes()
            self.max_in_flight = max(self.max_in_flight, in_flight)
            self.produced += len(chunk)
            yield chunk


def later(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


# --- round trip ---------------------------------------------------------------------------


def test_put_and_open_stream_20_mib_lazily(case: Case) -> None:
    chunks = [pattern(i, MIB) for i in range(20)]
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    source = Source(case, chunks)
    stored = case.vault.put("src/b1/data.bin", source, retain_until=None)
    assert stored.size == 20 * MIB
    assert stored.sha256 == expected
    assert stored.retain_until is None
    # the generator never ran more than one part (or one chunk) ahead of the storage
    assert source.max_in_flight <= case.max_buffer < 20 * MIB
    digest = hashlib.sha256()
    size = 0
    with case.vault.open("src/b1/data.bin") as stream:
        while block := stream.read(3 * MIB + 7):
            digest.update(block)
            size += len(block)
    assert (size, digest.hexdigest()) == (20 * MIB, expected)
    info = case.vault.stat("src/b1/data.bin")
    assert info.size == 20 * MIB
    assert info.path == "src/b1/data.bin"
    assert info.retain_until is None


def test_empty_artifact_round_trip(case: Case) -> None:
    stored = case.vault.put("src/b1/empty", iter([]), retain_until=None)
    assert stored.size == 0
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    with case.vault.open("src/b1/empty") as stream:
        assert stream.read() == b""


def test_chunks_of_odd_sizes_are_stored_exactly(case: Case) -> None:
    data = pattern(99, PART_SIZE + 12345)
    cuts = [0, 1, 4097, PART_SIZE - 1, PART_SIZE + 1, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    stored = case.vault.put("odd", chunks, retain_until=None)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    with case.vault.open("odd") as stream:
        assert stream.read() == data


def test_list_is_sorted_and_filtered_by_prefix(case: Case) -> None:
    for path in ["b/x", "a/c", "a/b/1", "a-z"]:
        case.vault.put(path, [path.encode()], retain_until=None)
    assert list(case.vault.list()) == ["a-z", "a/b/1", "a/c", "b/x"]
    assert list(case.vault.list("a/")) == ["a/b/1", "a/c"]
    assert list(case.vault.list("a")) == ["a-z", "a/b/1", "a/c"]
    assert list(case.vault.list("nothing/")) == []


# --- write once and failure safety --------------------------------------------------------


def test_write_once_refuses_a_second_put(case: Case) -> None:
    case.vault.put("src/b1/f", [b"original"], retain_until=None)
    with pytest.raises(VaultError, match="already exists"):
        case.vault.put("src/b1/f", [b"replacement"], retain_until=None)
    with case.vault.open("src/b1/f") as stream:
        assert stream.read() == b"original"
    assert list(case.vault.list()) == ["src/b1/f"]


def broken_source(exc: BaseException) -> Iterator[bytes]:
    for i in range(10):  # 10 MiB: for S3 at least one part is already uploaded
        yield pattern(i, MIB)
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("source died"), KeyboardInterrupt()])
def test_a_put_that_fails_midway_leaves_nothing(case: Case, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        case.vault.put("src/b1/f", broken_source(exc), retain_until=later(days=1))
    assert list(case.vault.list()) == []
    assert case.leftovers() == []
    with pytest.raises(ArtifactNotFound):
        case.vault.stat("src/b1/f")
    # and the path is still free
    case.vault.put("src/b1/f", [b"retry"], retain_until=None)


# --- spooled files -------------------------------------------------------------------------


def _spooled(case: Case, data: bytes) -> Path:
    spool = case.vault.spool()
    assert spool.exists() and spool.stat().st_size == 0
    assert spool.stat().st_mode & 0o077 == 0  # private
    spool.write_bytes(data)
    return spool


def test_a_spooled_file_is_stored_and_its_spool_removed(case: Case) -> None:
    data = pattern(5, 3 * MIB + 11)
    digest = hashlib.sha256(data).hexdigest()
    spool = _spooled(case, data)
    assert list(case.vault.list()) == []  # a spool file is no artifact
    until = later(days=1)
    stored = case.vault.put_file(
        "src/b1/data.age", spool, retain_until=until, sha256=digest, size=len(data)
    )
    assert (stored.path, stored.size, stored.sha256) == ("src/b1/data.age", len(data), digest)
    assert not spool.exists()
    assert list(case.vault.list()) == ["src/b1/data.age"]
    with case.vault.open("src/b1/data.age") as stream:
        assert stream.read() == data
    assert case.vault.stat("src/b1/data.age").retain_until is not None
    with pytest.raises(ArtifactLocked):
        case.vault.delete("src/b1/data.age")


def test_put_file_hashes_when_no_digest_is_given(case: Case) -> None:
    data = b"spooled without a digest"
    stored = case.vault.put_file("f", _spooled(case, data), retain_until=None)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


def _refused(case: Case, spool: Path, **claims: Any) -> None:
    with pytest.raises(VaultError, match="not what its writer wrote"):
        case.vault.put_file("src/b1/f", spool, retain_until=later(days=1), **claims)
    assert spool.exists()  # the caller's to remove
    spool.unlink()
    assert list(case.vault.list()) == []
    assert case.leftovers() == []


def test_a_spooled_file_of_another_size_than_written_is_refused(case: Case) -> None:
    data = pattern(6, MIB + 3)
    _refused(case, _spooled(case, data), size=len(data) + 1)


def test_a_copying_vault_refuses_a_spooled_file_with_another_digest(case: Case) -> None:
    if case.kind == "file":  # it takes the file over unread, with its writer's digest
        case = replace(case, vault=_CopyingFileVault(case.vault.vault))
    data = pattern(7, MIB + 5)
    _refused(case, _spooled(case, data), sha256=hashlib.sha256(b"other").hexdigest())


class _CopyingFileVault(FileVault):
    """A folder vault that copies spooled files (the base class's way)."""

    def put_file(self, path: str, file: Path, **kwargs: Any) -> Any:
        return VaultBackend.put_file(self, path, file, **kwargs)


def test_put_file_is_write_once(case: Case) -> None:
    case.vault.put("src/b1/f", [b"original"], retain_until=None)
    spool = _spooled(case, b"replacement")
    with pytest.raises(VaultError, match="already exists"):
        case.vault.put_file("src/b1/f", spool, retain_until=None)
    with case.vault.open("src/b1/f") as stream:
        assert stream.read() == b"original"
    spool.unlink()


def test_file_vault_takes_a_spooled_file_over_without_copying(tmp_path: Path) -> None:
    vault = FileVault(make_vault(f"file://{tmp_path / 'v'}"))
    spool = vault.spool()
    assert spool.parent == vault.root and spool.name.startswith(".")
    spool.write_bytes(b"x" * 1000)
    inode = spool.stat().st_ino
    digest = hashlib.sha256(b"x" * 1000).hexdigest()
    stored = vault.put_file(
        "s/b/f.age", spool, retain_until=later(days=1), sha256=digest, size=1000
    )
    assert (stored.size, stored.sha256) == (1000, digest)
    target = vault.root / "s" / "b" / "f.age"
    assert target.stat().st_ino == inode  # linked, not copied
    assert target.stat().st_mode & 0o777 == 0o444
    assert target.stat().st_nlink == 1  # the spool name is gone
    assert sorted(p.name for p in vault.root.iterdir()) == ["s"]


def test_file_vault_copies_a_file_from_another_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = FileVault(make_vault(f"file://{tmp_path / 'v'}"))
    spool = vault.spool()
    spool.write_bytes(b"elsewhere")
    inode = spool.stat().st_ino
    real_lstat = os.lstat

    def other_device(path: Any, *args: Any, **kwargs: Any) -> Any:
        info = real_lstat(path, *args, **kwargs)
        if Path(path) != spool:
            return info
        fields = list(info)
        fields[2] = info.st_dev + 1  # st_dev
        return os.stat_result(fields)

    monkeypatch.setattr(os, "lstat", other_device)
    digest = hashlib.sha256(b"elsewhere").hexdigest()
    stored = vault.put_file("f", spool, retain_until=None, sha256=digest, size=9)
    monkeypatch.undo()
    assert stored.sha256 == digest
    assert (vault.root / "f").read_bytes() == b"elsewhere"
    assert (vault.root / "f").stat().st_ino != inode  # copied, not linked
    assert not spool.exists()


# --- retention ----------------------------------------------------------------------------


def test_retention_is_reported_and_blocks_deletion(case: Case) -> None:
    until = later(days=1)
    stored = case.vault.put("src/b1/locked", [b"keep me"], retain_until=until)
    assert stored.retain_until is not None
    assert abs((stored.retain_until - until).total_seconds()) < 1
    info = case.vault.stat("src/b1/locked")
    assert info.retain_until is not None
    assert abs((info.retain_until - until).total_seconds()) < 1
    assert info.lock_mode == ("read-only" if case.kind == "file" else "COMPLIANCE")
    with pytest.raises(ArtifactLocked):
        case.vault.delete("src/b1/locked")
    with case.vault.open("src/b1/locked") as stream:
        assert stream.read() == b"keep me"


def test_an_unlocked_artifact_can_be_deleted(case: Case) -> None:
    case.vault.put("src/b1/free", [b"x"], retain_until=None)
    case.vault.delete("src/b1/free")
    assert list(case.vault.list()) == []
    with pytest.raises(ArtifactNotFound):
        case.vault.open("src/b1/free")


def test_naive_retain_until_is_refused(case: Case) -> None:
    with pytest.raises(InputError, match="timezone"):
        case.vault.put("f", [b"x"], retain_until=datetime.now() + timedelta(days=1))
    assert list(case.vault.list()) == []


# --- bad paths and missing artifacts -------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a/./b", "", "a\\b"]
)
def test_path_traversal_is_refused(case: Case, path: str) -> None:
    with pytest.raises(InputError):
        case.vault.put(path, [b"x"], retain_until=None)
    for call in (case.vault.open, case.vault.stat, case.vault.delete):
        with pytest.raises(InputError):
            call(path)
    assert case.leftovers() == []


def test_read_range_gives_exactly_the_bytes_asked_for(case: Case) -> None:
    """A cluster worker reads one segment of an artifact (``verify --cluster``)."""
    data = pattern(7, 3 * MIB + 11)
    case.vault.put("src/b1/ranged", [data], retain_until=None)
    for offset, size in [
        (0, 0),
        (0, 1),
        (0, 65_536 + 16),
        (1, 100),
        (MIB - 5, MIB + 10),
        (len(data) - 3, 3),
        (len(data) - 3, 100),  # runs past the end: the bytes it has
        (len(data), 10),  # at the end: none
        (len(data) + 10, 10),  # past it: none
        (0, len(data) + 1),
    ]:
        assert case.vault.read_range("src/b1/ranged", offset, size) == data[offset : offset + size]
    with pytest.raises(ArtifactNotFound):
        case.vault.read_range("src/b1/absent", 0, 10)
    with pytest.raises(ArtifactNotFound):
        case.vault.read_range("src/b1/absent", 0, 0)
    with pytest.raises(ValueError, match="no range"):
        case.vault.read_range("src/b1/ranged", -1, 10)


def test_missing_artifacts_are_not_found(case: Case) -> None:
    case.vault.put("src/b1/present", [b"x"], retain_until=None)
    for call in (case.vault.open, case.vault.stat, case.vault.delete):
        with pytest.raises(ArtifactNotFound):
            call("src/b1/absent")
        with pytest.raises(ArtifactNotFound):
            call("src/b2/absent")
        with pytest.raises(ArtifactNotFound):
            call("src/b1/present/below")  # "present" is an artifact, not a folder


# --- folder specifics ---------------------------------------------------------------------


def test_file_vault_after_retention_delete_works(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    vault = FileVault(make_vault(f"file://{root}"))
    vault.put("src/b1/f", [b"data"], retain_until=later(seconds=1.5))
    with pytest.raises(ArtifactLocked):
        vault.delete("src/b1/f")
    time.sleep(1.6)
    vault.delete("src/b1/f")
    assert list(vault.list()) == []
    assert not any(root.rglob("*")), "file, sidecar and empty folders are gone"


def test_file_vault_artifacts_are_read_only(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    vault = FileVault(make_vault(f"file://{root}"))
    vault.put("src/b1/f", [b"data"], retain_until=later(days=1))
    names = sorted(p.name for p in (root / "src" / "b1").iterdir())
    assert names == [".f.retention", "f"]  # no temporary files left
    for name in names:
        assert (root / "src" / "b1" / name).stat().st_mode & 0o777 == 0o444
    assert vault.stat("src/b1/f").lock_mode == "read-only"


def test_file_vault_refuses_reserved_names(tmp_path: Path) -> None:
    vault = FileVault(make_vault(f"file://{tmp_path}/vault"))
    with pytest.raises(InputError, match="reserved"):
        vault.put("src/.f.retention", [b"x"], retain_until=None)


def test_file_vault_refuses_symlink_escapes(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    vault = FileVault(make_vault(f"file://{root}"))
    vault.put("src/keep", [b"x"], retain_until=None)
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "src" / "alias").symlink_to(outside / "secret")
    with pytest.raises(VaultError, match="outside"):
        vault.put("link/new", [b"x"], retain_until=None)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    with pytest.raises(VaultError, match="outside"):
        vault.open("link/secret")
    with pytest.raises(VaultError, match="symbolic link"):
        vault.open("src/alias")
    with pytest.raises(VaultError, match="symbolic link"):
        vault.delete("src/alias")
    assert list(vault.list()) == ["src/keep"]
    assert (outside / "secret").read_bytes() == b"not yours"


def test_file_vault_damaged_retention_record_keeps_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    vault = FileVault(make_vault(f"file://{root}"))
    vault.put("f", [b"x"], retain_until=later(days=1))
    sidecar = root / ".f.retention"
    sidecar.chmod(0o644)
    sidecar.write_text("{not json")
    with pytest.raises(ArtifactLocked, match="damaged"):
        vault.delete("f")
    with pytest.raises(VaultError, match="damaged"):
        vault.stat("f")


# --- S3 specifics -------------------------------------------------------------------------


def test_s3_compliance_lock_cannot_be_deleted(s3_env: str) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = new_bucket(s3)
    vault = S3Vault(make_vault(f"s3://{bucket}"))
    vault.put("src/b1/f", [b"data"], retain_until=later(days=1))
    with pytest.raises(ArtifactLocked, match="COMPLIANCE"):
        vault.delete("src/b1/f")
    # not even a delete marker hides it; the locked version itself is still there
    versions = s3.list_object_versions(Bucket=bucket)
    assert [v["Key"] for v in versions.get("Versions", [])] == ["src/b1/f"]
    assert not versions.get("DeleteMarkers")
    with vault.open("src/b1/f") as stream:
        assert stream.read() == b"data"


def test_s3_governance_mode(s3_env: str) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = new_bucket(s3)
    vault = S3Vault(make_vault(f"s3://{bucket}/p"), lock_mode="GOVERNANCE")
    vault.put("f", [b"data"], retain_until=later(days=1))
    assert vault.stat("f").lock_mode == "GOVERNANCE"
    head = s3.head_object(Bucket=bucket, Key="p/f")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(ArtifactLocked):
        vault.delete("f")


def test_s3_unknown_lock_mode_is_refused() -> None:
    with pytest.raises(InputError):
        S3Vault(make_vault("s3://some-bucket"), lock_mode="LOOSE")


def test_s3_retention_without_object_lock_is_refused(s3_env: str) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = new_bucket(s3, object_lock=False)
    vault = S3Vault(make_vault(f"s3://{bucket}"))
    with pytest.raises(VaultError, match="no Object Lock") as info:
        vault.put("f", [b"data"], retain_until=later(days=1))
    assert "object-lock-enabled" in info.value.hint
    assert list(vault.list()) == []
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    vault.put("f", [b"data"], retain_until=None)  # without retention it works
    assert vault.stat("f").retain_until is None


def test_s3_errors_name_the_bucket_not_the_credentials(s3_env: str) -> None:
    vault = S3Vault(make_vault("s3://no-such-bucket-here"))
    with pytest.raises(VaultError) as info:
        vault.put("f", [b"data"], retain_until=None)
    assert "no-such-bucket-here" in info.value.message
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in info.value.message


def test_s3_if_none_match_guards_a_race_the_head_check_missed(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = new_bucket(s3)
    vault = S3Vault(make_vault(f"s3://{bucket}"))
    vault.put("f", [b"first"], retain_until=None)

    def head_says_absent(path: str) -> dict[str, Any]:
        raise ArtifactNotFound(path)

    monkeypatch.setattr(vault, "_head", head_says_absent)  # as if a racing writer won after it
    with pytest.raises(VaultError, match="already exists"):
        vault.put("f", [b"second"], retain_until=None)
    monkeypatch.undo()
    with vault.open("f") as stream:
        assert stream.read() == b"first"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 1


def test_past_retain_until_is_refused(case: Case) -> None:
    with pytest.raises(InputError, match="in the past"):
        case.vault.put("f", [b"x"], retain_until=later(seconds=-1))
    assert case.leftovers() == []


def test_file_vault_sweeps_spool_files_left_by_a_dead_process(tmp_path: Path) -> None:
    vault = FileVault(make_vault(f"file://{tmp_path / 'v'}"))
    stale, fresh = vault.spool(), vault.spool()
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    newest = vault.spool()
    assert not stale.exists()
    assert fresh.exists() and newest.exists()  # an ingest in progress keeps its spool


# --- what verify relies on: the lock as written, and nothing foreign beside it ------------


def test_a_fresh_lock_has_no_shortfalls_and_a_later_promise_has_one(case: Case) -> None:
    until = later(days=2)
    case.vault.put("src/b1/f", [b"x"], retain_until=until)
    assert case.vault.lock_shortfalls("src/b1/f", until) == ()
    (shortfall,) = case.vault.lock_shortfalls("src/b1/f", until + timedelta(days=1))
    assert "earlier than the signed" in shortfall
    with pytest.raises(ArtifactNotFound):
        case.vault.lock_shortfalls("src/b1/absent", until)


def test_nothing_foreign_beside_what_the_vault_wrote(case: Case) -> None:
    case.vault.put("src/b1/f", [b"x"], retain_until=later(days=1))
    case.vault.put("src/b1/sub/g", [b"y"], retain_until=None)
    assert list(case.vault.foreign("src/b1/")) == []
    assert list(case.vault.foreign("src/absent/")) == []


def test_file_vault_reports_what_it_did_not_write_without_opening_it(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    vault = FileVault(make_vault(f"file://{root}"))
    vault.put("src/b1/f", [b"x"], retain_until=later(days=1))
    folder = root / "src" / "b1"
    os.mkfifo(folder / ".pipe")
    (folder / ".f.abcd1234.partial").write_bytes(b"half")
    (folder / ".gone.retention").write_bytes(b"{}")
    (folder / "link").symlink_to("f")
    (folder / "empty" / "deeper").mkdir(parents=True)
    got = [(e.path, e.kind, e.artifact) for e in vault.foreign("src/b1/")]
    assert got == [
        ("src/b1/.f.abcd1234.partial", EntryKind.UNFINISHED_WRITE, "src/b1/f"),
        ("src/b1/.gone.retention", EntryKind.ORPHANED_RETENTION, "src/b1/gone"),
        ("src/b1/.pipe", EntryKind.SPECIAL_FILE, None),
        ("src/b1/empty", EntryKind.FOLDER, None),
        ("src/b1/link", EntryKind.SYMLINK, None),
    ]
    assert list(vault.list("src/b1/")) == ["src/b1/f"]


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_file_vault_never_opens_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """A FIFO at an artifact's path must not block open (no writer ever comes)."""
    root = tmp_path / "vault"
    vault = FileVault(make_vault(f"file://{root}"))
    vault.put("src/b1/f", [b"x"], retain_until=later(days=1))
    path = root / "src" / "b1" / "f"
    path.unlink()
    {"fifo": os.mkfifo, "folder": os.mkdir, "symlink": lambda p: p.symlink_to("/etc/hostname")}[
        kind
    ](path)
    for call in (vault.open, vault.stat, vault.delete):
        with pytest.raises(ArtifactReplaced) as replaced:
            call("src/b1/f")
        assert replaced.value.kind == {"fifo": "FIFO", "folder": "folder"}.get(
            kind, "symbolic link"
        )


def test_file_vault_lock_shortfalls_name_every_weakening(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    vault = FileVault(make_vault(f"file://{root}"))
    until = later(days=30)
    vault.put("f", [b"x"], retain_until=until)
    (root / "f").chmod(0o644)
    sidecar = root / ".f.retention"
    sidecar.chmod(0o644)
    sidecar.write_text(json.dumps({"retain_until": later(days=1).isoformat()}))
    shortfalls = vault.lock_shortfalls("f", until)
    assert len(shortfalls) == 3
    assert "0644 allows writing" in shortfalls[0]
    assert "can be rewritten" in shortfalls[1]
    assert "earlier than the signed" in shortfalls[2]
    sidecar.write_text(json.dumps({"retain_until": until.isoformat(), "pad": "x"}))
    assert "not one the vault wrote" in vault.lock_shortfalls("f", until)[-1]
    sidecar.unlink()
    assert "is gone" in vault.lock_shortfalls("f", until)[-1]
