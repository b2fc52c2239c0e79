"""A vault in an S3 bucket (boto3); the only vault module that imports the AWS SDK.

An artifact ``SOURCE/BACKUP_ID/FILE`` is the object ``PREFIX/SOURCE/BACKUP_ID/FILE``.

Writes are multipart uploads in parts of :data:`PART_SIZE` (8 MiB): at most one part is held
in memory, the SHA-256 of the stored bytes is computed while streaming, and any failure
(including ``KeyboardInterrupt`` or an exception raised by the chunk iterator) aborts the
upload so that no partial object or dangling upload remains. Overwrites are refused twice:
a ``HEAD`` before the upload (fail early) and ``If-None-Match: *`` on
``CompleteMultipartUpload`` (the atomic guard; supported by AWS since 2024 and by moto).

Retention is S3 Object Lock per object version, in ``COMPLIANCE`` mode unless the vault was
built with ``lock_mode="GOVERNANCE"``. The mode and retain-until date are sent with
``CreateMultipartUpload``; after completion the object's lock is read back and, when the
server did not apply it (moto ignores lock headers on multipart uploads), set with
``PutObjectRetention`` on the new version. A put with ``retain_until`` into a bucket without
Object Lock is refused: the vault never silently stores an unlocked artifact.

Deletion removes the artifact's *version* (a plain DELETE on a versioned bucket would only
add a delete marker and leave the locked bytes in place), so S3 itself enforces retention.

:meth:`S3Vault.lock_shortfalls` reads the current version's lock back: a retain-until date
earlier than the one written, or a mode weaker than the vault's (GOVERNANCE where COMPLIANCE
was written, none at all), is a shortfall. :meth:`S3Vault.foreign` reports the one kind of
object :meth:`S3Vault.list` hides: keys ending in ``/`` (folder markers), which may hold bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import InputError, VaultError
from affidavit.models.inventory import Vault, VaultProbe
from affidavit.vaults.base import (
    ArtifactInfo,
    ArtifactLocked,
    ArtifactNotFound,
    EntryKind,
    ForeignEntry,
    StoredArtifact,
    VaultBackend,
    check_artifact_path,
    compare_lock,
)

_TIMEOUT_SECONDS = 5
_DATA_TIMEOUT_SECONDS = 60
PART_SIZE: Final = 8 * 1024 * 1024
"""Size of every multipart part but the last."""
MAX_PARTS: Final = 10_000
"""S3's limit on parts per upload: an artifact holds at most ``PART_SIZE * MAX_PARTS``."""
LOCK_MODES: Final = ("COMPLIANCE", "GOVERNANCE")
_NOT_FOUND_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})
_EXISTS_CODES: Final = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


