"""An age v1 reader on ``cryptography``'s primitives that decrypts chunk ranges independently
and a whole file across worker threads or processes.

The format is the published one (https://age-encryption.org/v1, C2SP ``age``); encryption
stays with ``pyrage`` (:mod:`affidavit.crypto.age`). This module only reads:

- the **header**: ``age-encryption.org/v1``, recipient stanzas (``-> TYPE ARGS...`` and a
  body of canonical unpadded base64 in lines of 64 columns ended by a shorter, possibly empty,
  line) and the MAC line ``--- MAC``. Parsing is as strict as the reference implementation:
  lines end with LF only, arguments are non-empty and of printable ASCII (33-126), base64 is
  canonical (no padding, no stray bits, no CR), the MAC is 32 bytes. A header longer than
  :data:`MAX_HEADER` bytes is refused before it is read further.
- the **X25519 recipient**: ``shared = X25519(identity, share)`` (an all-zero result, from a
  low-order share, is refused), ``wrap key = HKDF-SHA-256(shared, salt = share || recipient,
  info = "age-encryption.org/v1/X25519")``, ``file key = ChaCha20-Poly1305-open(wrap key,
  nonce 0, body)``. Every X25519 stanza must have exactly one argument (a 32-byte share) and a
  32-byte body, whether or not it is ours; stanzas of other types are skipped; an ``scrypt``
  stanza must be alone. Stanzas are tried in order; the first that opens gives the file key.
- the **header MAC**: HMAC-SHA-256 keyed by ``HKDF-SHA-256(file key, salt = "", info =
  "header")`` over the header up to and including ``---``, compared in constant time.
- the **payload**: a 16-byte nonce, ``payload key = HKDF-SHA-256(file key, salt = nonce,
  info = "payload")``, then the STREAM: plaintext chunks of 64 KiB, each sealed with
  ChaCha20-Poly1305 under the nonce ``uint88_be(counter) || flag`` (flag 1 on the final chunk
  only). Chunk ``i`` starts at ciphertext offset ``header + 16 + i * 65552``, so the chunk
  count and which chunk is final follow from the file's size, and any range of chunks can be
  opened without the others (:meth:`AgePayload.decrypt_range`). Only the chunk of an empty
  plaintext may be empty; nothing may follow the final chunk.

Errors. Every failure of the data is an :class:`AgeDecryptError` (an
:class:`~affidavit.errors.IntegrityError`, exit 1: the artifact is not the age file that was
written), whose :attr:`~AgeDecryptError.failure` says which of the test kit's classes it is
(``header failure``, ``no match``, ``HMAC failure``, ``payload failure``) and whose message
names the chunk and the byte offset. A malformed header is an integrity failure here, not a
:class:`~affidavit.errors.FormatError`: the files read are artifacts of a vault, which
affidavit wrote itself, so a header that does not parse is a finding about the artifact, not
bad input. A malformed identity raises :class:`~affidavit.errors.KeystoreError` (as in
:mod:`affidavit.crypto.age`). A read error of the file itself is the ``OSError`` (a worker's
is raised as one in the caller); a worker process that dies raises
:class:`~affidavit.errors.OperationError` (which says nothing about the data).

Fail closed. A chunk's plaintext is handed out only after its tag has been checked: a range
(:meth:`AgeFile.ranges`, :meth:`AgePayload.decrypt_range`) only when every chunk of it
opened where it stands; the byte stream (:meth:`AgeFile.plaintext`) in order, up to the
first chunk that fails, then the error. A chunk that opens but stands in the wrong place (a
full-size chunk sealed as final with data after it, or a full-size last chunk sealed as not
final: the file was cut after it) is genuine ciphertext of this file: :meth:`plaintext`
yields it and then raises, which releases exactly the bytes any streaming age reader
releases (the test kit checks this). Decryption that fails may leave unauthenticated bytes
in an output buffer; those bytes are zeroed and never counted.

Parallelism. Ranges are opened by ``workers`` threads (``pool="threads"``, the default) or
child processes (``pool="processes"``), handed out at most two per worker ahead and read
back in order, so memory stays bounded by about ``2 * workers`` ranges. Measured on the
2-vCPU VM (``cryptography`` 50.0.2 on OpenSSL 4.0.3, CPython 3.11; 4,096 chunks of 64 KiB
in memory): ``ChaCha20Poly1305.decrypt``/``decrypt_into`` **release the GIL** (pyca/
cryptography PR #15359, for inputs of 2 KiB and more): 0.055 s in one thread, 0.030-0.032 s
split over two (1.75x; load 0.6). A first run under load 1.3, with the other vCPU busy with
other work, showed no gain at all (0.062 s against 0.061 s): the figure needs the second
core free. The release is also visible as a convoy: a thread decrypting chunk by chunk next
to a thread spinning in pure Python takes 14 s instead of 0.055 s, since every call must win
the GIL back after the switch interval. Older ``cryptography`` releases hold the GIL in the
AEAD; there, and when the caller's own thread stays busy in Python, use processes.

The processes are ``python -P -m affidavit.crypto.age_reader`` children (about 60 ms to
start; ``-P``: the working folder is not on their import path). Each receives the age
file's open descriptor and, on its stdin, only the payload key and the stream's geometry
(never the identity or the file key, never on a command line or on disk), reads its
ranges from the file, opens the chunks and writes the plaintext straight into a shared
anonymous memory file (``memfd``, Linux; without it plaintext ranges fall back to threads),
or only hashes it. Figures: docs/performance.md, "Parallel age reader".
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import enum
import hashlib
import hmac
import itertools
import mmap
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from affidavit.errors import IntegrityError, KeystoreError, OperationError
from affidavit.input_files import open_regular

__all__ = [
    "CHUNK_SIZE",
    "MAX_HEADER",
    "SEALED_CHUNK_SIZE",
    "AgeDecryptError",
    "AgeFailure",
    "AgeFile",
    "AgeHeader",
    "AgePayload",
    "DecryptedRange",
    "PayloadKey",
    "Pool",
    "SegmentBuffers",
    "SegmentRead",
    "Stanza",
    "StreamLayout",
    "X25519Identity",
    "decrypt_stream",
]

Pool = Literal["threads", "processes"]
"""Where parallel ranges are opened: threads of the caller's process, or child processes."""

CHUNK_SIZE: Final = 64 * 1024
"""Plaintext bytes of every STREAM chunk but the last."""
_TAG: Final = 16
SEALED_CHUNK_SIZE: Final = CHUNK_SIZE + _TAG
"""Ciphertext bytes of every STREAM chunk but the last."""
MAX_HEADER: Final = 64 * 1024
"""A header (up to the MAC line's newline) longer than this is refused."""
_NONCE: Final = 16
_INTRO: Final = b"age-encryption.org/v1"
_X25519_INFO: Final = b"age-encryption.org/v1/X25519"
_BODY_LINE: Final = 48
"""Decoded bytes of a full stanza body line (64 base64 columns)."""
_READ_CHUNKS: Final = 32
"""Chunks read from the file by one ``pread`` (2 MiB)."""
DEFAULT_RANGE_CHUNKS: Final = 64
"""Chunks per range handed to a worker by default (4 MiB of plaintext)."""
_IN_FLIGHT: Final = 2
"""Ranges queued per worker."""
_B64_ALPHABET: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)
_BECH32: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_IDENTITY_HRP: Final = "age-secret-key-"
_HAS_DECRYPT_INTO: Final = hasattr(ChaCha20Poly1305, "decrypt_into")  # cryptography >= 45


