"""Reading the JSON-lines files affidavit exports (the ledger's and the access log's): one
JSON object with a ``type`` per line, read with bounded memory, every defect a
:class:`~affidavit.errors.FormatError` naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any, ClassVar

from affidavit.closing import Closing
from affidavit.errors import FormatError, InputError
from affidavit.input_files import open_regular


class JsonLinesReader(Closing):
    """Opens an export file (only a regular file: a named pipe is never opened in a way that
    blocks, a symbolic link is not followed; :class:`InputError` otherwise) and hands out its
    lines as objects (:meth:`_next`). A subclass names its limits and its words."""

    #: the longest line accepted, in bytes
    max_line: ClassVar[int]
    #: the hint when the file cannot be opened
    read_hint: ClassVar[str]
    #: the hint of every format defect
    damaged_hint: ClassVar[str]

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
