"""The independent ledger verifier: entries + signed checkpoints + a verifier key -> findings.

Nothing here touches the catalog. The caller hands over the entries (from the catalog, from an
export file, from anywhere) in the order they claim to have, the signed checkpoints it has, the
verifier key it trusts and, optionally, a checkpoint it saved earlier. The verifier then

- recomputes every leaf ``SHA-256(0x00 || entry)`` from the entry bytes and every root it needs
  (streaming: O(log n) memory, one pass over the entries);
- compares the stored leaf hash, where the source keeps one, with the recomputed one;
- checks the row sequence numbers (gaps, duplicates, order) and the sequence number inside each
  entry against its position (swapped or moved entries);
- opens every checkpoint with the verifier key (signature, key, origin) and compares its signed
  root with the recomputed root at its size; a mismatch is localised to the entries between the
  last checkpoint that still matches and the first that does not;
- reports entries that no signed checkpoint covers (appended or inserted without the key);
- compares a previously saved checkpoint with the recomputed root at its size: a different
  root means the ledger was rewritten, a size beyond the end means it was truncated. Because
  every root is recomputed from the entries, this is stronger than a consistency proof.

Every discrepancy is yielded as a :class:`Finding`; :func:`decide` turns the findings into
pass/fail. An empty ledger without a signed checkpoint fails (``no-checkpoint``): a log that was
initialised always holds at least its ``ledger.key_created`` entry and a checkpoint, so an empty
one means its content was removed; an empty log with a valid checkpoint of size 0 passes.

By default each entry is checked cheaply: its bytes are hashed and its own ``"seq"`` is read
without parsing the JSON (the top-level ``seq`` member is the last ``"seq":`` in RFC 8785 form,
because the members after it are strings). ``full=True`` also parses and re-canonicalises
every entry (:meth:`Event.from_canonical`), at roughly a tenth of the speed. Entries that match
a signed root are byte-for-byte what the key holder signed, so the cheap mode misses nothing an
attacker without the key can do; the full mode also catches a signer that wrote malformed
entries.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from affidavit.crypto.digest import constant_time_equal
from affidavit.crypto.note import NoteVerifier
from affidavit.errors import FormatError, IntegrityError
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.models.ledger import Event

__all__ = [
    "Finding",
    "FindingCode",
    "LedgerRecord",
    "LedgerVerifier",
    "RecordLike",
    "RecordWithNodes",
    "VerifyReport",
    "decide",
    "verify_ledger",
]

_SEQ_KEY = b'"seq":'
_SIG_PREFIX = "\u2014 "


class FindingCode(StrEnum):
    """What kind of discrepancy a finding reports (stable names, used in ``--json``)."""

    ENTRY_UNPARSEABLE = "entry-unparseable"
    """The entry bytes are not JSON, or carry no top-level ``seq``."""
    ENTRY_NOT_CANONICAL = "entry-not-canonical"
    """The entry is not a valid event in RFC 8785 canonical form (``full`` mode)."""
    SEQ_MISMATCH = "seq-mismatch"
    """The entry's own ``seq`` differs from the row it sits in (swapped or moved entries)."""
    SEQ_GAP = "seq-gap"
    """Row sequence numbers jump: entries are missing (deleted)."""
    SEQ_DUPLICATE = "seq-duplicate"
    """A row sequence number repeats (an inserted entry)."""
    SEQ_OUT_OF_ORDER = "seq-out-of-order"
    """A row sequence number goes backwards (reordered entries)."""
    STORED_LEAF_MISMATCH = "stored-leaf-mismatch"
    """The leaf hash kept beside the entry differs from the one recomputed from its bytes."""
    ROOT_MISMATCH = "root-mismatch"
    """A signed checkpoint's root differs from the root recomputed from the entries."""
    CHECKPOINT_BEYOND_END = "checkpoint-beyond-end"
    """A signed checkpoint covers more entries than there are (truncation)."""
    CHECKPOINT_MALFORMED = "checkpoint-malformed"
    CHECKPOINT_BAD_SIGNATURE = "checkpoint-bad-signature"
    """The verifier key signed this checkpoint, but the signature does not verify."""
    CHECKPOINT_WRONG_KEY = "checkpoint-wrong-key"
    """The checkpoint carries no signature by the verifier key."""
    CHECKPOINT_OTHER_ORIGIN = "checkpoint-other-origin"
    """The checkpoint is properly signed but names another log."""
    NO_CHECKPOINT = "no-checkpoint"
    """No valid signed checkpoint at all: nothing vouches for the entries."""
    UNSIGNED_ENTRIES = "unsigned-entries"
    """Entries after the last signed checkpoint (appended or inserted without the key)."""
    OLD_CHECKPOINT_INVALID = "old-checkpoint-invalid"
    """The saved checkpoint given for comparison does not verify with the key."""
    OLD_CHECKPOINT_INCONSISTENT = "old-checkpoint-inconsistent"
    """The ledger's root at the saved checkpoint's size differs: history was rewritten."""
    TRUNCATED = "truncated"
    """The ledger is smaller than the saved checkpoint: entries were removed from the end."""
    COLUMN_MISMATCH = "column-mismatch"
    """(catalog only) a row's action, actor, subject or time column (query copies) differs
    from its entry's."""
    KEY_NOT_CREATOR = "key-not-creator"
    """(catalog only) seq 0 is not the ``ledger.key_created`` event of the key used."""
    STORED_NODES_MISMATCH = "stored-nodes-mismatch"
    """(catalog only) stored subtree hashes differ from those recomputed from the entries."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One discrepancy: its code, the first sequence number it concerns (if any), a message."""

    code: FindingCode
    seq: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape ``{"code", "seq", "message"}``."""
        return {"code": self.code.value, "seq": self.seq, "message": self.message}


class LedgerRecord(NamedTuple):
    """An entry as a source hands it over: the sequence number it claims, its canonical bytes
    and the leaf hash stored beside it (``None`` when the source keeps none).

    Any iterable of ``(seq, entry, leaf_hash)`` 3-tuples works as records (a database cursor
    over those three columns, for instance); this named tuple is the documented shape.
    """

    seq: int
    entry: bytes
    leaf_hash: bytes | None = None


RecordLike = tuple[int, bytes, bytes | None]
"""What the verifier reads of each entry: ``(seq, entry bytes, stored leaf hash or None)``."""

RecordWithNodes = tuple[int, bytes, bytes | None, bytes | None, str, str, str, str]
"""A record followed by the stored hashes of the complete subtrees its leaf closes (levels 1,
2, ... concatenated, as the catalog keeps them) and the row's ``action``, ``actor``,
``subject`` and ``time`` columns: the verifier then checks those too."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """What a verification found: the recomputed size and root, the newest checkpoint that
    verified and matched, and every finding."""

    size: int
    root: bytes
    checkpoint: Checkpoint | None
    findings: tuple[Finding, ...] = field(default=())
    vkey: str | None = None  # the verifier key used, when the caller names it
    key_source: str | None = None  # where that key came from

    @property
    def ok(self) -> bool:
        """The decision of :func:`decide` over the findings."""
        return decide(self.findings)

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "size", "root", "checkpoint", "findings"}`` (hex root)."""
        cp = self.checkpoint
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root.hex(),
            "checkpoint": (
                None
                if cp is None
                else {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()}
            ),
            "findings": [f.to_json() for f in self.findings],
            "key": None if self.vkey is None else {"vkey": self.vkey, "from": self.key_source},
        }


