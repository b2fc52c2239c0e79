"""The access log's independent verifier and its export file (``docs/formats/access-log.md``).

The access log is a second Merkle log kept like the ledger (same leaves, nodes, stored
subtree hashes and C2SP checkpoints, signed by the ledger's key) under its own origin,
``<ledger origin>/access-log``: a ledger checkpoint can never pass for an access-log one,
nor the reverse. What differs is retention: an expired entry has lost its payload and keeps
its leaf hash, so the verifier takes the stored leaf hash of an expired entry as the leaf
(there is nothing to recompute it from) and recomputes every other leaf from its payload.

Nothing here touches the catalog: the caller hands over the rows (from the catalog, or from an
export file), the signed checkpoints, the verifier key and, optionally, the signer's memory of
the newest checkpoint it signed. Every discrepancy is a :class:`AccessFinding`; a log passes
only when there is none.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import IO, Any, Protocol

from affidavit.crypto.digest import Sha256Stream, constant_time_equal
from affidavit.crypto.note import NoteVerifier
from affidavit.errors import FormatError, IntegrityError
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.ledger.json_lines import JsonLinesReader
from affidavit.ledger.verify import (
    Finding,
    _names_key,
    _root_mismatches,
    _seq_finding,
    _Signed,
)
from affidavit.models.access import AccessEntry

__all__ = [
    "ACCESS_LOG_SUFFIX",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "AccessExportHeader",
    "AccessExportReader",
    "AccessFinding",
    "AccessFindingCode",
    "AccessRecord",
    "AccessVerifyReport",
    "access_origin",
    "verify_access_log",
    "write_access_export",
]

ACCESS_LOG_SUFFIX = "/access-log"
EXPORT_FORMAT = "affidavit-access-log-export"
EXPORT_VERSION = 1
MAX_LINE = 1024 * 1024
_HEX = frozenset("0123456789abcdef")
_READ_HINT = "give the file written by `affidavit access-log export --out FILE`"
_NO_LEAF = b"\0" * merkle.HASH_SIZE  # stands in for a missing leaf hash (roots then differ)


def access_origin(ledger_origin: str) -> str:
    """The access log's origin: the ledger's origin followed by ``/access-log``."""
    return ledger_origin + ACCESS_LOG_SUFFIX


class AccessFindingCode(StrEnum):
    """What kind of discrepancy a finding reports (stable names, used in ``--json``); the
    names the ledger's verifier also has mean the same thing there."""

    ENTRY_INVALID = "entry-invalid"
    """A payload is not an access entry in RFC 8785 canonical form."""
    SEQ_MISMATCH = "seq-mismatch"
    """The payload in row ``seq`` says another seq (rows swapped or payloads moved)."""
    SEQ_GAP = "seq-gap"
    SEQ_DUPLICATE = "seq-duplicate"
    SEQ_OUT_OF_ORDER = "seq-out-of-order"
    STORED_LEAF_MISMATCH = "stored-leaf-mismatch"
    """The stored leaf hash is not the hash of the payload beside it."""
    LEAF_MISSING = "leaf-missing"
    """A row has neither a payload nor a 32-byte leaf hash: nothing says what it was."""
    PAYLOAD_MISSING = "payload-missing"
    """A payload is gone although the entry was never expired (removed behind the log's
    back); in the catalog also an expiry that no ``access_log.expired`` ledger event
    covers."""
    PAYLOAD_AFTER_EXPIRY = "payload-after-expiry"
    """(catalog only) an expired entry holds a payload again."""
    ROOT_MISMATCH = "root-mismatch"
    CHECKPOINT_BEYOND_END = "checkpoint-beyond-end"
    CHECKPOINT_MALFORMED = "checkpoint-malformed"
    CHECKPOINT_BAD_SIGNATURE = "checkpoint-bad-signature"
    CHECKPOINT_WRONG_KEY = "checkpoint-wrong-key"
    CHECKPOINT_OTHER_ORIGIN = "checkpoint-other-origin"
    """Signed by the key, but for another log: a ledger checkpoint among the access log's."""
    CHECKPOINT_INCONSISTENT = "checkpoint-inconsistent"
    """(catalog only) the stored subtree hashes give no consistency proof between two
    consecutive signed checkpoints."""
    NO_CHECKPOINT = "no-checkpoint"
    UNSIGNED_ENTRIES = "unsigned-entries"
    STORED_NODES_MISMATCH = "stored-nodes-mismatch"
    COLUMN_MISMATCH = "column-mismatch"
    """(catalog only) a query copy (time, identity, action, subject, outcome) is not the
    payload's, or a checkpoint row's size is not its note's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessFinding:
    """One discrepancy: its code, the first sequence number it concerns (if any), a message."""

    code: AccessFindingCode
    seq: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """``{"code", "seq", "message"}``."""
        return {"code": self.code.value, "seq": self.seq, "message": self.message}


def _same(finding: Finding) -> AccessFinding:
    """A finding of the ledger's shared checks, under the access log's code of that name."""
    return AccessFinding(
        code=AccessFindingCode(finding.code.value), seq=finding.seq, message=finding.message
    )


class AccessRecord(Protocol):
    """What the verifier reads of a row: its seq, payload (None once expired), stored leaf
    hash and when it expired (None for a live entry)."""

    @property
    def seq(self) -> int: ...
    @property
    def entry(self) -> bytes | None: ...
    @property
    def leaf_hash(self) -> bytes | None: ...
    @property
    def expired_at(self) -> str | None: ...


class AccessRow(AccessRecord, Protocol):
    """A catalog row: also its stored subtree hashes and query copies."""

    @property
    def nodes(self) -> bytes | None: ...
    @property
    def time(self) -> str: ...
    @property
    def identity(self) -> str | None: ...
    @property
    def action(self) -> str: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def outcome(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ExportedRecord:
    """An entry line of an export file."""

    seq: int
    entry: bytes | None
    leaf_hash: bytes | None
    expired_at: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessVerifyReport:
    """What a verification found: the size and root recomputed, how many entries had
    expired, the newest checkpoint that matched, and every finding."""

    size: int
    root: bytes
    expired: int
    checkpoint: Checkpoint | None
    findings: tuple[AccessFinding, ...] = field(default=())
    vkey: str | None = None
    key_source: str | None = None

    @property
    def ok(self) -> bool:
        """True only when there is no finding at all."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "size", "expired", "root", "checkpoint", "findings", "key"}``."""
        cp = self.checkpoint
        return {
            "ok": self.ok,
            "size": self.size,
            "expired": self.expired,
            "root": self.root.hex(),
            "checkpoint": (
                None
                if cp is None
                else {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()}
            ),
            "findings": [f.to_json() for f in self.findings],
            "key": None if self.vkey is None else {"vkey": self.vkey, "from": self.key_source},
        }


