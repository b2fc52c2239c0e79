"""The evidence package on disk: a gzip-compressed POSIX tar of regular files, written
deterministically and read defensively (docs/formats/evidence.md).

Layout::

    manifest.json                 canonical JSON: format, period, origin, checkpoint, every
                                  other file with its size and SHA-256
    manifest.sig                  DSSE envelope over manifest.json's exact bytes
    checkpoint.note               the ledger's signed checkpoint (C2SP signed note)
    ledger/events.jsonl           every cited ledger event with its inclusion proof
    attestations/<kind>/<id>.json DSSE envelopes of backups, verifications and drills
    records/*.json                backups, verifications, drills, controls, findings, ...
    oscal/assessment-results.json OSCAL assessment results
    report/index.html             the human report

Writing goes to a fresh temporary file (``O_CREAT | O_EXCL``: a planted file or symlink is
never followed) that is published with a hard link, which fails when the destination appeared
meanwhile: a package never replaces anything.

Reading never extracts to disk and trusts no size it has not counted: the gzip stream is
decompressed through a counter that stops past :data:`MAX_TOTAL_BYTES`, the tar is read as a
stream, extended headers (PAX, GNU long names) longer than :data:`MAX_HEADER_BYTES` are
refused before tarfile reads them, every member's declared size (read or skipped) counts
against the total, and members are read into memory under size limits. Folders, links,
devices, sparse files, absolute or ``..`` paths and duplicates are reported, not followed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Self

import rfc8785

from affidavit.crypto.digest import Sha256Stream, sha256_hex
from affidavit.errors import AlreadyExists, FormatError, VaultError
from affidavit.evidence.content import FORMAT
from affidavit.input_files import open_regular

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
CHECKPOINT = "checkpoint.note"
EVENTS = "ledger/events.jsonl"
OSCAL = "oscal/assessment-results.json"
REPORT = "report/index.html"
MANIFEST_PAYLOAD_TYPE = "application/vnd.affidavit.evidence-manifest+json"

MAX_MEMBER_BYTES = 512 * 1024 * 1024  # one member's data
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # the decompressed tar stream; also all declared sizes
MAX_MEMBERS = 100_000
MAX_HEADER_BYTES = 64 * 1024  # one PAX extended header, GNU long name or long link
_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_REGULAR = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_LONG_HEADERS = frozenset(
    {tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
_PACKAGE_HINT = "give the .tar.gz file `affidavit evidence build` wrote"


def check_member_path(path: str) -> bool:
    """Whether ``path`` is a safe relative file path in a package."""
    return (
        0 < len(path) <= 255
        and _PATH.fullmatch(path) is not None
        and all(part not in (".", "..") for part in path.split("/"))
    )


def manifest_bytes(files: Mapping[str, bytes], *, header: Mapping[str, Any]) -> bytes:
    """The canonical manifest: ``header`` plus ``files`` listed with size and SHA-256."""
    listed: list[Any] = [
        {"path": path, "size": len(data), "sha256": sha256_hex(data)}
        for path, data in sorted(files.items())
    ]
    document: dict[str, Any] = {**header, "format": FORMAT, "files": listed}
    return rfc8785.dumps(document)


# -- writing ----------------------------------------------------------------------------------


class _HashingWriter:
    """Writes through to ``raw`` and hashes what passes, so the package's digest is that of
    the bytes written (not of whatever ``out`` names later)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.digest = raw, Sha256Stream()

    def write(self, data: bytes) -> int:
        self.digest.update(bytes(data))
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _temporary_path(out: Path) -> Path:
    """A fresh, unpredictable name beside ``out`` (the folder's owner could plant files)."""
    return out.parent / f".{out.name}.{os.getpid()}.{os.urandom(8).hex()}.tmp"


def write_package(
    out: Path,
    files: Mapping[str, bytes],
    *,
    header: Mapping[str, Any],
    sign: Callable[[bytes], str],
    mtime: datetime,
) -> str:
    """Write the package to ``out`` (which must not exist); return its SHA-256.

    ``sign`` turns the manifest's bytes into the DSSE envelope JSON stored as
    ``manifest.sig``. The package is written to a new temporary file, opened with
    ``O_CREAT | O_EXCL`` (never a planted symlink), and published with ``os.link``: if
    ``out`` appeared meanwhile, :class:`AlreadyExists` is raised and nothing is replaced.
    """
    for path in files:
        if not check_member_path(path) or path in (MANIFEST, SIGNATURE):
            raise ValueError(f"invalid package path {path!r}")
    manifest = manifest_bytes(files, header=header)
    members = {**files, MANIFEST: manifest, SIGNATURE: sign(manifest).encode("utf-8")}
    folder = out.parent
    if os.path.lexists(out):
        raise AlreadyExists(f"{out} already exists", hint="choose another --out; nothing changed")
    if not folder.is_dir():
        raise VaultError(f"the folder {folder} does not exist", hint="create it first")
    tmp = _temporary_path(out)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise VaultError(
            f"cannot create a temporary file in {folder}: {exc.strerror or exc}",
            hint="something is in the way of the temporary file; nothing changed",
        ) from exc
    stamp = int(mtime.timestamp())
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=writer, mtime=stamp) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for path in [MANIFEST, SIGNATURE, *sorted(files)]:
                    data = members[path]
                    info = tarfile.TarInfo(path)
                    info.size, info.mtime, info.mode = len(data), stamp, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        try:
            os.link(tmp, out, follow_symlinks=False)
        except FileExistsError:
            raise AlreadyExists(
                f"{out} appeared while the package was written",
                hint="choose another --out; nothing was replaced",
            ) from None
        _sync_folder(folder)
    except OSError as exc:
        raise VaultError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return writer.digest.hexdigest()