def decide(findings: Iterable[Finding]) -> bool:
    """The decision step: a ledger passes only when there is no finding at all.

    Every finding code is a failure; there are no warnings. (The verifier itself reports the
    empty-without-checkpoint case as a finding, so "nothing checked" cannot pass.)
    """
    return not any(True for _ in findings)


@dataclass(slots=True)
class _Signed:
    position: int
    checkpoint: Checkpoint
    recomputed: bytes | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"checkpoint #{self.position + 1}"


class LedgerVerifier:
    """One verification run. Iterate :meth:`run` for the findings; afterwards :attr:`size`,
    :attr:`root` and :attr:`checkpoint` hold the results."""

    def __init__(
        self,
        records: Iterable[RecordLike] | Iterable[RecordWithNodes],
        checkpoints: Iterable[str],
        verifier: NoteVerifier,
        *,
        origin: str | None = None,
        old_checkpoint: str | None = None,
        full: bool = False,
        remembered: str | None = None,
    ) -> None:
        """``remembered``: the signer's own memory of the newest checkpoint it signed
        (``HOME/keys/ledger.signed``), judged like any other signed checkpoint (a ledger
        that ends before it was truncated, entries after it are unsigned) and named as such;
        when it does not open with the key, that is a finding too."""
        self._remembered = remembered
        self._records = records
        self._notes = list(checkpoints)
        self._verifier = verifier
        self._origin = verifier.name if origin is None else origin
        self._old_note = old_checkpoint
        self._full = full
        self.size = 0
        self.root = merkle.EMPTY_ROOT
        self.checkpoint: Checkpoint | None = None

    # -- checkpoints ------------------------------------------------------------------------

    def _open(self, note: str, what: str, *, old: bool) -> tuple[Checkpoint | None, Finding | None]:
        try:
            checkpoint = open_checkpoint(note, self._verifier)
        except FormatError as exc:
            code = FindingCode.OLD_CHECKPOINT_INVALID if old else FindingCode.CHECKPOINT_MALFORMED
            return None, Finding(code=code, seq=None, message=f"{what} is malformed: {exc}")
        except IntegrityError as exc:
            if old:
                code = FindingCode.OLD_CHECKPOINT_INVALID
            elif _names_key(note, self._verifier):
                code = FindingCode.CHECKPOINT_BAD_SIGNATURE
            else:
                code = FindingCode.CHECKPOINT_WRONG_KEY
            return None, Finding(code=code, seq=None, message=f"{what}: {exc}")
        if checkpoint.origin != self._origin:
            code = (
                FindingCode.OLD_CHECKPOINT_INVALID if old else FindingCode.CHECKPOINT_OTHER_ORIGIN
            )
            return None, Finding(
                code=code,
                seq=None,
                message=f"{what} is for log {checkpoint.origin!r}, not {self._origin!r}",
            )
        return checkpoint, None

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Iterator[Finding]:
        """Yield every finding, in the order they are found."""
        signed: list[_Signed] = []
        for position, note in enumerate(self._notes):
            checkpoint, finding = self._open(note, f"checkpoint #{position + 1}", old=False)
            if finding is not None:
                yield finding
            if checkpoint is not None:
                signed.append(_Signed(position, checkpoint))
        if self._remembered is not None:
            label = "the signer's own checkpoint (keys/ledger.signed)"
            checkpoint, finding = self._open(self._remembered, label, old=False)
            if finding is not None:
                yield finding
            if checkpoint is not None:
                signed.append(_Signed(len(self._notes), checkpoint, label=label))
        old: _Signed | None = None
        if self._old_note is not None:
            checkpoint, finding = self._open(self._old_note, "the saved checkpoint", old=True)
            if finding is not None:
                yield finding
            if checkpoint is not None:
                old = _Signed(-1, checkpoint)
        wanted: dict[int, list[_Signed]] = {}
        for item in [*signed, *([old] if old else [])]:
            wanted.setdefault(item.checkpoint.size, []).append(item)

        yield from self._stream(wanted)
        yield from self._judge(signed, old)

    def _stream(self, wanted: dict[int, list[_Signed]]) -> Iterator[Finding]:
        leaf_hash, node_hash, ct_equal = merkle.leaf_hash, merkle.node_hash, constant_time_equal
        full = self._full
        stack: list[bytes] = []
        count = 0
        previous: int | None = None
        if 0 in wanted:
            for item in wanted[0]:
                item.recomputed = merkle.EMPTY_ROOT
        bad_nodes: list[int] = []  # rows whose stored subtree hashes are wrong
        bad_columns: list[int] = []  # rows whose action column is not the entry's
        for seq, entry, stored, *kept in self._records:
            # row sequence numbers: dense from 0, strictly increasing
            expected = count if previous is None else previous + 1
            if seq != expected:
                yield _seq_finding(seq, previous, count)
            previous = seq
            # the entry's own sequence number
            own = _own_seq(entry)
            if own is None:
                yield Finding(
                    code=FindingCode.ENTRY_UNPARSEABLE,
                    seq=seq,
                    message=f"entry at seq {seq} is not a ledger event (no top-level seq)",
                )
            elif own != seq:
                yield Finding(
                    code=FindingCode.SEQ_MISMATCH,
                    seq=seq,
                    message=f"the entry stored at seq {seq} says it is seq {own} "
                    "(swapped, moved or replaced)",
                )
            if full:
                finding = _full_check(entry, seq)
                if finding is not None:
                    yield finding
            # the leaf, and the stored copy of it
            leaf = leaf_hash(entry)
            if stored is not None and not ct_equal(stored, leaf):
                yield Finding(
                    code=FindingCode.STORED_LEAF_MISMATCH,
                    seq=seq,
                    message=f"the stored leaf hash of seq {seq} is not the hash of its entry",
                )
            # push onto the frontier of complete subtrees (a binary counter); where the source
            # keeps the subtree hashes each leaf closes (the catalog), compare them
            carry = count
            closed = b""
            while carry & 1:
                leaf = node_hash(stack.pop(), leaf)
                carry >>= 1
                closed += leaf
            if kept:
                nodes = kept[0]
                if not isinstance(nodes, bytes) or not ct_equal(closed, nodes):
                    bad_nodes.append(seq)
                # the query columns are copies used to find events by kind, time, actor and
                # subject: each must be the entry's own; a rewritten copy hides an event
                if not _columns_match(entry, *kept[1:5]):
                    bad_columns.append(seq)
            stack.append(leaf)
            count += 1
            if count in wanted:
                root = _fold(stack)
                for item in wanted[count]:
                    item.recomputed = root
        self.size = count
        self.root = _fold(stack)
        yield from _row_findings(
            FindingCode.STORED_NODES_MISMATCH,
            bad_nodes,
            "the stored subtree hashes of {rows} are not the hashes of the entries they cover "
            "(inclusion and consistency proofs through them are wrong)",
        )
        yield from _row_findings(
            FindingCode.COLUMN_MISMATCH,
            bad_columns,
            "the action, actor, subject or time column of {rows} is not the signed entry's "
            "(events looked up by them would be missed or mistaken)",
        )

    def _judge(self, signed: list[_Signed], old: _Signed | None) -> Iterator[Finding]:
        size = self.size
        in_range = sorted(
            (s for s in signed if s.checkpoint.size <= size), key=lambda s: s.checkpoint.size
        )
        for item in signed:
            if item.checkpoint.size > size:
                yield Finding(
                    code=FindingCode.CHECKPOINT_BEYOND_END,
                    seq=size,
                    message=(
                        f"{item.name} signs {item.checkpoint.size} entries "
                        f"but there are {size}: entries {size}..{item.checkpoint.size - 1} "
                        "are missing (truncated)"
                    ),
                )
        yield from _root_mismatches(in_range)
        matching = [
            s
            for s in in_range
            if s.recomputed is not None and constant_time_equal(s.recomputed, s.checkpoint.root)
        ]
        if matching:
            self.checkpoint = matching[-1].checkpoint
        if not signed:
            yield Finding(
                code=FindingCode.NO_CHECKPOINT,
                seq=None,
                message="no checkpoint signed by the verifier key vouches for the ledger",
            )
        else:
            covered = max(s.checkpoint.size for s in signed)
            if covered < size:
                yield Finding(
                    code=FindingCode.UNSIGNED_ENTRIES,
                    seq=covered,
                    message=(
                        f"entries {covered}..{size - 1} are not covered by any signed "
                        "checkpoint (appended or inserted without the signing key)"
                    ),
                )
        if old is not None:
            cp = old.checkpoint
            if cp.size > size:
                yield Finding(
                    code=FindingCode.TRUNCATED,
                    seq=size,
                    message=(
                        f"the saved checkpoint signs {cp.size} entries but the ledger has "
                        f"{size}: it was truncated"
                    ),
                )
            elif old.recomputed is None or not constant_time_equal(old.recomputed, cp.root):
                yield Finding(
                    code=FindingCode.OLD_CHECKPOINT_INCONSISTENT,
                    seq=None,
                    message=(
                        f"the first {cp.size} entries do not give the root of the saved "
                        "checkpoint: the ledger was rewritten (truncated and re-extended, "
                        "or entries altered)"
                    ),
                )


