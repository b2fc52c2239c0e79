"""The ``exact`` codec: key = the raw ``_id`` element as stored, value = the raw document.

Nothing is decoded (see :func:`exact_record`); only the framing needed to slice ``_id`` safely
is checked. For whole buffers of documents, :func:`frame_exact_pairs` frames, keys and hashes
in one step through the compiled module ``_native`` (``_native.c``, built by ``pip install -e
.``; ~0.85 µs per 1 KiB document against ~2.3 µs), which takes the documents whose ``_id`` is
first and bounded exactly and hands any other to the Python code here, document by document
(same results, same errors; ``AFFIDAVIT_PURE_PYTHON=1`` or no build: pure Python). The full
decode that ``--check-bson``, ingest and verify add is :mod:`.check`'s.

The compiled module is the package's ``bson_codec._NATIVE``, read at each call (tests and
benchmarks switch it off by setting it to None).
"""

from __future__ import annotations

from typing import Final, cast

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import FormatError
from affidavit.formats import bson_codec
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE
from affidavit.formats.bson_codec.wire import (
    FIXED_SIZE,
    ID_NAME,
    INT32,
    MIN_DOC,
    NUL,
    bad,
    string_end,
)


def _value_end(buf: bytes, t: int, pos: int, end: int) -> int:
    """End offset of a value of type ``t`` starting at ``pos``; checks only its framing."""
    size = FIXED_SIZE.get(t)
    if size is not None:
        stop = pos + size
    elif t in (0x02, 0x0D, 0x0E):  # string, code, symbol: int32 length + bytes incl. NUL
        stop = string_end(buf, pos, end)
    elif t in (0x03, 0x04, 0x0F):  # document, array, code-with-scope: int32 total size
        if pos + 4 > end:
            raise bad("truncated length", pos)
        (n,) = INT32.unpack_from(buf, pos)
        stop = pos + n
        if n < MIN_DOC or stop > end:
            raise bad(f"bad embedded length {n}", pos)
    elif t == 0x05:  # binary: int32 length + subtype + bytes
        if pos + 5 > end:
            raise bad("truncated binary length", pos)
        (n,) = INT32.unpack_from(buf, pos)
        stop = pos + 5 + n
        if n < 0 or stop > end:
            raise bad(f"bad binary length {n}", pos)
    elif t == 0x0B:  # regex: two cstrings
        p1 = buf.find(NUL, pos, end)
        p2 = buf.find(NUL, p1 + 1, end) if p1 >= 0 else -1
        if p2 < 0:
            raise bad("unterminated regex", pos)
        stop = p2 + 1
    elif t == 0x0C:  # DBPointer: string + 12-byte ObjectId
        stop = string_end(buf, pos, end) + 12
    else:
        raise bad(f"unknown BSON type 0x{t:02x}", pos - 1)
    if stop > end:
        raise bad(f"value of type 0x{t:02x} overruns the document", pos)
    return stop


def exact_record(raw_doc: bytes) -> tuple[bytes, bytes]:
    """The ``exact`` record of a BSON document: ``(raw _id element, raw document)``.

    The key is the ``_id`` element exactly as stored: type byte, ``b"_id\\x00"`` and the value
    bytes. Only the top-level element framing up to ``_id`` is walked (``_id`` is first in
    every document mongod writes, so that is O(1)); the rest of the document is not inspected.
    Raises ``FormatError`` when there is no top-level ``_id`` or the framing is broken.
    """
    end = len(raw_doc) - 1  # offset of the document's trailing NUL
    if end < 4 or raw_doc[end] != 0:
        raise bad("bad document framing", 0)
    pos = 4
    buf = raw_doc
    while pos < end:
        t = buf[pos]
        if t == 0:
            break
        name_start = pos + 1
        name_end = buf.find(NUL, name_start, end)
        if name_end < 0:
            raise bad("unterminated field name", name_start)
        stop = _value_end(buf, t, name_end + 1, end)
        if buf[name_start : name_end + 1] == ID_NAME:
            return bytes(buf[pos:stop]), raw_doc
        pos = stop
    raise FormatError(
        "document has no top-level _id field",
        hint="the exact profile keys records by _id; every MongoDB collection document has one",
    )


# value size by type byte, -1 where it is variable or unknown (for exact_key_spans' fast path)
_FIXED_BY_TYPE: Final[tuple[int, ...]] = tuple(FIXED_SIZE.get(t, -1) for t in range(256))
_STRING = 0x02


def _document_key(buffer: bytes, a: int, b: int) -> bytes:
    """The :func:`exact_record` key of the document ``buffer[a:b]``: read directly when
    ``_id`` is its first element with a fixed-size or string value (every document mongod
    writes), else through :func:`exact_record` itself (which raises for a bad document)."""
    last = b - 1  # the document's trailing NUL
    if a + 9 <= last and buffer[a + 5 : a + 9] == ID_NAME:
        t = buffer[a + 4]
        size = _FIXED_BY_TYPE[t]
        if size >= 0:
            stop = a + 9 + size
            if stop <= last:
                return buffer[a + 4 : stop]
        elif t == _STRING and a + 13 <= last:
            (n,) = INT32.unpack_from(buffer, a + 9)
            stop = a + 13 + n
            if n >= 1 and stop <= last and buffer[stop - 1] == 0:
                return buffer[a + 4 : stop]
    return exact_record(buffer[a:b])[0]


