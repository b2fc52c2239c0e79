"""The RDB :class:`~affidavit.formats.base.RecordReader` (:class:`RdbReader`) and the choice
of path for its fingerprint pass (:meth:`RdbReader.iter_pairs`) and its key counts: the
compiled module ``_native`` (``_native.c``) when it is built and not switched off, the general
Python parser (:mod:`affidavit.formats.rdb.parser`) for every record the compiled module
leaves, and for every record when it is not there. Records themselves (:meth:`RdbReader.records`,
:meth:`RdbReader.iter_all`) always come from the general path.

The compiled module is the package's ``rdb._NATIVE``, read at each pass (tests and
benchmarks switch it off by setting it to None; ``AFFIDAVIT_PURE_PYTHON=1`` keeps it
unloaded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Final, Self

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import NotFound
from affidavit.formats import rdb
from affidavit.formats.base import RecordReader
from affidavit.formats.rdb.parser import MAGIC, VALKEY_MAGIC, _Cursor, _Parser, _Scan
from affidavit.models.records import RecordEncoding, RedisRecord

#: the canonical record encoder of a Redis key (``redis_codec.encode_redis_record``)
Encoder = Callable[[RedisRecord], tuple[bytes, bytes]]

#: the most bytes the compiled path buffers ahead of one record before leaving it to the
#: general path (which reads any size in bounded chunks)
_NATIVE_AHEAD: Final = 64 << 20


def _pairs(
    parser: _Parser, hasher: RecordHasher, encode: Encoder, batch: int
) -> Iterator[tuple[str, bytes, list[bytes]]]:
    """``(dataset, pairs, keys)`` batches of at most ``batch`` live keys of one dataset, in
    file order: ``pairs`` holds ``hasher``'s ``key_hash || record_hash`` of each key's
    canonical record ``encode(record)``, concatenated, in the order of ``keys``.

    The compiled module (``rdb._NATIVE``) parses, encodes and hashes the common records
    straight from the input buffer; it stops before anything else (another opcode or
    encoding, damage, a record that runs past the buffer: that one is first retried with a
    larger buffer, at most :data:`_NATIVE_AHEAD` bytes ahead), which the general path then
    reads, one opcode, through :meth:`_Parser.step`. Without it this is
    :meth:`_Parser.records` through ``encode`` and ``hasher``.
    """
    native = rdb._NATIVE
    if native is None:
        yield from _python_pairs(parser, hasher, encode, batch)
        return
    with parser.opened() as inp:
        cur = _Cursor()
        as_of = parser.as_of_ms
        tag = hasher.tag
        scan = native.scan
        more, full = native.MORE, native.FULL
        keys: list[bytes] = []
        chunks: list[bytes] = []
        while True:
            buf, start, end = inp.window()
            pos, cur.expire, status, made_keys, made_pairs = scan(
                buf, start, end, cur.expire, as_of, tag, batch - len(keys)
            )
            inp.advance_to(pos)
            if made_keys:
                cur.live += len(made_keys)
                keys += made_keys
                chunks.append(made_pairs)
                if len(keys) >= batch:
                    yield cur.label, b"".join(chunks), keys
                    keys, chunks = [], []
            if status == full:
                continue
            if status == more and inp.widen(_NATIVE_AHEAD):
                continue
            # the general path: one opcode
            label = cur.label
            record = parser.step(cur)
            if record is not None:
                key, value = encode(record)
                keys.append(key)
                chunks.append(hasher.pair(key, value))
            if keys and (cur.done or cur.label != label or len(keys) >= batch):
                yield label, b"".join(chunks), keys
                keys, chunks = [], []
            if cur.done:
                return


def _python_pairs(
    parser: _Parser, hasher: RecordHasher, encode: Encoder, batch: int
) -> Iterator[tuple[str, bytes, list[bytes]]]:
    """:func:`_pairs` through the general path alone."""
    label = ""
    records: list[tuple[bytes, bytes]] = []
    for dataset, record in parser.records():
        if dataset != label or len(records) >= batch:
            if records:
                yield label, b"".join(hasher.pairs(records)), [k for k, _ in records]
            records = []
            label = dataset
        records.append(encode(record))
    if records:
        yield label, b"".join(hasher.pairs(records)), [k for k, _ in records]


class RdbReader(RecordReader):
    """A Redis RDB file (versions 1..12): datasets ``db0``, ``db1``, ... that hold keys.

    ``as_of_ms`` is the reference time of the load semantics (keys and hash fields that
    expired before it are dropped, as ``redis-server`` does when it loads the file); default:
    the wall clock when the reader is created. ``None`` cannot be passed to mean "never"; pass
    ``keep_expired=True`` to keep every key whatever its expiry.

    ``feed``: the file is still being written (an RDB streaming from a server into a spool):
    ``feed()`` appends its next part and returns True, or returns False once it is complete.
    The first pass reads the file as it grows (feeding when it needs more), so that parsing
    overlaps the transfer; its checks and results are those of the complete file.
    """

    name: ClassVar[str] = "rdb"
    encoding: ClassVar[RecordEncoding] = RecordEncoding.REDIS
    one_pass: ClassVar[bool] = True
    fused_pairs: ClassVar[bool] = True

    @classmethod
    def as_of(cls, path: Path, *, captured_at_ms: int) -> Self:
        """The RDB as the server held it at ``captured_at_ms``: keys that expired after that
        moment are still there."""
        return cls(path, as_of_ms=captured_at_ms)

    def __init__(
        self,
        path: Path,
        *,
        as_of_ms: int | None = None,
        keep_expired: bool = False,
        feed: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(path)
        self.as_of_ms: int | None = (
            None if keep_expired else (as_of_ms if as_of_ms is not None else _now_ms())
        )
        self._scan: _Scan | None = None
        self._feed = feed

    def _feed_once(self) -> bool:
        """``feed`` until it says the file is complete; False from then on."""
        if self._feed is None:
            return False
        if self._feed():
            return True
        self._feed = None
        return False

    def _parser(self) -> _Parser:
        return _Parser(
            self.path,
            as_of_ms=self.as_of_ms,
            on_complete=self._completed,
            feed=None if self._feed is None else self._feed_once,
        )

    @classmethod
    def sniff(cls, path: Path) -> bool:
        try:
            with path.open("rb") as fh:
                head = fh.read(9)
        except OSError:
            return False
        return head.startswith(MAGIC) or head.startswith(VALKEY_MAGIC)

    def _pass(self) -> Iterator[tuple[str, RedisRecord]]:
        return self._parser().records()

    def _completed(self, scan: _Scan) -> None:
        self._scan = scan

    def iter_all(self) -> Iterator[tuple[str, RedisRecord]]:
        """Every live key of every database as ``(dataset, record)`` in one pass over the file
        (CRC-64 checked at the end); what a backup or verification of a whole RDB needs."""
        return self._pass()

    def iter_pairs(
        self, hasher: RecordHasher, encode: Encoder, *, batch: int = 4096
    ) -> Iterator[tuple[str, bytes, list[bytes]]]:
        """Every live key of every database, hashed for a fingerprint, in one pass over the
        file (CRC-64 checked at the end): ``(dataset, pairs, keys)`` batches of at most
        ``batch`` keys of one dataset, ``pairs`` being ``hasher``'s 64-byte ``key_hash ||
        record_hash`` of each key's canonical record, concatenated in the order of ``keys``
        (what ``Accumulator.add_pairs`` takes).

        ``encode`` must be ``affidavit.formats.redis_codec.encode_redis_record`` (passed in:
        format modules do not import each other): the compiled fast path writes the same
        bytes itself, and every record it leaves to the Python parser goes through
        ``encode``. The result does not depend on which path read a record."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        return _pairs(self._parser(), hasher, encode, batch)

    def _scanned(self) -> _Scan:
        """What a complete pass learned (key counts, version), making one if none was made:
        through the compiled path when it is there (~0.3 µs per key against ~3.5 µs; its
        pairs are dropped), else the general path. Both count and refuse alike."""
        if self._scan is None:
            if rdb._NATIVE is not None:
                for _ in _pairs(self._parser(), _COUNTING_HASHER, _no_record, 4096):
                    pass
            else:
                for _ in self._pass():
                    pass
        assert self._scan is not None
        return self._scan

    @property
    def version(self) -> int:
        """The file's RDB format version."""
        return self._scanned().version

    def key_counts(self) -> dict[str, int]:
        """The number of (live) keys per dataset, read by one full pass (CRC-64 checked)."""
        keys = self._scanned().keys
        return {f"db{n}": keys[n] for n in sorted(keys)}

    def datasets(self) -> list[str]:
        return list(self.key_counts())

    def records(self, dataset: str) -> Iterator[RedisRecord]:
        """The keys of ``dataset`` as :class:`RedisRecord` values, in file order. The whole
        file is read (and its CRC-64 checked at the end) whatever the dataset."""
        names = self.datasets()
        if dataset not in names:
            raise NotFound(
                f"{self.path} has no dataset {dataset!r}",
                hint=f"it holds: {', '.join(names) or 'nothing'}",
            )
        for name, record in self._pass():
            if name == dataset:
                yield record

    def size_hint(self, dataset: str) -> int | None:
        return self.path.stat().st_size


def _now_ms() -> int:
    return int(time.time() * 1000)


#: the hasher of a pass made only to count keys (:meth:`RdbReader._scanned`): its pairs are
#: dropped, so its tag is none of the fingerprint's
_COUNTING_HASHER: Final = RecordHasher(b"affidavit-rdb-count-only")


def _no_record(record: RedisRecord) -> tuple[bytes, bytes]:
    """The encoder of a pass made only to count keys: the general path's records are read
    (and checked) in full, and need no canonical form."""
    return b"", b""