def verify_ledger(
    records: Iterable[RecordLike] | Iterable[RecordWithNodes],
    checkpoints: Iterable[str],
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    old_checkpoint: str | None = None,
    full: bool = False,
    remembered: str | None = None,
) -> VerifyReport:
    """Run a :class:`LedgerVerifier` to the end and return its report.

    ``origin`` defaults to the verifier key's name (affidavit names the key after the log).
    ``old_checkpoint`` is a signed note saved earlier. Never raises for a discrepancy in the
    data; exceptions come only from ``records`` itself (e.g. a malformed export file).
    """
    run = LedgerVerifier(
        records,
        checkpoints,
        verifier,
        origin=origin,
        old_checkpoint=old_checkpoint,
        full=full,
        remembered=remembered,
    )
    findings = tuple(run.run())
    return VerifyReport(size=run.size, root=run.root, checkpoint=run.checkpoint, findings=findings)


# -- helpers ---------------------------------------------------------------------------------


def _columns_match(entry: bytes, action: Any, actor: Any, subject: Any, time: Any) -> bool:
    """Whether the row's copied columns are the entry's own: RFC 8785 sorts an event's
    members as action, actor, client, details, seq, subject, time, so the first two open the
    entry and the last two close it. Values that need no escaping (the usual case: checked
    once over all four) are compared as they are; others as RFC 8785 prints strings."""
    every = f"{action}{actor}{subject}{time}"
    if '"' in every or "\\" in every or not every.isprintable():
        action, actor, subject, time = (
            json.dumps(str(v), ensure_ascii=False)[1:-1] for v in (action, actor, subject, time)
        )
    try:
        return entry.startswith(
            f'{{"action":"{action}","actor":"{actor}",'.encode()
        ) and entry.endswith(f',"subject":"{subject}","time":"{time}"}}'.encode())
    except UnicodeEncodeError:  # a lone surrogate: not what any signed entry holds
        return False


