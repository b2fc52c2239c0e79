"""Records as Apache Parquet, for exports: one string column per field, written the same way
every time (the same rows give the same bytes with one pyarrow version), read back batch by
batch.

The writer's options are fixed (:data:`WRITER_OPTIONS`): one row group per
:data:`ROWS_PER_GROUP` rows, zstd level 3, no dictionary encoding, no statistics, no Arrow
schema in the footer, format version 2.6 with data page v1. A cell is a string or null (a
field the record does not have); what the string means is the caller's (exports use the
lossless cell rules of their CSV encoding). The footer names the writer
(``parquet-cpp-arrow version X``): a verifier that rewrites the rows needs that version.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from affidavit.errors import FormatError

__all__ = [
    "ROWS_PER_GROUP",
    "WRITER_OPTIONS",
    "ParquetRows",
    "column_names",
    "read_rows",
    "writer_version",
]

ROWS_PER_GROUP: Final = 8192
WRITER_OPTIONS: Final[dict[str, Any]] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": False,
    "write_statistics": False,
    "store_schema": False,
    "version": "2.6",
    "data_page_version": "1.0",
}
_BATCH: Final = 4096


def writer_version() -> str:
    """What the footer of a file this module writes names as its writer."""
    return f"parquet-cpp-arrow version {pa.__version__}"


class _Sink:
    """The file object pyarrow writes to: bytes collect until :meth:`take`."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        """Nothing to flush: the bytes are taken by :meth:`take`."""

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class ParquetRows:
    """Writes rows of cells (``str`` or None) under ``fields``; each call returns the bytes
    that became final (a row group at a time), :meth:`finish` the rest and the footer."""

    def __init__(self, fields: Sequence[str]) -> None:
        self._fields = tuple(fields)
        self._schema = pa.schema([pa.field(name, pa.string()) for name in self._fields])
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(self._sink, self._schema, **WRITER_OPTIONS)
        self._columns: list[list[str | None]] = [[] for _ in self._fields]
        self._rows = 0

    def add(self, cells: Sequence[str | None]) -> bytes:
        """Add one row (a cell per field, in order)."""
        for column, cell in zip(self._columns, cells, strict=True):
            column.append(cell)
        self._rows += 1
        if self._rows >= ROWS_PER_GROUP:
            self._flush()
        return self._sink.take()

    def _flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_arrays(
            [pa.array(c, type=pa.string()) for c in self._columns], schema=self._schema
        )
        self._writer.write_table(table, row_group_size=ROWS_PER_GROUP)
        self._columns = [[] for _ in self._fields]
        self._rows = 0

    def finish(self) -> bytes:
        """The last row group and the footer."""
        self._flush()
        self._writer.close()
        return self._sink.take()


def column_names(path: Path) -> list[str]:
    """The column names of a Parquet file; raises :class:`FormatError` for a file that is not
    a readable Parquet file."""
    try:
        return [str(name) for name in pq.ParquetFile(path).schema_arrow.names]
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"not a readable Parquet file: {_one_line(str(exc))}") from None


def read_rows(path: Path, fields: Sequence[str]) -> Iterator[tuple[int, list[str | None]]]:
    """The rows of a Parquet file (numbered from 1) whose columns must be ``fields``, all
    strings. Raises :class:`FormatError` for a file that is not such a Parquet file (possibly
    after some rows: the caller reports it)."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        names = list(schema.names)
        if names != list(fields) or any(t != pa.string() for t in schema.types):
            raise FormatError(
                f"the Parquet columns are {_one_line(repr(names[:20]))}, not the allow-list "
                "as strings"
            )
        number = 0
        for batch in parquet.iter_batches(batch_size=_BATCH):
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            for row in zip(*columns, strict=True):
                number += 1
                yield number, list(row)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"not a readable Parquet file: {_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    """pyarrow's message as one printable line of at most 300 characters (it may quote the
    file's own bytes: a crafted file must not write control characters to a terminal)."""
    shown = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return shown[:300] or "unreadable"
