"""The signer's own memory of the last tree it signed, and the rule it signs by.

A checkpoint says "this key vouches for these entries". The catalog that holds the entries
and the checkpoints can be written by people who do not hold the key, so the signer cannot
take the catalog's word for what it signed before: deleting every checkpoint row and
appending a well-formed entry would otherwise be signed over by the next ordinary command.
Like a witness that keeps the latest checkpoint it saw of each log, the signer keeps the
newest checkpoint it signed next to its key, outside the catalog:

``HOME/keys/ledger.signed``: the signed note (C2SP ``tlog-checkpoint``) of the newest tree the
ledger key signed. It is self-authenticating (only the key can produce it), so a copy that
was swapped for another note fails to open; one rolled back to an older note of the same key
is still consistent history and can only make the signer refuse more, never sign more.

The rule (:func:`guard`): the signer signs a new tree only when

- the catalog's entries before the new batch are exactly the tree it last signed (same size;
  no entry it never signed; not fewer: nothing was deleted), and the catalog's newest
  checkpoint is that very checkpoint (a ledger whose checkpoints were removed is refused);
- the new tree provably extends that tree (an RFC 9162 consistency proof from the stored
  subtree hashes, checked against both roots), and
- a ledger that starts from nothing begins with the key's own ``ledger.key_created`` event,
  naming this key.

Otherwise it raises :class:`SigningRefused` (exit 3) and the transaction rolls back: nothing
is written. The memory is updated after the transaction commits and is never moved backwards;
a crash between the commit and that update leaves it behind the catalog, which the next signer
repairs by *rolling forward*: a newer catalog checkpoint that opens with this key and is
consistent with the memory was signed by the key holder, so it is adopted. A memory that is
behind can therefore make the signer refuse, never sign something it could not prove.

The memory is overwritten in place (one ``pwrite`` of a few hundred bytes, under an
exclusive ``flock``; read under a shared one, so that no process reads a note torn between
two), without ``fsync``: after a power loss it may miss the newest updates (rolled forward as
above). A note that no longer opens stops the signer (:class:`KeystoreError`) rather than
letting it guess.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from affidavit.durable import write_atomic
from affidavit.errors import FormatError, IntegrityError, KeystoreError, SigningRefused
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from affidavit.ledger.log import LedgerLog
from affidavit.models.ledger import KEY_CREATED, Event, creation_problem

if TYPE_CHECKING:
    from affidavit.catalog.store import UnitOfWork
    from affidavit.services.context import LedgerIdentity

SIGNED_FILENAME = "ledger.signed"
_MAX_NOTE = 64 * 1024


def signed_path(home: Path) -> Path:
    """Where the signer keeps the newest checkpoint it signed."""
    return home / "keys" / SIGNED_FILENAME


@dataclass(frozen=True, slots=True)
class Signed:
    """A checkpoint this key signed, with its note text."""

    note: str
    checkpoint: Checkpoint

    @property
    def size(self) -> int:
        """The tree size it signs."""
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        """The root it signs."""
        return self.checkpoint.root

    @property
    def data(self) -> bytes:
        """The note as stored."""
        return self.note.encode("utf-8")


class SignerMemory:
    """``HOME/keys/ledger.signed`` of one ledger identity: read, checked and written."""

    def __init__(self, home: Path, identity: LedgerIdentity) -> None:
        self.path = signed_path(home)
        self.identity = identity
        self._cached: Signed | None = None  # the last note read or written, already opened
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None

    def load(self) -> Signed | None:
        """The newest checkpoint the key signed, or None when the file does not exist.

        Raises :class:`KeystoreError` when the file cannot be read or does not open with the
        ledger key (swapped, corrupted): the signer must then not go on.
        """
        fd = self._handle()
        if fd is None:
            return None
        try:
            # shared with other readers, never with a writer: another process's save writes
            # in place (``pwrite``, then ``ftruncate`` when shorter), so a read beside it could
            # see a note torn between two, which would not open
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                raw = os.pread(fd, _MAX_NOTE + 1, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise KeystoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        return self._parse(raw)

    def _parse(self, raw: bytes) -> Signed:
        cached = self._cached
        if cached is not None and raw == cached.data:
            return cached
        try:
            if len(raw) > _MAX_NOTE:
                raise FormatError("too large")
            note = raw.decode("utf-8")
            checkpoint = open_checkpoint(note, self.identity.verifier, self.identity.origin)
        except (FormatError, IntegrityError, UnicodeDecodeError) as exc:
            raise KeystoreError(
                f"{self.path} is not a checkpoint signed by this ledger's key ({exc})",
                hint="restore it from your backup of HOME/keys; without it the signer cannot "
                "tell which history it vouched for (docs/operations.md, lost catalog)",
            ) from exc
        self._cached = Signed(note, checkpoint)
        return self._cached

    def save(self, signed: Signed, *, fork: bool = False) -> None:
        """Remember ``signed`` unless a larger tree is remembered already (never backwards;
        ``fork``: a recovery replaces the memory, having archived it).

        The first note creates the file (written aside, then renamed into place); later ones
        overwrite it in place under an exclusive ``flock`` (a note is a few hundred bytes: one
        sector, one ``pwrite``), which costs a few microseconds instead of a rename."""
        fd = self._handle()
        if fd is None:
            _replace(self.path, signed.note)
            self._cached = signed
            return
        data = signed.data
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _MAX_NOTE + 1, 0)
                if not fork:
                    with contextlib.suppress(KeystoreError):
                        if self._parse(raw).size > signed.size:
                            return
                os.pwrite(fd, data, 0)
                if len(raw) > len(data):
                    os.ftruncate(fd, len(data))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise KeystoreError(f"cannot write {self.path}: {exc.strerror}") from exc
        self._cached = signed

    def _handle(self) -> int | None:
        """An open descriptor of the file as it is now (reopened when the file was replaced),
        or None when there is no file."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            self.close()
            return None
        except OSError as exc:
            raise KeystoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        if self._fd is not None and self._ino == (info.st_dev, info.st_ino):
            return self._fd
        self.close()
        if not stat.S_ISREG(info.st_mode):
            raise KeystoreError(f"{self.path} is not a regular file")
        try:
            self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise KeystoreError(f"cannot open {self.path}: {exc.strerror}") from exc
        self._ino = (info.st_dev, info.st_ino)
        return self._fd

    def close(self) -> None:
        """Release the open descriptor (the memory reopens it when used again)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._ino = None

    def sign(self, size: int, root: bytes) -> Signed:
        """Sign the tree of ``size``/``root`` with the ledger key (nothing is stored)."""
        identity = self.identity
        checkpoint = Checkpoint(origin=identity.origin, size=size, root=root)
        return Signed(sign_checkpoint(checkpoint, identity.signer), checkpoint)

    def archive(self, current: Signed) -> Path:
        """Keep ``current`` beside the memory as ``ledger.signed.superseded-<size>-<time>``
        (used when a recovery forks the history); return its path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.superseded-{current.size}-{stamp}")
        _replace(target, current.note)
        return target


