"""The fingerprint index file: the sorted ``(key_hash, record_hash)`` pairs with key prefixes.

Layout (all integers big-endian; normative text in docs/formats/fingerprint.md)::

    magic      8 bytes  b"AFPIDX\\x00\\x01"
    entries    count x [key_hash 32][record_hash 32][u16 klen | 0x8000 if truncated][key klen]
    header     RFC 8785 JSON: version, profile, bucket_bits, count, duplicates, root, dataset,
               encoding
    hlen       u32      length of header
    trailer    32 bytes SHA-256 of every byte before it

Two index files compare without the data they describe (:mod:`affidavit.fingerprint.diff`).
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import rfc8785

from affidavit.crypto.digest import Sha256Stream, constant_time_equal
from affidavit.errors import FormatError, InputError
from affidavit.fingerprint.model import FINGERPRINT_VERSION, PAIR_SIZE, Fingerprint
from affidavit.input_files import describe_mode
from affidavit.native import load_native

MAGIC = b"AFPIDX\x00\x01"
KEY_PREFIX_MAX = 1024
_TRUNCATED = 0x8000
_TRAILER = 32
_MAX_HEADER = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexHeader:
    """What an index file says about itself."""

    fingerprint: Fingerprint
    duplicates: int
    dataset: str
    encoding: str

    def to_json(self) -> dict[str, Any]:
        """The header object as stored."""
        fp = self.fingerprint
        return {
            "version": FINGERPRINT_VERSION,
            "profile": fp.profile,
            "bucket_bits": fp.bucket_bits,
            "count": fp.count,
            "duplicates": self.duplicates,
            "root": fp.root.hex(),
            "dataset": self.dataset,
            "encoding": self.encoding,
        }


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One record in an index: its two hashes and (a prefix of) its key."""

    key_hash: bytes
    record_hash: bytes
    key: bytes
    key_truncated: bool


def encode_key_field(key: bytes) -> bytes:
    """The ``u16 length || key prefix`` field for ``key``."""
    if len(key) > KEY_PREFIX_MAX:
        return struct.pack(">H", KEY_PREFIX_MAX | _TRUNCATED) + key[:KEY_PREFIX_MAX]
    return struct.pack(">H", len(key)) + key


_KEY_FIELDS: dict[int, bytes] = {n: struct.pack(">H", n) for n in range(KEY_PREFIX_MAX + 1)}
"""The length field of a key that is not truncated, by length."""


def _load_native() -> ModuleType | None:
    """The compiled entry assembly (``_native.c``), or None when it is not built or the
    environment sets ``AFFIDAVIT_PURE_PYTHON=1`` (the Python loop writes the same bytes)."""
    return load_native("affidavit.fingerprint._native")


_NATIVE: ModuleType | None = _load_native()


