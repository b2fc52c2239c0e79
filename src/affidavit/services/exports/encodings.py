"""How an export's records are written, and read back at the destination.

``extjson``: JSON lines, each record the compact canonical Extended JSON object
(:func:`~.records.encode_line`). ``csv``: RFC 4180 (``,``, ``"`` quoting only where needed,
``\\r\\n`` row ends, UTF-8 without a BOM), a header row with the allow-listed fields in spec
order, then one row per record, each cell lossless:

- a missing field is an empty cell;
- a string is the string itself, unless it is empty or would itself parse as JSON, in which
  case it is its JSON string (``"42"`` becomes ``"\\"42\\""``, so it never reads back as a
  number);
- any other value (null, booleans, arrays, documents, Extended JSON numbers and dates) is
  its compact canonical Extended JSON text.

Reading a cell back is the inverse: empty -> missing; JSON -> that value; otherwise the
string.

``parquet``: Apache Parquet (:mod:`affidavit.formats.parquet_records`, fixed writer options),
one string column per allow-listed field in spec order, each cell the CSV cell of the field,
null for a missing field.

Every writer is canonical: the verifier writes every record it read again and requires the
same bytes (for Parquet, with the pyarrow version the footer names).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from affidavit.errors import FormatError
from affidavit.models.export import OutputFormat
from affidavit.services.exports.records import decode_line, encode_line

if TYPE_CHECKING:
    from affidavit.formats.parquet_records import ParquetRows

_MAX_LINE: Final = 16 * 1024 * 1024
Record = tuple[int, dict[str, Any] | FormatError]  # (line or row number, record or problem)


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return False, None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def csv_cell(document: Mapping[str, Any], name: str) -> str:
    """The cell of field ``name`` (see the module docstring)."""
    if name not in document:
        return ""
    value = document[name]
    if isinstance(value, str):
        return _compact(value) if value == "" or _json(value)[0] else value
    return _compact(value)


def csv_value(cell: str) -> tuple[bool, Any]:
    """``(present, value)`` of a cell (see the module docstring)."""
    if cell == "":
        return False, None
    parsed, value = _json(cell)
    return (True, value) if parsed else (True, cell)


def _csv_row(cells: Sequence[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode("utf-8")


SUFFIXES: Final = {
    OutputFormat.EXTJSON: ".jsonl.age",
    OutputFormat.CSV: ".csv.age",
    OutputFormat.PARQUET: ".parquet.age",
}
"""The default name suffix of an output file, by format."""


def parquet_cells(document: Mapping[str, Any], fields: Sequence[str]) -> list[str | None]:
    """A record's Parquet row: the CSV cell of each field, null for a missing one."""
    return [csv_cell(document, name) if name in document else None for name in fields]


class Encoder:
    """Writes the records of one output (one encoder per output: a Parquet encoder holds
    the rows of its current row group)."""

    def __init__(self, fmt: OutputFormat, fields: Sequence[str]) -> None:
        self.format = fmt
        self.fields = tuple(fields)
        self._parquet: ParquetRows | None = None
        if fmt is OutputFormat.PARQUET:  # pyarrow loads when a Parquet output is written
            from affidavit.formats.parquet_records import ParquetRows

            self._parquet = ParquetRows(self.fields)

    def header(self) -> bytes:
        """What comes before the first record."""
        return _csv_row(self.fields) if self.format is OutputFormat.CSV else b""

    def encode(self, document: Mapping[str, Any]) -> bytes:
        """One record (for Parquet: the bytes that became final, often none)."""
        if self._parquet is not None:
            return self._parquet.add(parquet_cells(document, self.fields))
        if self.format is OutputFormat.CSV:
            return _csv_row([csv_cell(document, name) for name in self.fields])
        return encode_line(document)

    def finish(self) -> bytes:
        """What comes after the last record (Parquet: the last row group and the footer)."""
        return self._parquet.finish() if self._parquet is not None else b""


def read_records(path: Path, fmt: OutputFormat, fields: Sequence[str]) -> Iterator[Record]:
    """The records of a decrypted output file, each with its line (or row) number, or the
    :class:`FormatError` of a line that is not the encoding. The header of a CSV file must be
    ``fields``."""
    if fmt is OutputFormat.CSV:
        yield from _csv_records(path, tuple(fields))
        return
    if fmt is OutputFormat.PARQUET:
        yield from _parquet_records(path, tuple(fields))
        return
    with path.open("rb") as fh:
        for number, line in enumerate(iter(lambda: fh.readline(_MAX_LINE), b""), start=1):
            try:
                yield number, decode_line(line, number)
            except FormatError as exc:
                yield number, exc


def _csv_records(path: Path, fields: tuple[str, ...]) -> Iterator[Record]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if header is None or tuple(header) != fields:
                shown = header if header is None else header[:20]
                yield 1, FormatError(f"the header is {shown}, not the allow-list {list(fields)}")
                return
            for row in reader:
                number = reader.line_num
                if len(row) != len(fields):
                    yield (
                        number,
                        FormatError(
                            f"the row ending on line {number} has "
                            f"{len(row)} cells, not {len(fields)}"
                        ),
                    )
                    continue
                document: dict[str, Any] = {}
                for name, cell in zip(fields, row, strict=True):
                    present, value = csv_value(cell)
                    if present:
                        document[name] = value
                yield number, document
    except UnicodeDecodeError:
        yield 0, FormatError("the file is not valid UTF-8")
    except csv.Error as exc:
        yield 0, FormatError(f"not CSV: {exc}")


def _parquet_records(path: Path, fields: tuple[str, ...]) -> Iterator[Record]:
    from affidavit.formats.parquet_records import read_rows

    try:
        for number, row in read_rows(path, fields):
            document: dict[str, Any] = {}
            for name, cell in zip(fields, row, strict=True):
                if cell is not None:
                    present, value = csv_value(cell)
                    if present:
                        document[name] = value
            yield number, document
    except FormatError as exc:
        yield 0, exc
