"""Files uploaded to the server for a later command (docs/server.md, "Uploads").

A request body is small JSON; a file a command needs on the server (a backup made elsewhere
for ``backup ingest``, an answer's file for ``audit request answer --file``, a backup file for
``fingerprint FILE``) comes first through ``POST /api/v1/uploads``, streamed to disk, and the
command's JSON then names it by its *upload id*. An upload:

- is written to ``HOME/uploads/`` (the folder 0700, files 0600, never through a link) while
  it arrives, as ``.incoming-ID``; its SHA-256 is computed on the way and must equal the one
  the client declared, and its size the one it announced, else the file is removed;
- once complete, is ``ID.data`` beside ``ID.json`` (owner, size, SHA-256, creation and
  expiry): it **belongs to the identity that made it** (another identity asking for it is
  told there is no such upload), is **used at most once** (:func:`claimed` moves it away
  atomically, so two commands racing for it cannot both have it), and **expires**
  (:data:`TTL`) — :func:`sweep` removes expired uploads, incoming files nobody wrote to for
  :data:`TTL`, and the claim folders of dead processes;
- is handed to the command as a file of the name the command gives (``dump.archive``,
  ``report.pdf``) in a private folder of the claiming process, removed when the command is
  done, whatever its outcome; an error of the command names the file by that name, never
  by its path in the server's home.

Nothing here records a ledger event: an upload changes no state of the catalog, and the
command that consumes it records its own; the request itself is in the access log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final

from affidavit.crypto import tokens
from affidavit.crypto.digest import Sha256Stream, constant_time_equal
from affidavit.errors import Error, InputError, NotFound, OperationError, TooManyRequests
from affidavit.input_files import open_regular
from affidavit.private_temp import open_private, private_folder
from affidavit.private_temp import sweep as sweep_private

FOLDER: Final = "uploads"
TTL: Final = timedelta(hours=1)
"""How long an upload waits to be used (and how long an incoming file may sit idle)."""
MAX_WAITING: Final = 8
"""Uploads one identity may have waiting to be used at once (more are refused: 429)."""
FREE_RESERVE: Final = 1 << 30
"""Bytes the uploads' filesystem keeps free after an upload (1 GiB): one that would leave
less is refused before a byte is written."""
_ID: Final = re.compile(r"up-[0-9a-f]{16}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_INCOMING: Final = ".incoming-"
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    """One complete upload."""

    id: str
    owner: str
    size: int
    sha256: str
    created_at: datetime
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The API's answer (the owner is the caller: not repeated)."""
        return {
            "upload": self.id,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }

    def meta(self) -> dict[str, Any]:
        """What ``ID.json`` holds."""
        return {**self.to_json(), "owner": self.owner}


def folder(home: Path) -> Path:
    """``HOME/uploads`` (made 0700 when missing; a link there is refused)."""
    path = home / FOLDER
    if path.is_symlink():
        raise OperationError(f"{path} is a symbolic link", hint="remove it; uploads live there")
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def check_sha256(text: str) -> str:
    """``text`` as a lower-case hex SHA-256; :class:`InputError` otherwise."""
    value = text.strip().lower()
    if not _SHA256.fullmatch(value):
        raise InputError(
            "X-Content-SHA256 must be the body's SHA-256 in 64 hex digits",
            hint="the CLI sends it; a client of the API computes it before it sends",
        )
    return value