class IndexWriter:
    """Streams entries (in sorted order) to a new index file, then seals it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.name}.partial")
        try:
            self._fh: BinaryIO = self._tmp.open("wb")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from None
        self._buf = io.BufferedWriter(self._fh, buffer_size=1 << 20)
        self._hash = Sha256Stream()
        self._write(MAGIC)

    def _write(self, data: bytes) -> None:
        self._hash.update(data)
        self._buf.write(data)

    def add(self, pair: bytes, key_field: bytes) -> None:
        """Append one entry: ``pair`` is key_hash || record_hash."""
        self._write(pair + key_field)

    def add_many(self, pairs: bytes, keys: list[bytes]) -> None:
        """Append one entry per key: ``pairs`` holds their pairs back to back (what
        :meth:`add` does per entry, in one write). :meth:`add_packed` writes the same bytes
        from packed keys, in C when that is built."""
        if len(pairs) != PAIR_SIZE * len(keys):
            raise ValueError("pairs and keys disagree in number")
        fields = _KEY_FIELDS
        parts: list[bytes] = []
        append = parts.append
        for i, key in enumerate(keys):
            append(pairs[i * PAIR_SIZE : (i + 1) * PAIR_SIZE])
            field = fields.get(len(key))
            if field is None:
                append(encode_key_field(key))
            else:
                append(field)
                append(key)
        self._write(b"".join(parts))

    def add_packed(
        self,
        pairs: bytes,
        blob: bytes,
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int32],
    ) -> None:
        """:meth:`add_many` for keys given packed: key ``i`` is
        ``blob[offsets[i] : offsets[i] + lengths[i]]`` (the same bytes; assembled from the blob
        in C when that is built, never making one bytes object per key)."""
        if len(pairs) != PAIR_SIZE * len(offsets) or len(offsets) != len(lengths):
            raise ValueError("pairs and keys disagree in number")
        if _NATIVE is not None and hasattr(_NATIVE, "packed_entries"):
            self._write(
                _NATIVE.packed_entries(
                    pairs,
                    blob,
                    np.ascontiguousarray(offsets, dtype=np.int64),
                    np.ascontiguousarray(lengths, dtype=np.int32),
                    KEY_PREFIX_MAX,
                )
            )
            return
        data = bytes(blob)
        keys = [
            data[start : start + n]
            for start, n in zip(offsets.tolist(), lengths.tolist(), strict=True)
        ]
        self.add_many(pairs, keys)

    def seal(self, header: IndexHeader) -> None:
        """Write header and trailer, fsync, and move the file into place atomically."""
        body = rfc8785.dumps(header.to_json())
        self._write(bytes(body) + struct.pack(">I", len(body)))
        self._buf.write(self._hash.digest())
        self._buf.flush()
        os.fsync(self._fh.fileno())
        self._buf.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._buf.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class IndexReader:
    """Reads and checks an index file; entries stream in sorted order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            info = path.stat()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):  # a pipe would block; say what it is
            raise InputError(
                f"{path} is {describe_mode(info.st_mode)}, not a fingerprint index file",
                hint="give an index file written by `affidavit fingerprint --out`",
            )
        size = info.st_size
        if size < len(MAGIC) + 4 + _TRAILER:
            raise FormatError(f"{path} is too short to be a fingerprint index")
        with path.open("rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise FormatError(f"{path} is not a fingerprint index (bad magic)")
            fh.seek(size - _TRAILER - 4)
            (hlen,) = struct.unpack(">I", fh.read(4))
            if hlen > _MAX_HEADER or hlen > size - len(MAGIC) - 4 - _TRAILER:
                raise FormatError(f"{path}: header length {hlen} is impossible")
            fh.seek(size - _TRAILER - 4 - hlen)
            raw_header = fh.read(hlen)
        self._entries_end = size - _TRAILER - 4 - hlen
        self.header = _parse_header(path, raw_header)

    @property
    def fingerprint(self) -> Fingerprint:
        """The fingerprint the index claims (checked by :meth:`verify`)."""
        return self.header.fingerprint

    def entries(self) -> Iterator[IndexEntry]:
        """Every entry in order; raises :class:`FormatError` on a malformed entry."""
        with self.path.open("rb") as raw:
            fh = io.BufferedReader(raw, buffer_size=1 << 20)
            fh.seek(len(MAGIC))
            pos = len(MAGIC)
            end = self._entries_end
            while pos < end:
                head = fh.read(PAIR_SIZE + 2)
                if len(head) < PAIR_SIZE + 2:
                    raise FormatError(f"{self.path}: entry truncated at byte {pos}")
                (klen,) = struct.unpack_from(">H", head, PAIR_SIZE)
                n = klen & ~_TRUNCATED
                if n > KEY_PREFIX_MAX or pos + PAIR_SIZE + 2 + n > end:
                    raise FormatError(f"{self.path}: bad key length at byte {pos}")
                key = fh.read(n)
                yield IndexEntry(head[:32], head[32:PAIR_SIZE], key, bool(klen & _TRUNCATED))
                pos += PAIR_SIZE + 2 + n

    def verify_trailer(self) -> None:
        """Check the file's SHA-256 trailer (detects any edit of the file)."""
        h = Sha256Stream()
        with self.path.open("rb") as fh:
            remaining = self.path.stat().st_size - _TRAILER
            while remaining:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
            trailer = fh.read(_TRAILER)
        if not constant_time_equal(h.digest(), trailer):
            raise FormatError(f"{self.path}: checksum mismatch (the index file was altered)")


def _parse_header(path: Path, raw: bytes) -> IndexHeader:
    try:
        obj = json.loads(raw)
        if obj.get("version") != FINGERPRINT_VERSION:
            raise FormatError(f"{path}: unsupported index version {obj.get('version')!r}")
        fp = Fingerprint(
            profile=obj["profile"],
            bucket_bits=int(obj["bucket_bits"]),
            count=int(obj["count"]),
            root=bytes.fromhex(obj["root"]),
        )
        return IndexHeader(
            fingerprint=fp,
            duplicates=int(obj["duplicates"]),
            dataset=str(obj["dataset"]),
            encoding=str(obj["encoding"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"{path}: malformed index header ({exc})") from None