def _replace(path: Path, text: str) -> None:
    try:
        write_atomic(path, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise KeystoreError(f"cannot write {path}: {exc.strerror}") from exc


# -- the rule -------------------------------------------------------------------------------


def _open(identity: LedgerIdentity, note: str, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, identity.verifier, identity.origin)
    except (FormatError, IntegrityError) as exc:
        raise SigningRefused(
            f"refusing to sign: {what} is not signed by this ledger's key ({exc})"
        ) from exc


def _extends(log: LedgerLog, old: Checkpoint, size: int, root: bytes, what: str) -> None:
    """Prove from the stored subtree hashes that ``size``/``root`` extends ``old``."""
    if old.size == 0:
        return
    try:
        proof = log.consistency_proof(old.size, size) if old.size < size else []
        merkle.verify_consistency(old.size, size, old.root, root, proof)
    except IntegrityError as exc:
        raise SigningRefused(
            f"refusing to sign: {what} does not extend the tree of {old.size} entries this "
            f"key last signed ({exc.message})"
        ) from exc


def roll_forward(
    uow: UnitOfWork, log: LedgerLog, memory: SignerMemory, last: Signed
) -> tuple[Signed, tuple[int, str] | None]:
    """Adopt the catalog's newest checkpoint when it is newer than ``last``, opens with the
    key and is consistent with it (a crash between a commit and the memory's update, or
    another process of this home); return the newest signed tree and the catalog's newest
    checkpoint row."""
    newest = uow.ledger.latest_checkpoint()
    if newest is None or newest[0] <= last.size:
        return last, newest
    checkpoint = _open(memory.identity, newest[1], f"the catalog's checkpoint of {newest[0]}")
    if checkpoint.size != newest[0]:
        raise SigningRefused(
            f"refusing to sign: the catalog's checkpoint row of size {newest[0]} holds a "
            f"checkpoint of size {checkpoint.size}"
        )
    _extends(log, last.checkpoint, checkpoint.size, checkpoint.root, "the catalog's ledger")
    adopted = Signed(newest[1], checkpoint)
    memory.save(adopted)
    return adopted, newest


def bootstrap(uow: UnitOfWork, identity: LedgerIdentity) -> Signed:
    """The memory of a home set up before the signer kept one: the catalog's newest
    checkpoint, when it opens with the key and the ledger begins with the key's creation.
    A catalog without any checkpoint, or one that does not start with this key, is refused
    (nothing says what this key signed)."""
    newest = uow.ledger.latest_checkpoint()
    if newest is None:
        raise SigningRefused(
            f"refusing to sign: HOME/keys/{SIGNED_FILENAME} is missing and the catalog holds no "
            "checkpoint: nothing says which history this key signed",
            hint="restore HOME/keys/ledger.signed from your backup of the keys, or follow "
            "the lost-catalog recovery in docs/operations.md",
        )
    checkpoint = _open(identity, newest[1], f"the catalog's checkpoint of {newest[0]}")
    _check_genesis(uow, identity)
    return Signed(newest[1], checkpoint)


def _check_genesis(uow: UnitOfWork, identity: LedgerIdentity) -> None:
    rows = list(uow.ledger.entries(0, 1))
    event = _event(rows[0].entry) if rows else None
    _require_genesis(event, identity)


def _event(entry: bytes) -> Event | None:
    try:
        return Event.from_canonical(entry)
    except FormatError:
        return None


def _require_genesis(event: Event | None, identity: LedgerIdentity) -> None:
    problem = creation_problem(event, identity.vkey)
    if problem is None:
        return
    kind, found = problem
    if kind == "not-created":
        raise SigningRefused(
            f"refusing to sign: the ledger's seq 0 is {found}, not this key's {KEY_CREATED} event",
            hint="the catalog's ledger was replaced or started anew outside affidavit; run "
            "`affidavit ledger verify` and see docs/operations.md (lost catalog)",
        )
    raise SigningRefused(
        f"refusing to sign: the ledger was created by another key ({found}), not {identity.vkey}",
        hint="the home's key or the catalog was swapped; restore the matching pair",
    )


def _span(start: int, stop: int) -> str:
    if stop == start + 1:
        return f"ledger entry {start} was"
    return f"ledger entries {start}..{stop - 1} were"


def guard(
    uow: UnitOfWork,
    log: LedgerLog,
    memory: SignerMemory,
    *,
    first_event: Event,
    size: int,
    root: bytes,
    resumed: tuple[int, bytes] | None = None,
    fork_from: Signed | None = None,
) -> Signed:
    """Check, inside the signing transaction, that the tree of ``size``/``root`` may be
    signed: the entries before ``first_event`` (the batch's first) are exactly the tree this
    key last signed, the catalog's newest checkpoint is
    that tree's, and the new tree extends it. ``resumed``: the (size, root) this process
    committed last, when the log was resumed from it after re-checking the catalog's head;
    the new tree then extends it by construction, and when the memory holds the same tree
    no consistency proof is read. ``fork_from``: a recovery (``ledger
    recover``) stands in this checkpoint of the catalog for the memory, for this one
    transaction. Returns the tree last signed; raises :class:`SigningRefused`."""
    last = settle(uow, log, memory, first=first_event.seq, fork_from=fork_from, resumed=resumed)
    if last.size == 0:
        _require_genesis(first_event, memory.identity)
    elif resumed != (last.size, last.root):
        _extends(log, last.checkpoint, size, root, "the catalog's ledger")
    return last


def settle(
    uow: UnitOfWork,
    log: LedgerLog,
    memory: SignerMemory,
    *,
    first: int,
    fork_from: Signed | None = None,
    resumed: tuple[int, bytes] | None = None,
) -> Signed:
    """The part of :func:`guard` that needs no new entry: the catalog's ledger up to
    ``first`` is the tree the key last signed (rolling the memory forward over the key's own
    newer checkpoints) and its newest checkpoint is that tree's. A change runs it before its
    body too, so a refused change fails before it touches anything outside the catalog.

    ``resumed``: the (size, root) this process committed last, when the log was resumed from
    it after checking that the catalog's head is exactly that (its last entry and its newest
    checkpoint's size and root); when the memory holds that same tree nothing more is read."""
    identity = memory.identity
    last = memory.load() if fork_from is None else fork_from
    if (
        last is not None
        and resumed is not None
        and first == resumed[0] == last.size
        and resumed[1] == last.root
    ):
        return last
    if last is None:
        last = bootstrap(uow, identity)
        memory.save(last)
    last, newest = roll_forward(uow, log, memory, last)
    if first < last.size:
        raise SigningRefused(
            f"refusing to sign: the catalog's ledger has {first} entries, fewer than the "
            f"{last.size} this key last signed: entries were deleted, or the catalog was "
            "restored from an older copy",
            hint="find out what happened (`affidavit ledger verify`); to go on from a restored "
            "catalog, follow the lost-catalog recovery in docs/operations.md "
            "(`affidavit ledger recover`)",
        )
    if first > last.size:
        raise SigningRefused(
            f"refusing to sign: {_span(last.size, first)} never signed by this key (it last "
            f"signed {last.size} entries): written into the catalog outside affidavit",
            hint="run `affidavit ledger verify`; the unsigned entries are not history this "
            "key vouches for (docs/operations.md, lost catalog)",
        )
    if last.size == 0:
        if newest is not None and newest[0] > 0:
            raise SigningRefused("refusing to sign: the catalog's checkpoints are beyond its end")
        return last
    if newest is None or newest[0] != last.size:
        where = "no checkpoint" if newest is None else f"a newest checkpoint of {newest[0]}"
        raise SigningRefused(
            f"refusing to sign: the catalog has {where}, but this key last signed "
            f"{last.size} entries: its checkpoints were removed",
            hint="run `affidavit ledger verify`; `affidavit ledger recover` restores the "
            "checkpoint when the entries are intact (docs/operations.md)",
        )
    if newest[1] != last.note:
        stored = _open(identity, newest[1], f"the catalog's checkpoint of {newest[0]}")
        if stored.root != last.root:
            raise SigningRefused(
                f"refusing to sign: the catalog's checkpoint of {last.size} entries has "
                "another root than the one this key signed"
            )
    return last