def _row_findings(code: FindingCode, seqs: list[int], template: str) -> Iterator[Finding]:
    """One finding for rows that share a defect: the first seq and how many more."""
    if seqs:
        more = f" and {len(seqs) - 1} more row(s)" if len(seqs) > 1 else ""
        yield Finding(code=code, seq=seqs[0], message=template.format(rows=f"seq {seqs[0]}{more}"))


def _fold(stack: list[bytes]) -> bytes:
    return merkle.root_from_subtrees(stack)


def _own_seq(entry: bytes) -> int | None:
    """The top-level ``seq`` of a canonical entry without parsing it, or None."""
    at = entry.rfind(_SEQ_KEY)
    if at < 0:
        return None
    start = at + len(_SEQ_KEY)
    end = entry.find(b",", start)
    if end < 0:  # seq is the last member (not in a valid event, but say what it is)
        end = entry.find(b"}", start)
    digits = entry[start:] if end < 0 else entry[start:end]
    if not digits.isdigit() or len(digits) > 20:
        return None
    return int(digits)


def _full_check(entry: bytes, seq: int) -> Finding | None:
    try:
        json.loads(entry)
    except (UnicodeDecodeError, ValueError):
        return Finding(
            code=FindingCode.ENTRY_UNPARSEABLE, seq=seq, message=f"entry at seq {seq} is not JSON"
        )
    except RecursionError:  # hostile nesting (a JSON parser gives up: no event is that deep)
        return Finding(
            code=FindingCode.ENTRY_UNPARSEABLE,
            seq=seq,
            message=f"entry at seq {seq} is nested too deeply to be parsed",
        )
    try:
        Event.from_canonical(entry)
    except FormatError as exc:
        return Finding(
            code=FindingCode.ENTRY_NOT_CANONICAL, seq=seq, message=f"entry at seq {seq}: {exc}"
        )
    return None


