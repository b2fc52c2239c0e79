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
from enum import StrEnum
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


class ArtifactReplaced(VaultError):
    """Something the vault never stores is at the artifact's path, or the path leads through
    it: a symbolic link, a folder, a FIFO, a socket or a device. ``kind`` names it in a few
    words ("symbolic link", "folder", ...). Nothing at that path is opened for reading before
    it is known to be a regular file, so a FIFO never blocks a reader."""

    def __init__(self, message: str, *, kind: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


class RetentionDamaged(VaultError):
    """The storage's own record of an artifact's retention cannot be read as the vault wrote
    it (a folder vault's sidecar that is not valid): the artifact stays locked, and
    :meth:`VaultBackend.lock_shortfalls` reports it."""


class EntryKind(StrEnum):
    """What a :class:`ForeignEntry` is."""

    HIDDEN_FILE = "hidden-file"  # a file named like the vault's own, but not one of them
    UNFINISHED_WRITE = "unfinished-write"  # a put's temporary file, left by a killed process
    ORPHANED_RETENTION = "orphaned-retention-record"  # a retention record without its artifact
    SYMLINK = "symbolic-link"
    FOLDER = "folder"  # a folder that holds no artifact, or an object named like one
    SPECIAL_FILE = "special-file"  # a FIFO, socket or device


@dataclass(frozen=True, slots=True, kw_only=True)
class ForeignEntry:
    """Something stored under a prefix that :meth:`VaultBackend.list` does not show and that is
    not one of the vault's own files serving a listed artifact."""

    path: str  # relative, ``/``-separated, as under the vault (not always a valid artifact path)
    kind: EntryKind
    artifact: str | None = None  # the artifact path it belongs to by its name, if any
    detail: str = ""  # in words: a link's target, the kind of special file, ...


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


def compare_lock(
    info: ArtifactInfo,
    retain_until: datetime,
    *,
    expected_mode: str | None,
    stronger: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """How the lock :meth:`VaultBackend.stat` reported (``info``) falls short of
    ``expected_mode`` until ``retain_until``, one sentence each; ``stronger`` lists the modes
    that hold at least as well as ``expected_mode``."""
    if info.lock_mode is None or info.retain_until is None:
        return (
            f"it is not locked any more (it was locked {expected_mode} until "
            f"{retain_until.isoformat()})",
        )
    out = []
    if info.lock_mode != expected_mode and info.lock_mode not in stronger:
        out.append(f"its lock mode is {info.lock_mode}, not {expected_mode}")
    if info.retain_until < retain_until:
        out.append(
            f"it is retained until {info.retain_until.isoformat()}, earlier than the signed "
            f"{retain_until.isoformat()}"
        )
    return tuple(out)


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

    lock_mode: str | None = None
    """The ``lock_mode`` :meth:`stat` reports for an artifact this vault stored with a
    retention date (None: the backend cannot lock)."""

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

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        """The artifact's bytes ``[offset, offset + size)``: fewer at its end, none past it,
        read without the rest where the storage can (``pread``, an S3 ranged GET): a cluster
        worker reads one segment of an artifact this way. Raises ``ArtifactNotFound``, and
        ``ValueError`` for a negative ``offset`` or ``size``. The default reads through
        :meth:`open` and skips what comes before ``offset``."""
        if offset < 0 or size < 0:
            raise ValueError(f"no range at offset {offset} of size {size}")
        with self.open(path) as stream:
            skip = offset
            while skip > 0 and (block := stream.read(min(skip, _COPY_CHUNK))):
                skip -= len(block)
            parts, want = [], size
            while want > 0 and (block := stream.read(min(want, _COPY_CHUNK))):
                parts.append(block)
                want -= len(block)
        return b"".join(parts)

    @abstractmethod
    def stat(self, path: str) -> ArtifactInfo:
        """Size and lock state of the artifact. Raises ``ArtifactNotFound``."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Paths of the artifacts under ``prefix``, sorted."""

    def foreign(self, prefix: str) -> Iterator[ForeignEntry]:
        """Everything stored under ``prefix`` that :meth:`list` does not show and that is not
        one of the vault's own files serving an artifact there (hidden files, symbolic links,
        special files, folders without artifacts, unfinished writes), sorted by path. Nothing
        found is opened. The default finds nothing: a backend whose :meth:`list` shows every
        stored object."""
        return iter(())

    def remove_unfinished(self, entry: ForeignEntry) -> None:
        """Remove an unfinished write that :meth:`foreign` reported (kind
        ``UNFINISHED_WRITE``, left by a killed writer). Raises ``ArtifactNotFound`` when it is
        gone already and ``VaultError`` when the storage refuses; the default has none to
        remove (a backend whose unfinished writes are invisible)."""
        raise ArtifactNotFound(f"this vault keeps no unfinished write at {entry.path}")

    def lock_shortfalls(self, path: str, retain_until: datetime) -> tuple[str, ...]:
        """How the storage's protection of artifact ``path`` now falls short of what a
        :meth:`put` with ``retain_until`` established, one sentence each; empty while it holds
        (a later date is no shortfall). Raises like :meth:`stat`. The default compares what
        :meth:`stat` reports with :attr:`lock_mode` and ``retain_until``."""
        info = self.stat(path)
        return compare_lock(info, retain_until, expected_mode=self.lock_mode)

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the artifact. Raises ``ArtifactLocked`` while the storage still enforces its
        retention, ``ArtifactNotFound`` when it is not there."""
