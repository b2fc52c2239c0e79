"""A vault in a local folder.

Layout: an artifact ``SOURCE/BACKUP_ID/FILE`` is the file ``ROOT/SOURCE/BACKUP_ID/FILE``, mode
``0444``. Its retention date, when it has one, is in a read-only sidecar
``ROOT/SOURCE/BACKUP_ID/.FILE.retention`` holding ``{"retain_until": "<ISO 8601, UTC>"}``.
A put in progress writes ``.FILE.<random>.partial`` in the same folder; an ingest spools
ciphertext to ``ROOT/.spool-<random>.partial`` before it links it into place
(:meth:`FileVault.put_file`). Names whose last
component starts with ``.`` are therefore reserved for the vault's own files: :meth:`put`
refuses them and :meth:`list` never shows them. Anything else that is stored there — a hidden
file that is none of those, a sidecar without its artifact, an unfinished write, a symbolic
link, a FIFO, socket or device, a folder without artifacts — is what :meth:`FileVault.foreign`
reports. Nothing at an artifact's path is opened before :func:`os.lstat` shows a regular file
(and it is opened with ``O_NOFOLLOW | O_NONBLOCK``), so a FIFO there never blocks a reader.

A folder cannot enforce retention against its owner or root: the read-only mode and the
sidecar make :meth:`FileVault.delete` refuse, and the catalog keeps its own record; an auditor
who needs storage-enforced immutability uses an S3 Object Lock vault.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from affidavit.crypto.digest import Sha256Stream
from affidavit.durable import fsync_folder
from affidavit.errors import InputError, VaultError
from affidavit.models.inventory import VaultProbe
from affidavit.vaults.base import (
    ArtifactInfo,
    ArtifactLocked,
    ArtifactNotFound,
    ArtifactReplaced,
    EntryKind,
    ForeignEntry,
    RetentionDamaged,
    StoredArtifact,
    VaultBackend,
    check_artifact_path,
    check_written,
)

_READ_ONLY = 0o444
_WRITABLE = 0o644
_RETENTION_SUFFIX = ".retention"
_PARTIAL_SUFFIX = ".partial"
_SPOOL_PREFIX = ".spool-"
_STALE_SPOOL_SECONDS = 24 * 3600
"""A spool file untouched this long was left by a process that died: an ingest writes its
spool files within seconds to minutes and takes them over right after its check."""
_MAX_SIDECAR_SIZE = 4096
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+" + re.escape(_PARTIAL_SUFFIX))
"""A put's temporary file: ``.FILE.<random>.partial`` (8 characters from
:func:`tempfile.mkstemp`)."""


def _kind_of(mode: int) -> str:
    """What a non-regular file is, in words: stable values (a verification records them in
    its signed details), hence not :func:`affidavit.input_files.describe_mode`'s phrasing."""
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise InputError("retain_until must be a timezone-aware datetime")
    return when.astimezone(UTC)


def _future(when: datetime) -> datetime:
    until = _aware(when)
    if until <= datetime.now(UTC):
        raise InputError(f"retain_until {until.isoformat()} is in the past")
    return until


def _strict_retention(data: bytes) -> datetime | None:
    """The date of a sidecar exactly as :meth:`FileVault.put` writes it, ``{"retain_until":
    "<ISO 8601>"}`` and nothing else; None for anything else."""
    if len(data) > _MAX_SIDECAR_SIZE:
        return None
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or set(record) != {"retain_until"}:
            return None
        value = record["retain_until"]
        return _aware(datetime.fromisoformat(value)) if isinstance(value, str) else None
    except (ValueError, InputError):
        return None


