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

A nested allowed path (``address.city``) is a column of its own in both, named by the
dotted path; its cell is the value at that path, followed through documents (a record whose
path crosses an array cannot be written as columns: :class:`~affidavit.errors.InputError`).
Reading rebuilds the nested documents from the columns, in column order; the records'
logical fingerprint does not depend on member order, so it is the JSON lines' one.

Every writer is canonical: the verifier writes every record it read again and requires the
same bytes (for Parquet, with the pyarrow version the footer names).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from affidavit.errors import FormatError, InputError
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


class _BeyondDouble(Exception):  # not a ValueError: json.loads lets it through
    """A JSON number that overflows a double (``1e400``): no writer writes one."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BeyondDouble(text)
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_MISSING: Final = object()


class StrayColumns(FormatError):
    """A CSV header or Parquet schema that is not the allow-list: ``stray`` names the
    columns outside it."""

    def __init__(self, message: str, *, stray: Sequence[str]) -> None:
        super().__init__(message)
        self.stray = tuple(stray)


def leaf(document: Mapping[str, Any], name: str) -> Any:
    """The value of field ``name`` (a dotted path through documents), or ``_MISSING``;
    raises :class:`InputError` for a path through an array (it has no one cell)."""
    if "." not in name:
        return document.get(name, _MISSING)
    value: Any = document
    parts = name.split(".")
    for depth, part in enumerate(parts):
        if type(value) is list:
            where = ".".join(parts[:depth])
            raise InputError(
                f"field {name[:80]!r}: {where[:80]} is an array, which a column cannot hold",
                hint='arrays of documents leave as JSON lines (format = "extjson"), or list '
                "the array whole",
            )
        if type(value) is not dict or part not in value:
            return _MISSING
        value = value[part]
    return value


def _cell_of(value: Any) -> str:
    if isinstance(value, str):
        return _compact(value) if value == "" or _json(value)[0] else value
    return _compact(value)


def csv_cell(document: Mapping[str, Any], name: str) -> str:
    """The cell of field ``name`` (see the module docstring)."""
    value = leaf(document, name)
    return "" if value is _MISSING else _cell_of(value)


def _place(document: dict[str, Any], name: str, value: Any) -> None:
    """Set the dotted path ``name`` of ``document`` (the columns are an allow-list, which
    never holds a path and one of its parents, so every parent is a document)."""
    parts = name.split(".")
    node = document
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if type(child) is not dict:
            raise FormatError(f"column {name[:80]!r} lies inside the value of {part[:40]!r}")
        node = child
    node[parts[-1]] = value


def _document(fields: Sequence[str], cells: Sequence[str | None]) -> dict[str, Any]:
    """The record a row of cells (None or empty: missing) stands for."""
    document: dict[str, Any] = {}
    for name, cell in zip(fields, cells, strict=True):
        if cell is None:
            continue
        present, value = csv_value(cell)
        if present:
            _place(document, name, value)
    return document


def _header_problem(header: Sequence[str], fields: tuple[str, ...], what: str) -> StrayColumns:
    stray = [name[:80] for name in header if name not in fields]
    shown = [name[:80] for name in header[:20]]
    message = f"the {what} is {shown}, not the allow-list {list(fields)}"
    if stray:
        message += f": column(s) outside the allow-list: {stray[:20]}"
    return StrayColumns(message, stray=stray)


def csv_value(cell: str) -> tuple[bool, Any]:
    """``(present, value)`` of a cell (see the module docstring)."""
    if cell == "":
        return False, None
    try:
        value = json.loads(cell, parse_constant=_no_constant, parse_float=_finite)
    except _BeyondDouble:  # raised as the number is scanned: "1e999abc" is a string
        if not _json(cell)[0]:
            return True, cell
        raise FormatError(
            f"a cell holds {cell[:40]!r}, a number beyond a double, which no export writes"
        ) from None
    except (ValueError, RecursionError):
        return True, cell
    if "\\u" in cell:  # an escape may stand for a lone surrogate, which UTF-8 cannot hold
        try:
            _compact(value).encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(
                f"a cell holds {cell[:40]!r}, a lone surrogate, which no export writes"
            ) from None
    return True, value


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
    out: list[str | None] = []
    for name in fields:
        value = leaf(document, name)
        out.append(None if value is _MISSING else _cell_of(value))
    return out


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
            yield number, _line_record(line, number)


def _line_record(line: bytes, number: int) -> dict[str, Any] | FormatError:
    """One JSON line's record, or what is wrong with it (a number beyond a double parses,
    to infinity, and a ``\\ud800`` escape to a lone surrogate, but neither can be written
    again: ``decode_line`` raises ValueError for them)."""
    try:
        return decode_line(line, number)
    except FormatError as exc:
        return exc
    except ValueError:
        return FormatError(
            f"line {number} is not in the canonical encoding of the output (a number beyond "
            "a double, or a lone surrogate)"
        )
    except RecursionError:
        return FormatError(f"line {number} nests too deeply to be read")


def _csv_records(path: Path, fields: tuple[str, ...]) -> Iterator[Record]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if header is None:
                yield 1, FormatError(f"the file has no header, not the allow-list {list(fields)}")
                return
            if tuple(header) != fields:
                yield 1, _header_problem(header, fields, "header")
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
                try:
                    yield number, _document(fields, row)
                except FormatError as exc:
                    yield number, exc
    except UnicodeDecodeError:
        yield 0, FormatError("the file is not valid UTF-8")
    except csv.Error as exc:
        yield 0, FormatError(f"not CSV: {exc}")


def _parquet_records(path: Path, fields: tuple[str, ...]) -> Iterator[Record]:
    from affidavit.formats.parquet_records import column_names, read_rows

    try:
        names = column_names(path)
        if tuple(names) != fields:
            yield 0, _header_problem(names, fields, "Parquet file's column list")
            return
        for number, row in read_rows(path, fields):
            try:
                yield number, _document(fields, row)
            except FormatError as exc:
                yield number, exc
    except FormatError as exc:
        yield 0, exc
