"""The RDB record parser: the file's header, opcodes and trailer, and every value type and
encoding read through :class:`~affidavit.formats.rdb.input._Input`, one opcode at a time
(:meth:`_Parser.step`), into :class:`~affidavit.models.records.RedisRecord` values with the
load semantics of ``redis-server`` (expired keys and empty aggregates dropped, hash field
expiry folded into the value). Every defect raises ``FormatError`` naming the byte offset.

This is the general path, the one Python reading of every encoding: the compiled module
(``_native.c``, driven by :mod:`affidavit.formats.rdb.reader`) hands it every record it does
not take itself, and it alone reads a file when the compiled module is not there.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import cbor2

from affidavit.errors import FormatError
from affidavit.formats.rdb.encodings import (
    Element,
    int_bytes,
    lzf_decompress,
    parse_intset,
    parse_listpack,
    parse_ziplist,
    parse_zipmap,
    split_stream_id,
    stream_entries,
)
from affidavit.formats.rdb.input import _GrowingInput, _Input
from affidavit.models.records import RedisRecord, RedisType

MAGIC: Final = b"REDIS"
VALKEY_MAGIC: Final = b"VALKEY"
MIN_VERSION: Final = 1
MAX_VERSION: Final = 12
#: the first version whose files end with a CRC-64
CHECKSUM_SINCE: Final = 5

# opcodes
OP_SLOT_INFO: Final = 244
OP_FUNCTION2: Final = 245
OP_FUNCTION_PRE_GA: Final = 246
OP_MODULE_AUX: Final = 247
OP_IDLE: Final = 248
OP_FREQ: Final = 249
OP_AUX: Final = 250
OP_RESIZEDB: Final = 251
OP_EXPIRETIME_MS: Final = 252
OP_EXPIRETIME: Final = 253
OP_SELECTDB: Final = 254
OP_EOF: Final = 255

# value types
T_STRING: Final = 0
T_LIST: Final = 1
T_SET: Final = 2
T_ZSET: Final = 3
T_HASH: Final = 4
T_ZSET_2: Final = 5
T_MODULE_PRE_GA: Final = 6
T_MODULE_2: Final = 7
T_HASH_ZIPMAP: Final = 9
T_LIST_ZIPLIST: Final = 10
T_SET_INTSET: Final = 11
T_ZSET_ZIPLIST: Final = 12
T_HASH_ZIPLIST: Final = 13
T_LIST_QUICKLIST: Final = 14
T_STREAM_LISTPACKS: Final = 15
T_HASH_LISTPACK: Final = 16
T_ZSET_LISTPACK: Final = 17
T_LIST_QUICKLIST_2: Final = 18
T_STREAM_LISTPACKS_2: Final = 19
T_SET_LISTPACK: Final = 20
T_STREAM_LISTPACKS_3: Final = 21
T_HASH_METADATA_PRE_GA: Final = 22
T_HASH_LISTPACK_EX_PRE_GA: Final = 23
T_HASH_METADATA: Final = 24
T_HASH_LISTPACK_EX: Final = 25

_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")
_MODULE_CHARSET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def fold_field_expiry(value: bytes, expire_at_ms: int) -> bytes:
    """The value that stands for a hash field ``value`` carrying a field expiry (HFE) in a
    :class:`RedisRecord`: the deterministic CBOR of ``["hpexpireat", expire_at_ms, value]``."""
    return bytes(cbor2.dumps(["hpexpireat", expire_at_ms, value], canonical=True))


def _module_name(module_id: int) -> str:
    ident = module_id >> 10
    chars = []
    for _ in range(9):
        chars.append(_MODULE_CHARSET[ident & 63])
        ident >>= 6
    return "".join(reversed(chars))


@dataclass(slots=True)
class _Cursor:
    """Where a pass stands: the database, its live keys not yet counted in
    :attr:`_Scan.keys`, the expiry waiting for its key, and whether EOF was read."""

    db: int = 0
    label: str = "db0"
    live: int = 0
    expire: int | None = None
    done: bool = False


@dataclass(slots=True)
class _Scan:
    """What one pass over the file learned."""

    version: int = 0
    keys: dict[int, int] = field(default_factory=dict)


class _Parser:
    """One pass over an RDB file, yielding ``(dataset, record)`` for every live key;
    ``on_complete`` receives what the pass learned once it reached the end intact."""

    def __init__(
        self,
        path: Path,
        *,
        as_of_ms: int | None,
        on_complete: Callable[[_Scan], None],
        feed: Callable[[], bool] | None = None,
    ) -> None:
        self.path = path
        self.as_of_ms = as_of_ms
        self.scan = _Scan()
        self.on_complete = on_complete
        self.version = 0
        self.feed = feed
        self.inp: _Input

    @contextmanager
    def opened(self) -> Iterator[_Input]:
        """The file open as :attr:`inp`, its header read."""
        try:
            fh = self.path.open("rb")
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot open ({exc.strerror or exc})") from exc
        with fh:
            inp: _Input
            if self.feed is not None:
                inp = _GrowingInput(fh, source=str(self.path), feed=self.feed)
            else:
                inp = _Input(fh, source=str(self.path), size=os.fstat(fh.fileno()).st_size)
            self.inp = inp
            self.header()
            yield inp

    # -- primitives --

    def length(self, what: str) -> tuple[int, bool]:
        """``(value, is_encoded)``: a length, or a special string encoding tag."""
        inp = self.inp
        first = inp.byte(what)
        if first < 0x40:
            return first, False
        kind = first >> 6
        if kind == 1:
            return ((first & 0x3F) << 8) | inp.byte(what), False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return int.from_bytes(inp.read(4, what), "big"), False
        if first == 0x81:
            return int.from_bytes(inp.read(8, what), "big"), False
        raise inp.error(f"unknown length encoding 0x{first:02x} in {what}", inp.offset - 1)

    def count(self, what: str) -> int:
        value, encoded = self.length(what)
        if encoded:  # its tag is one byte
            raise self.inp.error(
                f"a string encoding where {what} was expected", self.inp.offset - 1
            )
        return value

    def string(self, what: str) -> bytes:
        inp = self.inp
        value, encoded = self.length(what)
        if not encoded:
            return inp.read(value, what)
        start = inp.offset - 1  # the encoding's tag is one byte
        if value == 0:
            return str(int.from_bytes(inp.read(1, what), "little", signed=True)).encode()
        if value == 1:
            return str(int.from_bytes(inp.read(2, what), "little", signed=True)).encode()
        if value == 2:
            return str(int.from_bytes(inp.read(4, what), "little", signed=True)).encode()
        if value == 3:
            clen = self.count(f"{what} (compressed length)")
            ulen = self.count(f"{what} (uncompressed length)")
            packed = inp.read(clen, f"{what} (LZF data)")
            if ulen > max(1 << 32, 1024 * clen):  # LZF expands at most ~ 264x
                raise inp.error(f"implausible LZF length {ulen} for {clen} bytes in {what}", start)
            try:
                return lzf_decompress(packed, ulen)
            except ValueError as exc:
                raise inp.error(f"corrupt LZF data in {what} ({exc})", start) from exc
        raise inp.error(f"unknown string encoding {value} in {what}", start)

    def blob(self, what: str, parse: Callable[[bytes], list[Element]]) -> list[Element]:
        start = self.inp.offset
        data = self.string(what)
        try:
            return parse(data)
        except (ValueError, struct.error) as exc:
            raise self.inp.error(f"corrupt {what} ({exc})", start) from exc

    def double_text(self, what: str) -> float:
        inp = self.inp
        start = inp.offset
        size = inp.byte(what)
        if size == 253:
            raise inp.error(f"NaN score in {what}", start)
        if size == 254:
            return math.inf
        if size == 255:
            return -math.inf
        text = inp.read(size, what)
        try:
            return float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise inp.error(f"malformed score {text!r} in {what}", start) from exc

    def ms_time(self, what: str) -> int:
        return int(_I64.unpack(self.inp.read(8, what))[0])

    # -- the file --

    def header(self) -> None:
        inp = self.inp
        magic = inp.header(9)
        if magic.startswith(VALKEY_MAGIC):
            raise FormatError(
                f"{inp.source}: a Valkey RDB file ({magic.decode('ascii', 'replace')}, "
                f"version {magic[6:].decode('ascii', 'replace')}); affidavit reads Redis RDB "
                f"versions {MIN_VERSION}..{MAX_VERSION}",
                hint="dump the data with a Redis-compatible RDB (or fingerprint the live Valkey "
                "server) instead",
            )
        if len(magic) < 9 or not magic.startswith(MAGIC):
            raise FormatError(
                f"{inp.source}: not a Redis RDB file (wrong magic {magic[:5]!r}, "
                "expected b'REDIS') at byte offset 0",
                hint="give a dump.rdb or the output of `redis-cli --rdb`",
            )
        digits = magic[5:9]
        if not digits.isdigit():
            raise FormatError(f"{inp.source}: malformed RDB version {digits!r} at byte offset 5")
        version = int(digits)
        if version < MIN_VERSION or version > MAX_VERSION:
            raise FormatError(
                f"{inp.source}: RDB format version {version} is not supported "
                f"(affidavit reads versions {MIN_VERSION}..{MAX_VERSION}, Redis <= 8.0)",
                hint="the file was written by a newer Redis; save it with Redis 8.0 or older, "
                "or fingerprint the live server instead",
            )
        self.version = self.scan.version = version
        inp.cover(inp.size - 8 if version >= CHECKSUM_SINCE else 0)

    def records(self) -> Iterator[tuple[str, RedisRecord]]:
        """``(dataset, record)`` for every live key, in file order."""
        with self.opened():
            cur = _Cursor()
            while True:
                made = self.step(cur)
                if cur.done:
                    return
                if made is not None:
                    yield cur.label, made

    def step(self, cur: _Cursor) -> RedisRecord | None:
        """Read one opcode: the record it makes (None for other opcodes and for keys that
        are dropped); at EOF, the trailer is checked, the pass completed and ``cur.done``
        set."""
        inp = self.inp
        at = inp.offset
        op = inp.byte("opcode")
        if op < OP_SLOT_INFO:  # a value type (every opcode is 244 or above): a key
            made = self.key_value(op, cur.expire, at)
            cur.expire = None
            if made is not None:
                cur.live += 1
            return made
        keys = self.scan.keys
        if op == OP_EOF:
            if cur.live:
                keys[cur.db] = keys.get(cur.db, 0) + cur.live
                cur.live = 0
            self.trailer()
            self.on_complete(self.scan)
            cur.done = True
        elif op == OP_SELECTDB:
            if cur.live:
                keys[cur.db] = keys.get(cur.db, 0) + cur.live
                cur.live = 0
            cur.db = self.count("database number")
            cur.label = f"db{cur.db}"
        elif op == OP_RESIZEDB:
            self.count("resize hint")
            self.count("resize hint")
        elif op == OP_AUX:
            self.string("aux field name")
            self.string("aux field value")
        elif op == OP_EXPIRETIME_MS:
            cur.expire = self.ms_time("expiry")
        elif op == OP_EXPIRETIME:
            cur.expire = int(_I32.unpack(inp.read(4, "expiry"))[0]) * 1000
        elif op == OP_IDLE:
            self.count("idle time")
        elif op == OP_FREQ:
            inp.byte("LFU frequency")
        elif op == OP_SLOT_INFO:
            for _ in range(3):
                self.count("slot info")
        elif op == OP_FUNCTION2:
            self.string("function library")
        elif op == OP_FUNCTION_PRE_GA:
            self.string("function name")
            self.string("function engine")
            if self.count("function description flag"):
                self.string("function description")
            self.string("function code")
        elif op == OP_MODULE_AUX:
            module_id = self.count("module id")
            raise inp.error(
                f"module auxiliary data of module {_module_name(module_id)!r} cannot be "
                "read (affidavit cannot certify module state)",
                at,
            )
        return None

    def trailer(self) -> None:
        inp = self.inp
        inp.settle()
        if self.version >= CHECKSUM_SINCE:
            if inp.offset != inp.size - 8:
                raise inp.error(
                    f"{inp.size - inp.offset - 8} bytes of trailing data after the EOF opcode"
                    if inp.offset < inp.size - 8
                    else "truncated file: no room for the CRC-64 after the EOF opcode"
                )
            computed = inp.checksum()
            (stored,) = _U64.unpack(inp.read(8, "CRC-64"))
            if stored not in (0, computed):
                raise inp.error(
                    f"checksum mismatch: the file's CRC-64 is {stored:016x}, its content hashes "
                    f"to {computed:016x}",
                    inp.size - 8,
                )
        elif inp.offset != inp.size:
            raise inp.error(f"{inp.size - inp.offset} bytes of trailing data after EOF")

    # -- values --

    def key_value(self, kind: int, expire: int | None, at: int) -> RedisRecord | None:
        key = self.string("key")
        made = self.value(kind, at, key)
        if made is None:
            return None
        rtype, value = made
        if expire is not None and self.as_of_ms is not None and expire < self.as_of_ms:
            return None  # already expired: redis-server drops it on load
        return RedisRecord(key=key, type=rtype, value=value, expire_at_ms=expire)

    def value(self, kind: int, at: int, key: bytes) -> tuple[RedisType, object] | None:
        """The record type and value, or None for an empty aggregate (Redis drops those)."""
        if kind == T_STRING:
            return "string", self.string("string value")
        if kind == T_LIST:
            items = tuple(self.string("list element") for _ in range(self.count("list length")))
            return ("list", items) if items else None
        if kind in (T_LIST_ZIPLIST, T_LIST_QUICKLIST, T_LIST_QUICKLIST_2):
            items = tuple(self.quicklist(kind))
            return ("list", items) if items else None
        if kind in (T_SET, T_SET_INTSET, T_SET_LISTPACK):
            if kind == T_SET:
                members = [self.string("set member") for _ in range(self.count("set size"))]
            elif kind == T_SET_INTSET:
                members = [int_bytes(v) for v in self.blob("intset", parse_intset)]  # type: ignore[arg-type]
            else:
                members = [int_bytes(v) for v in self.blob("set listpack", parse_listpack)]
            frozen = frozenset(members)
            if len(frozen) != len(members):
                raise self.inp.error(f"duplicate member in set {key!r}", at)
            return ("set", frozen) if frozen else None
        if kind in (T_ZSET, T_ZSET_2, T_ZSET_ZIPLIST, T_ZSET_LISTPACK):
            pairs = self.zset(kind)
            self.unique(pairs, "zset member", key, at)
            return ("zset", tuple(pairs)) if pairs else None
        if kind in (
            T_HASH,
            T_HASH_ZIPMAP,
            T_HASH_ZIPLIST,
            T_HASH_LISTPACK,
            T_HASH_METADATA_PRE_GA,
            T_HASH_METADATA,
            T_HASH_LISTPACK_EX_PRE_GA,
            T_HASH_LISTPACK_EX,
        ):
            fields = self.hash(kind)
            self.unique(fields, "hash field", key, at)
            return ("hash", tuple(fields)) if fields else None
        if kind in (T_STREAM_LISTPACKS, T_STREAM_LISTPACKS_2, T_STREAM_LISTPACKS_3):
            return "stream", self.stream(kind)
        if kind in (T_MODULE_PRE_GA, T_MODULE_2):
            module_id = self.count("module id")
            raise self.inp.error(
                f"module type {_module_name(module_id)!r} cannot be read (key {key!r}): "
                "affidavit cannot certify module values",
                at,
            )
        raise self.inp.error(f"unknown opcode or value type {kind}", at)

    def unique(self, pairs: list[tuple[bytes, object]], what: str, key: bytes, at: int) -> None:
        names = {p[0] for p in pairs}
        if len(names) != len(pairs):
            raise self.inp.error(f"duplicate {what} in key {key!r}", at)

    def quicklist(self, kind: int) -> Iterator[bytes]:
        if kind == T_LIST_ZIPLIST:
            for v in self.blob("list ziplist", parse_ziplist):
                yield int_bytes(v)
            return
        nodes = self.count("quicklist length")
        for _ in range(nodes):
            if kind == T_LIST_QUICKLIST:
                entries = self.blob("quicklist ziplist", parse_ziplist)
            else:
                container = self.count("quicklist container")
                if container == 1:  # PLAIN: one big element
                    yield self.string("quicklist element")
                    continue
                if container != 2:
                    raise self.inp.error(f"unknown quicklist container {container}")
                entries = self.blob("quicklist listpack", parse_listpack)
            for v in entries:  # an empty node is skipped, as redis-server does
                yield int_bytes(v)

    def zset(self, kind: int) -> list[tuple[bytes, object]]:
        if kind in (T_ZSET, T_ZSET_2):
            out: list[tuple[bytes, object]] = []
            for _ in range(self.count("zset size")):
                member = self.string("zset member")
                if kind == T_ZSET:
                    score = self.double_text("zset score")
                else:
                    score = _DOUBLE.unpack(self.inp.read(8, "zset score"))[0]
                    if math.isnan(score):
                        raise self.inp.error("NaN zset score")
                out.append((member, score))
            return out
        parse = parse_ziplist if kind == T_ZSET_ZIPLIST else parse_listpack
        start = self.inp.offset
        items = self.blob("zset ziplist/listpack", parse)
        if len(items) % 2:
            raise self.inp.error("zset ziplist/listpack with an odd number of entries", start)
        pairs: list[tuple[bytes, object]] = []
        for i in range(0, len(items), 2):
            raw = items[i + 1]
            if isinstance(raw, int):
                score = float(raw)
            else:
                try:
                    score = float(raw.decode("ascii"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise self.inp.error(f"malformed zset score {raw!r}", start) from exc
                if math.isnan(score):
                    raise self.inp.error("NaN zset score", start)
            pairs.append((int_bytes(items[i]), score))
        return pairs

    def hash(self, kind: int) -> list[tuple[bytes, object]]:
        inp = self.inp
        if kind == T_HASH:
            return [
                (self.string("hash field"), self.string("hash value"))
                for _ in range(self.count("hash size"))
            ]
        if kind == T_HASH_ZIPMAP:
            start = inp.offset
            data = self.string("hash zipmap")
            try:
                return list(parse_zipmap(data))
            except ValueError as exc:
                raise inp.error(f"corrupt hash zipmap ({exc})", start) from exc
        if kind in (T_HASH_ZIPLIST, T_HASH_LISTPACK):
            start = inp.offset
            parse = parse_ziplist if kind == T_HASH_ZIPLIST else parse_listpack
            items = self.blob("hash ziplist/listpack", parse)
            if len(items) % 2:
                raise inp.error("hash ziplist/listpack with an odd number of entries", start)
            return [(int_bytes(items[i]), int_bytes(items[i + 1])) for i in range(0, len(items), 2)]
        if kind in (T_HASH_METADATA_PRE_GA, T_HASH_METADATA):
            base = self.ms_time("hash minimum field expiry") if kind == T_HASH_METADATA else 0
            out: list[tuple[bytes, object]] = []
            for _ in range(self.count("hash size")):
                ttl = self.count("hash field expiry")
                name = self.string("hash field")
                value = self.string("hash value")
                if ttl and kind == T_HASH_METADATA:
                    ttl = ttl + base - 1
                self.add_field(out, name, value, ttl or None)
            return out
        # T_HASH_LISTPACK_EX(_PRE_GA): [min expiry], listpack of field, value, expiry (0: none)
        if kind == T_HASH_LISTPACK_EX:
            self.ms_time("hash minimum field expiry")
        start = inp.offset
        items = self.blob("hash listpack-ex", parse_listpack)
        if len(items) % 3:
            raise inp.error("hash listpack-ex entries are not triplets", start)
        out = []
        for i in range(0, len(items), 3):
            ttl_raw = items[i + 2]
            if not isinstance(ttl_raw, int) or ttl_raw < 0:
                raise inp.error(f"malformed hash field expiry {ttl_raw!r}", start)
            self.add_field(out, int_bytes(items[i]), int_bytes(items[i + 1]), ttl_raw or None)
        return out

    def add_field(
        self, out: list[tuple[bytes, object]], name: bytes, value: bytes, ttl: int | None
    ) -> None:
        if ttl is None:
            out.append((name, value))
        elif self.as_of_ms is None or ttl >= self.as_of_ms:
            out.append((name, fold_field_expiry(value, ttl)))
        # else: the field expired before as_of_ms; redis-server drops it on load

    def stream(self, kind: int) -> tuple[tuple[bytes, tuple[tuple[bytes, bytes], ...]], ...]:
        inp = self.inp
        entries: list[tuple[bytes, tuple[tuple[bytes, bytes], ...]]] = []
        for _ in range(self.count("stream listpack count")):
            start = inp.offset
            node_key = self.string("stream node key")
            if len(node_key) != 16:
                raise inp.error("stream node key is not 16 bytes", start)
            master_ms, master_seq = struct.unpack(">QQ", node_key)
            items = self.blob("stream listpack", parse_listpack)
            try:
                entries.extend(stream_entries(items, master_ms, master_seq))
            except (ValueError, IndexError, TypeError) as exc:
                raise inp.error(f"corrupt stream listpack ({exc})", start) from exc
        self.count("stream length")
        self.count("stream last id")
        self.count("stream last id")
        if kind >= T_STREAM_LISTPACKS_2:
            for _ in range(5):  # first id (2), max deleted id (2), entries added
                self.count("stream metadata")
        for _ in range(self.count("consumer group count")):
            self.string("consumer group name")
            self.count("consumer group last id")
            self.count("consumer group last id")
            if kind >= T_STREAM_LISTPACKS_2:
                self.count("consumer group entries read")
            for _ in range(self.count("pending entry count")):
                inp.read(16, "pending entry id")
                inp.read(8, "pending entry delivery time")
                self.count("pending entry delivery count")
            for _ in range(self.count("consumer count")):
                self.string("consumer name")
                inp.read(8, "consumer seen time")
                if kind >= T_STREAM_LISTPACKS_3:
                    inp.read(8, "consumer active time")
                for _ in range(self.count("consumer pending count")):
                    inp.read(16, "consumer pending entry id")
        for a, b in itertools.pairwise(entries):
            if split_stream_id(a[0]) >= split_stream_id(b[0]):
                raise inp.error("stream entries are not in id order")
        return tuple(entries)
