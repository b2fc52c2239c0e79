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

Reading never extracts to disk: members are read into memory under size limits, and links,
devices, absolute or ``..`` paths and duplicates are reported, not followed.
"""

from __future__ import annotations

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
from typing import Any

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.errors import AlreadyExists, FormatError, VaultError
from affidavit.evidence.content import FORMAT

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
CHECKPOINT = "checkpoint.note"
EVENTS = "ledger/events.jsonl"
OSCAL = "oscal/assessment-results.json"
REPORT = "report/index.html"
MANIFEST_PAYLOAD_TYPE = "application/vnd.affidavit.evidence-manifest+json"

MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_MEMBERS = 100_000
_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


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


def write_package(
    out: Path,
    files: Mapping[str, bytes],
    *,
    header: Mapping[str, Any],
    sign: Callable[[bytes], str],
    mtime: datetime,
) -> str:
    """Write the package atomically to ``out`` (which must not exist); return its SHA-256.

    ``sign`` turns the manifest's bytes into the DSSE envelope JSON stored as
    ``manifest.sig``.
    """
    for path in files:
        if not check_member_path(path) or path in (MANIFEST, SIGNATURE):
            raise ValueError(f"invalid package path {path!r}")
    manifest = manifest_bytes(files, header=header)
    members = {**files, MANIFEST: manifest, SIGNATURE: sign(manifest).encode("utf-8")}
    if out.exists():
        raise AlreadyExists(f"{out} already exists", hint="choose another --out; nothing changed")
    folder = out.parent
    if not folder.is_dir():
        raise VaultError(f"the folder {folder} does not exist", hint="create it first")
    tmp = folder / f".{out.name}.{os.getpid()}.tmp"
    stamp = int(mtime.timestamp())
    try:
        with open(tmp, "wb") as raw:
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=stamp) as gz,
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
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise VaultError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with open(out, "rb") as fh:
        return sha256_hex(fh.read())


@dataclass(slots=True)
class ReadPackage:
    """The files of a package as read, and what was wrong with the archive itself."""

    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (code, path, message)


def read_package(path: Path) -> ReadPackage:
    """Read every regular file of a package into memory, defensively.

    Raises :class:`FormatError` (exit 2) when ``path`` is not a gzip file at all; damage
    inside the archive is returned as problems (the verifier reports them).
    """
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise FormatError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise FormatError(f"{path} is a folder, not an evidence package") from None
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"\x1f\x8b":
        raise FormatError(
            f"{path} is not an evidence package (not gzip-compressed)",
            hint="give the .tar.gz file `affidavit evidence build` wrote",
        )
    result = ReadPackage()
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    result.problems.append(("archive-too-large", "", "too many members"))
                    break
                name = member.name
                if not member.isfile():
                    if not member.isdir():
                        result.problems.append(
                            ("member-not-regular", name, "a link or special file in the package")
                        )
                    continue
                if not check_member_path(name):
                    result.problems.append(("member-path-unsafe", name, "unsafe member path"))
                    continue
                if name in result.files:
                    result.problems.append(("member-duplicate", name, "appears more than once"))
                    continue
                if member.size > MAX_MEMBER_BYTES or total + member.size > MAX_TOTAL_BYTES:
                    result.problems.append(("archive-too-large", name, "member too large"))
                    break
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                data = handle.read(member.size + 1)
                if len(data) != member.size:
                    result.problems.append(("archive-truncated", name, "member is cut short"))
                    break
                total += len(data)
                result.files[name] = data
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        result.problems.append(("archive-unreadable", "", f"the archive is damaged: {exc}"))
    return result
