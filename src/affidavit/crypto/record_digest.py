"""The per-record digests of content fingerprints (the hot loop: kept small and fast).

``key_hash = SHA-256(key)`` and ``record_hash = SHA-256(tag || uint32_be(len(key)) || key ||
value)`` where ``tag`` separates profiles and versions; see docs/formats/fingerprint.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

_MAX_KEY = 0xFFFFFFFF


class RecordHasher:
    """Computes ``key_hash || record_hash`` (64 bytes) for records under one domain tag."""

    __slots__ = ("_base", "tag")

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self._base = hashlib.sha256(tag)

    def pair(self, key: bytes, value: bytes) -> bytes:
        """``SHA-256(key) || SHA-256(tag || len(key) || key || value)``."""
        if len(key) > _MAX_KEY:
            raise ValueError("record key longer than 4 GiB")
        h = self._base.copy()
        h.update(len(key).to_bytes(4, "big"))
        h.update(key)
        h.update(value)
        return hashlib.sha256(key).digest() + h.digest()

    def pairs(self, records: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
        """:meth:`pair` for many records (saves a call per record in the hot loop)."""
        base_copy = self._base.copy
        sha = hashlib.sha256
        out: list[bytes] = []
        append = out.append
        for key, value in records:
            h = base_copy()
            h.update(len(key).to_bytes(4, "big"))
            h.update(key)
            h.update(value)
            append(sha(key).digest() + h.digest())
        return out

    def pairs_framed(
        self, buffer: bytes, starts: list[int], keys: list[bytes], end: int | None = None
    ) -> bytes:
        """The concatenated :meth:`pair` of records whose values lie back to back in
        ``buffer`` (value ``i`` is ``buffer[starts[i]:starts[i + 1]]``, the last one runs to
        ``end``, by default the end of ``buffer``) and whose keys are ``keys``: a framed batch
        of documents, hashed where it lies instead of one slice per document."""
        if len(keys) != len(starts):
            raise ValueError("keys and values disagree in number")
        base_copy = self._base.copy
        sha = hashlib.sha256
        view = memoryview(buffer)
        ends = starts[1:]
        ends.append(len(buffer) if end is None else end)
        out: list[bytes] = []
        append = out.append
        try:
            for a, b, key in zip(starts, ends, keys, strict=True):
                h = base_copy()
                h.update(len(key).to_bytes(4, "big") + key)
                h.update(view[a:b])
                append(sha(key).digest())
                append(h.digest())
        finally:
            view.release()
        return b"".join(out)


def bucket_hash(pairs: bytes) -> bytes:
    """SHA-256 over the concatenated sorted ``(key_hash, record_hash)`` pairs of a bucket."""
    return hashlib.sha256(pairs).digest()
