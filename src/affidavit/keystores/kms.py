"""AWS KMS as the keystore (boto3); the only keystore module that imports the AWS SDK.

Wrapping is ``kms.Encrypt`` / ``kms.Decrypt`` with the symmetric KMS key, so key material never
leaves KMS. The encryption context is ``{"affidavit": context.hex(), "affidavit-kek-version":
"<version>"}``: the caller's context (the backup id) and the KEK version the secret was
wrapped under are both bound, so a wrapped secret cannot be moved to another backup or
relabelled to dodge a retired version.

Versions: KMS rotates key material itself and keeps every old generation for decryption, and
its API names no "version" of a key. This keystore therefore models versions as rotation
events: version 1 is the key's creation (``DescribeKey``), version ``n + 1`` the ``n``-th entry
of ``ListKeyRotations`` (automatic and on-demand rotations alike, oldest first). Nothing is
stored outside KMS, so every process sees the same numbering. :meth:`KmsKeystore.rotate` calls
``RotateKeyOnDemand``; where KMS refuses it (an asymmetric or imported key, the on-demand
quota) it raises ``KeystoreError`` "rotation is managed by KMS". AWS may list an on-demand
rotation only after it completes; until then the new version is kept in this object's memory.

Retirement cannot be enforced by KMS (it decrypts with any generation of its key material),
so retired versions are kept in memory and refused by :meth:`KmsKeystore.unwrap`; a caller that
persists retirements (the catalog, the ledger) passes them back through ``retired=``.

The key state is checked with ``DescribeKey`` before every use: a disabled key, one pending
deletion or a missing key raises ``KeystoreError`` with a hint (KMS itself answers
``DisabledException`` / ``KMSInvalidStateException`` / ``NotFoundException``, which are mapped
the same way; moto does not enforce the key state, hence the explicit check).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from affidavit.errors import KeystoreError
from affidavit.keystores.base import KekVersion, Keystore, WrappedSecret

__all__ = ["KmsKeystore"]

_TIMEOUT_SECONDS: Final = 10
_CONTEXT_KEY: Final = "affidavit"
_VERSION_KEY: Final = "affidavit-kek-version"
_STATE_HINTS: Final = {
    "Disabled": "enable it (aws kms enable-key --key-id KEY) or configure another KMS key",
    "PendingDeletion": "cancel the deletion (aws kms cancel-key-deletion --key-id KEY) and "
    "enable the key; secrets it wrapped are lost once it is deleted",
}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


class KmsKeystore(Keystore):
    """A symmetric AWS KMS key (id, ARN or alias) as the key-encryption key.

    The endpoint comes from ``AWS_ENDPOINT_URL_KMS`` / ``AWS_ENDPOINT_URL`` when set,
    credentials from the standard AWS chain. ``retired`` maps version numbers retired earlier
    to their retirement time (see the module docstring).
    """

    def __init__(
        self,
        key_id: str,
        *,
        region: str | None,
        retired: Mapping[int, datetime] | None = None,
    ) -> None:
        if not key_id:
            raise KeystoreError("no KMS key id given", hint="name a KMS key id, ARN or alias")
        self.key_id = key_id
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._retired: dict[int, datetime] = dict(retired or {})
        # on-demand rotations KMS has not listed yet: (rotation count that will list it, when)
        self._pending: list[tuple[int, datetime]] = []
        self._client_: Any = None
        self._arn: str | None = None

    def __repr__(self) -> str:
        return f"KmsKeystore({self.key_id!r}, region={self.region!r})"

    # --- AWS -----------------------------------------------------------------------------

    @property
    def _kms(self) -> Any:  # boto3 ships no types
        if self._client_ is None:
            try:
                self._client_ = boto3.client(
                    "kms",
                    region_name=self.region,
                    config=Config(
                        connect_timeout=_TIMEOUT_SECONDS,
                        read_timeout=_TIMEOUT_SECONDS,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
            except BotoCoreError as exc:
                raise self._error("reach KMS for", exc) from exc
        return self._client_

    def _error(self, action: str, exc: Exception) -> KeystoreError:
        """A KeystoreError naming the key and the AWS error, never credentials."""
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NotFoundException":
                return KeystoreError(
                    f"KMS key {self.key_id} does not exist in {self.region}",
                    hint="check the key id or alias and the region (AWS_DEFAULT_REGION)",
                )
            if code in ("DisabledException", "KMSInvalidStateException"):
                return KeystoreError(
                    f"KMS key {self.key_id} cannot be used: {code}",
                    hint=_STATE_HINTS["Disabled"].replace("KEY", self.key_id),
                )
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                return KeystoreError(
                    f"cannot unwrap with KMS key {self.key_id}: wrong key, wrong context or "
                    "altered ciphertext"
                )
            detail = code
            message = exc.response.get("Error", {}).get("Message")
            if message:
                detail += f": {message}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return KeystoreError(
            f"cannot {action} KMS key {self.key_id} ({detail})",
            hint="check the endpoint (AWS_ENDPOINT_URL_KMS), the credentials and the key policy",
        )

    def _describe(self) -> dict[str, Any]:
        """The key's metadata; raises KeystoreError unless the key is enabled."""
        try:
            meta: dict[str, Any] = self._kms.describe_key(KeyId=self.key_id)["KeyMetadata"]
        except (ClientError, BotoCoreError) as exc:
            raise self._error("describe", exc) from exc
        state = str(meta.get("KeyState", "Enabled" if meta.get("Enabled") else "Disabled"))
        if state != "Enabled" or meta.get("Enabled") is False:
            hint = _STATE_HINTS.get(state, "the key must be Enabled")
            raise KeystoreError(
                f"KMS key {self.key_id} is {state}", hint=hint.replace("KEY", self.key_id)
            )
        self._arn = str(meta["Arn"])
        return meta

    def _rotation_dates(self) -> list[datetime]:
        dates: list[datetime] = []
        try:
            pages = self._kms.get_paginator("list_key_rotations").paginate(KeyId=self.key_id)
            for page in pages:
                dates.extend(_aware(item["RotationDate"]) for item in page.get("Rotations", []))
        except ClientError as exc:
            if _code(exc) == "UnsupportedOperationException":
                return []  # asymmetric, HMAC or imported key material: no rotations
            raise self._error("list the rotations of", exc) from exc
        except BotoCoreError as exc:
            raise self._error("list the rotations of", exc) from exc
        return sorted(dates)

    def _versions(self) -> list[KekVersion]:
        meta = self._describe()
        arn = str(meta["Arn"])
        listed = self._rotation_dates()
        self._pending = [(n, when) for n, when in self._pending if len(listed) < n]
        dates = [_aware(meta["CreationDate"]), *listed, *(when for _, when in self._pending)]
        return [
            KekVersion(
                kek_id=arn,
                version=number,
                created_at=created,
                retired_at=self._retired.get(number),
            )
            for number, created in enumerate(dates, start=1)
        ]

    # --- the interface -------------------------------------------------------------------

    def current(self) -> KekVersion:
        return self._versions()[-1]

    def versions(self) -> list[KekVersion]:
        return self._versions()

    def wrap(self, secret: bytes, *, context: bytes) -> WrappedSecret:
        current = self.current()
        try:
            reply = self._kms.encrypt(
                KeyId=self.key_id,
                Plaintext=secret,
                EncryptionContext=_context(context, current.version),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("wrap with", exc) from exc
        return WrappedSecret(
            kek_id=current.kek_id, version=current.version, ciphertext=reply["CiphertextBlob"]
        )

    def unwrap(self, wrapped: WrappedSecret, *, context: bytes) -> bytes:
        versions = self._versions()
        arn = versions[0].kek_id
        if wrapped.kek_id != arn:
            raise KeystoreError(
                f"the secret was wrapped by {wrapped.kek_id}, not by {arn}",
                hint="use the KMS key that wrapped it",
            )
        if not 1 <= wrapped.version <= len(versions):
            raise KeystoreError(f"KMS key {arn} has no version {wrapped.version}")
        retired = self._retired.get(wrapped.version)
        if retired is not None:
            raise KeystoreError(
                f"KMS key {arn} version {wrapped.version} was retired on "
                f"{retired.isoformat()} and can no longer unwrap",
                hint="secrets must be re-wrapped under the current version before retiring",
            )
        try:
            reply = self._kms.decrypt(
                KeyId=arn,
                CiphertextBlob=wrapped.ciphertext,
                EncryptionContext=_context(context, wrapped.version),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("unwrap with", exc) from exc
        plaintext: bytes = reply["Plaintext"]
        return plaintext

    def rotate(self) -> KekVersion:
        before = self._versions()
        try:
            self._kms.rotate_key_on_demand(KeyId=self.key_id)
        except ClientError as exc:
            if _code(exc) in (
                "UnsupportedOperationException",
                "LimitExceededException",
                "ConflictException",
            ):
                raise KeystoreError(
                    f"rotation is managed by KMS: key {self.key_id} cannot be rotated on "
                    f"demand now ({_code(exc)})",
                    hint="let KMS rotate it automatically (aws kms enable-key-rotation) or "
                    "configure a new KMS key",
                ) from exc
            raise self._error("rotate", exc) from exc
        except BotoCoreError as exc:
            raise self._error("rotate", exc) from exc
        # versions = creation + rotations, so the new rotation is listed as number len(before)
        if len(self._rotation_dates()) < len(before):
            self._pending.append((len(before), datetime.now(UTC)))
        return self._versions()[-1]

    def retire(self, version: int) -> None:
        versions = self._versions()
        if not 1 <= version <= len(versions):
            raise KeystoreError(f"KMS key {versions[0].kek_id} has no version {version}")
        if version == len(versions):
            raise KeystoreError(
                f"KMS key {versions[0].kek_id} version {version} is the current version",
                hint="rotate first, re-wrap the secrets, then retire the old version",
            )
        self._retired.setdefault(version, datetime.now(UTC))


def _context(context: bytes, version: int) -> dict[str, str]:
    return {_CONTEXT_KEY: context.hex(), _VERSION_KEY: str(version)}


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)
