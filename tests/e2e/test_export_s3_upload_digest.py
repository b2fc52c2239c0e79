"""An S3 export destination hashes the output as it uploads it (one read, the digest module's
one loop): an upload whose bytes are not the ones the manifest signs is deleted again and
refused before its manifest goes up. Real moto S3."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.errors import IntegrityError
from affidavit.services.exports.destinations import s3_backend, upload

pytestmark = pytest.mark.e2e

BUCKET = "exports-digest"


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


def _keys(s3: Any) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _upload(partial: Path, sha256: str | None) -> list[str]:
    return upload(
        s3_backend(f"s3://{BUCKET}/p"),
        partial=partial,
        name="out.age",
        manifest_name="out.age.manifest.dsse.json",
        manifest=b"{}",
        sha256=sha256,
    )


def test_the_signed_bytes_are_uploaded_whole(bucket: Any, tmp_path: Path) -> None:
    partial = tmp_path / ".out.age.partial-x"
    data = b"age ciphertext " * 200_000  # several pieces
    partial.write_bytes(data)
    assert _upload(partial, hashlib.sha256(data).hexdigest()) == [
        "out.age",
        "out.age.manifest.dsse.json",
    ]
    body = bucket.get_object(Bucket=BUCKET, Key="p/out.age")["Body"].read()
    assert body == data


def test_an_output_replaced_before_its_upload_is_refused_and_removed(
    bucket: Any, tmp_path: Path
) -> None:
    partial = tmp_path / ".out.age.partial-x"
    signed = b"the encrypted output the manifest signs"
    partial.write_bytes(b"something else put in its place")
    with pytest.raises(IntegrityError, match="not the file its manifest signs"):
        _upload(partial, hashlib.sha256(signed).hexdigest())
    assert _keys(bucket) == []  # neither the output nor its manifest