class _Run:
    """One verification: :meth:`findings` yields; afterwards size, root, expired, checkpoint."""

    def __init__(
        self,
        records: Iterable[AccessRecord],
        checkpoints: Sequence[str],
        verifier: NoteVerifier,
        *,
        origin: str,
        remembered: str | None,
        rows: bool,
    ) -> None:
        self._records = records
        self._notes = checkpoints
        self._verifier = verifier
        self._origin = origin
        self._remembered = remembered
        self._rows = rows  # catalog rows: also check nodes, query copies and expiry marks
        self.size = 0
        self.expired = 0
        self.root = merkle.EMPTY_ROOT
        self.checkpoint: Checkpoint | None = None
        self.signed: list[_Signed] = []

    def _open(self, note: str, what: str) -> tuple[Checkpoint | None, AccessFinding | None]:
        code: AccessFindingCode
        try:
            checkpoint = open_checkpoint(note, self._verifier)
        except FormatError as exc:
            code = AccessFindingCode.CHECKPOINT_MALFORMED
            return None, AccessFinding(code=code, seq=None, message=f"{what} is malformed: {exc}")
        except IntegrityError as exc:
            code = (
                AccessFindingCode.CHECKPOINT_BAD_SIGNATURE
                if _names_key(note, self._verifier)
                else AccessFindingCode.CHECKPOINT_WRONG_KEY
            )
            return None, AccessFinding(code=code, seq=None, message=f"{what}: {exc}")
        if checkpoint.origin != self._origin:
            return None, AccessFinding(
                code=AccessFindingCode.CHECKPOINT_OTHER_ORIGIN,
                seq=None,
                message=f"{what} is for log {checkpoint.origin!r}, not the access log "
                f"{self._origin!r}",
            )
        return checkpoint, None

    def findings(self) -> Iterator[AccessFinding]:
        for position, note in enumerate(self._notes):
            checkpoint, finding = self._open(note, f"checkpoint #{position + 1}")
            if finding is not None:
                yield finding
            if checkpoint is not None:
                self.signed.append(_Signed(position, checkpoint))
        if self._remembered is not None:
            label = "the signer's own checkpoint (keys/access-log.signed)"
            checkpoint, finding = self._open(self._remembered, label)
            if finding is not None:
                yield finding
            if checkpoint is not None:
                self.signed.append(_Signed(len(self._notes), checkpoint, label=label))
        wanted: dict[int, list[_Signed]] = {}
        for item in self.signed:
            wanted.setdefault(item.checkpoint.size, []).append(item)
        yield from self._stream(wanted)
        yield from self._judge()

    def _leaf(self, record: AccessRecord) -> tuple[bytes, AccessEntry | None, list[AccessFinding]]:
        """The leaf of one record (recomputed from its payload, or the stored one of an
        expired entry), its parsed payload, and what is wrong with it."""
        seq, stored, entry = record.seq, record.leaf_hash, record.entry
        found: list[AccessFinding] = []
        if entry is None:
            self.expired += 1
            if record.expired_at is None:
                found.append(self._finding(
                    AccessFindingCode.PAYLOAD_MISSING,
                    seq,
                    f"the payload of seq {seq} is gone but the entry never expired",
                ))  # fmt: skip
            if stored is None or len(stored) != merkle.HASH_SIZE:
                found.append(self._finding(
                    AccessFindingCode.LEAF_MISSING,
                    seq,
                    f"seq {seq} has neither a payload nor a leaf hash",
                ))  # fmt: skip
                return _NO_LEAF, None, found
            return stored, None, found
        leaf = merkle.leaf_hash(entry)
        parsed: AccessEntry | None = None
        try:
            parsed = AccessEntry.from_canonical(entry)
        except FormatError as exc:
            found.append(self._finding(
                AccessFindingCode.ENTRY_INVALID,
                seq,
                f"the payload of seq {seq} is not an access entry: {exc}",
            ))  # fmt: skip
        if parsed is not None and parsed.seq != seq:
            found.append(self._finding(
                AccessFindingCode.SEQ_MISMATCH,
                seq,
                f"the payload stored at seq {seq} says it is seq {parsed.seq} "
                "(swapped, moved or replaced)",
            ))  # fmt: skip
        if stored is not None and not constant_time_equal(stored, leaf):
            found.append(self._finding(
                AccessFindingCode.STORED_LEAF_MISMATCH,
                seq,
                f"the stored leaf hash of seq {seq} is not the hash of its payload",
            ))  # fmt: skip
        if self._rows and record.expired_at is not None:
            found.append(self._finding(
                AccessFindingCode.PAYLOAD_AFTER_EXPIRY,
                seq,
                f"seq {seq} expired at {record.expired_at} but holds a payload again",
            ))  # fmt: skip
        return leaf, parsed, found

    @staticmethod
    def _finding(code: AccessFindingCode, seq: int | None, message: str) -> AccessFinding:
        return AccessFinding(code=code, seq=seq, message=message)

    def _stream(self, wanted: dict[int, list[_Signed]]) -> Iterator[AccessFinding]:
        node_hash, equal = merkle.node_hash, constant_time_equal
        stack: list[bytes] = []
        count = 0
        previous: int | None = None
        for item in wanted.get(0, ()):
            item.recomputed = merkle.EMPTY_ROOT
        bad_nodes: list[int] = []
        bad_columns: list[int] = []
        for record in self._records:
            seq = record.seq
            expected = count if previous is None else previous + 1
            if seq != expected:
                yield _same(_seq_finding(seq, previous, count))
            previous = seq
            leaf, parsed, found = self._leaf(record)
            yield from found
            carry = count
            closed = b""
            while carry & 1:
                leaf = node_hash(stack.pop(), leaf)
                carry >>= 1
                closed += leaf
            if self._rows:
                row: Any = record
                if not isinstance(row.nodes, bytes) or not equal(closed, row.nodes):
                    bad_nodes.append(seq)
                if parsed is not None and not _columns_match(parsed, row):
                    bad_columns.append(seq)
            stack.append(leaf)
            count += 1
            for item in wanted.get(count, ()):
                item.recomputed = merkle.root_from_subtrees(stack)
        self.size = count
        self.root = merkle.root_from_subtrees(stack)
        yield from _row_findings(
            AccessFindingCode.STORED_NODES_MISMATCH,
            bad_nodes,
            "the stored subtree hashes of {rows} are not the hashes of the entries they "
            "cover (proofs through them are wrong)",
        )
        yield from _row_findings(
            AccessFindingCode.COLUMN_MISMATCH,
            bad_columns,
            "the time, identity, action, subject or outcome column of {rows} is not the "
            "signed payload's (entries looked up by them would be missed or mistaken)",
        )

    def _judge(self) -> Iterator[AccessFinding]:
        size = self.size
        for item in self.signed:
            if item.checkpoint.size > size:
                yield AccessFinding(
                    code=AccessFindingCode.CHECKPOINT_BEYOND_END,
                    seq=size,
                    message=f"{item.name} signs {item.checkpoint.size} entries but there are "
                    f"{size}: entries {size}..{item.checkpoint.size - 1} are missing (truncated)",
                )
        in_range = sorted(
            (s for s in self.signed if s.checkpoint.size <= size), key=lambda s: s.checkpoint.size
        )
        for finding in _root_mismatches(in_range):
            yield _same(finding)
        matching = [
            s
            for s in in_range
            if s.recomputed is not None and constant_time_equal(s.recomputed, s.checkpoint.root)
        ]
        if matching:
            self.checkpoint = matching[-1].checkpoint
        if not self.signed:
            if size:  # an empty log that never signed anything has recorded nothing yet
                yield AccessFinding(
                    code=AccessFindingCode.NO_CHECKPOINT,
                    seq=None,
                    message="no checkpoint signed by the verifier key vouches for the access log",
                )
            return
        covered = max(s.checkpoint.size for s in self.signed)
        if covered < size:
            yield AccessFinding(
                code=AccessFindingCode.UNSIGNED_ENTRIES,
                seq=covered,
                message=f"entries {covered}..{size - 1} are not covered by any signed "
                "checkpoint (appended or inserted without the signing key)",
            )