class Receiver:
    """An upload being received: :meth:`write` its chunks, then :meth:`finish` (checks size
    and SHA-256) or :meth:`abort`; either way no incoming file is left behind."""

    def __init__(
        self, home: Path, owner: str, *, size: int, sha256: str, now: datetime | None = None
    ) -> None:
        self._folder = folder(home)
        _room_for(self._folder, owner, size, now or datetime.now(UTC))
        self.id = f"up-{tokens.new_id()}"
        self.owner = owner
        self.size = size
        self.sha256 = check_sha256(sha256)
        self._now = now or datetime.now(UTC)
        self._path = self._folder / f"{_INCOMING}{self.id}"
        self._sink: BinaryIO | None = open_private(self._path)
        self._stream = Sha256Stream()
        self.received = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; :class:`InputError` (and the file removed) past the size
        announced."""
        if self._sink is None:
            raise OperationError("the upload is closed")
        self.received += len(chunk)
        if self.received > self.size:
            self.abort()
            raise InputError(
                f"the body holds more than the {self.size} bytes its Content-Length announced",
                hint="send exactly Content-Length bytes; nothing was kept",
            )
        self._stream.update(chunk)
        self._sink.write(chunk)

    def finish(self) -> Upload:
        """The complete upload; :class:`InputError` (and nothing kept) when it is short of
        the size announced or its SHA-256 is not the one declared."""
        if self._sink is None:
            raise OperationError("the upload is closed")
        if self.received != self.size:
            self.abort()
            raise InputError(
                f"the body was cut short: {self.received} of {self.size} bytes arrived",
                hint="send the whole file again; nothing was kept",
            )
        got = self._stream.hexdigest()
        if not constant_time_equal(got.encode(), self.sha256.encode()):
            self.abort()
            raise InputError(
                f"the body's SHA-256 is {got}, not the {self.sha256} declared: it changed on "
                "the way, and was not kept",
                hint="upload it again; if it happens again, check what lies between you and "
                "the server",
            )
        self._sink.flush()
        os.fsync(self._sink.fileno())
        self._sink.close()
        self._sink = None
        upload = Upload(
            id=self.id, owner=self.owner, size=self.size, sha256=got,
            created_at=self._now, expires_at=self._now + TTL,
        )  # fmt: skip
        try:
            meta = self._folder / f"{self.id}.json"
            with open_private(meta) as fh:
                fh.write(json.dumps(upload.meta()).encode())
            os.replace(self._path, self._folder / f"{self.id}.data")
        except OSError as exc:
            _remove(self._folder, self.id)
            self._path.unlink(missing_ok=True)
            raise OperationError(f"cannot keep the upload: {exc.strerror}") from exc
        return upload

    def abort(self) -> None:
        """Drop what arrived (quietly, at most once)."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        self._path.unlink(missing_ok=True)


def _room_for(base: Path, owner: str, size: int, now: datetime) -> None:
    """Refuse an upload that could fill the server's disk: an owner already has
    :data:`MAX_WAITING` uploads waiting to be used (:class:`TooManyRequests`, 429), or the
    filesystem would keep less than :data:`FREE_RESERVE` bytes after it
    (:class:`OperationError`)."""
    waiting = 0
    for meta in base.glob("up-*.json"):
        found = _load(base, meta.name.removesuffix(".json"))
        if found is not None and found.owner == owner and found.expires_at > now:
            waiting += 1
    if waiting >= MAX_WAITING:
        raise TooManyRequests(
            f"{waiting} uploads of yours are waiting to be used: no more until one is used "
            "or expires",
            hint=f"use them (or wait: an upload expires {int(TTL.total_seconds() // 60)} "
            "minutes after it was made)",
        )
    free = shutil.disk_usage(base).free
    if free - size < FREE_RESERVE:
        raise OperationError(
            f"the server has {free} bytes free where uploads are kept: not enough for "
            f"{size} more and its reserve of {FREE_RESERVE}",
            hint="ask the server's administrator for space; nothing was kept",
        )


def _remove(base: Path, upload_id: str) -> None:
    (base / f"{upload_id}.data").unlink(missing_ok=True)
    (base / f"{upload_id}.json").unlink(missing_ok=True)