def _seq_finding(seq: int, previous: int | None, count: int) -> Finding:
    expected = count if previous is None else previous + 1
    if previous is not None and seq == previous:
        return Finding(
            code=FindingCode.SEQ_DUPLICATE,
            seq=seq,
            message=f"seq {seq} appears twice (an inserted entry)",
        )
    if previous is not None and seq < previous:
        return Finding(
            code=FindingCode.SEQ_OUT_OF_ORDER,
            seq=seq,
            message=f"seq {seq} comes after seq {previous} (reordered entries)",
        )
    if seq > expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
        return Finding(
            code=FindingCode.SEQ_GAP, seq=expected, message=f"entries {missing} are missing"
        )
    return Finding(
        code=FindingCode.SEQ_OUT_OF_ORDER,
        seq=seq,
        message=f"the ledger starts at seq {seq}, not {expected}",
    )


def _root_mismatches(in_range: list[_Signed]) -> Iterator[Finding]:
    """One finding per run of consecutive mismatching checkpoints, localised to the entries
    between the last matching checkpoint before the run and the first of the run."""
    last_good = 0
    run: list[_Signed] = []

    def flush() -> Iterator[Finding]:
        if not run:
            return
        first, last = run[0].checkpoint, run[-1].checkpoint
        more = (
            f"; {len(run) - 1} later checkpoint(s) up to size {last.size} differ too"
            if len(run) > 1
            else ""
        )
        yield Finding(
            code=FindingCode.ROOT_MISMATCH,
            seq=last_good,
            message=(
                f"the root of the first {first.size} entries differs from "
                f"{run[0].name}: an entry in seq {last_good}..{first.size - 1} was "
                f"altered, removed, inserted or moved{more}"
            ),
        )

    for item in in_range:
        good = item.recomputed is not None and constant_time_equal(
            item.recomputed, item.checkpoint.root
        )
        if good:
            yield from flush()
            run = []
            last_good = item.checkpoint.size
        else:
            run.append(item)
    yield from flush()


def _names_key(note: str, verifier: NoteVerifier) -> bool:
    """Whether some signature line of ``note`` claims the verifier's name and key ID."""
    split = note.rfind("\n\n")
    if split < 0:
        return False
    for line in note[split + 2 :].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            continue
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        if name == verifier.name and int.from_bytes(blob[:4], "big") == verifier.key_id:
            return True
    return False