class AgeFailure(enum.StrEnum):
    """Which stage of reading an age file failed (the test kit's ``expect`` values)."""

    HEADER = "header failure"
    NO_MATCH = "no match"
    HMAC = "HMAC failure"
    PAYLOAD = "payload failure"


class AgeDecryptError(IntegrityError):
    """An age file does not decrypt: malformed header, no stanza for the identity, wrong
    header MAC, or a payload chunk that does not open where it stands.

    :attr:`failure` is the stage; :attr:`offset` the byte offset in the file where the fault
    lies (None when it is not one place, e.g. no matching stanza); :attr:`chunk` the STREAM
    chunk's index for a payload failure, else None."""

    default_hint = (
        "the artifact was altered, truncated or replaced, or this is not its identity; "
        "check its SHA-256 against the signed manifest"
    )

    failure: AgeFailure = AgeFailure.HEADER
    offset: int | None = None
    chunk: int | None = None

    @classmethod
    def of(
        cls,
        failure: AgeFailure,
        message: str,
        *,
        offset: int | None = None,
        chunk: int | None = None,
    ) -> AgeDecryptError:
        """The error of ``failure`` with ``message`` (prefixed by the stage)."""
        error = cls(f"age {failure.value}: {message}")
        error.failure, error.offset, error.chunk = failure, offset, chunk
        return error


def _header_error(message: str, offset: int | None) -> AgeDecryptError:
    where = f" (offset {offset})" if offset is not None else ""
    return AgeDecryptError.of(AgeFailure.HEADER, message + where, offset=offset)


# --- encodings ------------------------------------------------------------------------------


def _b64decode(text: bytes) -> bytes | None:
    """Canonical unpadded standard base64, or None: no padding, no CR/LF, no stray bits."""
    if len(text) % 4 == 1 or not _B64_ALPHABET.issuperset(text):
        return None
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(data).rstrip(b"=") != text:
        return None  # non-zero bits after the last byte: not canonical
    return data


def _bech32_polymod(values: list[int]) -> int:
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(generators):
            if (top >> i) & 1:
                check ^= generator
    return check


def _bech32_decode(text: str) -> tuple[str, bytes] | None:
    """``(hrp, data)`` of a Bech32 (BIP 173 checksum) string, or None when it is not one."""
    if text != text.lower() and text != text.upper():
        return None
    text = text.lower()
    split = text.rfind("1")
    if split < 1 or len(text) - split - 1 < 6:
        return None
    hrp, rest = text[:split], text[split + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp) or any(c not in _BECH32 for c in rest):
        return None
    values = [_BECH32.index(c) for c in rest]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + values) != 1:
        return None
    acc, bits, out = 0, 0, bytearray()
    for value in values[:-6]:
        acc = (acc << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc << (8 - bits)) & 0xFF:
        return None  # padding longer than 4 bits or not zero
    return hrp, bytes(out)


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class X25519Identity:
    """An age X25519 identity (``AGE-SECRET-KEY-1...``) and its recipient's public key."""

    secret: bytes = field(repr=False)
    public: bytes

    @classmethod
    def from_str(cls, text: str) -> X25519Identity:
        """Parse ``AGE-SECRET-KEY-1...``; raises :class:`KeystoreError` when it is not one."""
        decoded = _bech32_decode(text.strip())
        if decoded is None or decoded[0] != _IDENTITY_HRP or len(decoded[1]) != 32:
            raise KeystoreError(
                "not an age X25519 identity",
                hint="an identity looks like AGE-SECRET-KEY-1...; check where it was copied from",
            )
        secret = decoded[1]
        public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
        return cls(secret, public)

    def unwrap(self, share: bytes, body: bytes, *, offset: int) -> bytes | None:
        """The file key of an X25519 stanza (``share``, ``body`` already checked to be 32
        bytes each), or None when the stanza is not for this identity. Raises
        :class:`AgeDecryptError` (header failure) for a low-order share."""
        try:
            shared = X25519PrivateKey.from_private_bytes(self.secret).exchange(
                X25519PublicKey.from_public_bytes(share)
            )
        except ValueError:
            shared = bytes(32)  # OpenSSL refuses the all-zero result itself
        if hmac.compare_digest(shared, bytes(32)):
            raise _header_error("X25519 stanza with a low-order share", offset)
        wrap_key = _hkdf(shared, salt=share + self.public, info=_X25519_INFO)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None


