"""Writing small files so that a crash leaves the old content or the new, never a mix.

The pattern every key file, settings file and saved checkpoint uses: write a temporary file
beside the target (created ``O_EXCL`` with the target's mode, so it is never readable by
others even for a moment), ``fsync`` it, move it into place (``rename``, or ``link`` when an
existing target must never be replaced), then ``fsync`` the folder so the new name itself
survives a power loss. Errors are the ``OSError`` of the step that failed; each caller wraps it
in its own error (a key file's is a ``KeystoreError``, a saved checkpoint's an ``InputError``).
The temporary file never outlives the call.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["fsync_folder", "write_atomic"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a rename, a link, an unlink) durable; best effort: a file
    system that cannot sync a folder is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False, sync: bool = True
) -> None:
    """Put ``data`` at ``path`` all at once (see the module docstring).

    ``exclusive``: raise ``FileExistsError`` rather than replace an existing ``path``.
    ``sync``: ``fsync`` the file and its folder (off only for content that is allowed to be
    lost on power failure, never torn).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # fails when path exists: nothing is ever clobbered
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if sync:
        fsync_folder(path.parent)