def _sync_folder(folder: Path) -> None:
    """Make the new link durable (best effort: not every platform can fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReadPackage:
    """The files of a package as read, and what was wrong with the archive itself."""

    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (code, path, message)


class _Refused(Exception):
    """The archive holds something the reader will not process any further."""

    def __init__(self, code: str, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message


class _CappedReader:
    """A read-only view of a decompressing stream that raises :class:`_Refused` as soon as
    more than ``cap`` bytes came out of it, whoever asked for them (tarfile reads headers,
    skipped members and long names through it too)."""

    def __init__(self, stream: gzip.GzipFile, cap: int) -> None:
        self._stream, self._cap, self.count = stream, cap, 0

    def read(self, size: int = -1, /) -> bytes:
        room = self._cap - self.count + 1  # one byte more than allowed: enough to notice
        data = self._stream.read(room if size is None or size < 0 else min(size, room))
        self.count += len(data)
        if self.count > self._cap:
            raise _Refused(
                "archive-too-large", "", f"more than {self._cap} bytes once decompressed"
            )
        return data

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only")

    def tell(self) -> int:
        return self.count

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("a stream")

    def close(self) -> None:
        """The gzip stream is closed by its owner."""


class _GuardedInfo(tarfile.TarInfo):
    """A tar header that refuses, before tarfile acts on it, what would make tarfile hold an
    attacker-chosen amount in memory: long extended headers (read whole), global PAX headers
    (accumulated for the whole archive) and sparse files (their maps are read whole, their
    holes expand to zeros that no decompression counter sees)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        name = _shorten(info.name)
        if info.type in _LONG_HEADERS and info.size > MAX_HEADER_BYTES:
            raise _Refused(
                "archive-too-large",
                name,
                f"an extended header of {info.size} bytes (at most {MAX_HEADER_BYTES})",
            )
        if info.type == tarfile.XGLTYPE:
            raise _Refused("member-not-regular", name, "a global PAX header in the package")
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused("member-not-regular", name, "a sparse file in the package")
        return info

    # the PAX forms of GNU sparse files (0.0, 0.1, 1.0); tarfile calls these by name
    def _proc_gnusparse_00(self, next: tarfile.TarInfo, *_: Any) -> None:
        raise _Refused("member-not-regular", _shorten(next.name), "a sparse file in the package")

    _proc_gnusparse_01 = _proc_gnusparse_00
    _proc_gnusparse_10 = _proc_gnusparse_00


def _shorten(name: str) -> str:
    return name if len(name) <= 300 else name[:300] + "…"


def read_package(path: Path) -> ReadPackage:
    """Read every regular file of a package into memory, defensively.

    Raises :class:`FormatError` (exit 2) when ``path`` is not a gzip file at all, and
    :class:`~affidavit.errors.InputError` (exit 2) when it is no regular file (a folder, a
    symbolic link, a named pipe: never opened in a way that blocks); damage inside the
    archive is returned as problems (the verifier reports them). Memory stays bounded by
    about :data:`MAX_TOTAL_BYTES`, whatever the archive holds.
    """
    try:
        raw = open_regular(path, what="the evidence package", hint=_PACKAGE_HINT)
    except FileNotFoundError:
        raise FormatError(f"{path} does not exist", hint=_PACKAGE_HINT) from None
    except OSError as exc:
        raise FormatError(
            f"cannot read {path}: {exc.strerror or exc}", hint=_PACKAGE_HINT
        ) from None
    with raw:
        try:
            magic = raw.read(2)
            raw.seek(0)
        except OSError as exc:
            raise FormatError(f"cannot read {path}: {exc.strerror}") from None
        if magic != b"\x1f\x8b":
            raise FormatError(
                f"{path} is not an evidence package (not gzip-compressed)", hint=_PACKAGE_HINT
            )
        result = ReadPackage()
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                _read_members(_CappedReader(gz, MAX_TOTAL_BYTES), result)
        except _Refused as exc:
            result.problems.append((exc.code, exc.name, exc.message))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            result.problems.append(("archive-unreadable", "", f"the archive is damaged: {exc}"))
    return result


def _read_members(stream: _CappedReader, result: ReadPackage) -> None:
    declared = 0
    count = 0
    with tarfile.open(None, "r|", stream, tarinfo=_GuardedInfo) as tar:
        while (member := tar.next()) is not None:
            tar.members.clear()  # type: ignore[attr-defined]  # a stream keeps no index
            count += 1
            name = _shorten(member.name)
            if count > MAX_MEMBERS:
                result.problems.append(("archive-too-large", "", "too many members"))
                return
            declared += max(member.size, 0)
            if member.size > MAX_MEMBER_BYTES or declared > MAX_TOTAL_BYTES:
                result.problems.append(
                    ("archive-too-large", name, f"declares {member.size} bytes, too many")
                )
                return
            if member.type not in _REGULAR:
                kind = "a folder" if member.isdir() else "a link or special file"
                result.problems.append(("member-not-regular", name, f"{kind} in the package"))
                continue
            if not check_member_path(member.name):
                result.problems.append(("member-path-unsafe", name, "unsafe member path"))
                continue
            if member.name in result.files:
                result.problems.append(("member-duplicate", name, "appears more than once"))
                continue
            handle = tar.extractfile(member)
            data = handle.read(member.size + 1) if handle is not None else b""
            if len(data) != member.size:
                result.problems.append(("archive-truncated", name, "member is cut short"))
                return
            result.files[member.name] = data