def _row_findings(
    code: AccessFindingCode, seqs: list[int], template: str
) -> Iterator[AccessFinding]:
    """One finding for rows that share a defect: the first seq and how many more."""
    if seqs:
        more = f" and {len(seqs) - 1} more row(s)" if len(seqs) > 1 else ""
        rows = f"seq {seqs[0]}{more}"
        yield AccessFinding(code=code, seq=seqs[0], message=template.format(rows=rows))


def _columns_match(entry: AccessEntry, row: Any) -> bool:
    """Whether a catalog row's query copies are its payload's own."""
    return bool(
        row.time == entry.time
        and row.identity == entry.identity
        and row.action == entry.action
        and (row.subject or None) == entry.subject
        and row.outcome == entry.outcome.value
    )


def verify_access_log(
    records: Iterable[AccessRecord],
    checkpoints: Sequence[str],
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    remembered: str | None = None,
    rows: bool = False,
) -> AccessVerifyReport:
    """Verify an access log and return every finding; never raises for a discrepancy.

    ``origin`` defaults to the access-log origin of the verifier key's name (affidavit names
    the key after the ledger). ``remembered``: the signer's memory of the newest checkpoint
    it signed, judged as one more checkpoint. ``rows``: the records are catalog rows
    (:class:`AccessRow`): their stored subtree hashes, query copies and expiry marks are
    checked too. Checkpoints that are not signed by the key, or name another log (a ledger
    checkpoint), are findings and vouch for nothing. Every root is recomputed from the
    leaves, so consecutive checkpoints that both match are consistent by construction.
    """
    run = _Run(
        records,
        checkpoints,
        verifier,
        origin=access_origin(verifier.name) if origin is None else origin,
        remembered=remembered,
        rows=rows,
    )
    found = tuple(run.findings())
    return AccessVerifyReport(
        size=run.size,
        root=run.root,
        expired=run.expired,
        checkpoint=run.checkpoint,
        findings=found,
    )