def _unlink_quietly(path: Path) -> None:
    """Best-effort cleanup: it runs while another error is being raised, which it must not
    replace (the folder itself may be gone: ``NotADirectoryError``, ``FileNotFoundError``)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


class FileVault(VaultBackend):
    """Artifacts under a folder; each is written once and then made read-only."""

    lock_mode = "read-only"

    @property
    def root(self) -> Path:
        """The vault's folder."""
        return Path(self.vault.url.removeprefix("file://"))

    def probe(self) -> VaultProbe:
        root = self.root
        if not root.exists():
            parent = next((p for p in root.parents if p.exists()), None)
            can_create = parent is not None and os.access(parent, os.W_OK | os.X_OK)
            return VaultProbe(
                reachable=can_create,
                writable=can_create,
                immutability="read-only files" if can_create else None,
                detail="will be created on first backup"
                if can_create
                else f"{root} cannot be created",
            )
        if not root.is_dir():
            return VaultProbe(
                reachable=False, writable=False, immutability=None, detail=f"{root} is not a folder"
            )
        writable = os.access(root, os.W_OK | os.X_OK)
        return VaultProbe(
            reachable=True,
            writable=writable,
            immutability="read-only files",
            detail="ok" if writable else f"no write permission on {root}",
        )

    # --- paths ---------------------------------------------------------------------------

    def _locate(self, path: str, *, create: bool = False) -> Path:
        """The file of artifact ``path``; its folder is inside the root (made if ``create``).

        Raises ``InputError`` for an unsafe or reserved path and ``VaultError`` when a symbolic
        link would lead outside the vault's folder.
        """
        check_artifact_path(path)
        parts = path.split("/")
        if parts[-1].startswith("."):
            raise InputError(
                f"invalid artifact path {path!r}: names starting with '.' are reserved "
                "for the folder vault's own files"
            )
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            root = self.root.resolve()
            target = root.joinpath(*parts)
            self._inside(root, target.parent, path)
            if create:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._inside(root, target.parent, path)  # nothing swapped in meanwhile
        except OSError as exc:
            raise VaultError(
                f"folder vault {self.root}: cannot prepare {path}: {exc.strerror}"
            ) from exc
        return target

    def _inside(self, root: Path, folder: Path, path: str) -> None:
        if not folder.resolve().is_relative_to(root):
            raise ArtifactReplaced(
                f"folder vault {self.root}: {path} leads outside the vault's folder "
                "through a symbolic link",
                kind="symbolic link",
                hint="remove the symbolic link from the vault folder",
            )

    @staticmethod
    def _sidecar(target: Path) -> Path:
        return target.with_name(f".{target.name}{_RETENTION_SUFFIX}")

    # --- write ---------------------------------------------------------------------------

    def put(
        self, path: str, chunks: Iterable[bytes], *, retain_until: datetime | None
    ) -> StoredArtifact:
        """Stream ``chunks`` to a temporary file beside the target, ``fsync`` it, make it
        read-only and hard-link it into place (``link`` never replaces an existing file).
        With ``retain_until`` the sidecar is linked first, so the artifact is never visible
        without its retention. Anything created is removed again on any failure, including
        ``KeyboardInterrupt`` and an exception raised by ``chunks``."""
        until = _future(retain_until) if retain_until is not None else None
        target = self._target(path)
        hasher = Sha256Stream()
        temps: list[Path] = []
        try:
            fd, tmp = self._temp_file(target.parent, target.name, temps)
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    hasher.update(chunk)
                out.flush()
                os.fsync(out.fileno())
                os.fchmod(out.fileno(), _READ_ONLY)
            self._link(tmp, target, path, until, temps)
        except OSError as exc:
            raise self._write_error(path, exc) from exc
        finally:
            for temp in temps:
                _unlink_quietly(temp)
        return StoredArtifact(
            path=path, size=hasher.length, sha256=hasher.hexdigest(), retain_until=until
        )

    def spool(self) -> Path:
        """A private file in the vault's folder (a reserved ``.spool-*.partial`` name, never
        listed), so that :meth:`put_file` links it into place instead of copying it. Spool
        files untouched for :data:`_STALE_SPOOL_SECONDS` (left by a process that was killed)
        are removed first."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._sweep_spools()
            fd, name = tempfile.mkstemp(dir=self.root, prefix=_SPOOL_PREFIX, suffix=_PARTIAL_SUFFIX)
        except OSError as exc:
            raise VaultError(
                f"folder vault {self.root}: cannot write: {exc.strerror or exc}",
                hint="check that the vault folder exists and is writable",
            ) from exc
        os.close(fd)
        return Path(name)

    def _sweep_spools(self) -> None:
        cutoff = time.time() - _STALE_SPOOL_SECONDS
        for stale in self.root.glob(f"{_SPOOL_PREFIX}*{_PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                info = stale.lstat()
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    stale.unlink()

    def put_file(
        self,
        path: str,
        file: Path,
        *,
        retain_until: datetime | None,
        sha256: str | None = None,
        size: int | None = None,
    ) -> StoredArtifact:
        """Take a file of :meth:`spool` over without copying it: ``fsync`` it, make it
        read-only and hard-link it into place as :meth:`put` does, then remove its spool name.
        Its size must be ``size``; the digest is ``sha256``, computed by its writer while
        writing it. Without a digest, or for a file on another file system, the file is
        copied (the base class's way, which hashes what it copies)."""
        until = _future(retain_until) if retain_until is not None else None
        target = self._target(path)
        try:
            info = os.lstat(file)
            same_device = os.stat(target.parent).st_dev == info.st_dev
        except OSError as exc:
            raise self._write_error(path, exc) from exc
        if sha256 is None or not same_device or not stat.S_ISREG(info.st_mode):
            return super().put_file(path, file, retain_until=retain_until, sha256=sha256, size=size)
        temps: list[Path] = []
        try:
            fd = os.open(file, os.O_RDONLY | _NOFOLLOW)
            try:
                length = os.fstat(fd).st_size
                check_written(path, sha256, length, sha256=sha256, size=size)
                os.fsync(fd)
                os.fchmod(fd, _READ_ONLY)
            finally:
                os.close(fd)
            self._link(file, target, path, until, temps)
        except OSError as exc:
            raise self._write_error(path, exc) from exc
        finally:
            for temp in temps:
                _unlink_quietly(temp)
        _unlink_quietly(file)
        return StoredArtifact(path=path, size=length, sha256=sha256, retain_until=until)

    def _target(self, path: str) -> Path:
        """The file of a new artifact ``path`` (its folder made); refuses an existing one."""
        target = self._locate(path, create=True)
        if os.path.lexists(target):
            raise self._exists(path)
        return target

    def _link(
        self, tmp: Path, target: Path, path: str, until: datetime | None, temps: list[Path]
    ) -> None:
        """Hard-link the finished, read-only ``tmp`` into place (``link`` never replaces an
        existing file); with ``until`` the retention sidecar is linked first, so the artifact
        is never visible without its retention. The sidecar is removed again when the
        artifact cannot be linked. The folder is then synced."""
        folder = target.parent
        sidecar_linked = artifact_linked = False
        try:
            if until is not None:
                side_fd, side_tmp = self._temp_file(folder, target.name, temps)
                body = json.dumps({"retain_until": until.isoformat()}).encode()
                with os.fdopen(side_fd, "wb") as side:
                    side.write(body)
                    side.flush()
                    os.fsync(side.fileno())
                    os.fchmod(side.fileno(), _READ_ONLY)
                os.link(side_tmp, self._sidecar(target))
                sidecar_linked = True
            os.link(tmp, target)
            artifact_linked = True
        except FileExistsError as exc:
            raise self._exists(path) from exc
        finally:
            if sidecar_linked and not artifact_linked:
                _unlink_quietly(self._sidecar(target))
        fsync_folder(folder)

    def _write_error(self, path: str, exc: OSError) -> VaultError:
        return VaultError(f"folder vault {self.root}: cannot write {path}: {exc.strerror or exc}")

    @staticmethod
    def _temp_file(folder: Path, name: str, temps: list[Path]) -> tuple[int, Path]:
        """A new ``0600`` temporary file beside the target, recorded in ``temps``."""
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=_PARTIAL_SUFFIX)
        temps.append(Path(tmp))
        return fd, Path(tmp)

    def _exists(self, path: str) -> VaultError:
        return VaultError(
            f"folder vault {self.root}: {path} already exists; artifacts are written once",
            hint="a backup never reuses an artifact path; if an interrupted write left a "
            f"'.{path.rsplit('/', 1)[-1]}{_RETENTION_SUFFIX}' file without its artifact, "
            "check it and remove it by hand",
        )

    # --- read ----------------------------------------------------------------------------

    def open(self, path: str) -> BinaryIO:
        """Only a regular file is opened: :func:`os.lstat` first, then ``O_NOFOLLOW |
        O_NONBLOCK`` (a FIFO swapped in meanwhile does not block the open) and a check that
        the file opened is the one inspected."""
        target = self._locate(path)
        seen = self._lstat(target, path)
        try:
            fd = os.open(target, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ArtifactNotFound(f"folder vault {self.root} has no artifact {path}") from exc
        except OSError as exc:
            raise self._read_error(path, exc) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._replaced(path, _kind_of(info.st_mode), swapped=True)
            if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
                raise self._replaced(path, "another file", swapped=True)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        """``pread`` of the file :meth:`open` hands out (a regular file, nothing swapped in)."""
        if offset < 0 or size < 0:
            raise ValueError(f"no range at offset {offset} of size {size}")
        with self.open(path) as stream:
            fd, parts, want, at = stream.fileno(), [], size, offset
            try:
                while want > 0 and (block := os.pread(fd, min(want, 1 << 24), at)):
                    parts.append(block)
                    want -= len(block)
                    at += len(block)
            except OSError as exc:
                raise self._read_error(path, exc) from exc
        return b"".join(parts)

    def _replaced(self, path: str, kind: str, *, swapped: bool = False) -> ArtifactReplaced:
        article = "" if kind.startswith("another") else "an " if kind[0] in "aeiou" else "a "
        return ArtifactReplaced(
            f"folder vault {self.root}: {path} is {article}{kind}, not a stored artifact"
            + (" (swapped in while it was opened)" if swapped else ""),
            kind=kind,
            hint="something other than affidavit changed the vault folder: inspect it",
        )

    def _read_error(self, path: str, exc: OSError) -> VaultError:
        if exc.errno == errno.ELOOP:
            return self._replaced(path, "symbolic link", swapped=True)
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO without a reader) swapped in
            return self._replaced(path, "special file", swapped=True)
        return VaultError(f"folder vault {self.root}: cannot read {path}: {exc.strerror}")

    def _lstat(self, target: Path, path: str) -> os.stat_result:
        try:
            info = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ArtifactNotFound(f"folder vault {self.root} has no artifact {path}") from exc
        except OSError as exc:
            raise self._read_error(path, exc) from exc
        if not stat.S_ISREG(info.st_mode):
            raise self._replaced(path, _kind_of(info.st_mode))
        return info

    def _read_sidecar(self, target: Path, path: str) -> tuple[bytes, os.stat_result] | None:
        """The bytes (at most one more than a sidecar may hold) and the status of the
        retention sidecar of ``target``; None when there is none. Raises
        :class:`RetentionDamaged` when it is no regular file (a symbolic link, a FIFO: never
        opened in a way that blocks) and ``VaultError`` when it cannot be read."""
        sidecar = self._sidecar(target)
        try:
            fd = os.open(sidecar, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise self._damaged(path, sidecar) from exc
            raise VaultError(
                f"folder vault {self.root}: cannot read the retention of {path}: {exc.strerror}"
            ) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._damaged(path, sidecar)
            data = os.read(fd, _MAX_SIDECAR_SIZE + 1)
        except OSError as exc:
            raise VaultError(
                f"folder vault {self.root}: cannot read the retention of {path}: {exc.strerror}"
            ) from exc
        finally:
            os.close(fd)
        return data, info

    def _damaged(self, path: str, sidecar: Path) -> RetentionDamaged:
        return RetentionDamaged(
            f"folder vault {self.root}: the retention record of {path} is damaged",
            hint=f"inspect {sidecar}; the artifact stays locked until it is repaired",
        )

    def _retention(self, target: Path, path: str) -> datetime | None:
        """The retention date of the sidecar; raises VaultError when it is unreadable
        (:class:`RetentionDamaged` when it is not a retention record)."""
        read = self._read_sidecar(target, path)
        if read is None:
            return None
        try:
            value = json.loads(read[0])["retain_until"]
            return _aware(datetime.fromisoformat(value))
        except (ValueError, KeyError, TypeError, InputError) as exc:
            raise self._damaged(path, self._sidecar(target)) from exc

    def stat(self, path: str) -> ArtifactInfo:
        target = self._locate(path)
        info = self._lstat(target, path)
        read_only = not stat.S_IMODE(info.st_mode) & 0o222
        return ArtifactInfo(
            path=path,
            size=info.st_size,
            retain_until=self._retention(target, path),
            lock_mode="read-only" if read_only else None,
        )

    def lock_shortfalls(self, path: str, retain_until: datetime) -> tuple[str, ...]:
        """The folder's own lock as :meth:`put` left it: the artifact read-only, and its
        retention sidecar a read-only regular file holding exactly ``{"retain_until": ...}``
        with a date no earlier than ``retain_until``. Raises like :meth:`stat`."""
        until = _aware(retain_until)
        target = self._locate(path)
        info = self._lstat(target, path)
        out: list[str] = []
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o222:
            out.append(f"its mode {mode:04o} allows writing it again (the vault leaves 0444)")
        name = self._sidecar(target).name
        try:
            read = self._read_sidecar(target, path)
        except RetentionDamaged:
            return (*out, f"its retention record {name} is not a regular file")
        if read is None:
            return (*out, f"its retention record {name} is gone (signed: {until.isoformat()})")
        data, side = read
        side_mode = stat.S_IMODE(side.st_mode)
        if side_mode & 0o222:
            out.append(
                f"its retention record {name} has mode {side_mode:04o}: it can be rewritten "
                "(the vault leaves 0444)"
            )
        recorded = _strict_retention(data)
        if recorded is None:
            out.append(f"its retention record {name} is not one the vault wrote")
        elif recorded < until:
            out.append(
                f"its retention record {name} says {recorded.isoformat()}, earlier than the "
                f"signed {until.isoformat()}"
            )
        return tuple(out)

    def foreign(self, prefix: str) -> Iterator[ForeignEntry]:
        """Reserved names serve an artifact only as the vault writes them: ``.FILE.retention``
        beside an entry ``FILE`` (spool files only at the root, for the prefix ``""``).
        Everything else that is not a listed artifact is reported: other hidden files,
        sidecars without their artifact, unfinished writes (``.FILE.*.partial``), symbolic
        links (also a folder of ``prefix`` replaced by one), FIFOs, sockets, devices, and
        folders that hold no artifact. Raises ``VaultError`` when a folder cannot be read (an
        unreadable folder is never taken for an empty one)."""
        if prefix:
            check_artifact_path(prefix.rstrip("/") or ".")
        root = self.root
        parts = prefix.split("/")[:-1]
        found: list[ForeignEntry] = []
        start = root
        for n, part in enumerate(parts):  # the folders of the prefix itself
            start = start / part
            try:
                info = os.lstat(start)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                raise self._list_error(start, exc) from exc
            if stat.S_ISLNK(info.st_mode) or not (
                stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)
            ):
                yield self._entry(start, "/".join(parts[: n + 1]), info, None)
                return
            if not stat.S_ISDIR(info.st_mode):
                return  # a file where a folder should be: nothing is under it
        if not parts and not root.is_dir():
            return
        artifacts: list[str] = []
        folders: list[str] = []

        def failed(exc: OSError) -> None:
            raise self._list_error(Path(exc.filename or start), exc) from exc

        for folder, dirs, files in os.walk(start, onerror=failed, followlinks=False):
            rel = Path(folder).relative_to(root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in sorted(dirs + files):
                candidate = base + name
                if not candidate.startswith(prefix):
                    continue
                full = Path(folder, name)
                try:
                    info = os.lstat(full)
                except FileNotFoundError:
                    continue  # gone since the folder was read
                except OSError as exc:
                    raise self._list_error(full, exc) from exc
                if stat.S_ISDIR(info.st_mode):
                    folders.append(candidate)
                elif stat.S_ISREG(info.st_mode) and not name.startswith("."):
                    artifacts.append(candidate)
                elif not (
                    stat.S_ISREG(info.st_mode)
                    and self._reserved(Path(folder), name, at_root=rel == ".")
                ):
                    found.append(self._entry(full, candidate, info, base))
        holding = {a.rsplit("/", n)[0] for a in artifacts for n in range(1, a.count("/") + 1)}
        listed = set(folders)
        for folder in folders:  # the topmost folders without any artifact below them
            parent = folder.rpartition("/")[0]
            if folder not in holding and (parent not in listed or parent in holding):
                found.append(ForeignEntry(path=folder, kind=EntryKind.FOLDER, detail="no artifact"))
        yield from sorted(found, key=lambda e: e.path)

    @staticmethod
    def _sidecar_of(name: str) -> str | None:
        """The artifact name whose retention sidecar ``name`` would be (None: no sidecar)."""
        if not (name.startswith(".") and name.endswith(_RETENTION_SUFFIX)):
            return None
        artifact = name[1 : -len(_RETENTION_SUFFIX)]
        return artifact if artifact and not artifact.startswith(".") else None

    @classmethod
    def _reserved(cls, folder: Path, name: str, *, at_root: bool) -> bool:
        """The regular file ``name`` is one of the vault's own files serving an artifact in
        ``folder``: a sidecar beside its artifact (whatever now stands at the artifact's path
        is judged on its own), or a spool file at the root."""
        if at_root and name.startswith(_SPOOL_PREFIX) and name.endswith(_PARTIAL_SUFFIX):
            return True
        artifact = cls._sidecar_of(name)
        return artifact is not None and os.path.lexists(folder / artifact)

    @classmethod
    def _entry(cls, full: Path, path: str, info: os.stat_result, base: str | None) -> ForeignEntry:
        """What a foreign entry at ``path`` is (``base``: its folder's prefix, for names)."""
        name = path.rpartition("/")[2]
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.readlink(full)
            except OSError:
                target = "?"
            return ForeignEntry(path=path, kind=EntryKind.SYMLINK, detail=f"-> {target}")
        if not stat.S_ISREG(info.st_mode):
            kind = _kind_of(info.st_mode)
            return ForeignEntry(path=path, kind=EntryKind.SPECIAL_FILE, detail=kind)
        served = cls._sidecar_of(name)
        if base is not None and served is not None:
            return ForeignEntry(
                path=path,
                kind=EntryKind.ORPHANED_RETENTION,
                artifact=base + served,
                detail=f"{info.st_size} bytes",
            )
        temp = _TEMP_NAME.fullmatch(name)
        if base is not None and temp is not None:
            return ForeignEntry(
                path=path,
                kind=EntryKind.UNFINISHED_WRITE,
                artifact=base + temp["name"],
                detail=f"{info.st_size} bytes",
            )
        return ForeignEntry(path=path, kind=EntryKind.HIDDEN_FILE, detail=f"{info.st_size} bytes")

    def _list_error(self, where: Path, exc: OSError) -> VaultError:
        return VaultError(
            f"folder vault {self.root}: cannot list {where}: {exc.strerror or exc}",
            hint="check the permissions of the vault folder",
        )

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            check_artifact_path(prefix.rstrip("/") or ".")
        root = self.root
        start = root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else root
        found: list[str] = []
        for folder, dirs, files in os.walk(start, followlinks=False):
            dirs.sort()
            rel = Path(folder).relative_to(root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in sorted(files):
                if name.startswith("."):
                    continue
                full = Path(folder, name)
                if full.is_symlink() or not full.is_file():
                    continue
                candidate = base + name
                if candidate.startswith(prefix):
                    found.append(candidate)
        yield from sorted(found)

    # --- delete --------------------------------------------------------------------------

    def remove_unfinished(self, entry: ForeignEntry) -> None:
        """Unlink the ``.NAME.<random>.partial`` file of ``entry``: only a regular file of that
        name inside the vault's folder, never through a symbolic link."""
        if entry.kind is not EntryKind.UNFINISHED_WRITE or entry.artifact is None:
            raise InputError(f"{entry.path} is not an unfinished write of this vault")
        folder = self._locate(entry.artifact).parent
        name = entry.path.rpartition("/")[2]
        if _TEMP_NAME.fullmatch(name) is None:
            raise InputError(f"{entry.path} is not an unfinished write of this vault")
        target = folder / name
        try:
            info = target.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise VaultError(f"folder vault {self.root}: {entry.path} is not a regular file")
            target.unlink()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"folder vault {self.root} has no {entry.path}") from exc
        except OSError as exc:
            raise VaultError(
                f"folder vault {self.root}: cannot remove {entry.path}: {exc.strerror}"
            ) from exc

    def delete(self, path: str) -> None:
        """Remove the artifact and its retention sidecar once ``retain_until`` has passed;
        raises ``ArtifactLocked`` before (or when the retention record is unreadable)."""
        target = self._locate(path)
        self._lstat(target, path)
        try:
            until = self._retention(target, path)
        except VaultError as exc:
            raise ArtifactLocked(exc.message, hint=exc.hint) from exc
        if until is not None and datetime.now(UTC) < until:
            raise ArtifactLocked(
                f"{path} is retained until {until.isoformat()} in folder vault {self.root}",
                hint="an artifact cannot be deleted before its retention date",
            )
        sidecar = self._sidecar(target)
        try:
            os.chmod(target, _WRITABLE)
            os.unlink(target)
            if until is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(sidecar, _WRITABLE)
                _unlink_quietly(sidecar)
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"folder vault {self.root} has no artifact {path}") from exc
        except OSError as exc:
            raise VaultError(
                f"folder vault {self.root}: cannot delete {path}: {exc.strerror}"
            ) from exc
        fsync_folder(target.parent)
        self._prune(target.parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty by a deletion, up to (not including) the root."""
        root = self.root.resolve()
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
