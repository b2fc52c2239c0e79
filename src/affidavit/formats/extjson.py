"""Reader of JSON Lines in MongoDB Extended JSON v2 (``mongoexport --jsonFormat=canonical``).

One document per line; records are the raw line bytes without the line ending (``\\n`` or
``\\r\\n``); blank lines are skipped; a UTF-8 byte-order mark on the first line is dropped.
Validation is split by cost: at read time each line is checked to *look like* a JSON object
(first non-blank byte ``{``, last ``}``; ``FormatError`` names the file and line number);
the full JSON parse and the Extended JSON type checks happen once, in the codec
(:func:`affidavit.formats.bson_codec.logical_record_from_extjson`), so no line is parsed twice.
gzip input (``.json.gz``) is streamed. A line longer than 64 MiB raises ``FormatError``
(bounded memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Final

from affidavit.errors import FormatError, NotFound
from affidavit.formats.base import RecordReader, open_binary
from affidavit.models.records import RecordEncoding

_SUFFIXES: Final = (".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl", ".json", ".ndjson")
#: longest accepted line: a 16 MiB BSON document in canonical Extended JSON stays far below
MAX_LINE_BYTES: Final = 64 * 1024 * 1024
_BOM: Final = b"\xef\xbb\xbf"
_WS: Final = b" \t\r\n"


def dataset_name(path: Path) -> str:
    """``db.coll`` for ``db.coll.json[l]``, ``foo`` for ``foo.json``."""
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def iter_lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines of ``path`` as raw bytes, each checked to look like an object."""
    with open_binary(path) as stream:
        number = 0
        while True:
            try:
                line = stream.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError) as exc:
                raise FormatError(
                    f"{path}: unreadable or corrupt compressed stream after line {number} ({exc})"
                ) from exc
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise FormatError(f"{path}: line {number} is longer than {MAX_LINE_BYTES} bytes")
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            body = line.rstrip(b"\r\n")
            stripped = body.strip(_WS)
            if not stripped:
                continue
            if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
                hint = (
                    "export one document per line (mongoexport without --jsonArray)"
                    if number == 1 and stripped.startswith(b"[")
                    else None
                )
                raise FormatError(f"{path}: line {number} is not a JSON object", hint=hint)
            yield body


class ExtJsonLinesReader(RecordReader):
    """A JSON Lines file of Extended JSON v2 documents: one dataset, named after the file."""

    name: ClassVar[str] = "extjson"
    encoding: ClassVar[RecordEncoding] = RecordEncoding.EXTJSON

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if not path.is_file() or not path.name.endswith(_SUFFIXES):
            return False
        try:
            with open_binary(path) as stream:
                head = stream.read(4096)
        except (FormatError, OSError, EOFError):
            return False
        return head.removeprefix(_BOM).lstrip(_WS).startswith(b"{")

    def datasets(self) -> list[str]:
        if not self.path.is_file():
            raise FormatError(f"{self.path}: not a file")
        return [dataset_name(self.path)]

    def records(self, dataset: str) -> Iterator[bytes]:
        if dataset != dataset_name(self.path):
            raise NotFound(
                f"{self.path} holds dataset {dataset_name(self.path)!r}, not {dataset!r}"
            )
        return iter_lines(self.path)

    def size_hint(self, dataset: str) -> int | None:
        return None if self.path.name.endswith(".gz") else self.path.stat().st_size
