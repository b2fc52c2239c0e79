"""Readers of mongodump's directory output: one ``.bson[.gz]`` file, or a whole dump folder.

A ``.bson`` file is a plain concatenation of BSON documents. Each record is cut by its int32
little-endian length prefix (checked before anything is read: ``5 <= length <= 16 MiB +
16 KiB``), must be fully present and end with NUL, and is then checked for well-formedness by
pymongo's C decoder (``bson.decode``: every element's type, length, UTF-8 and nesting). That
deep check costs about 4 µs per 1 KiB document; pass ``validate="framing"`` to skip it (the
``exact`` profile then still detects any changed byte, since it hashes the raw bytes, and the
``logical`` codec validates in full anyway). gzip files (``.bson.gz``, or any file starting
with the gzip magic) are streamed through :mod:`gzip`; corrupt or truncated gzip raises
``FormatError``. Every error names the file and the (uncompressed) byte offset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Final, Literal
from urllib.parse import unquote

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON

from affidavit.errors import FormatError, NotFound
from affidavit.formats.base import (
    BsonFramer,
    RecordReader,
    gzipped,
    open_binary,
)
from affidavit.input_files import is_regular_entry
from affidavit.models.records import RecordEncoding

Validation = Literal["full", "framing"]

_SUFFIXES: Final = (".bson.gz", ".bson")
_METADATA_SUFFIXES: Final = (".metadata.json", ".metadata.json.gz")
_MAX_METADATA_BYTES: Final = 16 * 1024 * 1024
#: files of a dump folder that are never datasets
_NOT_DATASETS: Final = frozenset({"oplog", "system.indexes", "system.profile"})
#: full-depth decoding that accepts every representable datetime (years < 1 or > 9999 too)
_DECODE_OPTIONS: Final[CodecOptions[dict[str, Any]]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)


def _stem(path: Path) -> str | None:
    """``coll`` for ``coll.bson`` / ``coll.bson.gz``, else None."""
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _metadata_path(bson_path: Path, stem: str) -> Path | None:
    for suffix in _METADATA_SUFFIXES:
        candidate = bson_path.with_name(stem + suffix)
        if is_regular_entry(candidate):
            return candidate
    return None


def _collection_name(metadata: Path | None, stem: str) -> str:
    """The collection name: ``collectionName`` from the metadata (mongodump truncates long
    names in file names and records the real one there), else the URL-unescaped file stem."""
    if metadata is not None:
        try:
            with open_binary(metadata) as stream:
                text = stream.read(_MAX_METADATA_BYTES + 1)
            doc = json.loads(text) if len(text) <= _MAX_METADATA_BYTES else None
        except (FormatError, ValueError, OSError, EOFError, RecursionError):
            doc = None  # metadata is advisory here; a broken one does not hide the data
        if isinstance(doc, dict) and isinstance(doc.get("collectionName"), str):
            return str(doc["collectionName"])
    return unquote(stem)


def iter_bson_file(path: Path, *, validate: Validation = "full") -> Iterator[bytes]:
    """The raw documents of a ``.bson[.gz]`` file in order (see the module docstring)."""
    with open_binary(path) as stream:
        framer = BsonFramer(stream, source=str(path))
        while True:
            start = framer.offset
            doc = framer.next_document()
            if doc is None:
                return
            if validate == "full":
                try:
                    bson.decode(doc, _DECODE_OPTIONS)
                except (InvalidBSON, ValueError, OverflowError) as exc:
                    raise framer.error(f"malformed BSON document ({exc})", start) from exc
            yield doc


def iter_bson_batches(path: Path) -> Iterator[tuple[bytes, list[int]]]:
    """The documents of a ``.bson[.gz]`` file in batches ``(buffer, start offsets)``, framing
    checked only (callers check each document in full, see ``bson_codec.exact_record_checked``)."""
    with open_binary(path) as stream:
        framer = BsonFramer(stream, source=str(path))
        while (batch := framer.next_batch(1 << 20)) is not None:
            yield batch


class BsonFileReader(RecordReader):
    """One mongodump ``.bson`` or ``.bson.gz`` file: a single dataset.

    The dataset is ``db.coll`` when the file sits in a mongodump database folder (a sibling
    ``coll.metadata.json[.gz]`` exists; ``db`` is the folder's name), else the file's stem.
    """

    name: ClassVar[str] = "bson"
    encoding: ClassVar[RecordEncoding] = RecordEncoding.BSON

    def __init__(self, path: Path, *, validate: Validation = "full") -> None:
        super().__init__(path)
        self.validate: Validation = validate

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_file() and _stem(path) is not None

    def _dataset(self) -> str:
        stem = _stem(self.path)
        if stem is None:
            return self.path.stem
        metadata = _metadata_path(self.path, stem)
        if metadata is None:
            return stem
        return f"{unquote(self.path.resolve().parent.name)}.{_collection_name(metadata, stem)}"

    def datasets(self) -> list[str]:
        if not self.path.is_file():
            raise FormatError(f"{self.path}: not a file")
        return [self._dataset()]

    def records(self, dataset: str) -> Iterator[bytes]:
        if dataset != self._dataset():
            raise NotFound(f"{self.path} holds dataset {self._dataset()!r}, not {dataset!r}")
        return iter_bson_file(self.path, validate=self.validate)

    def record_batches(self, dataset: str) -> Iterator[tuple[bytes, list[int]]]:
        """:meth:`records` in framed batches (see :func:`iter_bson_batches`)."""
        if dataset != self._dataset():
            raise NotFound(f"{self.path} holds dataset {self._dataset()!r}, not {dataset!r}")
        return iter_bson_batches(self.path)

    def dataset_file(self, dataset: str) -> Path | None:
        if dataset != self._dataset():
            raise NotFound(f"{self.path} holds dataset {self._dataset()!r}, not {dataset!r}")
        return None if gzipped(self.path) else self.path

    def find_defect(self, dataset: str | None) -> None:
        for _ in iter_bson_file(self.path, validate="full"):
            pass

    def check_framing_only(self) -> None:
        if self.validate == "full":
            self.validate = "framing"

    def size_hint(self, dataset: str) -> int | None:
        return None if self.path.name.endswith(".gz") else self.path.stat().st_size


class MongodumpDirReader(RecordReader):
    """A mongodump output folder: ``DB/COLL.bson[.gz]`` (+ ``COLL.metadata.json[.gz]``).

    Datasets are ``db.coll``. Skipped: the top-level ``oplog.bson`` and ``prelude.json``,
    files directly in the root (mongorestore ignores them too), ``system.indexes`` (the index
    list of pre-3.0 dumps, not a collection), ``system.profile``, and every other
    ``system.*`` collection unless ``include_system=True`` (then e.g. ``admin.system.users``
    and the bucket collections of time-series, ``system.buckets.*``, are read). When the
    folder holds ``.bson`` files itself and no database sub-folders, it is read as a single
    database folder named after itself (``mongodump --db D --out X`` then pointing at X/D).
    A collection's file or metadata that is no regular file (a named pipe, a device, a link
    to nothing) raises ``FormatError`` naming it: no collection is ever left out silently.
    """

    name: ClassVar[str] = "mongodump"
    encoding: ClassVar[RecordEncoding] = RecordEncoding.BSON

    def __init__(
        self, path: Path, *, include_system: bool = False, validate: Validation = "full"
    ) -> None:
        super().__init__(path)
        self.include_system = include_system
        self.validate: Validation = validate

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if not path.is_dir():
            return False
        return any(_stem(p) for p in path.glob("*/*.bson*")) or any(
            _stem(p) for p in path.glob("*.bson*")
        )

    def dataset_files(self) -> dict[str, Path]:
        """Each dataset's ``.bson[.gz]`` file, as the reader names datasets (folder name
        unescaped, ``collectionName`` from the metadata)."""
        return dict(self._files())

    def _files(self) -> dict[str, Path]:
        if not self.path.is_dir():
            raise FormatError(f"{self.path}: not a folder")
        db_dirs = sorted(
            d for d in self.path.iterdir() if d.is_dir() and any(map(_stem, d.iterdir()))
        )
        if not db_dirs:
            db_dirs = [self.path]
        found: dict[str, Path] = {}
        for db_dir in db_dirs:
            db = unquote(db_dir.resolve().name)
            for file in sorted(db_dir.iterdir()):
                stem = _stem(file)
                if stem is None or not is_regular_entry(file):
                    continue
                coll = _collection_name(_metadata_path(file, stem), stem)
                if coll in _NOT_DATASETS:
                    continue
                if coll.startswith("system.") and not self.include_system:
                    continue
                dataset = f"{db}.{coll}"
                if dataset in found:
                    raise FormatError(
                        f"{self.path}: dataset {dataset} is stored twice "
                        f"({found[dataset].name} and {file.name})"
                    )
                found[dataset] = file
        return found

    def datasets(self) -> list[str]:
        return sorted(self._files())

    def records(self, dataset: str) -> Iterator[bytes]:
        files = self._files()
        if dataset not in files:
            raise NotFound(f"{self.path} has no dataset {dataset!r}")
        return iter_bson_file(files[dataset], validate=self.validate)

    def record_batches(self, dataset: str) -> Iterator[tuple[bytes, list[int]]]:
        """:meth:`records` in framed batches (see :func:`iter_bson_batches`)."""
        files = self._files()
        if dataset not in files:
            raise NotFound(f"{self.path} has no dataset {dataset!r}")
        return iter_bson_batches(files[dataset])

    def dataset_file(self, dataset: str) -> Path | None:
        files = self._files()
        if dataset not in files:
            raise NotFound(f"{self.path} has no dataset {dataset!r}")
        return None if gzipped(files[dataset]) else files[dataset]

    def find_defect(self, dataset: str | None) -> None:
        files = self._files()
        for name in [dataset] if dataset is not None else sorted(files):
            for _ in iter_bson_file(files[name], validate="full"):
                pass

    def check_framing_only(self) -> None:
        if self.validate == "full":
            self.validate = "framing"

    def size_hint(self, dataset: str) -> int | None:
        file = self._files().get(dataset)
        if file is None or file.name.endswith(".gz"):
            return None
        return file.stat().st_size
