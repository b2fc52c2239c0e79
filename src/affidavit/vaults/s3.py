"""A vault in an S3 bucket (boto3); the only vault module that imports the AWS SDK."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from affidavit.models.inventory import VaultProbe
from affidavit.vaults.base import VaultBackend

_TIMEOUT_SECONDS = 5


class S3Vault(VaultBackend):
    """Artifacts as objects under ``s3://BUCKET/PREFIX``, protected by S3 Object Lock.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when set (the AWS
    SDK's own convention), credentials from the standard AWS chain.
    """

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.vault.url.removeprefix("s3://").partition("/")[0]

    def _client(self) -> Any:  # boto3 ships no types
        return boto3.client(
            "s3",
            region_name=self.vault.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(
                connect_timeout=_TIMEOUT_SECONDS,
                read_timeout=_TIMEOUT_SECONDS,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def probe(self) -> VaultProbe:
        try:
            client = self._client()
            client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            return VaultProbe(
                reachable=False,
                writable=None,
                immutability=None,
                detail=f"bucket {self.bucket}: {code}",
            )
        except BotoCoreError as exc:
            return VaultProbe(reachable=False, writable=None, immutability=None, detail=str(exc))
        immutability = "none (Object Lock not enabled)"
        try:
            lock = client.get_object_lock_configuration(Bucket=self.bucket)
            cfg = lock.get("ObjectLockConfiguration", {})
            if cfg.get("ObjectLockEnabled") == "Enabled":
                rule = cfg.get("Rule", {}).get("DefaultRetention", {})
                days = rule.get("Days") or (rule.get("Years", 0) * 365) or None
                mode = rule.get("Mode")
                immutability = (
                    "object-lock"
                    + (f" {mode}" if mode else "")
                    + (f" {days}d default" if days else "")
                )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "ObjectLockConfigurationNotFoundError":
                immutability = f"unknown ({code})"
        except BotoCoreError as exc:
            immutability = f"unknown ({exc})"
        return VaultProbe(reachable=True, writable=None, immutability=immutability, detail="ok")
