"""Exports delivered to an S3 bucket (issue 17), against the moto server: the output, then
its manifest, uploaded once (an existing object is never replaced, nothing is exported
when the bucket already holds the file), a failed upload leaves no object, and what was
delivered verifies at the destination. Real SecantusDB, real backups, real moto S3."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    SPEC,
    _customers,
    _refused,
    ledger_size,
    prepare,
    run_export,
    verify,
)

from affidavit.errors import VaultError
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.exports.destinations import s3_backend, upload

pytestmark = pytest.mark.e2e

BUCKET = "exports-out"


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


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


S3_SPEC = SPEC.replace('destination = "{dest}"', f'destination = "s3://{BUCKET}/acme/q1"')


def test_an_export_is_uploaded_to_s3_and_verifies(
    cli: Any, home: Path, tmp_path: Path, mongo: str, bucket: Any
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=S3_SPEC)
    out = run_export(cli)
    name = f"customers-to-acme-v1-{s.backup_id}.jsonl.age"
    assert out["output"] == f"s3://{BUCKET}/acme/q1/{name}"
    assert out["manifest"] == f"s3://{BUCKET}/acme/q1/{name}.manifest.dsse.json"
    assert _keys(bucket) == [f"acme/q1/{name}", f"acme/q1/{name}.manifest.dsse.json"]
    assert list((home / "export-spool").iterdir()) == []  # nothing left in the spool
    assert list(s.dest.iterdir()) == []
    file, manifest = tmp_path / name, tmp_path / f"{name}.manifest.dsse.json"
    bucket.download_file(BUCKET, f"acme/q1/{name}", str(file))
    bucket.download_file(BUCKET, f"acme/q1/{name}.manifest.dsse.json", str(manifest))
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == 40
    listed = json.loads(cli("export", "list", "--json").out)
    assert [r["output"] for r in listed["exports"]] == [out["output"]]


def test_a_bucket_that_holds_the_file_is_refused_and_left_as_it_was(
    cli: Any, home: Path, tmp_path: Path, mongo: str, bucket: Any
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=S3_SPEC)
    name = f"customers-to-acme-v1-{s.backup_id}.jsonl.age"
    for key in (f"acme/q1/{name}", f"acme/q1/{name}.manifest.dsse.json"):
        bucket.put_object(Bucket=BUCKET, Key=key, Body=b"somebody else's")
        before = ledger_size(home)
        _refused(cli("export", "run", "customers-to-acme"), "already holds")
        assert ledger_size(home) == before  # nothing recorded
        assert bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"somebody else's"
        bucket.delete_object(Bucket=BUCKET, Key=key)
    assert _keys(bucket) == []
    _refused(
        cli("export", "run", "customers-to-acme", "--output", "../x.age"), "not a plain file name"
    )


def test_a_failed_upload_leaves_no_object(s3_env: str, bucket: Any, tmp_path: Path) -> None:
    backend = s3_backend(f"s3://{BUCKET}/p")
    partial = tmp_path / ".out.age.partial-x"
    partial.write_bytes(b"age ciphertext" * 1000)
    bucket.put_object(Bucket=BUCKET, Key="p/out.age.manifest.dsse.json", Body=b"theirs")
    with pytest.raises(VaultError, match="already exists"):
        upload(
            backend,
            partial=partial,
            name="out.age",
            manifest_name="out.age.manifest.dsse.json",
            manifest=b"{}",
            sha256=hashlib.sha256(partial.read_bytes()).hexdigest(),  # what it signs
        )
    assert _keys(bucket) == ["p/out.age.manifest.dsse.json"]  # the output was removed again
    assert bucket.get_object(Bucket=BUCKET, Key="p/out.age.manifest.dsse.json")["Body"].read() == (
        b"theirs"
    )
    # an unreachable bucket: nothing stored either
    with pytest.raises(VaultError):
        upload(
            s3_backend("s3://no-such-bucket-here/p"),
            partial=partial,
            name="out.age",
            manifest_name="out.age.manifest.dsse.json",
            manifest=b"{}",
            sha256=hashlib.sha256(partial.read_bytes()).hexdigest(),  # what it signs
        )


def test_a_malformed_s3_destination_is_refused(
    cli: Any, home: Path, tmp_path: Path, mongo: str, bucket: Any
) -> None:
    spec = SPEC.replace('destination = "{dest}"', 'destination = "s3://Not_A_Bucket/x"')
    prepare(cli, home, tmp_path, mongo, spec=spec)
    _refused(cli("export", "run", "customers-to-acme"), "is not s3://BUCKET/PREFIX")
