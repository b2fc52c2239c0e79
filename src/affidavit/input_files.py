"""Opening a file that someone else named or placed: a regular file, never through a symbolic
link, never blocking.

A named pipe that nobody writes to blocks ``open`` (and ``read``) for ever; a device may act
on being opened; a symbolic link may lead anywhere. :func:`open_regular` therefore looks with
:func:`os.lstat` first (so a device or pipe is never opened at all), opens with
``O_NOFOLLOW | O_NONBLOCK`` (a link or pipe swapped in meanwhile fails or returns at once) and
checks the opened descriptor with :func:`os.fstat` (what is read is what was checked). Every
reader of an export file, an evidence package or a secret file opens it here.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

from affidavit.errors import FormatError, InputError

__all__ = ["describe_mode", "is_regular_entry", "open_regular"]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_KINDS: Final = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_DEFAULT_HINT: Final = "give the path of a regular file (copy the data into one first)"


def describe_mode(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words: ``"a named pipe (FIFO)"``,
    ``"a symbolic link"``, ``"a regular file"``, ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _refused(path: Path, mode: int, what: str, hint: str) -> InputError:
    name = f"{what} {path}" if what else str(path)
    return InputError(f"{name} is {describe_mode(mode)}, not a regular file", hint=hint)


def open_regular(
    path: Path, *, what: str = "", hint: str = _DEFAULT_HINT, follow: bool = False
) -> BinaryIO:
    """``path`` opened for binary reading, when it is a regular file itself.

    Raises :class:`InputError` (exit 2) naming ``what`` (e.g. ``"the export file"``), the
    path and what it is instead (``"... is a named pipe (FIFO), not a regular file"``), with
    ``hint``, for a symbolic link, folder, pipe, socket or device; none of these is opened
    (except one swapped in between the check and the open, which is closed again unread).
    ``follow``: a symbolic link is followed to the regular file it leads to (for a file that
    another reader opens by the same name, following it). Any other failure
    (``FileNotFoundError``, ``PermissionError``, ...) is the ``OSError`` itself, for the
    caller to word.
    """
    mode = (os.stat if follow else os.lstat)(path).st_mode
    if not stat.S_ISREG(mode):
        raise _refused(path, mode, what, hint)
    try:
        fd = os.open(path, os.O_RDONLY | (0 if follow else _NOFOLLOW) | _NONBLOCK | _CLOEXEC)
    except OSError as exc:
        swapped = {errno.ELOOP: stat.S_IFLNK, errno.ENXIO: stat.S_IFSOCK}.get(exc.errno or 0)
        if swapped is not None:  # a link or socket put there since the lstat
            raise _refused(path, swapped, what, hint) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refused(path, mode, what, hint)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_regular_entry(path: Path) -> bool:
    """Whether a regular file is at ``path`` (through a symbolic link too); False when nothing
    is there. Raises ``FormatError`` naming the entry for anything else (a named pipe, socket,
    device or folder, a link to nothing): what a folder holds is never silently left out, and no
    pipe is ever opened."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.is_symlink():
            return False
        mode = stat.S_IFLNK
    except OSError as exc:
        raise FormatError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if stat.S_ISREG(mode):
        return True
    what = "a symbolic link to nothing" if stat.S_ISLNK(mode) else describe_mode(mode)
    raise FormatError(
        f"{path} is {what}, not a regular file",
        hint="a mongodump folder holds regular files only; copy the dump into plain files",
    )