class S3Vault(VaultBackend):
    """Artifacts as objects under ``s3://BUCKET/PREFIX``, protected by S3 Object Lock.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when set (the AWS
    SDK's own convention), credentials from the standard AWS chain. ``lock_mode`` is the
    Object Lock mode of the artifacts this vault writes with a retention date.
    """

    def __init__(self, vault: Vault, *, lock_mode: str = "COMPLIANCE") -> None:
        super().__init__(vault)
        if lock_mode not in LOCK_MODES:
            raise InputError(
                f"unknown S3 Object Lock mode {lock_mode!r}", hint="use COMPLIANCE or GOVERNANCE"
            )
        self.lock_mode = lock_mode
        self._data_client: Any = None
        self._object_lock: bool | None = None

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.vault.url.removeprefix("s3://").partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without slashes at either end ('' for none)."""
        return self.vault.url.removeprefix("s3://").partition("/")[2].strip("/")

    def _region(self) -> str:
        return self.vault.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    def _client(
        self, *, read_timeout: float = _TIMEOUT_SECONDS, max_attempts: int = 2
    ) -> Any:  # boto3 ships no types
        """A new client: by default the probe's (short read timeout, two attempts)."""
        return boto3.client(
            "s3",
            region_name=self._region(),
            config=Config(
                connect_timeout=_TIMEOUT_SECONDS,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
            ),
        )

    @property
    def _s3(self) -> Any:
        """The client for data operations (longer read timeout than the probe's)."""
        if self._data_client is None:
            try:
                self._data_client = self._client(read_timeout=_DATA_TIMEOUT_SECONDS, max_attempts=3)
            except BotoCoreError as exc:
                raise self._error("connect to", "", exc) from exc
        return self._data_client

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

    # --- helpers -------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _error(self, action: str, path: str, exc: Exception) -> VaultError:
        """A VaultError naming the bucket and the AWS error code, never credentials."""
        what = f" {path}" if path else ""
        if isinstance(exc, ClientError):
            detail = _code(exc)
            message = exc.response.get("Error", {}).get("Message")
            if message:
                detail += f": {message}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        hint = "check the endpoint (AWS_ENDPOINT_URL_S3), the credentials and the bucket policy"
        return VaultError(f"S3 vault {self.bucket}: cannot {action}{what} ({detail})", hint=hint)

    def _not_found(self, path: str) -> ArtifactNotFound:
        return ArtifactNotFound(f"S3 vault {self.bucket} has no artifact {path}")

    def _head(self, path: str) -> dict[str, Any]:
        try:
            head: dict[str, Any] = self._s3.head_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                raise self._not_found(path) from exc
            raise self._error("read", path, exc) from exc
        except BotoCoreError as exc:
            raise self._error("read", path, exc) from exc
        return head

    def _require_object_lock(self) -> None:
        if self._object_lock is None:
            try:
                cfg = self._s3.get_object_lock_configuration(Bucket=self.bucket)
                enabled = cfg.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._object_lock = enabled == "Enabled"
            except ClientError as exc:
                if _code(exc) != "ObjectLockConfigurationNotFoundError":
                    raise self._error("read the Object Lock configuration of", "", exc) from exc
                self._object_lock = False
            except BotoCoreError as exc:
                raise self._error("read the Object Lock configuration of", "", exc) from exc
        if not self._object_lock:
            raise VaultError(
                f"S3 vault {self.bucket}: the bucket has no Object Lock, so a retention date "
                "cannot be enforced",
                hint="use a bucket created with Object Lock enabled "
                "(aws s3api create-bucket --object-lock-enabled-for-bucket ...)",
            )

    # --- write ---------------------------------------------------------------------------

    def put(
        self, path: str, chunks: Iterable[bytes], *, retain_until: datetime | None
    ) -> StoredArtifact:
        """Multipart upload in 8 MiB parts; see the module docstring for the guarantees.

        ``retain_until`` requires a bucket with Object Lock."""
        check_artifact_path(path)
        until = None
        if retain_until is not None:
            if retain_until.tzinfo is None or retain_until.utcoffset() is None:
                raise InputError("retain_until must be a timezone-aware datetime")
            until = retain_until.astimezone(UTC)
            if until.microsecond:  # S3 keeps whole seconds: round up, never shorten
                until = until.replace(microsecond=0) + timedelta(seconds=1)
            if until <= datetime.now(UTC):
                raise InputError(f"retain_until {until.isoformat()} is in the past")
            self._require_object_lock()
        try:
            self._head(path)
        except ArtifactNotFound:
            pass
        else:
            raise self._exists(path)
        key = self._key(path)
        lock: dict[str, Any] = {}
        if until is not None:
            lock = {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": until}
        try:
            upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, **lock)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("start writing", path, exc) from exc
        upload_id: str = upload["UploadId"]
        hasher = Sha256Stream()
        completed = False
        try:
            parts = self._upload_parts(path, upload_id, chunks, hasher)
            try:
                done = self._s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if _code(exc) in _EXISTS_CODES:
                    raise self._exists(path) from exc
                raise self._error("finish writing", path, exc) from exc
            except BotoCoreError as exc:
                raise self._error("finish writing", path, exc) from exc
            completed = True
        finally:
            if not completed:
                self._abort(key, upload_id)
        if until is not None:
            self._ensure_locked(path, done.get("VersionId"), until)
        return StoredArtifact(
            path=path, size=hasher.length, sha256=hasher.hexdigest(), retain_until=until
        )

    def _exists(self, path: str) -> VaultError:
        return VaultError(
            f"S3 vault {self.bucket}: {path} already exists; artifacts are written once",
            hint="a backup never reuses an artifact path",
        )

    def _upload_parts(
        self, path: str, upload_id: str, chunks: Iterable[bytes], hasher: Sha256Stream
    ) -> list[dict[str, Any]]:
        """Upload ``chunks`` as parts of exactly PART_SIZE (the last may be shorter)."""
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        for chunk in chunks:
            hasher.update(chunk)
            view = memoryview(chunk).cast("B")
            while view:
                room = PART_SIZE - len(buffer)
                buffer += view[:room]
                view = view[room:]
                if len(buffer) == PART_SIZE:
                    parts.append(self._upload_part(path, upload_id, len(parts) + 1, buffer))
                    buffer.clear()
        if buffer or not parts:  # an empty artifact is one empty part
            parts.append(self._upload_part(path, upload_id, len(parts) + 1, buffer))
        return parts

    def _upload_part(
        self, path: str, upload_id: str, number: int, data: bytearray
    ) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise VaultError(
                f"S3 vault {self.bucket}: {path} is larger than {MAX_PARTS} parts of "
                f"{PART_SIZE // (1024 * 1024)} MiB",
                hint="split the backup into smaller artifacts",
            )
        try:
            reply = self._s3.upload_part(
                Bucket=self.bucket,
                Key=self._key(path),
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(data),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("write", path, exc) from exc
        part: dict[str, Any] = {"PartNumber": number, "ETag": reply["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1"):
            if reply.get(name):
                part[name] = reply[name]
        if reply.get("ChecksumSHA256"):
            part["ChecksumSHA256"] = reply["ChecksumSHA256"]
        return part

    def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: the caller is already raising the error that matters."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def _ensure_locked(self, path: str, version_id: str | None, until: datetime) -> None:
        """Read the new object's lock back; apply it when the server ignored the upload's
        lock headers; remove the object and raise when it cannot be locked."""
        key = self._key(path)
        version = {"VersionId": version_id} if version_id else {}
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key, **version)
            mode = head.get("ObjectLockMode")
            locked_until = head.get("ObjectLockRetainUntilDate")
            if mode is None or locked_until is None or locked_until < until:
                self._s3.put_object_retention(
                    Bucket=self.bucket,
                    Key=key,
                    Retention={"Mode": self.lock_mode, "RetainUntilDate": until},
                    **version,
                )
        except (ClientError, BotoCoreError) as exc:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._s3.delete_object(Bucket=self.bucket, Key=key, **version)
            raise self._error("lock", path, exc) from exc

    # --- read ----------------------------------------------------------------------------

    def open(self, path: str) -> BinaryIO:
        check_artifact_path(path)
        try:
            reply = self._s3.get_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                raise self._not_found(path) from exc
            raise self._error("read", path, exc) from exc
        except BotoCoreError as exc:
            raise self._error("read", path, exc) from exc
        return io.BufferedReader(_ObjectStream(self, path, reply["Body"]), buffer_size=1 << 20)

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        """One ranged GET (``Range: bytes=offset-end``): only those bytes travel."""
        check_artifact_path(path)
        if offset < 0 or size < 0:
            raise ValueError(f"no range at offset {offset} of size {size}")
        if size == 0:
            self._head(path)  # ArtifactNotFound all the same
            return b""
        try:
            reply = self._s3.get_object(
                Bucket=self.bucket, Key=self._key(path), Range=f"bytes={offset}-{offset + size - 1}"
            )
            with contextlib.closing(reply["Body"]) as body:
                data: bytes = body.read()
        except ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND_CODES:
                raise self._not_found(path) from exc
            if code in ("InvalidRange", "416"):
                return b""  # the range starts at or past the end
            raise self._error("read", path, exc) from exc
        except (BotoCoreError, OSError) as exc:
            raise self._error("read", path, exc) from exc
        return data[:size]

    def stat(self, path: str) -> ArtifactInfo:
        check_artifact_path(path)
        head = self._head(path)
        mode = head.get("ObjectLockMode")
        until = head.get("ObjectLockRetainUntilDate")
        return ArtifactInfo(
            path=path,
            size=int(head["ContentLength"]),
            retain_until=until.astimezone(UTC) if mode and until else None,
            lock_mode=str(mode) if mode and until else None,
        )

    def lock_shortfalls(self, path: str, retain_until: datetime) -> tuple[str, ...]:
        """The current version's Object Lock: at least this vault's mode (COMPLIANCE holds
        where GOVERNANCE was written) until no earlier than ``retain_until``."""
        stronger = ("COMPLIANCE",) if self.lock_mode == "GOVERNANCE" else ()
        return compare_lock(
            self.stat(path), retain_until, expected_mode=self.lock_mode, stronger=stronger
        )

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        if prefix:
            check_artifact_path(prefix.rstrip("/") or ".")
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield {**item, "Path": str(item["Key"])[len(base) :]}
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", prefix or "the artifacts", exc) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        for item in self._objects(prefix):
            path = item["Path"]
            if path and not path.endswith("/"):
                yield path

    def foreign(self, prefix: str) -> Iterator[ForeignEntry]:
        for item in self._objects(prefix):
            path = item["Path"]
            if path.endswith("/"):  # never written by the vault, and it may hold bytes
                size = int(item.get("Size", 0))
                yield ForeignEntry(path=path, kind=EntryKind.FOLDER, detail=f"{size} bytes")

    # --- delete --------------------------------------------------------------------------

    def delete(self, path: str) -> None:
        """Delete the artifact's current version; S3 refuses while Object Lock holds it."""
        check_artifact_path(path)
        head = self._head(path)
        version_id = head.get("VersionId")
        version = {"VersionId": version_id} if version_id and version_id != "null" else {}
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(path), **version)
        except ClientError as exc:
            until = head.get("ObjectLockRetainUntilDate")
            held = head.get("ObjectLockLegalHoldStatus") == "ON"
            if _code(exc) == "AccessDenied" and (held or (until and until > datetime.now(UTC))):
                why = "a legal hold" if held else f"{head.get('ObjectLockMode')} retention"
                raise ArtifactLocked(
                    f"S3 vault {self.bucket}: {path} is protected by {why}"
                    + (f" until {until.astimezone(UTC).isoformat()}" if until else ""),
                    hint="S3 Object Lock refuses the deletion until the retention date passes",
                ) from exc
            if _code(exc) in _NOT_FOUND_CODES:
                raise self._not_found(path) from exc
            raise self._error("delete", path, exc) from exc
        except BotoCoreError as exc:
            raise self._error("delete", path, exc) from exc


class _ObjectStream(io.RawIOBase):
    """A raw binary stream over a boto3 ``StreamingBody``, with errors as VaultError."""

    def __init__(self, vault: S3Vault, path: str, body: Any) -> None:
        super().__init__()
        self._vault = vault
        self._path = path
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except (ClientError, BotoCoreError) as exc:
            raise self._vault._error("read", self._path, exc) from exc
        except OSError as exc:  # urllib3 protocol errors are OSErrors
            raise VaultError(
                f"S3 vault {self._vault.bucket}: reading {self._path} failed: {exc}"
            ) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()
