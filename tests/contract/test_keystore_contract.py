"""One suite over every keystore: the file keystore (plain and passphrase) and AWS KMS (moto)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.errors import KeystoreError
from affidavit.keystores.base import Keystore, WrappedSecret
from affidavit.keystores.file import FileKeystore
from affidavit.keystores.kms import KmsKeystore

SECRET = b"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"


@dataclass
class Case:
    kind: str
    store: Keystore
    reopen: Callable[[], Keystore]  # a fresh instance on the same key


@pytest.fixture
def kms_env(s3_env: str) -> str:
    """A fresh symmetric KMS key on the moto server (the same server speaks KMS and S3)."""
    kms = boto3.client("kms", region_name="us-east-1")
    return str(kms.create_key(Description="affidavit test KEK")["KeyMetadata"]["KeyId"])


@pytest.fixture(params=["file-plain", "file-passphrase", "kms"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "kms":
        key_id = request.getfixturevalue("kms_env")
        yield Case(
            "kms", KmsKeystore(key_id, region=None), lambda: KmsKeystore(key_id, region=None)
        )
        return
    passphrase = "correct horse battery staple" if request.param == "file-passphrase" else None
    path = tmp_path / "home" / "kek.json"
    yield Case(
        request.param,
        FileKeystore(path, passphrase=passphrase),
        lambda: FileKeystore(path, passphrase=passphrase),
    )


def flipped(wrapped: WrappedSecret, index: int) -> WrappedSecret:
    data = bytearray(wrapped.ciphertext)
    data[index] ^= 0x01
    return replace(wrapped, ciphertext=bytes(data))


# --- the contract -------------------------------------------------------------------------


def test_wrap_unwrap_round_trip(case: Case) -> None:
    current = case.store.current()
    wrapped = case.store.wrap(SECRET, context=b"backup-1")
    assert (wrapped.kek_id, wrapped.version) == (current.kek_id, current.version)
    assert SECRET not in wrapped.ciphertext
    assert case.store.unwrap(wrapped, context=b"backup-1") == SECRET
    assert case.reopen().unwrap(wrapped, context=b"backup-1") == SECRET
    assert case.store.wrap(SECRET, context=b"backup-1").ciphertext != wrapped.ciphertext


def test_first_use_creates_version_one(case: Case) -> None:
    current = case.store.current()
    assert current.version == 1
    assert current.retired_at is None
    assert current.created_at.tzinfo is not None
    assert case.store.versions() == [current]


def test_wrong_context_fails(case: Case) -> None:
    wrapped = case.store.wrap(SECRET, context=b"backup-1")
    for context in (b"backup-2", b"", b"backup-1\x00"):
        with pytest.raises(KeystoreError):
            case.store.unwrap(wrapped, context=context)


def test_flipped_ciphertext_byte_fails(case: Case) -> None:
    wrapped = case.store.wrap(SECRET, context=b"backup-1")
    for index in (0, len(wrapped.ciphertext) // 2, len(wrapped.ciphertext) - 1):
        with pytest.raises(KeystoreError):
            case.store.unwrap(flipped(wrapped, index), context=b"backup-1")
    with pytest.raises(KeystoreError):
        case.store.unwrap(replace(wrapped, ciphertext=wrapped.ciphertext[:-1]), context=b"backup-1")


def test_rotate_keeps_old_versions_until_retired(case: Case) -> None:
    first = case.store.current()
    old = case.store.wrap(SECRET, context=b"backup-1")
    second = case.store.rotate()
    assert second.version == first.version + 1
    assert second.kek_id == first.kek_id
    assert case.store.current().version == second.version
    assert [v.version for v in case.store.versions()] == [1, 2]
    new = case.store.wrap(b"newer secret", context=b"backup-2")
    assert new.version == second.version
    assert case.store.unwrap(old, context=b"backup-1") == SECRET  # not retired yet
    # re-wrap, then retire the old version
    rewrapped = case.store.wrap(case.store.unwrap(old, context=b"backup-1"), context=b"backup-1")
    case.store.retire(first.version)
    retired = case.store.versions()[0]
    assert retired.retired_at is not None
    with pytest.raises(KeystoreError, match="retired"):
        case.store.unwrap(old, context=b"backup-1")
    assert case.store.unwrap(rewrapped, context=b"backup-1") == SECRET
    assert case.store.unwrap(new, context=b"backup-2") == b"newer secret"


def test_the_current_version_cannot_be_retired(case: Case) -> None:
    current = case.store.current()
    with pytest.raises(KeystoreError, match="current"):
        case.store.retire(current.version)
    with pytest.raises(KeystoreError):
        case.store.retire(99)


def test_a_relabelled_version_does_not_unwrap(case: Case) -> None:
    """The version is bound to the ciphertext: relabelling cannot dodge a retirement."""
    old = case.store.wrap(SECRET, context=b"backup-1")
    case.store.rotate()
    with pytest.raises(KeystoreError):
        case.store.unwrap(replace(old, version=2), context=b"backup-1")


def test_a_secret_of_another_key_is_refused(case: Case) -> None:
    wrapped = case.store.wrap(SECRET, context=b"backup-1")
    with pytest.raises(KeystoreError, match="wrapped by"):
        case.store.unwrap(replace(wrapped, kek_id="file:other"), context=b"backup-1")


# --- file keystore ------------------------------------------------------------------------


def key_file(tmp_path: Path, passphrase: str | None = None) -> tuple[Path, FileKeystore]:
    path = tmp_path / "kek.json"
    store = FileKeystore(path, passphrase=passphrase)
    store.current()
    return path, store


def test_file_keystore_writes_0600_and_names_the_kek(tmp_path: Path) -> None:
    path, store = key_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.current().kek_id == "file:kek.json"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_file_keystore_without_a_file_has_no_versions(tmp_path: Path) -> None:
    store = FileKeystore(tmp_path / "none.json", passphrase=None)
    assert store.versions() == []
    assert not (tmp_path / "none.json").exists()


def test_file_keystore_wrong_passphrase(tmp_path: Path) -> None:
    path, store = key_file(tmp_path, "right")
    wrapped = store.wrap(SECRET, context=b"b")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        FileKeystore(path, passphrase="wrong").unwrap(wrapped, context=b"b")


def test_file_keystore_missing_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = key_file(tmp_path, "right")
    monkeypatch.setenv("AFFIDAVIT_PASSPHRASE", "right")  # the keystore never reads it itself
    with pytest.raises(KeystoreError, match="protected by a passphrase") as info:
        FileKeystore(path, passphrase=None).current()
    assert "AFFIDAVIT_PASSPHRASE" in info.value.hint


def test_file_keystore_passphrase_for_a_plain_file_is_refused(tmp_path: Path) -> None:
    path, _ = key_file(tmp_path)
    with pytest.raises(KeystoreError, match="not passphrase-protected"):
        FileKeystore(path, passphrase="surprise").current()


def test_file_keystore_passphrase_protects_the_keys_at_rest(tmp_path: Path) -> None:
    path, store = key_file(tmp_path, "right")
    wrapped = store.wrap(SECRET, context=b"b")
    doc = json.loads(path.read_text())
    raw_key = base64.b64decode(doc["body"]["versions"][0]["key"])
    assert len(raw_key) > 32  # wrapped, not the bare KEK
    assert "right" not in path.read_text()
    assert "right" not in repr(store)
    assert FileKeystore(path, passphrase="right").unwrap(wrapped, context=b"b") == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_file_keystore_refuses_a_readable_key_file(tmp_path: Path, mode: int) -> None:
    path, _ = key_file(tmp_path)
    path.chmod(mode)
    with pytest.raises(KeystoreError, match="group or others") as info:
        FileKeystore(path, passphrase=None).current()
    assert "chmod 600" in info.value.hint


def test_file_keystore_refuses_a_symlinked_key_file(tmp_path: Path) -> None:
    path, _ = key_file(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(KeystoreError):
        FileKeystore(link, passphrase=None).current()


def rewrite(path: Path, edit: Callable[[dict[str, Any]], None], *, fix_checksum: bool) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    if fix_checksum:  # what an attacker who knows the format would do
        canonical = json.dumps(doc["body"], sort_keys=True, separators=(",", ":"))
        doc["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def flip_key_byte(doc: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(doc["body"]["versions"][0]["key"]))
    raw[3] ^= 0x01
    doc["body"]["versions"][0]["key"] = base64.b64encode(bytes(raw)).decode()


def unretire(doc: dict[str, Any]) -> None:
    doc["body"]["versions"][0]["retired_at"] = None


@pytest.mark.parametrize(
    "edit", [flip_key_byte, unretire, lambda d: d["body"].update(kek_id="file:other")]
)
@pytest.mark.parametrize("passphrase", [None, "right"])
def test_file_keystore_refuses_a_tampered_key_file(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], passphrase: str | None
) -> None:
    path, store = key_file(tmp_path, passphrase)
    store.rotate()
    store.retire(1)
    rewrite(path, edit, fix_checksum=False)
    with pytest.raises(KeystoreError, match="damaged or was altered"):
        FileKeystore(path, passphrase=passphrase).versions()


@pytest.mark.parametrize("edit", [flip_key_byte, unretire])
def test_file_keystore_with_passphrase_detects_tampering_despite_a_fixed_checksum(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    path, store = key_file(tmp_path, "right")
    store.rotate()
    store.retire(1)
    rewrite(path, edit, fix_checksum=True)
    with pytest.raises(KeystoreError, match="damaged or was altered"):
        FileKeystore(path, passphrase="right").versions()


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format": "other"}', b"\xff\xfe"])
def test_file_keystore_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "kek.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeystoreError):
        FileKeystore(path, passphrase=None).current()


def test_file_keystore_unwrap_without_the_file_fails(tmp_path: Path) -> None:
    path, store = key_file(tmp_path)
    wrapped = store.wrap(SECRET, context=b"b")
    path.unlink()
    with pytest.raises(KeystoreError, match="does not exist"):
        FileKeystore(path, passphrase=None).unwrap(wrapped, context=b"b")


def test_file_keystore_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty"):
        FileKeystore(tmp_path / "kek.json", passphrase="")


# --- KMS ----------------------------------------------------------------------------------


def test_kms_kek_id_is_the_key_arn(kms_env: str) -> None:
    store = KmsKeystore(kms_env, region="us-east-1")
    assert store.current().kek_id.startswith("arn:aws:kms:us-east-1:")
    assert store.current().kek_id.endswith(kms_env)


def test_kms_rotation_is_seen_by_another_instance(kms_env: str) -> None:
    store = KmsKeystore(kms_env, region=None)
    store.rotate()
    assert [v.version for v in KmsKeystore(kms_env, region=None).versions()] == [1, 2]


def test_kms_retirements_can_be_passed_back_in(kms_env: str) -> None:
    store = KmsKeystore(kms_env, region=None)
    old = store.wrap(SECRET, context=b"b")
    store.rotate()
    store.retire(1)
    retired_at = store.versions()[0].retired_at
    assert retired_at is not None
    again = KmsKeystore(kms_env, region=None, retired={1: retired_at})
    with pytest.raises(KeystoreError, match="retired"):
        again.unwrap(old, context=b"b")


def test_kms_disabled_key_is_refused_with_a_hint(kms_env: str) -> None:
    store = KmsKeystore(kms_env, region=None)
    wrapped = store.wrap(SECRET, context=b"b")
    boto3.client("kms", region_name="us-east-1").disable_key(KeyId=kms_env)
    for call in (
        lambda: store.wrap(SECRET, context=b"b"),
        lambda: store.unwrap(wrapped, context=b"b"),
        store.current,
    ):
        with pytest.raises(KeystoreError, match="Disabled") as info:
            call()
        assert "enable-key" in info.value.hint
    boto3.client("kms", region_name="us-east-1").enable_key(KeyId=kms_env)
    assert store.unwrap(wrapped, context=b"b") == SECRET


def test_kms_missing_key_is_refused_with_a_hint(s3_env: str) -> None:
    store = KmsKeystore("00000000-0000-0000-0000-000000000000", region=None)
    with pytest.raises(KeystoreError, match="does not exist") as info:
        store.wrap(SECRET, context=b"b")
    assert "region" in info.value.hint
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in info.value.message