def _load(base: Path, upload_id: str) -> Upload | None:
    try:
        fd = os.open(base / f"{upload_id}.json", os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(64 * 1024)
        data = json.loads(raw)
        upload = Upload(
            id=str(data["upload"]),
            owner=str(data["owner"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):  # a folder, bytes not of this server
        return None
    if upload.created_at.tzinfo is None or upload.expires_at.tzinfo is None:
        return None  # a naive time cannot be compared with the clock's
    return upload


def _not_found(upload_id: str) -> NotFound:
    return NotFound(
        f"no upload {upload_id[:40]!r} of yours waits to be used",
        hint="an upload is used once, by the identity that made it, within an hour: upload "
        "the file again (the CLI does it for you)",
    )


def safe_name(name: str) -> str:
    """``name`` as the base name of a file (no folder, printable, at most 200 characters)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if not base or base in (".", "..") or len(base) > 200 or not base.isprintable():
        raise InputError(f"{name[:60]!r} is not a usable file name", hint="rename the file")
    return base


@contextlib.contextmanager
def claimed(
    home: Path, upload_id: str, owner: str, *, name: str, now: datetime | None = None
) -> Iterator[Path]:
    """The upload ``upload_id`` of ``owner``, as the file ``name`` in a private folder, for
    the block; the upload is used up (whatever the block's outcome) and the file removed
    after it. :class:`NotFound` for an id that is not an upload of ``owner``'s waiting to be
    used (another's, used already, expired or never made)."""
    base = folder(home)
    filename = safe_name(name)
    moment = now or datetime.now(UTC)
    upload = _load(base, upload_id) if _ID.fullmatch(upload_id) else None
    if upload is None or upload.owner != owner or upload.id != upload_id:
        raise _not_found(upload_id)
    if moment >= upload.expires_at:
        _remove(base, upload_id)
        raise _not_found(upload_id)
    with private_folder("upload", parent=base) as work:
        target = work / filename
        try:
            os.rename(base / f"{upload_id}.data", target)  # atomic: one claimer only
        except FileNotFoundError:
            raise _not_found(upload_id) from None
        (base / f"{upload_id}.json").unlink(missing_ok=True)
        try:
            yield target
        except Error as exc:  # the server's folders are none of the caller's business
            exc.message = exc.message.replace(str(target), filename).replace(str(work), ".")
            exc.args = (exc.message,)
            if exc.hint:
                exc.hint = exc.hint.replace(str(target), filename).replace(str(work), ".")
            raise


def sweep(home: Path, now: datetime | None = None) -> list[str]:
    """Remove expired uploads, incoming files idle for :data:`TTL` (a receiving process that
    died) and the claim folders of dead processes; the ids removed. Never raises for what it
    finds."""
    base = home / FOLDER
    if not base.is_dir() or base.is_symlink():
        return []
    moment = now or datetime.now(UTC)
    removed: list[str] = []
    sweep_private(base)
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            name = entry.name
            if name.startswith(_INCOMING):
                with contextlib.suppress(OSError):
                    idle = moment.timestamp() - entry.stat(follow_symlinks=False).st_mtime
                    if idle > TTL.total_seconds():
                        os.unlink(entry.path)
                        removed.append(name[len(_INCOMING) :])
            elif name.endswith(".json") and _ID.fullmatch(name[:-5]):
                upload = _load(base, name[:-5])
                if upload is None or moment >= upload.expires_at:
                    _remove(base, name[:-5])
                    removed.append(name[:-5])
            elif (
                name.endswith(".data")
                and _ID.fullmatch(name[:-5])
                and not (base / f"{name[:-5]}.json").exists()  # half-kept: no owner
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return removed


def sha256_of(fh: BinaryIO, size: int, *, on_chunk: Any = None) -> str:
    """The SHA-256 of the next ``size`` bytes of ``fh`` (a client hashes the file it is about
    to upload); :class:`InputError` when it holds fewer (it changed meanwhile). ``on_chunk``:
    called with each chunk's length (a progress bar)."""
    stream = Sha256Stream()
    left = size
    while left > 0:
        chunk = fh.read(min(left, 1 << 20))
        if not chunk:
            raise InputError("the file shrank while it was read", hint="upload a file at rest")
        stream.update(chunk)
        left -= len(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return stream.hexdigest()


def open_to_upload(path: Path) -> BinaryIO:
    """The regular file at ``path`` opened for reading (a client about to upload it);
    :class:`InputError` for anything else (nothing there, a link, a pipe, a device...)."""
    try:
        return open_regular(path, what="the file to upload")
    except FileNotFoundError:
        raise InputError(f"no file {path}", hint="check the path") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read", hint="check its permissions") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
