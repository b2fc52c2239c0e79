"""Reading a file that holds key material: a regular file (never through a symbolic link),
readable by its owner alone, of bounded size.

The ledger's signing key and the local KEK file are read here, so the permission rule is
written once: a key file that group or others may access is refused (its secret may already
have leaked, and going on would hide that), with the ``chmod`` that fixes it as the hint.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from affidavit.errors import KeystoreError

__all__ = ["read_key_file"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def read_key_file(path: Path, *, limit: int) -> bytes | None:
    """The bytes of key file ``path`` (at most ``limit + 1``: a longer result means the file is
    too large, which the caller judges), or None when it does not exist.

    Raises :class:`KeystoreError` when it cannot be read, is not a regular file (a link, a
    folder, a FIFO: nothing blocks) or is accessible by group or others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeystoreError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeystoreError(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KeystoreError(
                f"key file {path} is accessible by group or others (mode {mode:04o})",
                hint=f"chmod 600 {path}",
            )
        chunks = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(65536, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise KeystoreError(f"cannot read key file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
