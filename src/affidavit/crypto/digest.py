"""SHA-256 digests and constant-time comparison.

This is the only place outside :mod:`affidavit.crypto` that code needs for hashing: the other
layers call these functions instead of importing :mod:`hashlib` or :mod:`hmac` themselves.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import BinaryIO

__all__ = [
    "SHA256_SIZE",
    "Sha256Stream",
    "constant_time_equal",
    "sha256",
    "sha256_hex",
    "sha256_pieces",
    "sha256_readable",
]

SHA256_SIZE = 32
"""Length in bytes of a SHA-256 digest."""


def sha256(data: bytes) -> bytes:
    """Return the 32-byte SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 digest of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time that does not depend on where they differ."""
    return hmac.compare_digest(a, b)


class Sha256Stream:
    """An incremental SHA-256 hasher for data that arrives in pieces (files, streams).

    >>> h = Sha256Stream()
    >>> h.update(b"hello ")
    >>> h.update(b"world")
    >>> h.hexdigest() == sha256_hex(b"hello world")
    True
    """

    __slots__ = ("_hash", "_length")

    def __init__(self, data: bytes = b"") -> None:
        self._hash = hashlib.sha256(data)
        self._length = len(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed more bytes into the hash."""
        self._hash.update(data)
        self._length += data.nbytes if isinstance(data, memoryview) else len(data)

    @property
    def length(self) -> int:
        """Number of bytes hashed so far."""
        return self._length

    def digest(self) -> bytes:
        """Return the 32-byte digest of everything fed so far (the stream stays usable)."""
        return self._hash.digest()

    def hexdigest(self) -> str:
        """Return the digest of everything fed so far as 64 lowercase hex characters."""
        return self._hash.hexdigest()

    def copy(self) -> Sha256Stream:
        """Return an independent hasher in the same state."""
        clone = Sha256Stream()
        clone._hash = self._hash.copy()
        clone._length = self._length
        return clone


def sha256_pieces(fh: BinaryIO, stream: Sha256Stream, *, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield everything ``fh`` holds from where it stands, in pieces of ``chunk`` bytes,
    feeding each piece into ``stream`` before it is yielded: hashing what is being copied
    (uploaded, written elsewhere) in the same read. ``stream`` is complete once the
    iterator is exhausted."""
    while piece := fh.read(chunk):
        stream.update(piece)
        yield piece


def sha256_readable(fh: BinaryIO, *, chunk: int = 1 << 20) -> Sha256Stream:
    """The SHA-256 (and length) of everything ``fh`` yields from where it stands, read in
    pieces of ``chunk`` bytes (a file, a vault object)."""
    stream = Sha256Stream()
    for _ in sha256_pieces(fh, stream, chunk=chunk):
        pass
    return stream