# -- export file -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessExportHeader:
    """The first line of an export file (informational: nothing in it is trusted)."""

    origin: str
    vkey: str
    size: int
    checkpoints: int
    expired: int
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
            "expired": self.expired,
            "exported_at": self.exported_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessExportSummary:
    """What :func:`write_access_export` wrote."""

    entries: int
    expired: int
    checkpoints: int
    sha256: str


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def write_access_export(
    out: IO[bytes],
    header: AccessExportHeader,
    checkpoints: Sequence[str],
    records: Iterable[AccessRecord],
) -> AccessExportSummary:
    """Write an export file to ``out``: the header, the checkpoints, then one line per entry
    (an expired one with ``expired_at`` and its leaf hash instead of its payload)."""
    digest = Sha256Stream()

    def put(data: bytes) -> None:
        out.write(data)
        digest.update(data)

    put(_line(header.to_json()))
    for note in checkpoints:
        put(_line({"type": "checkpoint", "note": note}))
    count = expired = 0
    for record in records:
        obj: dict[str, Any] = {"type": "entry", "seq": record.seq}
        entry = record.entry
        if entry is None:
            obj["expired_at"] = record.expired_at
            expired += 1
        else:
            try:
                obj["entry"] = entry.decode("utf-8")
            except UnicodeDecodeError:
                obj["entry_b64"] = base64.b64encode(entry).decode("ascii")
        leaf = record.leaf_hash
        obj["leaf_hash"] = leaf.hex() if leaf is not None else None
        put(_line(obj))
        count += 1
    return AccessExportSummary(
        entries=count, expired=expired, checkpoints=len(checkpoints), sha256=digest.hexdigest()
    )