def exact_keys(buffer: bytes, starts: list[int]) -> list[bytes]:
    """The :func:`exact_record` key of each document of a framed batch (the documents are
    ``buffer[starts[i]:starts[i + 1]]``, the last one running to the end of ``buffer``).

    When ``_id`` is the first element (every document mongod writes) with a fixed-size or
    string value, its bounds are read directly; any other document goes through
    :func:`exact_record` itself. Raises what :func:`exact_record` raises, for the first
    document without a usable ``_id``."""
    ends = starts[1:]
    ends.append(len(buffer))
    return [_document_key(buffer, a, b) for a, b in zip(starts, ends, strict=True)]


def frame_exact_keys(buffer: bytes) -> tuple[list[int], list[bytes], int]:
    """Frame the whole documents at the start of ``buffer`` and take the :func:`exact_record`
    key of each, in one pass: ``(starts, keys, stop)``, where ``stop`` is the offset after the
    last whole document (a document that ``buffer`` cuts off is left for the caller to carry
    over). The framing checks are :class:`~affidavit.formats.base.BsonFramer`'s (length
    within ``5..MAX_BSON_DOCUMENT_SIZE``, last byte NUL). Raises ``FormatError`` at the first
    malformed frame or document without a usable ``_id``, without the reader's precise
    wording: a caller that reports defects re-reads with the reader to word them."""
    return _frame_exact_keys(buffer, 0, None)


def _frame_exact_keys(
    buffer: bytes, pos: int, limit: int | None
) -> tuple[list[int], list[bytes], int]:
    """:func:`frame_exact_keys` from offset ``pos`` on, for at most ``limit`` documents."""
    unpack = INT32.unpack_from
    starts: list[int] = []
    keys: list[bytes] = []
    add_start, add_key = starts.append, keys.append
    end = len(buffer)
    while pos + 4 <= end and (limit is None or len(starts) < limit):
        (length,) = unpack(buffer, pos)
        if length < MIN_DOC or length > MAX_BSON_DOCUMENT_SIZE:
            raise bad(f"implausible document length {length}", 0)
        stop = pos + length
        if stop > end:
            break
        last = stop - 1
        if buffer[last] != 0:
            raise bad("last byte is not NUL", length - 1)
        add_start(pos)
        add_key(_document_key(buffer, pos, stop))
        pos = stop
    return starts, keys, pos


def frame_exact_pairs(
    buffer: bytes, tag: bytes, *, keys: bool = True
) -> tuple[bytes, list[bytes] | None, int]:
    """:func:`frame_exact_keys` and the record hashing of its documents in one step:
    ``(pairs, keys, stop)``, ``pairs`` being ``RecordHasher(tag).pairs_framed`` of the whole
    documents at the start of ``buffer`` (``key_hash || record_hash`` each, concatenated),
    ``keys`` their keys (None unless ``keys``), ``stop`` the offset after the last whole
    document. Raises what :func:`frame_exact_keys` raises, at the same document.

    The compiled module frames, keys and hashes the documents it can read with certainty
    (``_id`` first, of a type whose bounds it checks exactly; see ``_native.c``) and stops at
    any other; this function then reads that one document with :func:`frame_exact_keys`' code
    (which raises for a defect, with its own wording) and hands the rest back to the
    compiled module. Without it (not built, or ``AFFIDAVIT_PURE_PYTHON=1``) the pure-Python
    path gives the same bytes."""
    native = bson_codec._NATIVE
    if native is None:
        starts, found, stop = frame_exact_keys(buffer)
        pairs = RecordHasher(tag).pairs_framed(buffer, starts, found, stop) if starts else b""
        return pairs, found if keys else None, stop
    chunks: list[bytes] = []
    all_keys: list[bytes] | None = [] if keys else None
    hasher: RecordHasher | None = None
    pos = 0
    more = native.MORE
    while True:
        pos, pairs, got, status = native.frame(buffer, pos, tag, keys)
        chunks.append(pairs)
        if all_keys is not None and got:
            all_keys += got
        if status == more:
            break
        # a document for the Python path: it raises, or reads this one document
        starts, found, stop = _frame_exact_keys(buffer, pos, 1)
        if not starts:  # pragma: no cover - the compiled module stops only at a whole one
            break
        hasher = hasher or RecordHasher(tag)
        chunks.append(hasher.pairs_framed(buffer, starts, found, stop))
        if all_keys is not None:
            all_keys += found
        pos = stop
    return b"".join(chunks), all_keys, pos


def exact_pairs_framed(
    buffer: bytes, starts: list[int], tag: bytes
) -> tuple[bytes, list[bytes]] | None:
    """The compiled fast path of ``RecordHasher(tag).pairs_framed(buffer, starts,
    exact_keys(buffer, starts))`` for a framed batch (documents back to back from offset 0
    to the end, ``starts`` their offsets): ``(pairs, keys)``, or None when the compiled module
    is not there or does not take every document of the batch (then the caller takes the
    pure-Python path, which gives the same bytes or raises)."""
    native = bson_codec._NATIVE
    if native is None:
        return None
    stop, pairs, keys, _ = native.frame(buffer, 0, tag, True, starts)
    if stop != len(buffer) or len(pairs) != 64 * len(starts) or keys is None:
        return None
    return pairs, keys


def frame_exact_view(view: memoryview, tag: bytes) -> tuple[bytes, int]:
    """:func:`frame_exact_pairs` without keys over a view (a segment's or a range's reused
    buffer), without a copy: ``(pairs, stop)``. A document the compiled framing leaves to
    the Python reader, which reads ``bytes`` (a defect it words), is read again from a
    copy."""
    try:
        pairs, _, stop = frame_exact_pairs(cast(bytes, view), tag, keys=False)
    except (AttributeError, TypeError):  # the Python reader needs bytes (``find``)
        pairs, _, stop = frame_exact_pairs(bytes(view), tag, keys=False)
    return pairs, stop
