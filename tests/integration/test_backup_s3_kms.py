"""Backups into an S3 Object Lock vault and with an AWS KMS keystore, against moto in server
mode on 127.0.0.1: COMPLIANCE retention until ``retain_until`` on every object, deletion refused
by S3 itself, the backup identity wrapped by KMS, and a disabled KMS key refused cleanly."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.integration


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


@pytest.fixture(scope="module")
def source() -> Any:
    with RedisScratch(replica_sync_delay=0) as server:
        uri = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
            seeded = dict(engine.seed_sample(seed=2, scale=20))
        yield server.uri, seeded


@pytest.fixture
def bucket(s3_env: str) -> str:
    name = f"vault-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def kms_key(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    key_id: str = boto3.client("kms").create_key(Description="affidavit KEK")["KeyMetadata"][
        "KeyId"
    ]
    monkeypatch.setenv("AFFIDAVIT_KMS_KEY_ID", key_id)
    monkeypatch.setenv("AFFIDAVIT_KMS_REGION", "us-east-1")
    return key_id


def setup(cli: Any, source: Any, bucket: str) -> None:
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", source[0],
               "--classification", "internal").code == 0  # fmt: skip
    r = cli("vault", "add", "s3v", "--url", f"s3://{bucket}/backups", "--region", "us-east-1")
    assert r.code == 0, r.err


def test_backup_into_object_lock_bucket_with_kms_keystore(
    cli: Any, home: Path, source: Any, bucket: str, kms_key: str, tmp_path: Path
) -> None:
    setup(cli, source, bucket)
    r = cli("backup", "run", "cache", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert {d["name"]: d["records"] for d in out["datasets"]} == source[1]
    assert kms_key in (out["encryption"]["kek_id"] or "")
    retain_until = datetime.fromisoformat(out["retain_until"])

    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"backups/cache/{out['backup_id']}/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert keys == {f"backups/{a['path']}" for a in out["artifacts"]}
    for artifact in out["artifacts"]:
        head = s3.head_object(Bucket=bucket, Key=f"backups/{artifact['path']}")
        assert head["ContentLength"] == artifact["size"]
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs((head["ObjectLockRetainUntilDate"] - retain_until).total_seconds()) < 2

    # S3 itself refuses to delete a locked version
    (data,) = [a for a in out["artifacts"] if a["role"] == "data"]
    key = f"backups/{data['path']}"
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidRequest")
    assert s3.head_object(Bucket=bucket, Key=key)["VersionId"] == version
    # and so does affidavit, before the retention date
    assert cli("backup", "delete", out["backup_id"], "--reason", "try").code == 1

    # the identity is wrapped by KMS; unwrapped on request it decrypts with stock age
    r = cli("keys", "status", "--json")
    assert r.code == 0, r.err
    assert kms_key in json.loads(r.out)["kek_id"]
    r = cli("keys", "export-identity", out["backup_id"], "--reason", "kms restore check")
    assert r.code == 0, r.err
    identity = tmp_path / "id.txt"
    identity.write_text(r.out)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    plain = subprocess.run(
        ["age", "-d", "-i", str(identity)], input=body, capture_output=True, check=True
    ).stdout
    assert plain.startswith(b"REDIS") and len(plain) == data["plain_size"]
    assert cli("ledger", "verify").code == 0


def test_disabled_kms_key_is_refused_and_nothing_recorded(
    cli: Any, home: Path, source: Any, bucket: str, kms_key: str
) -> None:
    setup(cli, source, bucket)
    boto3.client("kms").disable_key(KeyId=kms_key)
    before = catalog_dump(home)
    r = cli("backup", "run", "cache")
    assert r.code == 3, (r.code, r.out, r.err)
    lines = [x for x in r.err.splitlines() if x.startswith(("error:", "hint:"))]
    assert len(lines) == 2 and "disabled" in lines[0].lower(), r.err
    assert "Traceback" not in r.err
    assert catalog_dump(home) == before
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=bucket)


def test_ingest_of_large_files_into_s3_uploads_the_spooled_ciphertext(
    cli: Any,
    home: Path,
    bucket: str,
    kms_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spool of an S3 vault is a private local file: uploaded after the check (the base
    ``put_file``, which hashes what it uploads), then removed; every file takes that path
    here (threshold 0)."""
    import tempfile

    import bson

    from affidavit.services import artifacts

    monkeypatch.setattr(artifacts, "PROCESS_FROM", 0)
    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    from affidavit.vaults.s3 import S3Vault

    taken: list[str] = []
    real_put_file = S3Vault.put_file

    def counting(self: Any, path: str, file: Path, **kwargs: Any) -> Any:
        taken.append(path)
        return real_put_file(self, path, file, **kwargs)

    monkeypatch.setattr(S3Vault, "put_file", counting)
    dump = tmp_path / "dump" / "shop"
    dump.mkdir(parents=True)
    (dump / "orders.bson").write_bytes(
        b"".join(bson.encode({"_id": i, "total": i * 1.5, "pad": "x" * 200}) for i in range(3000))
    )
    (dump / "orders.metadata.json").write_text('{"options": {}, "indexes": []}')
    r = cli("vault", "add", "s3v", "--url", f"s3://{bucket}/backups", "--region", "us-east-1")
    assert r.code == 0, r.err
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert [d["records"] for d in out["datasets"]] == [3000]
    assert sorted(p.rsplit("/", 1)[-1] for p in taken) == [
        "orders.bson.age",
        "orders.metadata.json.age",
        "shop.orders.afpidx.age",  # the index, spooled right after its fold
    ]
    assert not list(spools.glob("affidavit-spool-*"))  # uploaded, then removed
    s3 = boto3.client("s3")
    for artifact in out["artifacts"]:
        head = s3.head_object(Bucket=bucket, Key=f"backups/{artifact['path']}")
        assert head["ContentLength"] == artifact["size"]
        assert head["ObjectLockMode"] == "COMPLIANCE"
    r = cli("verify", out["backup_id"], "--json")
    assert r.code == 0, r.out
