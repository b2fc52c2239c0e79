"""Files an export reads (specs, challenge answers, consent lists, manifests, identities) and
writes (challenges, outputs, manifests): read whole only when they are small regular files;
written only where nothing exists yet, never over a file someone else put there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from affidavit.errors import InputError
from affidavit.input_files import open_regular

MAX_SMALL_FILE: Final = 1024 * 1024
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def read_small(path: Path, what: str, *, limit: int = MAX_SMALL_FILE) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; raises :class:`InputError`."""
    try:
        with open_regular(path, what=what) as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit // 1024} KiB")
    return data


def read_text(path: Path, what: str, *, limit: int = MAX_SMALL_FILE) -> str:
    """:func:`read_small` decoded as UTF-8; raises :class:`InputError`."""
    try:
        return read_small(path, what, limit=limit).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text") from None


def refuse_existing(path: Path, what: str) -> None:
    """Raise :class:`InputError` when ``path`` exists (even as a dangling link) or its folder
    does not."""
    if os.path.lexists(path):
        raise InputError(
            f"{what} {path} already exists: nothing was written",
            hint="move it away, or choose another name",
        )
    if not path.parent.is_dir():
        raise InputError(f"the folder {path.parent} does not exist", hint="create it first")


def write_new(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path``, which must not exist (never replaced); synced to disk."""
    refuse_existing(path, what)
    try:
        fd = os.open(path, _CREATE, 0o644)
    except FileExistsError:
        raise InputError(f"{what} {path} already exists: nothing was written") from None
    except OSError as exc:
        raise InputError(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def remove_quietly(*paths: Path) -> None:
    """Remove files this run wrote (a failure leaves nothing half-delivered)."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            continue
