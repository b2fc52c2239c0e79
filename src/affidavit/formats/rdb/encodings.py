"""The compact encodings inside RDB strings, decoded from one blob each: LZF, ziplist,
listpack, intset, zipmap and the entries of a stream listpack node. Pure functions over
bytes that raise ``ValueError`` on any inconsistency (the parser turns it into a
``FormatError`` with the blob's byte offset)."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from typing import Final

#: an entry of a ziplist or listpack: a string or an integer
Element = bytes | int

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def int_bytes(value: Element) -> bytes:
    """An entry as Redis returns it: a string as it is, an integer as its decimal text."""
    return value if isinstance(value, bytes) else str(value).encode()


# --- LZF ------------------------------------------------------------------------------------


def lzf_decompress(data: bytes, expected: int) -> bytes:
    """Decompress LZF ``data`` into exactly ``expected`` bytes; ``ValueError`` on malformed
    input. Never produces more than ``expected`` bytes (a lying length cannot balloon)."""
    out = bytearray()
    size = 0  # len(out)
    i, n = 0, len(data)
    try:
        while i < n:
            ctrl = data[i]
            i += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                j = i + ctrl + 1
                if j > n:
                    raise ValueError("literal run past the end of the compressed data")
                size += ctrl + 1
                if size > expected:
                    raise ValueError("output longer than the declared length")
                out += data[i:j]
                i = j
                continue
            run = (ctrl >> 5) + 2  # back reference of run bytes, distance bytes back
            if run == 9:
                run += data[i]
                i += 1
            distance = ((ctrl & 0x1F) << 8) + 1 + data[i]
            i += 1
            if distance > size:
                raise ValueError("back reference before the start of the output")
            ref = size - distance
            size += run
            if size > expected:
                raise ValueError("output longer than the declared length")
            if distance >= run:
                out += out[ref : ref + run]
            else:  # overlapping copy: the last `distance` bytes repeat
                out += (out[ref:] * (run // distance + 1))[:run]
    except IndexError:  # data[i] past the end: a truncated back reference
        raise ValueError("back reference past the end of the compressed data") from None
    if size != expected:
        raise ValueError(f"decompressed to {size} bytes, declared {expected}")
    return bytes(out)


# --- ziplist --------------------------------------------------------------------------------


def parse_ziplist(blob: bytes) -> list[Element]:  # noqa: PLR0915 - one flat byte switch
    """The entries of a ziplist; ``ValueError`` on any inconsistency (Redis' integrity check:
    header sizes, prevlen chain, tail offset, count, end byte)."""
    n = len(blob)
    if n < 11:
        raise ValueError("ziplist shorter than its header")
    zlbytes, zltail = _U32.unpack_from(blob, 0)[0], _U32.unpack_from(blob, 4)[0]
    zllen = _U16.unpack_from(blob, 8)[0]
    if zlbytes != n:
        raise ValueError(f"ziplist header says {zlbytes} bytes, blob has {n}")
    if blob[-1] != 0xFF:
        raise ValueError("ziplist does not end with 0xFF")
    out: list[Element] = []
    pos = 10
    prev_len = 0
    last_start = 10
    while True:
        if pos >= n:
            raise ValueError("ziplist entry past the end")
        if blob[pos] == 0xFF:
            break
        start = pos
        if blob[pos] < 254:
            prevlen = blob[pos]
            pos += 1
        else:
            if blob[pos] == 255 or pos + 5 > n:
                raise ValueError("bad ziplist prevlen")
            prevlen = _U32.unpack_from(blob, pos + 1)[0]
            pos += 5
        if prevlen != prev_len:
            raise ValueError("ziplist prevlen does not match the previous entry")
        if pos >= n:
            raise ValueError("ziplist entry past the end")
        enc = blob[pos]
        kind = enc >> 6
        value: Element
        if kind == 0:
            size, pos = enc & 0x3F, pos + 1
            value = blob[pos : pos + size]
        elif kind == 1:
            if pos + 2 > n:
                raise ValueError("ziplist entry past the end")
            size, pos = ((enc & 0x3F) << 8) | blob[pos + 1], pos + 2
            value = blob[pos : pos + size]
        elif kind == 2:
            if pos + 5 > n:
                raise ValueError("ziplist entry past the end")
            size, pos = int.from_bytes(blob[pos + 1 : pos + 5], "big"), pos + 5
            value = blob[pos : pos + size]
        else:
            pos += 1
            if enc == 0xC0:
                size = 2
            elif enc == 0xD0:
                size = 4
            elif enc == 0xE0:
                size = 8
            elif enc == 0xF0:
                size = 3
            elif enc == 0xFE:
                size = 1
            elif 0xF1 <= enc <= 0xFD:
                size = 0
            else:
                raise ValueError(f"unknown ziplist encoding 0x{enc:02x}")
            if size == 0:
                value = (enc & 0x0F) - 1
            else:
                value = int.from_bytes(blob[pos : pos + size], "little", signed=True)
        if pos + size > n - 1:
            raise ValueError("ziplist entry past the end")
        pos += size
        out.append(value)
        prev_len = pos - start
        last_start = start
    if pos != n - 1:
        raise ValueError("ziplist end byte is not the last byte")
    if out and zltail != last_start:
        raise ValueError("ziplist tail offset does not point at the last entry")
    if not out and zltail != 10:
        raise ValueError("empty ziplist with a bad tail offset")
    if zllen != 0xFFFF and zllen != len(out):
        raise ValueError(f"ziplist header says {zllen} entries, found {len(out)}")
    return out


# --- listpack -------------------------------------------------------------------------------


def _backlen_size(length: int) -> int:
    if length < 128:
        return 1
    if length < 16384:
        return 2
    if length < 2097152:
        return 3
    if length < 268435456:
        return 4
    return 5


_LP_INT_SIZE: Final = {0xF1: 2, 0xF2: 3, 0xF3: 4, 0xF4: 8}


def _listpack_rare(blob: bytes, pos: int, end: int) -> tuple[Element, int]:
    """The listpack entry at ``pos`` whose encoding byte is 0xC0 or above (13-bit integer,
    12- and 32-bit strings, 16..64-bit integers) and the offset after its backlen."""
    enc = blob[pos]
    start = pos
    value: Element
    if enc < 0xE0:
        if pos + 2 > end:
            raise ValueError("listpack entry past the end")
        raw = ((enc & 0x1F) << 8) | blob[pos + 1]
        value = raw - 8192 if raw >= 4096 else raw
        pos += 2
    elif enc < 0xF0:
        if pos + 2 > end:
            raise ValueError("listpack entry past the end")
        size = ((enc & 0x0F) << 8) | blob[pos + 1]
        pos += 2
        value = blob[pos : pos + size]
        pos += size
    elif enc == 0xF0:
        if pos + 5 > end:
            raise ValueError("listpack entry past the end")
        size = _U32.unpack_from(blob, pos + 1)[0]
        pos += 5
        value = blob[pos : pos + size]
        pos += size
    elif 0xF1 <= enc <= 0xF4:
        size = _LP_INT_SIZE[enc]
        pos += 1
        value = int.from_bytes(blob[pos : pos + size], "little", signed=True)
        pos += size
    else:
        raise ValueError(f"unknown listpack encoding 0x{enc:02x}")
    if pos > end:
        raise ValueError("listpack entry past the end")
    return value, pos + _backlen_size(pos - start)


_LP_HEAD = struct.Struct("<IH")


def parse_listpack(blob: bytes) -> list[Element]:
    """The entries of a listpack; ``ValueError`` on any inconsistency (total size, entry
    bounds, count, end byte)."""
    n = len(blob)
    if n < 7:
        raise ValueError("listpack shorter than its header")
    total, count = _LP_HEAD.unpack_from(blob, 0)
    if total != n:
        raise ValueError(f"listpack header says {total} bytes, blob has {n}")
    out: list[Element] = []
    append = out.append
    pos = 6
    end = n - 1
    while True:  # invariant: pos <= end
        enc = blob[pos]
        if enc < 0x80:  # 7-bit unsigned integer; the entry is 1 byte, its backlen 1
            append(enc)
            pos += 2
        elif enc < 0xC0:  # string of up to 63 bytes; backlen 1
            nxt = pos + 1 + (enc & 0x3F)
            append(blob[pos + 1 : nxt])
            pos = nxt + 1
        elif enc == 0xFF:
            break
        else:
            value, pos = _listpack_rare(blob, pos, end)
            append(value)
        if pos > end:
            raise ValueError("listpack entry past the end")
    if pos != end:
        raise ValueError("listpack end byte is not the last byte")
    if count != 0xFFFF and count != len(out):
        raise ValueError(f"listpack header says {count} entries, found {len(out)}")
    return out


# --- intset, zipmap -------------------------------------------------------------------------


def parse_intset(blob: bytes) -> list[int]:
    """The members of an intset (encoding 2, 4 or 8 bytes, sorted, unique)."""
    if len(blob) < 8:
        raise ValueError("intset shorter than its header")
    width, count = _U32.unpack_from(blob, 0)[0], _U32.unpack_from(blob, 4)[0]
    if width not in (2, 4, 8):
        raise ValueError(f"intset encoding {width} is not 2, 4 or 8")
    if len(blob) != 8 + width * count:
        raise ValueError(f"intset of {count} x {width} bytes has {len(blob) - 8} bytes")
    fmt = {2: "<h", 4: "<i", 8: "<q"}[width]
    out = [v for (v,) in struct.iter_unpack(fmt, memoryview(blob)[8:])]
    if any(a >= b for a, b in itertools.pairwise(out)):
        raise ValueError("intset members are not sorted and unique")
    return out


def parse_zipmap(blob: bytes) -> list[tuple[bytes, bytes]]:
    """The (field, value) pairs of a zipmap (RDB 1..3 hashes)."""
    n = len(blob)
    if n < 2:
        raise ValueError("zipmap shorter than its header")
    declared = blob[0]
    pos = 1

    def length() -> int:
        nonlocal pos
        if pos >= n:
            raise ValueError("zipmap entry past the end")
        first = blob[pos]
        if first < 254:
            pos += 1
            return first
        if first == 254:
            if pos + 5 > n:
                raise ValueError("zipmap length past the end")
            value = _U32.unpack_from(blob, pos + 1)[0]
            pos += 5
            return int(value)
        pos += 1
        return -1  # 255: end

    out: list[tuple[bytes, bytes]] = []
    while True:
        klen = length()
        if klen < 0:
            break
        if pos + klen > n:
            raise ValueError("zipmap field past the end")
        key = blob[pos : pos + klen]
        pos += klen
        vlen = length()
        if vlen < 0 or pos >= n:
            raise ValueError("zipmap value missing")
        free = blob[pos]
        pos += 1
        if pos + vlen + free > n:
            raise ValueError("zipmap value past the end")
        out.append((key, blob[pos : pos + vlen]))
        pos += vlen + free
    if pos != n:
        raise ValueError("zipmap end byte is not the last byte")
    if declared != 254 and declared != len(out):  # 254: "count it yourself"
        raise ValueError(f"zipmap header says {declared} entries, found {len(out)}")
    return out


# --- stream listpack nodes ------------------------------------------------------------------


def split_stream_id(raw: bytes) -> tuple[int, int]:
    """``(ms, seq)`` of a stream entry id ``b"ms-seq"``: what orders the entries."""
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


def stream_entries(
    items: list[Element], master_ms: int, master_seq: int
) -> Iterator[tuple[bytes, tuple[tuple[bytes, bytes], ...]]]:
    """The live entries of one stream listpack node (master entry first, then entries)."""

    def num(i: int) -> int:
        v = items[i]
        if not isinstance(v, int):
            raise ValueError(f"expected an integer, found {v!r}")
        return v

    n_master = num(2)
    master_fields = [int_bytes(items[3 + j]) for j in range(n_master)]
    pos = 3 + n_master
    if num(pos) != 0:
        raise ValueError("master entry terminator is not 0")
    pos += 1
    while pos < len(items):
        flags = num(pos)
        entry_id = f"{master_ms + num(pos + 1)}-{master_seq + num(pos + 2)}".encode()
        pos += 3
        if flags & 2:  # SAMEFIELDS: values only, fields from the master entry
            values = [int_bytes(items[pos + j]) for j in range(n_master)]
            if len(values) != n_master:
                raise ValueError("stream entry shorter than the master fields")
            pairs = tuple(zip(master_fields, values, strict=True))
            pos += n_master
        else:
            n_fields = num(pos)
            pos += 1
            flat = [int_bytes(v) for v in items[pos : pos + 2 * n_fields]]
            if len(flat) != 2 * n_fields:
                raise ValueError("stream entry past the end of its listpack")
            pairs = tuple(zip(flat[0::2], flat[1::2], strict=True))
            pos += 2 * n_fields
        num(pos)  # lp-count of the entry
        pos += 1
        if not flags & 1:  # not DELETED
            yield entry_id, pairs
