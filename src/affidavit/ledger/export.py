"""The ledger export file: JSON Lines that an auditor verifies with the verifier key alone.

UTF-8, one JSON object per line, each line ending with ``\\n`` (``docs/formats/ledger.md``)::

    {"type":"header","format":"affidavit-ledger-export","version":1,"origin":...,
     "vkey":...,"size":N,"checkpoints":K,"exported_at":"...Z"}
    {"type":"checkpoint","note":"<signed note text>"}            K lines, oldest first
    {"type":"entry","seq":S,"entry":"<canonical JSON>","leaf_hash":"<64 hex>"}   N lines

``entry`` holds the entry's RFC 8785 bytes decoded as UTF-8, so that encoding the JSON string
value back to UTF-8 gives the exact bytes that were hashed. An entry that is not valid UTF-8
(only a damaged catalog holds one) is written as ``"entry_b64"`` (standard padded base64)
instead. Checkpoints come before the entries so that a verifier can stream the file once.

Nothing in the header is trusted: ``vkey`` and ``origin`` are there for convenience, and the
auditor verifies with a verifier key obtained elsewhere. ``size`` and ``checkpoints`` are the
counts the exporter wrote.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, Any

from affidavit.crypto.digest import Sha256Stream
from affidavit.ledger.json_lines import JsonLinesReader
from affidavit.ledger.verify import LedgerRecord, RecordLike

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportHeader",
    "ExportReader",
    "ExportSummary",
    "write_export",
]

EXPORT_FORMAT = "affidavit-ledger-export"
EXPORT_VERSION = 1
MAX_LINE = 16 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")
_READ_HINT = "give the file written by `affidavit ledger export --out FILE`"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportHeader:
    """The first line of an export file (informational: nothing in it is trusted)."""

    origin: str
    vkey: str
    size: int
    checkpoints: int
    exported_at: str

    def to_json(self) -> dict[str, Any]:
        """The header line's object."""
        return {
            "type": "header",
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "origin": self.origin,
            "vkey": self.vkey,
            "size": self.size,
            "checkpoints": self.checkpoints,
            "exported_at": self.exported_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportSummary:
    """What :func:`write_export` wrote: entry and checkpoint counts, bytes and SHA-256."""

    entries: int
    checkpoints: int
    length: int
    sha256: str


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def write_export(
    out: IO[bytes],
    header: ExportHeader,
    checkpoints: Sequence[str],
    records: Iterable[RecordLike],
) -> ExportSummary:
    """Write an export file to the binary stream ``out``; return what was written.

    The header's ``checkpoints`` count must equal ``len(checkpoints)``; the number of entries
    actually written is returned (and should equal the header's ``size``).
    """
    digest = Sha256Stream()

    def put(data: bytes) -> None:
        out.write(data)
        digest.update(data)

    put(_line(header.to_json()))
    for note in checkpoints:
        put(_line({"type": "checkpoint", "note": note}))
    count = 0
    for seq, entry, leaf in records:
        obj: dict[str, Any] = {"type": "entry", "seq": seq}
        try:
            obj["entry"] = entry.decode("utf-8")
        except UnicodeDecodeError:
            obj["entry_b64"] = base64.b64encode(entry).decode("ascii")
        obj["leaf_hash"] = leaf.hex() if leaf is not None else None
        put(_line(obj))
        count += 1
    return ExportSummary(
        entries=count,
        checkpoints=len(checkpoints),
        length=digest.length,
        sha256=digest.hexdigest(),
    )


class ExportReader(JsonLinesReader):
    """Reads an export file: the header and checkpoints at once, the entries as a stream.

    Raises :class:`FormatError` (exit 2) for anything that is not the format: a bad header,
    an unknown line type, a checkpoint after the entries, a line cut short (truncated file),
    a line nested too deeply to parse. Raises :class:`InputError` (exit 2) when the file
    cannot be opened or is no regular file (a named pipe is never opened in a way that
    blocks, a symbolic link is not followed). Use as a context manager.
    """

    max_line = MAX_LINE
    read_hint = _READ_HINT
    damaged_hint = "the export file is damaged or not an affidavit ledger export; export it again"

    export_format = EXPORT_FORMAT
    export_version = EXPORT_VERSION
    header_fields = MappingProxyType(
        {"origin": str, "vkey": str, "size": int, "checkpoints": int, "exported_at": str}
    )

    @property
    def header(self) -> ExportHeader:
        """The header line."""
        return ExportHeader(**self.header_values)

    def records(self) -> Iterator[LedgerRecord]:
        """Stream the entry lines as :class:`LedgerRecord` values, in file order."""
        for obj in self._entries():
            yield self._record(obj)

    def _record(self, obj: dict[str, Any]) -> LedgerRecord:
        seq = obj.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise self._error("an entry line needs a non-negative integer 'seq'")
        text = obj.get("entry")
        if isinstance(text, str):
            try:
                entry = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise self._error("the entry is not valid UTF-8") from exc
        elif isinstance(obj.get("entry_b64"), str):
            try:
                entry = base64.b64decode(obj["entry_b64"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise self._error("'entry_b64' is not base64") from exc
        else:
            raise self._error("an entry line needs 'entry' (string) or 'entry_b64'")
        leaf_hex = obj.get("leaf_hash")
        leaf: bytes | None = None
        if leaf_hex is not None:
            if (
                not isinstance(leaf_hex, str)
                or len(leaf_hex) != 64
                or not _HEX.issuperset(leaf_hex)
            ):
                raise self._error("'leaf_hash' must be 64 lowercase hex digits")
            leaf = bytes.fromhex(leaf_hex)
        return LedgerRecord(seq, entry, leaf)
