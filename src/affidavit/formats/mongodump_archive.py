"""Reader of ``mongodump --archive`` files (gzip-compressed or not).

Byte layout (mongo-tools ``common/archive``; see ``docs/formats/logical-values.md``)::

    archive   = magic header *collection-metadata terminator *(segment | eof-block)
    magic     = 6d e2 99 81            (int32 0x8199e26d, little-endian)
    header    = BSON {concurrent_collections, version "0.1", server_version, tool_version}
    collection-metadata = BSON {db, collection, metadata (ExtJSON text), size}
    terminator = ff ff ff ff           (int32 -1)
    segment   = BSON {db, collection, EOF: false, CRC: 0} 1*document terminator
    eof-block = BSON {db, collection, EOF: true, CRC: int64} terminator

Documents of different namespaces interleave (mongodump dumps collections in parallel). The
``CRC`` of a namespace's EOF block is the CRC-64/ECMA (Go ``hash/crc64`` with the ECMA table,
i.e. CRC-64/XZ) over the bytes of all its documents in order; it is verified when
``verify_crc`` is on (the default). That CRC runs in pure Python at about 20-40 MB/s, the
dominant cost of reading an archive; ``verify_crc=False`` skips it.

Memory stays bounded whatever the interleaving: :meth:`ArchiveReader.records` re-scans the
archive once per dataset (skipping other namespaces' documents without decoding them), and
:meth:`ArchiveReader.iter_all` yields ``(dataset, raw document)`` for all datasets in one pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import anycrc
import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON

from affidavit.errors import FormatError, NotFound
from affidavit.formats.base import (
    GZIP_MAGIC,
    TERMINATOR,
    BsonFramer,
    RecordReader,
    open_binary,
)
from affidavit.models.records import RecordEncoding

ARCHIVE_MAGIC: Final = b"\x6d\xe2\x99\x81"  # int32 0x8199e26d, little-endian
_DECODE_OPTIONS: Final[CodecOptions[dict[str, Any]]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)


# --- CRC-64/ECMA as Go's hash/crc64 computes it (reflected, init and xorout all ones) -------

_CRC64_XZ: Final = anycrc.Model("CRC64-XZ")  # Go's hash/crc64 with the ECMA table


def crc64_update(crc: int, data: bytes) -> int:
    """Continue a CRC-64/ECMA (Go ``crc64.Update`` with the ECMA table) over ``data``, computed
    by the C library ``anycrc``."""
    return int(_CRC64_XZ.calc(data, crc))


# --- parsing ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Namespace:
    name: str
    docs: int = 0
    crc: int = 0
    eof: bool = False
    first_offset: int = -1


@dataclass(frozen=True, slots=True)
class ArchivePrelude:
    """What precedes the data: the archive header and the declared namespaces."""

    header: dict[str, Any]
    namespaces: tuple[str, ...]  # ``db.collection``; the oplog is ``.oplog`` (db "")
    data_offset: int
    metadata: dict[str, str] = field(default_factory=dict)  # namespace -> metadata JSON

    @property
    def data_namespaces(self) -> tuple[str, ...]:
        """The namespaces whose documents the archive holds: the declared ones, except that
        a time-series collection ``db.c`` (metadata ``"type": "timeseries"``) is stored as
        its bucket collection ``db.system.buckets.c``, as mongodump writes it."""
        out = []
        for name in self.namespaces:
            if _metadata_type(self.metadata.get(name, "")) == "timeseries":
                db, coll = name.split(".", 1)
                out.append(f"{db}.system.buckets.{coll}")
            else:
                out.append(name)
        return tuple(out)


def _metadata_type(text: str) -> str | None:
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None  # e.g. TOOLS-2455 archives: unparseable metadata, data still readable
    kind = doc.get("type") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) else None


def _namespace(doc: dict[str, Any], framer: BsonFramer, offset: int) -> str:
    db, coll = doc.get("db"), doc.get("collection")
    if not isinstance(db, str) or not isinstance(coll, str):
        raise framer.error("archive block header lacks string db/collection", offset)
    return f"{db}.{coll}"


def _decode(raw: bytes, framer: BsonFramer, offset: int, what: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = bson.decode(raw, _DECODE_OPTIONS)
    except (InvalidBSON, ValueError, OverflowError) as exc:
        raise framer.error(f"malformed {what} ({exc})", offset) from exc
    return doc


def _read_prelude(framer: BsonFramer) -> ArchivePrelude:
    magic = framer.read_exact(4, "archive magic number")
    if magic != ARCHIVE_MAGIC:
        raise framer.error(
            f"not a mongodump archive (bad magic {magic.hex()}, expected {ARCHIVE_MAGIC.hex()})",
            0,
        )
    offset = framer.offset
    raw = framer.next_document()
    if raw is None or raw == TERMINATOR:
        raise framer.error("truncated archive: no header after the magic number", offset)
    header = _decode(raw, framer, offset, "archive header")
    namespaces: list[str] = []
    metadata: dict[str, str] = {}
    while True:
        offset = framer.offset
        raw = framer.next_document(allow_terminator=True)
        if raw is None:
            raise framer.error("truncated archive: prelude has no terminator", offset)
        if raw == TERMINATOR:
            break
        doc = _decode(raw, framer, offset, "collection metadata")
        name = _namespace(doc, framer, offset)
        if name in metadata:
            raise framer.error(f"namespace {name} is declared twice", offset)
        namespaces.append(name)
        text = doc.get("metadata", "")
        metadata[name] = text if isinstance(text, str) else ""
    return ArchivePrelude(
        header=header,
        namespaces=tuple(namespaces),
        data_offset=framer.offset,
        metadata=metadata,
    )


def _is_oplog(name: str) -> bool:
    return name == ".oplog"


class ArchiveReader(RecordReader):
    """A ``mongodump --archive`` file, plain or gzip (detected by the magic ``1f 8b``).

    Datasets are the namespaces declared in the archive's prelude (``db.coll``), without the
    oplog (``.oplog``) unless ``include_oplog``, and without ``system.*`` collections unless
    ``include_system`` — as :class:`~affidavit.formats.mongodump.MongodumpDirReader` does.
    Documents are checked like the ``.bson`` reader's (framing, then pymongo's full decode),
    every namespace must end with its EOF block, and its CRC is verified (``verify_crc``).
    """

    name: ClassVar[str] = "mongodump-archive"
    encoding: ClassVar[RecordEncoding] = RecordEncoding.BSON
    one_pass: ClassVar[bool] = True

    def __init__(
        self,
        path: Path,
        *,
        include_system: bool = False,
        include_oplog: bool = False,
        verify_crc: bool = True,
        validate_documents: bool = True,
    ) -> None:
        super().__init__(path)
        self.include_system = include_system
        self.include_oplog = include_oplog
        self.verify_crc = verify_crc
        self.validate_documents = validate_documents

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            with path.open("rb") as f:
                head = f.read(4)
            if head[:2] == GZIP_MAGIC:
                with open_binary(path) as stream:
                    head = stream.read(4)
        except (OSError, EOFError, FormatError):
            return False
        return head == ARCHIVE_MAGIC

    def prelude(self) -> ArchivePrelude:
        """The archive header and declared namespaces (reads only the start of the file)."""
        with open_binary(self.path) as stream:
            return _read_prelude(BsonFramer(stream, source=str(self.path)))

    def _wanted(self, name: str) -> bool:
        if _is_oplog(name):
            return self.include_oplog
        coll = name.split(".", 1)[1]
        return self.include_system or not coll.startswith("system.")

    def datasets(self) -> list[str]:
        return sorted(n for n in self.prelude().data_namespaces if self._wanted(n))

    def records(self, dataset: str) -> Iterator[bytes]:
        """The documents of ``dataset`` in archive order; re-scans the whole archive (other
        namespaces' documents are framed and CRC-checked only for this one)."""
        if dataset not in self.datasets():
            raise NotFound(f"{self.path} has no dataset {dataset!r}")
        return (doc for _, doc in self._scan(frozenset({dataset})))

    def iter_all(self) -> Iterator[tuple[str, bytes]]:
        """``(dataset, raw document)`` for every dataset, in one pass, in archive order."""
        return self._scan(None)

    def check_framing_only(self) -> None:
        self.validate_documents = False

    def find_defect(self, dataset: str | None) -> None:
        relaxed, self.validate_documents = self.validate_documents, True
        try:
            for _ in self._scan(None if dataset is None else frozenset({dataset})):
                pass
        finally:
            self.validate_documents = relaxed

    def counts(self) -> dict[str, int]:
        """Document count per namespace (all of them, oplog and ``system.*`` included)."""
        out: dict[str, int] = {}
        with open_binary(self.path) as stream:
            framer = BsonFramer(stream, source=str(self.path))
            for ns, _raw in self._blocks(framer, want=None, everything=True):
                out[ns] = out.get(ns, 0) + 1
        return out

    def _scan(self, want: frozenset[str] | None) -> Iterator[tuple[str, bytes]]:
        with open_binary(self.path) as stream:
            framer = BsonFramer(stream, source=str(self.path))
            yield from self._blocks(framer, want=want, everything=False)

    def _blocks(
        self, framer: BsonFramer, *, want: frozenset[str] | None, everything: bool
    ) -> Iterator[tuple[str, bytes]]:
        prelude = _read_prelude(framer)
        declared = set(prelude.data_namespaces)
        state: dict[str, _Namespace] = {}
        verify = self.verify_crc
        validate = self.validate_documents

        def tracked(name: str) -> bool:
            # the CRC is computed for every namespace whose documents are read for the caller
            return everything or want is None or name in want

        while True:
            offset = framer.offset
            raw = framer.next_document(allow_terminator=True)
            if raw is None:
                break
            if raw == TERMINATOR:
                raise framer.error("stray terminator where a block header belongs", offset)
            header = _decode(raw, framer, offset, "namespace header")
            name = _namespace(header, framer, offset)
            ns = state.setdefault(name, _Namespace(name))
            if ns.eof:
                raise framer.error(f"block for namespace {name} after its EOF block", offset)
            if header.get("EOF") is True:
                end = framer.offset
                if framer.next_document(allow_terminator=True) != TERMINATOR:
                    raise framer.error(f"EOF block of {name} is not followed by a terminator", end)
                ns.eof = True
                stored = header.get("CRC", 0)
                if verify and isinstance(stored, int) and tracked(name):
                    if stored < 0:
                        stored += 1 << 64  # Go writes the uint64 as a signed int64
                    if stored != ns.crc:
                        raise framer.error(
                            f"CRC mismatch for namespace {name}: EOF block says {stored:#018x}, "
                            f"documents give {ns.crc:#018x}",
                            offset,
                        )
                continue
            selected = (
                everything
                or (want is None and self._wanted(name))
                or (want is not None and name in want)
            )
            check_crc = verify and tracked(name)
            while True:
                doc_offset = framer.offset
                doc = framer.next_document(allow_terminator=True)
                if doc is None:
                    raise framer.error(
                        f"truncated archive: data block of {name} has no terminator", doc_offset
                    )
                if doc == TERMINATOR:
                    break
                ns.docs += 1
                if check_crc:
                    ns.crc = crc64_update(ns.crc, doc)
                if selected:
                    if validate:
                        _decode(doc, framer, doc_offset, "BSON document")
                    yield name, doc
        missing = sorted(n for n in declared if n not in state or not state[n].eof)
        if missing:
            raise framer.error(
                f"truncated archive: no EOF block for namespace(s) {', '.join(missing)}"
            )
