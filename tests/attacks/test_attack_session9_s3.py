"""Attacks on the S3 export destination (:mod:`affidavit.services.exports.destinations`)
against a real moto S3 server (session 9):

- a destination whose prefix climbs or hides (``..``, ``.``) is refused as malformed;
- **an object raced into the bucket** after the run's ``HEAD`` found the key free (another
  writer creating the output, or its manifest, meanwhile): the upload is refused
  (``If-None-Match: *``), the other writer's object is left exactly as it was, and nothing of
  ours stays in the bucket.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.errors import InputError, VaultError
from affidavit.services.exports.destinations import s3_backend, upload

pytestmark = pytest.mark.e2e

BUCKET = "session9-out"


@pytest.fixture
def bucket(s3_env: str) -> Any:
    s3 = boto3.client("s3")
    if BUCKET in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    else:
        s3.create_bucket(Bucket=BUCKET)
    return s3


def _objects(s3: Any) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


@pytest.mark.parametrize(
    "destination",
    [f"s3://{BUCKET}/../other", f"s3://{BUCKET}/a/../../b", f"s3://{BUCKET}/./x",
     f"s3://{BUCKET}/..", "s3://../x", "s3://a/x", f"s3://{BUCKET.upper()}/x"],
)  # fmt: skip
def test_a_destination_that_climbs_is_refused(destination: str) -> None:
    with pytest.raises(InputError, match="not s3://BUCKET/PREFIX"):
        s3_backend(destination)


@pytest.mark.parametrize("raced", ["out.age", "out.age.manifest.dsse.json"])
def test_an_object_raced_in_after_the_check_is_never_replaced(
    bucket: Any, tmp_path: Path, raced: str
) -> None:
    backend = s3_backend(f"s3://{BUCKET}/acme")
    partial = tmp_path / ".out.age.partial-x"
    partial.write_bytes(b"our ciphertext" * 5000)
    bucket.put_object(Bucket=BUCKET, Key=f"acme/{raced}", Body=b"the other writer's")
    with pytest.raises(VaultError, match="already exists"):
        upload(
            backend,
            partial=partial,
            name="out.age",
            manifest_name="out.age.manifest.dsse.json",
            manifest=b"{}",
            sha256=hashlib.sha256(partial.read_bytes()).hexdigest(),  # what it signs
        )
    assert _objects(bucket) == {f"acme/{raced}": b"the other writer's"}