class AccessExportReader(JsonLinesReader):
    """Reads an access-log export file: the header and checkpoints at once, the entries as a
    stream. Anything that is not the format (a bad header, an unknown line, a checkpoint after
    the entries, a line cut short) raises :class:`FormatError` (exit 2)."""

    max_line = MAX_LINE
    read_hint = _READ_HINT
    damaged_hint = "the file is damaged or not an affidavit access-log export; export it again"

    export_format = EXPORT_FORMAT
    export_version = EXPORT_VERSION
    header_fields = MappingProxyType(
        {
            "origin": str,
            "vkey": str,
            "size": int,
            "checkpoints": int,
            "expired": int,
            "exported_at": str,
        }
    )

    @property
    def header(self) -> AccessExportHeader:
        """The header line."""
        return AccessExportHeader(**self.header_values)

    def records(self) -> Iterator[ExportedRecord]:
        """The entry lines, in file order."""
        for obj in self._entries():
            yield self._record(obj)

    def _record(self, obj: dict[str, Any]) -> ExportedRecord:
        seq = obj.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise self._error("an entry line needs a non-negative integer 'seq'")
        entry: bytes | None = None
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
        elif "entry" in obj or "entry_b64" in obj:
            raise self._error("'entry' must be a string")
        expired_at = obj.get("expired_at")
        if expired_at is not None and not isinstance(expired_at, str):
            raise self._error("'expired_at' must be a string or null")
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
        return ExportedRecord(seq=seq, entry=entry, leaf_hash=leaf, expired_at=expired_at)
