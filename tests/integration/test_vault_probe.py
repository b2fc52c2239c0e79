"""Vault probes against real storage: a folder, and the S3 API of a moto server."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from affidavit.models.inventory import Vault, VaultName, parse_vault_url
from affidavit.services.backends import vault_backend

pytestmark = pytest.mark.integration


def vault(url: str, region: str | None = None) -> Vault:
    kind, normal = parse_vault_url(url)
    return Vault(
        name=VaultName("v"),
        kind=kind,
        url=normal,
        region=region,
        immutable_days=None,
        created_at=datetime.now(UTC),
    )


def test_folder_vault_probe(tmp_path: Path) -> None:
    assert vault_backend(vault(f"file://{tmp_path}")).probe().writable is True
    assert vault_backend(vault(f"file://{tmp_path}/later")).probe().detail.startswith("will be")
    (tmp_path / "file").write_text("x")
    probe = vault_backend(vault(f"file://{tmp_path}/file")).probe()
    assert not probe.reachable and "not a folder" in probe.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_folder_vault_without_permission(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert vault_backend(vault(f"file://{tmp_path}")).probe().writable is False
    finally:
        tmp_path.chmod(0o700)


def test_s3_vault_probe_sees_object_lock(s3_env: str) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="locked-bucket", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket="locked-bucket",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}},
        },
    )
    s3.create_bucket(Bucket="plain-bucket")
    locked = vault_backend(vault("s3://locked-bucket/backups")).probe()
    assert locked.reachable
    assert locked.immutability == "object-lock COMPLIANCE 30d default"
    plain = vault_backend(vault("s3://plain-bucket")).probe()
    assert plain.reachable and plain.immutability is not None
    assert plain.immutability.startswith("none")
    missing = vault_backend(vault("s3://no-such-bucket")).probe()
    assert not missing.reachable and "no-such-bucket" in missing.detail
