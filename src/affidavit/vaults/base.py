"""The vault interface: one class per storage backend (folder, S3).

A vault stores backup artifacts *write once*: :meth:`VaultBackend.put` refuses to overwrite,
and an artifact with a retention date cannot be deleted before it (S3 Object Lock in
COMPLIANCE or GOVERNANCE mode; read-only files plus the catalog's own check for folders).
Artifacts stream in and out in chunks and never pass through memory whole. Implementations wrap
backend exceptions in :class:`~affidavit.errors.VaultError` (or ``ArtifactNotFound``).

Artifact paths are relative, ``/``-separated, without ``..``: ``SOURCE/BACKUP_ID/FILE``.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import InputError, VaultError
from affidavit.models.inventory import Vault, VaultProbe

_COPY_CHUNK = 1 << 20


def check_written(
    path: str, digest: str, length: int, *, sha256: str | None, size: int | None
) -> None:
    """Refuse a spooled file whose bytes differ from what its writer reported."""
    if (sha256 is not None and digest != sha256) or (size is not None and length != size):
        raise VaultError(
            f"the spooled file for {path} is not what its writer wrote "
            f"({length} bytes, SHA-256 {digest[:16]}...)",
            hint="something changed the spool file while it waited; run again",
        )


class ArtifactNotFound(VaultError):
    """The vault has no artifact at that path."""


class ArtifactLocked(VaultError):
    """The artifact is under retention (or a legal hold) and cannot be deleted or changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredArtifact:
    """What :meth:`VaultBackend.put` wrote: the bytes as stored (ciphertext, if encrypted)."""

    path: str
    size: int
    sha256: str  # hex digest of the stored bytes
    retain_until: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactInfo:
    """What the vault says about a stored artifact now."""

    path: str
    size: int
    retain_until: datetime | None  # as enforced by the storage (None: not locked)
    lock_mode: str | None  # "COMPLIANCE", "GOVERNANCE", "read-only" or None


def check_artifact_path(path: str) -> str:
    """Return ``path`` when it is a safe relative artifact path, else raise InputError."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(ch) < 0x20 or ch == "\\" for ch in path)
    ):
        raise InputError(f"invalid artifact path {path!r}")
    return path


class VaultBackend(ABC):
    """Storage of backup artifacts for one registered vault."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    @abstractmethod
    def probe(self) -> VaultProbe:
        """Check reachability and protection settings without writing anything.
        Never raises for an unreachable vault: that is reported in the probe."""

    @abstractmethod
    def put(
        self, path: str, chunks: Iterable[bytes], *, retain_until: datetime | None
    ) -> StoredArtifact:
        """Store the concatenated ``chunks`` at ``path``, streaming, and lock it until
        ``retain_until`` where the backend can. Raises ``VaultError`` when ``path`` exists
        (write once) or the write fails; a failed put leaves no partial artifact behind.
        ``retain_until`` must be timezone-aware and in the future (``InputError`` otherwise);
        a backend that cannot enforce it raises ``VaultError`` rather than store the artifact
        unlocked. An exception raised by ``chunks`` itself propagates unchanged."""

    def spool(self) -> Path:
        """A new, empty, private (``0600``) local file for an artifact that is written in full
        (by this process or a child) before :meth:`put_file` stores it. The caller removes it
        when it does not store it. A vault on a local file system puts it on its own file
        system, so that :meth:`put_file` can take the file over without copying; the default
        is the system's temporary folder."""
        fd, name = tempfile.mkstemp(prefix="affidavit-spool-", suffix=".partial")
        os.close(fd)
        return Path(name)

    def put_file(
        self,
        path: str,
        file: Path,
        *,
        retain_until: datetime | None,
        sha256: str | None = None,
        size: int | None = None,
    ) -> StoredArtifact:
        """Store the finished local ``file`` (from :meth:`spool`) at ``path`` as :meth:`put`
        stores a stream, and remove ``file``. ``sha256`` and ``size`` are what its writer
        computed while writing it: a vault that copies the file hashes what it copies and
        refuses a difference (``VaultError``, nothing stored); one that takes the file over
        as it is checks the size and keeps the writer's digest. On any failure ``file`` is
        left where it is (the caller removes it) and nothing is stored. This default copies."""
        hasher = Sha256Stream()
        with file.open("rb") as fh:

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(_COPY_CHUNK):
                    hasher.update(chunk)
                    yield chunk
                # before the put completes: a difference stores nothing
                check_written(path, hasher.hexdigest(), hasher.length, sha256=sha256, size=size)

            stored = self.put(path, chunks(), retain_until=retain_until)
        file.unlink(missing_ok=True)
        return stored

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """A readable binary stream of the artifact. Raises ``ArtifactNotFound``."""

    @abstractmethod
    def stat(self, path: str) -> ArtifactInfo:
        """Size and lock state of the artifact. Raises ``ArtifactNotFound``."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Paths of the artifacts under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the artifact. Raises ``ArtifactLocked`` while the storage still enforces its
        retention, ``ArtifactNotFound`` when it is not there."""
