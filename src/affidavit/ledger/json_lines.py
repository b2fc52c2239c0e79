"""Reading the JSON-lines files affidavit exports (the ledger's and the access log's): one
JSON object with a ``type`` per line, read with bounded memory, every defect a
:class:`~affidavit.errors.FormatError` naming the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

from affidavit.closing import Closing
from affidavit.errors import FormatError, InputError
from affidavit.input_files import open_regular


class JsonLinesReader(Closing):
    """Opens an export file (only a regular file: a named pipe is never opened in a way that
    blocks, a symbolic link is not followed; :class:`InputError` otherwise), reads its header
    line (:attr:`header`: the fields :attr:`header_fields` names, checked) and the checkpoint
    lines after it (:attr:`checkpoints`), and hands out the entry lines as objects
    (:meth:`_entries`). A subclass names its format, limits and words, and parses an entry."""

    #: the longest line accepted, in bytes
    max_line: ClassVar[int]
    #: the hint when the file cannot be opened
    read_hint: ClassVar[str]
    #: the hint of every format defect
    damaged_hint: ClassVar[str]
    #: the header's ``format`` and ``version``
    export_format: ClassVar[str]
    export_version: ClassVar[int]
    #: the header's fields and their types (each one required; a bool is no int)
    header_fields: ClassVar[Mapping[str, type]]

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh: IO[bytes] = open_regular(path, what="the export file", hint=self.read_hint)
        except OSError as exc:
            raise InputError(
                f"cannot read the export file {path}: {exc.strerror or exc}", hint=self.read_hint
            ) from exc
        self._line_no = 0
        self._pending: dict[str, Any] | None = None
        try:
            self.header_values = self._read_header()
            self.checkpoints = self._read_checkpoints()
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def _error(self, message: str) -> FormatError:
        return FormatError(f"{self.path}, line {self._line_no}: {message}", hint=self.damaged_hint)

    def _next(self) -> dict[str, Any] | None:
        """The next line's object, or None at the end of the file."""
        raw = self._fh.readline(self.max_line + 1)
        if not raw:
            return None
        self._line_no += 1
        if not raw.endswith(b"\n"):
            if len(raw) > self.max_line:
                raise self._error("line is too long")
            raise self._error("the line is cut short (the file is truncated)")
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._error("not a JSON line (the file is damaged or truncated)") from exc
        except RecursionError as exc:
            raise self._error("the line is nested too deeply to be an export line") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise self._error("each line must be a JSON object with a 'type'")
        return obj

    def _read_header(self) -> dict[str, Any]:
        obj = self._next()
        if obj is None:
            raise self._error("the file is empty")
        if obj.get("type") != "header" or obj.get("format") != self.export_format:
            raise self._error(f"the first line must be the {self.export_format!r} header")
        if obj.get("version") != self.export_version:
            raise self._error(f"unsupported export version {obj.get('version')!r}")
        for name, kind in self.header_fields.items():
            if not isinstance(obj.get(name), kind) or isinstance(obj.get(name), bool):
                raise self._error(f"header field {name!r} is missing or of the wrong type")
        return {name: obj[name] for name in self.header_fields}

    def _entries(self) -> Iterator[dict[str, Any]]:
        """The entry lines' objects, in file order (a checkpoint after the entries, or a line
        of another type, is a defect)."""
        obj, self._pending = self._pending, None
        if obj is None:
            obj = self._next()
        while obj is not None:
            if obj["type"] == "checkpoint":
                raise self._error("checkpoint lines must come before the entries")
            if obj["type"] != "entry":
                raise self._error(f"unknown line type {obj['type']!r}")
            yield obj
            obj = self._next()

    def _read_checkpoints(self) -> list[str]:
        """The checkpoint notes that follow the header (the first other line is kept for the
        entries)."""
        notes: list[str] = []
        while (obj := self._next()) is not None:
            if obj["type"] != "checkpoint":
                self._pending = obj
                break
            note = obj.get("note")
            if not isinstance(note, str):
                raise self._error("a checkpoint line needs a 'note' string")
            notes.append(note)
        return notes