@dataclass(frozen=True, slots=True)
class PayloadKey:
    """The STREAM key of one age file: all a worker needs to open its chunks."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError("a payload key is 32 bytes")

    @classmethod
    def derive(cls, file_key: bytes, nonce: bytes) -> PayloadKey:
        """``HKDF-SHA-256(file key, salt = nonce, info = "payload")``."""
        return cls(_hkdf(file_key, salt=nonce, info=b"payload"))


# --- the header -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stanza:
    """One recipient stanza: its type, arguments, decoded body and the header offset of its
    opening line."""

    type: str
    args: tuple[str, ...]
    body: bytes = field(repr=False)
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgeHeader:
    """A parsed age v1 header (only made by :meth:`from_bytes` / :meth:`read`)."""

    stanzas: tuple[Stanza, ...]
    mac: bytes = field(repr=False)
    mac_input: bytes = field(repr=False)
    """The header up to and including ``---``: what the MAC covers."""
    size: int
    """Bytes of the header, MAC line and its newline included: the nonce starts here."""

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> AgeHeader:
        """Parse the header at the start of ``data`` (which may go on past it). Raises
        :class:`AgeDecryptError` (header failure) for anything but a well-formed header that
        ends within :data:`MAX_HEADER` bytes."""
        buf = bytes(data[: MAX_HEADER + 1])
        lines = _Lines(buf)
        intro = lines.next()
        if intro != _INTRO:
            if intro.startswith(b"age-encryption.org/"):
                raise _header_error(f"unsupported version {intro[:40]!r}", 0)
            raise _header_error("not an age file (no age-encryption.org/v1 line)", 0)
        stanzas: list[Stanza] = []
        while True:
            start = lines.pos
            line = lines.next()
            if line.startswith(b"---"):
                parts = line.split(b" ")
                mac = _b64decode(parts[1]) if len(parts) == 2 and parts[0] == b"---" else None
                if mac is None or len(mac) != 32:
                    raise _header_error("malformed MAC line", start)
                header = cls(
                    stanzas=tuple(stanzas), mac=mac, mac_input=buf[: start + 3], size=lines.pos
                )
                header._check_recipients()
                return header
            stanzas.append(_stanza(line, lines, start))

    @classmethod
    def read(cls, stream: BinaryIO | IO[bytes]) -> tuple[AgeHeader, bytes]:
        """Read and parse the header from ``stream``; returns it and the bytes read past it
        (the payload's first bytes). Reads at most :data:`MAX_HEADER` + 64 KiB."""
        data = bytearray()
        while len(data) <= MAX_HEADER:
            mark = data.find(b"\n---")
            if mark >= 0 and data.find(b"\n", mark + 1) >= 0:
                break  # the MAC line is complete
            piece = stream.read(CHUNK_SIZE)
            if not piece:
                break
            data += piece
        header = cls.from_bytes(data)
        return header, bytes(data[header.size :])

    def _check_recipients(self) -> None:
        """The stanza rules that do not need a key: every X25519 stanza has one 32-byte share
        and a 32-byte body; an scrypt stanza is alone."""
        for stanza in self.stanzas:
            if stanza.type == "scrypt" and len(self.stanzas) > 1:
                raise _header_error("an scrypt stanza must be the only stanza", stanza.offset)
            if stanza.type != "X25519":
                continue
            if len(stanza.args) != 1:
                raise _header_error("X25519 stanza needs exactly one argument", stanza.offset)
            share = _b64decode(stanza.args[0].encode())
            if share is None or len(share) != 32:
                raise _header_error("X25519 stanza share is not 32 bytes", stanza.offset)
            if len(stanza.body) != 32:
                raise _header_error("X25519 stanza body is not 32 bytes", stanza.offset)

    def file_key(self, identity: X25519Identity) -> bytes:
        """Unwrap the file key with ``identity`` and check the header MAC with it.

        Raises :class:`AgeDecryptError`: ``no match`` when no X25519 stanza opens with this
        identity, ``HMAC failure`` when the MAC does not match, ``header failure`` for a
        low-order share."""
        for stanza in self.stanzas:
            if stanza.type != "X25519":
                continue
            share = _b64decode(stanza.args[0].encode())
            assert share is not None  # checked by _check_recipients
            file_key = identity.unwrap(share, stanza.body, offset=stanza.offset)
            if file_key is not None:
                break
        else:
            x25519 = sum(stanza.type == "X25519" for stanza in self.stanzas)
            raise AgeDecryptError.of(
                AgeFailure.NO_MATCH,
                f"none of the {len(self.stanzas)} recipient stanzas ({x25519} X25519) "
                "is for this identity",
            )
        mac_key = _hkdf(file_key, salt=b"", info=b"header")
        expected = hmac.new(mac_key, self.mac_input, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, self.mac):
            raise AgeDecryptError.of(
                AgeFailure.HMAC,
                f"the header MAC does not match (offset {len(self.mac_input) + 1}): "
                "the header was altered",
                offset=len(self.mac_input) + 1,
            )
        return file_key


class _Lines:
    """LF-terminated lines of a bounded buffer."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def next(self) -> bytes:
        end = self.buf.find(b"\n", self.pos)
        if end < 0:
            if len(self.buf) > MAX_HEADER:
                raise _header_error(f"the header is longer than {MAX_HEADER} bytes", None)
            raise _header_error("the header is truncated", len(self.buf))
        line = self.buf[self.pos : end]
        self.pos = end + 1
        if self.pos > MAX_HEADER:
            raise _header_error(f"the header is longer than {MAX_HEADER} bytes", None)
        return line


def _stanza(line: bytes, lines: _Lines, start: int) -> Stanza:
    parts = line.split(b" ")
    if parts[0] != b"->" or len(parts) < 2:
        raise _header_error("malformed stanza opening line", start)
    if any(not arg or any(not 33 <= c <= 126 for c in arg) for arg in parts[1:]):
        raise _header_error("malformed stanza argument", start)
    body = bytearray()
    while True:
        at = lines.pos
        decoded = _b64decode(lines.next())
        if decoded is None:
            raise _header_error("malformed stanza body line", at)
        if len(decoded) > _BODY_LINE:
            raise _header_error("stanza body line longer than 64 columns", at)
        body += decoded
        if len(decoded) < _BODY_LINE:  # a short (possibly empty) line ends the body
            break
    args = tuple(arg.decode("ascii") for arg in parts[1:])
    return Stanza(args[0], args[1:], bytes(body), start)


# --- the STREAM -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLayout:
    """Where the STREAM chunks of an age file lie, from its size alone."""

    payload_offset: int
    """File offset of chunk 0 (after the header and the 16-byte nonce)."""
    file_size: int
    chunks: int
    last_sealed_size: int
    """Ciphertext bytes of the last chunk (1 .. 65552)."""

    @classmethod
    def of(cls, *, payload_offset: int, file_size: int) -> StreamLayout:
        """The layout of a file of ``file_size`` bytes whose chunks start at
        ``payload_offset``. Raises :class:`AgeDecryptError` (payload failure) when there
        is no chunk at all."""
        sealed = file_size - payload_offset
        if sealed <= 0:
            raise AgeDecryptError.of(
                AgeFailure.PAYLOAD,
                f"the file ends at offset {file_size}, before its first chunk: it is truncated",
                offset=file_size,
                chunk=0,
            )
        chunks = -(-sealed // SEALED_CHUNK_SIZE)
        last = sealed - (chunks - 1) * SEALED_CHUNK_SIZE
        return cls(
            payload_offset=payload_offset, file_size=file_size, chunks=chunks, last_sealed_size=last
        )

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes of the whole file, if every chunk opens."""
        return (self.chunks - 1) * CHUNK_SIZE + max(self.last_sealed_size - _TAG, 0)

    def chunk_offset(self, index: int) -> int:
        """File offset of chunk ``index``."""
        return self.payload_offset + index * SEALED_CHUNK_SIZE

    def sealed_size(self, index: int) -> int:
        """Ciphertext bytes of chunk ``index``."""
        return self.last_sealed_size if index == self.chunks - 1 else SEALED_CHUNK_SIZE

    def plain_span(self, first: int, count: int) -> int:
        """Plaintext bytes of chunks ``first .. first + count - 1``."""
        if count <= 0:
            return 0
        if first + count < self.chunks:
            return count * CHUNK_SIZE
        return (count - 1) * CHUNK_SIZE + max(self.last_sealed_size - _TAG, 0)

    def check_range(self, first: int, count: int) -> None:
        """Raise ``ValueError`` unless ``first .. first + count - 1`` are chunks of the file."""
        if first < 0 or count < 0 or first + count > self.chunks:
            raise ValueError(f"chunks {first}+{count} are not within 0..{self.chunks - 1}")


@dataclass(frozen=True, slots=True)
class _Fault:
    """Why a range stopped: the chunk, the file offset and what is wrong there."""

    chunk: int
    offset: int
    message: str

    def error(self) -> AgeDecryptError:
        return AgeDecryptError.of(
            AgeFailure.PAYLOAD, self.message, offset=self.offset, chunk=self.chunk
        )


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _open(aead: ChaCha20Poly1305, nonce: bytes, sealed: memoryview, out: memoryview) -> bool:
    try:
        if _HAS_DECRYPT_INTO:
            aead.decrypt_into(nonce, sealed, None, out)
        else:  # pragma: no cover - cryptography < 45
            out[:] = aead.decrypt(nonce, bytes(sealed), None)
    except InvalidTag:
        out[:] = bytes(len(out))  # whatever was written did not authenticate
        return False
    return True


def _open_chunk(
    aead: ChaCha20Poly1305, layout: StreamLayout, index: int, sealed: memoryview, out: memoryview
) -> tuple[bool, _Fault | None]:
    """Open chunk ``index`` into ``out``; ``(plaintext valid, fault)``."""
    size, offset = len(sealed), layout.chunk_offset(index)
    final = index == layout.chunks - 1
    if size < _TAG:
        return False, _Fault(
            index,
            offset,
            f"chunk {index} at offset {offset} is {size} bytes, shorter than its tag: "
            "the file is truncated",
        )
    if final and size == _TAG and index > 0:
        return False, _Fault(
            index,
            offset,
            f"the final chunk {index} at offset {offset} is empty "
            "(only the chunk of an empty file may be)",
        )
    if _open(aead, _nonce(index, final), sealed, out):
        return True, None
    if size == SEALED_CHUNK_SIZE and _open(aead, _nonce(index, not final), sealed, out):
        end = offset + size
        if final:
            return True, _Fault(
                index,
                end,
                f"chunk {index} at offset {offset} is not sealed as the final chunk and the "
                f"file ends after it (offset {end}): the file is truncated",
            )
        return True, _Fault(
            index,
            end,
            f"chunk {index} at offset {offset} is sealed as the final chunk but "
            f"{layout.file_size - end} bytes follow it (offset {end}): data was appended",
        )
    return False, _Fault(
        index,
        offset,
        f"chunk {index} at offset {offset} does not authenticate: the ciphertext was altered",
    )


def _pread_full(fd: int, view: memoryview, offset: int) -> int:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done


def _open_chunks(
    aead: ChaCha20Poly1305,
    fd: int,
    layout: StreamLayout,
    first: int,
    count: int,
    *,
    out: memoryview | None,
    hasher: hashlib._Hash | None,
    sealed_hasher: hashlib._Hash | None = None,
) -> tuple[int, _Fault | None]:
    """Open chunks ``first .. first + count - 1``, reading them from ``fd``, into ``out``
    (contiguous plaintext; None: into a scratch buffer, for hashing only), updating
    ``hasher`` with each chunk's plaintext. Returns how many chunks, from ``first``, hold
    authentic plaintext, and the fault that stopped it (None when all did)."""
    batch = min(count, _READ_CHUNKS)
    sealed_buf = memoryview(bytearray(batch * SEALED_CHUNK_SIZE))
    scratch = memoryview(bytearray(batch * CHUNK_SIZE)) if out is None else None
    index, end, written = first, first + count, 0
    while index < end:
        n = min(batch, end - index)
        start = layout.chunk_offset(index)
        want = layout.chunk_offset(index + n - 1) + layout.sealed_size(index + n - 1) - start
        got = _pread_full(fd, sealed_buf[:want], start)
        if sealed_hasher is not None:
            sealed_hasher.update(sealed_buf[:got])
        if scratch is None:
            assert out is not None
            target = out[written:]
        else:
            target = scratch
        opened, written_now, fault = _open_sealed_chunks(
            aead,
            layout,
            index,
            n,
            sealed=sealed_buf[:got],
            start=start,
            out=target,
            hasher=hasher,
            packed=scratch is None,
        )
        written += written_now
        if fault is not None:
            return index + opened - first, fault
        index += n
    return count, None


def _open_sealed_chunks(
    aead: ChaCha20Poly1305,
    layout: StreamLayout,
    first: int,
    count: int,
    *,
    sealed: memoryview,
    start: int,
    out: memoryview,
    hasher: hashlib._Hash | None = None,
    packed: bool = True,
) -> tuple[int, int, _Fault | None]:
    """Open chunks ``first .. first + count - 1`` whose ciphertext, read from file offset
    ``start``, is in ``sealed`` (fewer bytes than the chunks need: the file ended), into
    ``out`` (one after the other; ``packed=False``: each at ``j * CHUNK_SIZE``, a scratch
    buffer), updating ``hasher`` with each chunk's plaintext. Returns how many chunks hold
    authentic plaintext, the plaintext bytes written and the fault that stopped it."""
    written = 0
    for j in range(count):
        at = j * SEALED_CHUNK_SIZE
        size = layout.sealed_size(first + j)
        if at + size > len(sealed):
            missing = start + len(sealed)
            return (
                j,
                written,
                _Fault(
                    first + j,
                    missing,
                    f"the file ended at offset {missing}, inside chunk {first + j}: it was "
                    "truncated or changed while it was read",
                ),
            )
        plain = size - _TAG if size >= _TAG else 0
        place = written if packed else j * CHUNK_SIZE
        target = out[place : place + plain]
        valid, fault = _open_chunk(aead, layout, first + j, sealed[at : at + size], target)
        if valid:
            written += plain
            if hasher is not None:
                hasher.update(target)
        if fault is not None:
            return j + (1 if valid else 0), written, fault
    return count, written, None


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedRange:
    """The result of one range of chunks: where it lies and, as asked, its plaintext and the
    SHA-256 of its plaintext."""

    first_chunk: int
    chunks: int
    plaintext_offset: int
    plaintext_size: int
    plaintext: bytes | None = field(default=None, repr=False)
    sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentRead:
    """One segment read for verification (:meth:`AgePayload.read_segment`): the SHA-256 of
    the ciphertext bytes read (``cipher_size`` of them), and when every chunk opened where
    it stands, the plaintext (if asked) and its SHA-256; else the :class:`AgeDecryptError`
    of the first chunk that did not (``plaintext``/``plain_sha256`` then None)."""

    cipher_sha256: str
    cipher_size: int
    plaintext: bytearray | memoryview | None = field(default=None, repr=False)
    plain_sha256: str | None = None
    plain_size: int = 0
    error: AgeDecryptError | None = None
    ciphertext: memoryview | None = field(default=None, repr=False)
    """With :class:`SegmentBuffers`: the ciphertext bytes read (``cipher_size`` of them,
    from ``from_offset``), valid until the next read into the same buffers."""


@dataclass(slots=True)
class SegmentBuffers:
    """The memory a worker reuses from segment to segment (:meth:`AgePayload.read_segment`):
    a segment's ciphertext, read with one ``pread``, and its plaintext. Allocating (and
    zeroing) a 64 MiB ``bytearray`` per segment cost more than the segment's decryption,
    with the GIL held (docs/performance.md, issue 18): these are anonymous memory maps,
    zero-filled by the kernel page by page where they are first written (by ``pread`` and
    the cipher, without the GIL), and returned to the system when dropped. The views a
    :class:`SegmentRead` hands out are valid until the next read into the same buffers."""

    sealed: mmap.mmap | None = None
    plain: mmap.mmap | None = None

    def views(self, sealed: int, plain: int) -> tuple[memoryview, memoryview]:
        """Views of ``sealed`` and ``plain`` bytes (the buffers grow when too small)."""
        if self.sealed is None or len(self.sealed) < sealed:
            self.sealed = _anonymous(sealed)
        if self.plain is None or len(self.plain) < plain:
            self.plain = _anonymous(plain)
        return memoryview(self.sealed)[:sealed], memoryview(self.plain)[:plain]


def _anonymous(size: int) -> mmap.mmap:
    """Private anonymous memory of ``size`` bytes (at least one page: ``mmap`` refuses 0)."""
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


@dataclass(frozen=True, slots=True)
class AgePayload:
    """What opens the chunks of one age file: the open file (``fd``, not owned), the payload
    key and the layout. It knows neither the identity nor the file key; a worker given these
    three can open any range."""

    fd: int
    key: PayloadKey = field(repr=False)
    layout: StreamLayout

    def decrypt_range(self, first_chunk: int, count: int) -> bytes:
        """The plaintext of chunks ``first_chunk .. first_chunk + count - 1``, each checked
        (tag, and final flag exactly on the file's last chunk), read with ``pread``
        independently of any other range. Raises :class:`AgeDecryptError` (payload failure,
        naming the chunk and offset) and returns nothing when any chunk of the range fails;
        ``ValueError`` for chunks outside the file."""
        self.layout.check_range(first_chunk, count)
        out = bytearray(self.layout.plain_span(first_chunk, count))
        aead = ChaCha20Poly1305(self.key.secret)
        done, fault = _open_chunks(
            aead, self.fd, self.layout, first_chunk, count, out=memoryview(out), hasher=None
        )
        if fault is not None:
            raise fault.error()
        assert done == count
        return bytes(out)

    def read_segment(
        self,
        first_chunk: int,
        count: int,
        *,
        from_offset: int,
        plaintext: bool = True,
        buffers: SegmentBuffers | None = None,
        plain_digest: bool = True,
    ) -> SegmentRead:
        """Read the ciphertext from file offset ``from_offset`` (0 or the offset of
        ``first_chunk``: segment 0 starts with the header) to the end of chunks
        ``first_chunk .. first_chunk + count - 1`` once: hash every byte of it, open every
        chunk (tag and final flag, as :meth:`decrypt_range`) and hash the plaintext. The
        ciphertext is hashed to the range's end even when a chunk fails (the fault is in
        :attr:`SegmentRead.error`, never raised); a file shorter than the range gives the
        hash of the bytes it has. ``ValueError`` for chunks outside the file.

        With ``buffers``, the whole range is read into them with one ``pread``, hashed in
        one call, opened chunk by chunk from memory and its plaintext hashed in one call:
        the plaintext (always kept) and the ciphertext (:attr:`SegmentRead.ciphertext`)
        are views of ``buffers``, the digests are the same.

        ``plain_digest=False``: the plaintext is not hashed (:attr:`SegmentRead.plain_sha256`
        stays None; every chunk is still opened and authenticated): a fast verification,
        whose plaintext a deep one already proved (docs/verification.md)."""
        layout = self.layout
        layout.check_range(first_chunk, count)
        start = layout.chunk_offset(first_chunk)
        if not 0 <= from_offset <= start:
            raise ValueError(f"offset {from_offset} is not before chunk {first_chunk}")
        last = first_chunk + count - 1
        end = layout.chunk_offset(last) + layout.sealed_size(last)
        if buffers is not None:
            return self._read_buffered(
                first_chunk, count, from_offset, end, buffers, plain_digest=plain_digest
            )
        sealed = hashlib.sha256()
        read = _hash_span(self.fd, sealed, from_offset, start)
        out = bytearray(layout.plain_span(first_chunk, count)) if plaintext else None
        plain = hashlib.sha256() if plain_digest else None
        _, fault = _open_chunks(
            ChaCha20Poly1305(self.key.secret),
            self.fd,
            layout,
            first_chunk,
            count,
            out=memoryview(out) if out is not None else None,
            hasher=plain,
            sealed_hasher=sealed,
        )
        if fault is None:
            return SegmentRead(
                cipher_sha256=sealed.hexdigest(),
                cipher_size=end - from_offset,
                plaintext=out,
                plain_sha256=plain.hexdigest() if plain is not None else None,
                plain_size=layout.plain_span(first_chunk, count),
            )
        # _open_chunks hashed whole batches up to the one that failed: hash the rest
        batch = min(count, _READ_CHUNKS)
        upto = min(((fault.chunk - first_chunk) // batch + 1) * batch, count)
        hashed = end if upto == count else layout.chunk_offset(first_chunk + upto)
        read += min(hashed, layout.file_size) - start
        read += _hash_span(self.fd, sealed, hashed, end)
        if out is not None:
            out[:] = bytes(len(out))  # nothing of a failed segment leaves it
        return SegmentRead(cipher_sha256=sealed.hexdigest(), cipher_size=read, error=fault.error())

    def _read_buffered(
        self,
        first_chunk: int,
        count: int,
        from_offset: int,
        end: int,
        buffers: SegmentBuffers,
        *,
        plain_digest: bool,
    ) -> SegmentRead:
        """:meth:`read_segment` into ``buffers`` (reused memory, large calls that release
        the GIL: one ``pread``, one SHA-256 per side)."""
        layout = self.layout
        plain_size = layout.plain_span(first_chunk, count)
        sealed, out = buffers.views(end - from_offset, plain_size)
        got = _pread_full(self.fd, sealed, from_offset)
        cipher = hashlib.sha256(sealed[:got]).hexdigest()
        skip = layout.chunk_offset(first_chunk) - from_offset  # the header, in segment 0
        _, _, fault = _open_sealed_chunks(
            ChaCha20Poly1305(self.key.secret),
            layout,
            first_chunk,
            count,
            sealed=sealed[skip:got] if got > skip else sealed[:0],
            start=from_offset + skip,
            out=out,
        )
        if fault is not None:
            out[:] = bytes(len(out))  # nothing of a failed segment leaves it
            return SegmentRead(
                cipher_sha256=cipher,
                cipher_size=got,
                error=fault.error(),
                ciphertext=sealed[:got],
            )
        return SegmentRead(
            cipher_sha256=cipher,
            cipher_size=got,
            plaintext=out,
            plain_sha256=hashlib.sha256(out).hexdigest() if plain_digest else None,
            plain_size=plain_size,
            ciphertext=sealed[:got],
        )


def _hash_span(fd: int, hasher: hashlib._Hash, start: int, end: int) -> int:
    """Hash the file's bytes ``[start, end)`` (fewer at its end); how many there were."""
    buf = memoryview(bytearray(min(max(end - start, 0), _READ_CHUNKS * SEALED_CHUNK_SIZE)))
    at = start
    while at < end:
        want = min(len(buf), end - at)
        got = _pread_full(fd, buf[:want], at)
        hasher.update(buf[:got])
        at += got
        if got < want:
            break  # the file ends here
    return at - start


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One range as the scheduler reports it: ``done`` chunks authentic, then ``fault``."""

    first: int
    count: int
    done: int
    plaintext: bytes | None
    sha256: str | None
    fault: _Fault | None


class AgeFile:
    """An age file opened with an identity: header parsed, file key unwrapped, header MAC
    checked and payload key derived by :meth:`open`; its chunks are opened on demand.

    Use as a context manager (or call :meth:`close`). The file is read as it was when
    opened (its size fixes the chunk layout)."""

    def __init__(self, file: BinaryIO, header: AgeHeader, payload: AgePayload) -> None:
        self._file = file
        self._owned = True
        self.header = header
        self.payload = payload

    @classmethod
    def open(cls, path: Path | str, identity: str | X25519Identity) -> AgeFile:
        """Open the age file at ``path`` (a regular file) with ``identity``.

        Raises :class:`AgeDecryptError` (header failure, no match, HMAC failure, or payload
        failure when there is no chunk), :class:`KeystoreError` for a malformed identity,
        :class:`~affidavit.errors.InputError` when ``path`` is not a regular file, and the
        ``OSError`` of opening or reading it."""
        key = (
            identity if isinstance(identity, X25519Identity) else X25519Identity.from_str(identity)
        )
        file = open_regular(Path(path), what="the age file")
        try:
            return cls._read(file, key)
        except BaseException:
            file.close()
            raise

    @classmethod
    def from_file(cls, file: BinaryIO, identity: str | X25519Identity) -> AgeFile:
        """Open an age file already open for reading (a regular file: its descriptor is
        read with ``pread``; the file stays the caller's to close, :meth:`close` does not).
        Raises as :meth:`open`."""
        key = (
            identity if isinstance(identity, X25519Identity) else X25519Identity.from_str(identity)
        )
        opened = cls._read(file, key)
        opened._owned = False
        return opened

    @classmethod
    def _read(cls, file: BinaryIO, identity: X25519Identity) -> AgeFile:
        fd = file.fileno()
        size = os.fstat(fd).st_size
        head = memoryview(bytearray(min(size, MAX_HEADER + 1)))
        head = head[: _pread_full(fd, head, 0)]
        header = AgeHeader.from_bytes(head)
        file_key = header.file_key(identity)
        nonce = memoryview(bytearray(_NONCE))
        if _pread_full(fd, nonce, header.size) < _NONCE:
            raise _header_error("the payload nonce is missing or short", header.size)
        layout = StreamLayout.of(payload_offset=header.size + _NONCE, file_size=size)
        payload = AgePayload(fd, PayloadKey.derive(file_key, bytes(nonce)), layout)
        return cls(file, header, payload)

    @property
    def layout(self) -> StreamLayout:
        """Where the chunks lie."""
        return self.payload.layout

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes, if every chunk opens."""
        return self.payload.layout.plaintext_size

    def decrypt_range(self, first_chunk: int, count: int) -> bytes:
        """See :meth:`AgePayload.decrypt_range`."""
        return self.payload.decrypt_range(first_chunk, count)

    def ranges(
        self,
        *,
        workers: int = 1,
        range_chunks: int = DEFAULT_RANGE_CHUNKS,
        plaintext: bool = True,
        sha256: bool = False,
        pool: Pool = "threads",
    ) -> Generator[DecryptedRange, None, None]:
        """Every range of ``range_chunks`` chunks (the last may be shorter), in order, each
        with its plaintext (``plaintext``) and the SHA-256 of its plaintext (``sha256``),
        opened by ``workers`` threads or processes (``pool``; 1 worker: the caller's thread
        alone). A range is yielded only when every chunk of it opened where it stands; the
        first range that fails raises :class:`AgeDecryptError`. Memory: about
        ``2 * workers`` ranges. Closing the generator early ends (and waits for) the
        workers."""
        for outcome in self._outcomes(workers, range_chunks, plaintext, sha256, pool):
            if outcome.fault is not None:
                raise outcome.fault.error()
            layout = self.payload.layout
            yield DecryptedRange(
                first_chunk=outcome.first,
                chunks=outcome.count,
                plaintext_offset=outcome.first * CHUNK_SIZE,
                plaintext_size=layout.plain_span(outcome.first, outcome.count),
                plaintext=outcome.plaintext,
                sha256=outcome.sha256,
            )

    def plaintext(
        self,
        *,
        workers: int = 1,
        range_chunks: int = DEFAULT_RANGE_CHUNKS,
        pool: Pool = "threads",
    ) -> Generator[bytes, None, None]:
        """The plaintext in order, in pieces of up to ``range_chunks`` chunks, opened by
        ``workers`` threads or processes (``pool``). Up to the first chunk that fails, every
        authentic chunk is yielded (as a streaming age reader would); then
        :class:`AgeDecryptError` is raised. Treat the output as untrusted until the iteration
        has ended without error."""
        for outcome in self._outcomes(workers, range_chunks, True, False, pool):
            if outcome.plaintext:
                yield outcome.plaintext
            if outcome.fault is not None:
                raise outcome.fault.error()

    def _outcomes(
        self, workers: int, range_chunks: int, plaintext: bool, sha256: bool, pool: Pool
    ) -> Iterator[_Outcome]:
        if workers < 1 or range_chunks < 1:
            raise ValueError("workers and range_chunks must be at least 1")
        if pool not in ("threads", "processes"):
            raise ValueError(f"pool is threads or processes, not {pool!r}")
        ranges = -(-self.payload.layout.chunks // range_chunks)
        workers = min(workers, ranges)
        if workers == 1:
            return _serial(self.payload, range_chunks, plaintext, sha256)
        if pool == "processes" and (not plaintext or hasattr(os, "memfd_create")):
            return _parallel(self.payload, workers, range_chunks, plaintext, sha256)
        return _threaded(self.payload, workers, range_chunks, plaintext, sha256)

    def close(self) -> None:
        """Close the file (unless it was handed over by :meth:`from_file`)."""
        if self._owned:
            self._file.close()

    def __enter__(self) -> AgeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serial(
    payload: AgePayload, range_chunks: int, plaintext: bool, sha256: bool
) -> Iterator[_Outcome]:
    layout = payload.layout
    aead = ChaCha20Poly1305(payload.key.secret)
    buf = (
        memoryview(bytearray(min(range_chunks, layout.chunks) * CHUNK_SIZE)) if plaintext else None
    )
    for first in range(0, layout.chunks, range_chunks):
        count = min(range_chunks, layout.chunks - first)
        hasher = hashlib.sha256() if sha256 else None
        done, fault = _open_chunks(aead, payload.fd, layout, first, count, out=buf, hasher=hasher)
        data = bytes(buf[: layout.plain_span(first, done)]) if buf is not None else None
        digest = hasher.hexdigest() if hasher is not None and fault is None else None
        yield _Outcome(first, count, done, data, digest, fault)
        if fault is not None:
            return


def _threaded(
    payload: AgePayload, workers: int, range_chunks: int, plaintext: bool, sha256: bool
) -> Iterator[_Outcome]:
    """Ranges opened by ``workers`` threads of this process, read back in order. The AEAD
    holds the GIL, but ``pread``, SHA-256 and the copies around it do not, so threads overlap
    those with each other's decryption."""
    layout = payload.layout

    def run(first: int, count: int) -> _Outcome:
        aead = ChaCha20Poly1305(payload.key.secret)  # one per task: nothing shared
        out = memoryview(bytearray(layout.plain_span(first, count))) if plaintext else None
        hasher = hashlib.sha256() if sha256 else None
        done, fault = _open_chunks(aead, payload.fd, layout, first, count, out=out, hasher=hasher)
        data = bytes(out[: layout.plain_span(first, done)]) if out is not None else None
        digest = hasher.hexdigest() if hasher is not None and fault is None else None
        return _Outcome(first, count, done, data, digest, fault)

    starts = iter(range(0, layout.chunks, range_chunks))
    pending: collections.deque[Future[_Outcome]] = collections.deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="affidavit-age-reader") as executor:
        try:
            for first in itertools.islice(starts, workers * _IN_FLIGHT):
                pending.append(
                    executor.submit(run, first, min(range_chunks, layout.chunks - first))
                )
            while pending:
                outcome = pending.popleft().result()
                if outcome.fault is None and (first := next(starts, -1)) >= 0:
                    count = min(range_chunks, layout.chunks - first)
                    pending.append(executor.submit(run, first, count))
                yield outcome
                if outcome.fault is not None:
                    return
        finally:
            for future in pending:
                future.cancel()


# --- worker processes -----------------------------------------------------------------------

_INIT: Final = struct.Struct(">32s q q q q q")
"""payload key, file fd, memfd (-1: none), payload offset, file size, slot bytes."""
_TASK: Final = struct.Struct(">q q q q B")
"""sequence number, first chunk, count, slot, flags."""
_RESULT: Final = struct.Struct(">q q B 32s q q I")
"""sequence number, chunks done, flags, SHA-256, fault chunk, fault offset, message length."""
_WANT_PLAINTEXT: Final = 1
_WANT_SHA256: Final = 2
_HAS_SHA256: Final = 1
_HAS_FAULT: Final = 2
_HAS_OS_ERROR: Final = 4


class _Pool:
    """``N`` worker processes sharing one plaintext memory file; ranges go round robin."""

    def __init__(self, payload: AgePayload, workers: int, slots: int, slot_bytes: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.memory: mmap.mmap | None = None
        memfd = -1
        try:
            if slot_bytes:
                memfd = os.memfd_create("affidavit-age-plaintext", os.MFD_CLOEXEC)
                os.ftruncate(memfd, slots * slot_bytes)
                self.memory = mmap.mmap(memfd, slots * slot_bytes)
            layout = payload.layout
            init = _INIT.pack(
                payload.key.secret,
                payload.fd,
                memfd,
                layout.payload_offset,
                layout.file_size,
                slot_bytes,
            )
            fds = (payload.fd,) if memfd < 0 else (payload.fd, memfd)
            for _ in range(workers):
                proc = subprocess.Popen(
                    [sys.executable, "-P", "-m", "affidavit.crypto.age_reader"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=fds,
                    env=_environment(),
                )
                self.procs.append(proc)
                self._send(proc, init)
        except BaseException:
            self.close(kill=True)
            raise
        finally:
            if memfd >= 0:
                os.close(memfd)  # the mapping and the children keep it

    def _send(self, proc: subprocess.Popen[bytes], data: bytes) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            raise self._died(proc) from None

    def submit(self, worker: int, task: tuple[int, int, int, int, int]) -> None:
        """Queue ``(seq, first, count, slot, flags)`` for ``worker``."""
        self._send(self.procs[worker], _TASK.pack(*task))

    def result(self, worker: int, seq: int) -> tuple[int, str | None, _Fault | None]:
        proc = self.procs[worker]
        assert proc.stdout is not None
        head = proc.stdout.read(_RESULT.size)
        if len(head) < _RESULT.size:
            raise self._died(proc)
        got, done, flags, digest, chunk, offset, length = _RESULT.unpack(head)
        message = proc.stdout.read(length).decode(errors="replace") if length else ""
        if got != seq:
            raise OperationError(f"an age decryption worker answered range {got}, not {seq}")
        if flags & _HAS_OS_ERROR:
            raise OSError(chunk, message)
        fault = _Fault(chunk, offset, message) if flags & _HAS_FAULT else None
        return done, digest.hex() if flags & _HAS_SHA256 else None, fault

    def _died(self, proc: subprocess.Popen[bytes]) -> OperationError:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)
        detail = b""
        if proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                detail = proc.stderr.read()[-2000:]
        last = detail.decode(errors="replace").strip().splitlines()[-1:] or [
            f"status {proc.returncode}"
        ]
        return OperationError(
            f"an age decryption worker process ended unexpectedly ({last[0][:200]})",
            hint="run again; if it keeps failing, check memory and process limits or use 1 worker",
        )

    def close(self, *, kill: bool) -> None:
        """End every worker (closing its input ends it; ``kill``: at once) and wait."""
        for proc in self.procs:
            if kill:
                with contextlib.suppress(OSError):
                    proc.kill()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()
        if self.memory is not None:
            self.memory.close()


def _parallel(
    payload: AgePayload, workers: int, range_chunks: int, plaintext: bool, sha256: bool
) -> Iterator[_Outcome]:
    layout = payload.layout
    ranges = -(-layout.chunks // range_chunks)
    slots = workers * _IN_FLIGHT
    slot_bytes = range_chunks * CHUNK_SIZE if plaintext else 0
    flags = (_WANT_PLAINTEXT if plaintext else 0) | (_WANT_SHA256 if sha256 else 0)
    pool = _Pool(payload, workers, slots, slot_bytes)
    finished = False
    try:
        submitted = 0

        def submit() -> None:
            nonlocal submitted
            first = submitted * range_chunks
            count = min(range_chunks, layout.chunks - first)
            pool.submit(submitted % workers, (submitted, first, count, submitted % slots, flags))
            submitted += 1

        while submitted < min(slots, ranges):
            submit()
        for seq in range(ranges):
            first = seq * range_chunks
            count = min(range_chunks, layout.chunks - first)
            done, digest, fault = pool.result(seq % workers, seq)
            data = None
            if pool.memory is not None:
                at = (seq % slots) * slot_bytes
                data = pool.memory[at : at + layout.plain_span(first, done)]
            if fault is None and submitted < ranges:
                submit()  # this range's slot is free again: its bytes were copied
            yield _Outcome(first, count, done, data, digest, fault)
            if fault is not None:
                break
        finished = True
    finally:
        pool.close(kill=not finished)


def _environment() -> dict[str, str]:
    """The child imports this very package, wherever it was imported from here."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    inherited = os.environ.get("PYTHONPATH")
    path = package_root if not inherited else package_root + os.pathsep + inherited
    return {**os.environ, "PYTHONPATH": path}


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def _worker() -> int:
    """The child: its set-up on stdin, then tasks until end of input; results on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the child
    source = sys.stdin.buffer
    sink = os.fdopen(os.dup(1), "wb")  # the results; anything printed goes to stderr instead
    os.dup2(2, 1)
    init = _read_exact(source, _INIT.size)
    if init is None:
        return 2
    key, fd, memfd, payload_offset, file_size, slot_bytes = _INIT.unpack(init)
    layout = StreamLayout.of(payload_offset=payload_offset, file_size=file_size)
    aead = ChaCha20Poly1305(key)
    del key
    memory = mmap.mmap(memfd, 0) if memfd >= 0 else None
    while (task := _read_exact(source, _TASK.size)) is not None:
        seq, first, count, slot, flags = _TASK.unpack(task)
        layout.check_range(first, count)
        out = None
        if flags & _WANT_PLAINTEXT:
            assert memory is not None
            assert count * CHUNK_SIZE <= slot_bytes
            out = memoryview(memory)[slot * slot_bytes : slot * slot_bytes + count * CHUNK_SIZE]
        hasher = hashlib.sha256() if flags & _WANT_SHA256 else None
        status, digest, chunk, offset, message = 0, bytes(32), 0, 0, b""
        try:
            done, fault = _open_chunks(aead, fd, layout, first, count, out=out, hasher=hasher)
        except OSError as exc:
            done, fault = 0, None
            status, chunk, message = _HAS_OS_ERROR, exc.errno or 0, str(exc).encode()
        finally:
            if out is not None:
                out.release()
        if fault is not None:
            status |= _HAS_FAULT
            chunk, offset, message = fault.chunk, fault.offset, fault.message.encode()
        elif hasher is not None and not status:
            status |= _HAS_SHA256
            digest = hasher.digest()
        sink.write(_RESULT.pack(seq, done, status, digest, chunk, offset, len(message)) + message)
        sink.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker())


# --- a stream, in order ---------------------------------------------------------------------


def decrypt_stream(pieces: Iterable[bytes], identity: str | X25519Identity) -> Iterator[bytes]:
    """Decrypt an age file handed over as ``pieces`` of any size (a vault's stream), in order,
    one STREAM chunk after another: the plaintext of each chunk is yielded only once it has
    authenticated, and the last chunk is told by the end of the stream (one chunk is read
    ahead). No file and no size are needed; the same checks as :meth:`AgeFile.plaintext`
    (header, MAC, every chunk, a final chunk at the end and nowhere else). Raises
    :class:`AgeDecryptError` at the first failure (after the plaintext of the chunks before
    it), :class:`~affidavit.errors.KeystoreError` for an identity that is not one."""
    ident = identity if isinstance(identity, X25519Identity) else X25519Identity.from_str(identity)
    source = iter(pieces)
    buf = bytearray()
    ended = False

    def fill(size: int) -> None:
        nonlocal ended
        while len(buf) < size and not ended:
            piece = next(source, None)
            if piece is None:
                ended = True
            else:
                buf.extend(piece)

    while True:  # the header: up to the MAC line's newline
        mark = buf.find(b"\n---")
        if (mark >= 0 and buf.find(b"\n", mark + 1) >= 0) or ended or len(buf) > MAX_HEADER:
            break
        fill(len(buf) + CHUNK_SIZE)
    header = AgeHeader.from_bytes(buf)
    file_key = header.file_key(ident)
    base = header.size + _NONCE
    fill(base)
    if len(buf) < base:
        raise _header_error("the file ends inside the payload nonce", header.size)
    aead = ChaCha20Poly1305(PayloadKey.derive(file_key, bytes(buf[header.size : base])).secret)
    del buf[:base]
    index = 0
    while True:
        fill(SEALED_CHUNK_SIZE + 1)  # one byte more tells whether this chunk is the last
        final = len(buf) <= SEALED_CHUNK_SIZE
        sealed = bytes(buf[:SEALED_CHUNK_SIZE])
        offset = base + index * SEALED_CHUNK_SIZE
        plain, fault = _open_sealed(aead, index, sealed, offset=offset, final=final)
        if plain is not None:
            yield plain
        if fault is not None:
            raise fault
        if final:
            return
        del buf[:SEALED_CHUNK_SIZE]
        index += 1


def _open_sealed(
    aead: ChaCha20Poly1305, index: int, sealed: bytes, *, offset: int, final: bool
) -> tuple[bytes | None, AgeDecryptError | None]:
    """Chunk ``index`` of a stream: its plaintext when it authenticated, and the
    :class:`AgeDecryptError` that follows it, as :func:`_open_chunk` judges (a chunk that
    opens only with the other final flag releases its plaintext, then fails)."""

    def fault(message: str, at: int = offset) -> AgeDecryptError:
        return AgeDecryptError.of(AgeFailure.PAYLOAD, message, offset=at, chunk=index)

    if len(sealed) < _TAG:
        return None, fault(
            f"chunk {index} at offset {offset} is {len(sealed)} bytes, shorter than its tag: "
            "the file is truncated"
        )
    if final and len(sealed) == _TAG and index > 0:
        return None, fault(
            f"the final chunk {index} at offset {offset} is empty "
            "(only the chunk of an empty file may be)"
        )
    try:
        return aead.decrypt(_nonce(index, final), sealed, None), None
    except InvalidTag:
        pass
    end = offset + len(sealed)
    if len(sealed) == SEALED_CHUNK_SIZE:
        try:
            plain = aead.decrypt(_nonce(index, not final), sealed, None)
        except InvalidTag:
            pass
        else:
            if final:
                return plain, fault(
                    f"chunk {index} at offset {offset} is not sealed as the final chunk and "
                    f"the file ends after it (offset {end}): the file is truncated",
                    end,
                )
            return plain, fault(
                f"chunk {index} at offset {offset} is sealed as the final chunk but more bytes "
                f"follow it (offset {end}): data was appended",
                end,
            )
    return None, fault(
        f"chunk {index} at offset {offset} does not authenticate: the ciphertext was altered"
    )
