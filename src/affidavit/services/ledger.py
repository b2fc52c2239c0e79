"""Ledger use cases: the signing identity, checkpoints (publishing to a witness folder),
inclusion and consistency proofs, export, listing, verification and attestations.

Every state change made here is itself a ledger event: ``ledger.key_created``,
``ledger.checkpoint_published``, ``ledger.exported`` and ``attestation.created``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from affidavit.config import Settings
from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import Envelope
from affidavit.crypto.note import NoteSigner, NoteVerifier
from affidavit.crypto.signing import SigningKey, save_signing_key
from affidavit.durable import write_atomic
from affidavit.errors import (
    AlreadyExists,
    FormatError,
    InputError,
    IntegrityError,
    NotFound,
    SigningRefused,
    VaultError,
)
from affidavit.input_files import open_regular
from affidavit.ledger import merkle
from affidavit.ledger.attestation import Statement, attest
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.ledger.export import ExportHeader, ExportReader, write_export
from affidavit.ledger.log import LedgerLog
from affidavit.ledger.verify import (
    Finding,
    FindingCode,
    VerifyReport,
    verify_ledger,
)
from affidavit.models.inventory import Vault, VaultName, parse_vault_url
from affidavit.models.ledger import KEY_CREATED, Event, creation_problem, rfc3339_utc
from affidavit.services.backends import vault_backend
from affidavit.services.context import (
    App,
    Change,
    LedgerIdentity,
    ledger_key_path,
    ledger_origin_path,
    load_ledger_identity,
)
from affidavit.services.signer_memory import Signed, SignerMemory, signed_path
from affidavit.vaults.base import VaultBackend

__all__ = [
    "CheckpointResult",
    "ConsistencyResult",
    "ExportResult",
    "Finding",
    "InclusionResult",
    "SetupResult",
    "VerifyReport",
    "attest_and_record",
    "consistency_proof",
    "create_checkpoint",
    "export_ledger",
    "inclusion_proof",
    "ledger_vkey",
    "parse_vkey",
    "read_saved_checkpoint",
    "recover_ledger",
    "require_verified_ledger",
    "setup_ledger",
    "show_events",
    "verify_catalog",
    "verify_export",
]

_MAX_CHECKPOINT_FILE = 64 * 1024
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_S3_SCHEMES = ("s3://",)


def _random_hex() -> str:
    """8 random hex digits (uuid4 reads os.urandom; only crypto/ may import secrets)."""
    return uuid.uuid4().hex[:8]


def _now() -> str:
    return rfc3339_utc(datetime.now(UTC))


def _hex(proof: list[bytes]) -> list[str]:
    return [p.hex() for p in proof]


# -- identity ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupResult:
    """The ledger identity after ``init``, and whether it was created now."""

    origin: str
    vkey: str
    created: bool


def new_origin() -> str:
    """``affidavit.local/<hostname>/<8 random hex>``: unique per log, readable, no spaces."""
    host = _HOST_UNSAFE.sub("-", socket.gethostname()).strip("-.")[:63] or "host"
    return f"affidavit.local/{host}/{_random_hex()}"


def setup_ledger(app: App) -> SetupResult:
    """Create the ledger's signing key and origin once (idempotent).

    Writes ``HOME/keys/ledger.key`` (mode 0600), ``HOME/keys/ledger.origin`` and the signer's
    memory ``HOME/keys/ledger.signed`` (the empty tree), then records ``ledger.key_created``
    with the verifier key as the ledger's seq 0. Raises :class:`KeystoreError` when only one
    of the two key files exists, and :class:`SigningRefused` when the catalog already holds
    ledger entries but the home has no key (a new key must not adopt a history it never
    signed: restore the keys instead). A key whose creation event never committed (a crash
    during ``init``) gets it recorded now.
    """
    home = app.settings.home
    existing = load_ledger_identity(home)
    if existing is not None:
        memory = app.signer_memory()
        assert memory is not None
        with app.read() as uow:
            empty = uow.ledger.last_seq() is None
        last = memory.load()
        if empty and last is not None and last.size == 0:  # init was cut short: finish it
            _record_key_created(app, existing)
            return SetupResult(origin=existing.origin, vkey=existing.vkey, created=True)
        return SetupResult(origin=existing.origin, vkey=existing.vkey, created=False)
    with app.read() as uow:
        entries = uow.ledger.size()
    if entries:
        raise SigningRefused(
            f"the catalog holds {entries} ledger entries but {ledger_key_path(home)} is missing",
            hint="restore HOME/keys from your backup of the home: a new key cannot vouch for "
            "a history it never signed (docs/operations.md, lost keys)",
        )
    keys = ledger_key_path(home).parent
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    origin = new_origin()
    key = SigningKey.generate()
    save_signing_key(ledger_key_path(home), key)
    origin_path = ledger_origin_path(home)
    try:
        fd = os.open(origin_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(origin + "\n")
    except OSError:
        with contextlib.suppress(OSError):
            ledger_key_path(home).unlink()
        raise
    identity = LedgerIdentity(origin=origin, signer=NoteSigner(origin, key))
    memory = app.signer_memory()
    assert memory is not None
    memory.save(memory.sign(0, merkle.EMPTY_ROOT))  # nothing signed yet: the empty tree
    _record_key_created(app, identity)
    return SetupResult(origin=origin, vkey=identity.vkey, created=True)


def _record_key_created(app: App, identity: LedgerIdentity) -> None:
    with app.change() as change:
        change.record(
            KEY_CREATED,
            f"ledger:{identity.origin}",
            {
                "origin": identity.origin,
                "vkey": identity.vkey,
                "key_file": str(ledger_key_path(app.settings.home)),
            },
        )


def _identity(app: App) -> LedgerIdentity:
    identity = app.ledger_identity()
    if identity is None:
        raise InputError(
            "this home has no ledger signing key yet", hint="run `affidavit init` to create it"
        )
    return identity


def ledger_vkey(settings: Settings) -> str:
    """The verifier key of the home's ledger (reads the key files only, not the catalog)."""
    identity = load_ledger_identity(settings.home)
    if identity is None:
        raise InputError(
            f"{settings.home} has no ledger signing key", hint="run `affidavit init` first"
        )
    return identity.vkey


def parse_vkey(value: str) -> NoteVerifier:
    """A verifier key given as text, or as the path of a file holding it (exit 2 if bad)."""
    text = value.strip()
    path = Path(text).expanduser()
    if "+" not in text and path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        return NoteVerifier.from_vkey(text)
    except FormatError as exc:
        raise FormatError(
            f"malformed --public-key: {exc.message}",
            hint="give the verifier key printed by `affidavit ledger key` "
            "(<origin>+<8 hex>+<base64>)",
        ) from exc


# -- recovery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverResult:
    """What ``ledger recover`` found and recorded."""

    kind: str  # "checkpoint-restored" | "forked"
    catalog_size: int
    signed_size: int
    lost: int
    seq: int
    archived: Path | None

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "catalog_size", "signed_size", "lost", "seq", "archived"}``."""
        return {
            "kind": self.kind,
            "catalog_size": self.catalog_size,
            "signed_size": self.signed_size,
            "lost": self.lost,
            "seq": self.seq,
            "archived": str(self.archived) if self.archived else None,
        }


def recover_ledger(app: App, *, reason: str) -> RecoverResult:
    """Let the signer go on after its catalog was genuinely lost or damaged, loudly.

    Two cases, each recorded as a ``ledger.recovered`` event (a ledger that is empty again
    records its ``ledger.key_created`` anew, with the same ``recovered`` details):

    - *checkpoints lost, entries intact*: the catalog's tree is exactly the one the key last
      signed (same size, the stored subtree hashes give the signed root) but its checkpoint
      rows are gone: the remembered checkpoint is stored again. Nothing forks.
    - *catalog restored from an older copy, or empty*: the catalog's ledger ends at a
      checkpoint this key signed (its stored hashes give that root; seq 0 is this key's
      creation) but is smaller than what the key last signed. The signer goes on from the
      catalog's checkpoint: the remembered checkpoint is archived beside the key
      (``ledger.signed.superseded-<size>-<time>``) and the event names how many entries were
      lost. Anyone holding a checkpoint of the lost history (a witness, an auditor) sees the
      fork with ``ledger verify --checkpoint``; that is intended.

    Entries the key never signed (beyond the catalog's newest checkpoint) are not history
    this key vouches for: recovery refuses them (restore the catalog from a backup instead).
    """
    if not reason.strip():
        raise InputError("a recovery needs --reason", hint="say what was lost and why")
    identity = _identity(app)
    memory = app.signer_memory()
    assert memory is not None
    last = memory.load()
    with app.read() as uow:
        log = LedgerLog(uow.ledger)
        size = log.size()
        newest = uow.ledger.latest_checkpoint()
        try:
            root = log.root(size)
        except IntegrityError as exc:
            raise SigningRefused(
                f"cannot recover: the catalog's stored subtree hashes are damaged ({exc.message})",
                hint="restore the catalog from a backup, then run `affidavit ledger recover`",
            ) from exc
        first = list(uow.ledger.entries(0, 1))
        invalid = _invalid_checkpoint_rows(uow.ledger.checkpoints(), identity, size)
    details: dict[str, Any] = {"reason": reason, "catalog_size": size}
    if last is not None and last.size == size and last.root == root and size > 0:
        if newest is not None and newest == (size, last.note) and not invalid:
            raise InputError(
                "nothing to recover: the catalog's ledger is the tree this key last signed",
                hint="`affidavit ledger verify` checks it in full",
            )
        with app.change(fork_from=last) as change:
            for bad in sorted({*invalid, last.size}):  # rows not holding what the key signed
                change.uow.ledger.remove_checkpoint(bad)
            change.uow.ledger.add_checkpoint(
                size=last.size, root=last.root, note=last.note, created_at=_now()
            )
            event = change.record(
                "ledger.recovered",
                f"ledger:{identity.origin}",
                {
                    **details,
                    "kind": "checkpoint-restored",
                    "signed_size": last.size,
                    # as text: a forged row's size need not fit a JSON number
                    "invalid_rows_removed": [str(size) for size in sorted(invalid)],
                },
            )
        return RecoverResult(
            kind="checkpoint-restored", catalog_size=size, signed_size=last.size, lost=0,
            seq=event.seq, archived=None,
        )  # fmt: skip
    if size == 0:
        with app.read() as uow:
            held = len(uow.backups.list()) + len(uow.sources.list())
        if held:
            raise SigningRefused(
                f"cannot recover: the catalog's ledger is empty but the catalog still holds "
                f"{held} backups and sources: the ledger was wiped, the catalog was not lost",
                hint="restore the whole catalog from a backup (docs/operations.md); a new "
                "ledger must not vouch for rows it never recorded",
            )
    base = _recovery_base(identity, memory, size, root, newest, first)
    if last is not None and size >= last.size:
        raise SigningRefused(
            f"cannot recover: the catalog's ledger ({size} entries) is not a smaller copy of "
            f"the one this key last signed ({last.size} entries)",
            hint="run `affidavit ledger verify`; if the catalog ends at a checkpoint this key "
            "signed, a normal command rolls the signer forward",
        )
    signed_size = last.size if last is not None else 0
    lost = signed_size - size
    details.update(
        kind="forked",
        signed_size=signed_size,
        signed_root=last.root.hex() if last is not None else None,
        lost_entries=lost,
    )
    archived = memory.archive(last) if last is not None else None
    with app.change(fork_from=base) as change:
        if size == 0:
            event = change.record(
                KEY_CREATED,
                f"ledger:{identity.origin}",
                {
                    "origin": identity.origin,
                    "vkey": identity.vkey,
                    "key_file": str(ledger_key_path(app.settings.home)),
                    "recovered": details,
                },
            )
        else:
            event = change.record("ledger.recovered", f"ledger:{identity.origin}", details)
    return RecoverResult(
        kind="forked", catalog_size=size, signed_size=signed_size, lost=lost, seq=event.seq,
        archived=archived,
    )  # fmt: skip


def _invalid_checkpoint_rows(
    rows: list[tuple[int, str]], identity: LedgerIdentity, size: int
) -> list[int]:
    """The sizes of checkpoint rows that do not hold a checkpoint of this key for their own
    size within the ledger (another size's note, a foreign or broken note, beyond the end)."""
    bad = []
    for row_size, note in rows:
        try:
            checkpoint = open_checkpoint(note, identity.verifier, identity.origin)
        except (FormatError, IntegrityError):
            bad.append(row_size)
            continue
        if checkpoint.size != row_size or row_size > size:
            bad.append(row_size)
    return bad


def _recovery_base(  # noqa: PLR0917 - one private call site
    identity: LedgerIdentity,
    memory: SignerMemory,
    size: int,
    root: bytes,
    newest: tuple[int, str] | None,
    first: list[Any],
) -> Signed:
    """The catalog checkpoint a fork goes on from: the empty tree, or the catalog's newest
    checkpoint when it opens with the key, ends the ledger, matches the stored hashes and the
    ledger begins with this key's creation."""
    if size == 0:
        return memory.sign(0, merkle.EMPTY_ROOT)
    if newest is None or newest[0] != size:
        raise SigningRefused(
            "cannot recover: the catalog's ledger does not end at a checkpoint "
            f"({size} entries, newest checkpoint {newest[0] if newest else 'none'}): "
            "its last entries were never signed by this key",
            hint="restore the catalog from a backup (it ends at a checkpoint), then recover",
        )
    try:
        checkpoint = open_checkpoint(newest[1], identity.verifier, identity.origin)
    except (FormatError, IntegrityError) as exc:
        raise SigningRefused(
            f"cannot recover: the catalog's newest checkpoint is not this key's ({exc})"
        ) from exc
    if checkpoint.size != size or checkpoint.root != root:
        raise SigningRefused(
            "cannot recover: the catalog's stored hashes do not give its newest checkpoint's root",
            hint="restore the catalog from a backup, then recover",
        )
    if creation_problem(first[0].entry if first else None, identity.vkey) is not None:
        raise SigningRefused("cannot recover: the catalog's ledger was not begun by this key")
    return Signed(newest[1], checkpoint)


# -- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointResult:
    """A signed checkpoint and where it was written."""

    note: str
    checkpoint: Checkpoint
    out: Path | None
    published: str | None  # a folder path or an s3:// key

    def to_json(self) -> dict[str, Any]:
        """``{"origin", "size", "root", "note", "out", "published"}``."""
        return {
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": self.checkpoint.root.hex(),
            "note": self.note,
            "out": str(self.out) if self.out else None,
            "published": self.published,
        }


def current_checkpoint(app: App) -> str:
    """The signed checkpoint that covers the whole ledger: the newest stored one, once the
    signer has confirmed it is the one it signed last and that no entry follows it (every
    change signs its checkpoint in its own transaction, so there is nothing to sign here);
    raises :class:`SigningRefused` otherwise."""
    _identity(app)
    app.check_signer()
    with app.read() as uow:
        latest = uow.ledger.latest_checkpoint()
    if latest is None:
        raise IntegrityError("the ledger has no checkpoint", hint="run `affidavit init`")
    return latest[1]


def create_checkpoint(
    app: App, *, out: Path | None = None, publish: str | None = None
) -> CheckpointResult:
    """Return a signed checkpoint of the whole ledger; save it to ``out`` and/or publish it.

    Publishing to a folder writes ``DIR/checkpoint-<size>.note`` (never overwritten: a
    different checkpoint of the same size already there is a split view and raises
    :class:`IntegrityError`) and replaces ``DIR/latest.note`` after proving that the
    previously published latest checkpoint is consistent with this one. Publishing to
    ``s3://BUCKET[/PREFIX]`` writes the same write-once ``checkpoint-<size>.note`` objects
    (conditional put, through the S3 vault backend; no ``latest.note``: the newest is the
    largest size listed) after the same consistency proof. Either is recorded as
    ``ledger.checkpoint_published`` (size, root, destination); the published checkpoint is the
    one before that event.
    """
    identity = _identity(app)
    note = current_checkpoint(app)
    checkpoint = open_checkpoint(note, identity.verifier, identity.origin)
    target: str | None = None
    if publish is not None:
        if publish.startswith(_S3_SCHEMES):
            destination, target = _publish_s3(app, identity, publish, checkpoint, note)
        else:
            folder = _witness_folder(publish)
            destination = str(folder)
            target = str(_publish(app, identity, folder, checkpoint, note))
        with app.change() as change:
            change.record(
                "ledger.checkpoint_published",
                f"ledger:{identity.origin}",
                {
                    "destination": destination,
                    "size": checkpoint.size,
                    "root": checkpoint.root.hex(),
                    "file": target.rsplit("/", 1)[-1],
                },
            )
    if out is not None:
        _write_text(out, note)
    return CheckpointResult(note=note, checkpoint=checkpoint, out=out, published=target)


def _witness_folder(publish: str) -> Path:
    if "://" in publish:
        raise InputError(
            f"cannot publish to {publish!r}", hint="give a folder path or s3://BUCKET/PREFIX"
        )
    return Path(publish).expanduser()


_PUBLISHED = re.compile(r"checkpoint-([0-9]{1,20})\.note")


def _publish_s3(
    app: App, identity: LedgerIdentity, url: str, checkpoint: Checkpoint, note: str
) -> tuple[str, str]:
    """Publish to an S3 witness through the S3 vault backend; return (destination, key)."""
    kind, normal = parse_vault_url(url)
    witness = Vault(
        name=VaultName("witness"),
        kind=kind,
        url=normal,
        region=os.environ.get("AWS_DEFAULT_REGION") or None,
        immutable_days=None,
        created_at=datetime.now(UTC),
    )
    backend = vault_backend(witness)
    published = {
        int(m.group(1)): path
        for path in backend.list()
        if (m := _PUBLISHED.fullmatch(path)) is not None
    }
    name = f"checkpoint-{checkpoint.size}.note"
    if checkpoint.size in published:
        if _read_witness_note(backend, published[checkpoint.size]) == note:
            return normal, f"{normal}/{name}"  # already published, identical
        raise IntegrityError(
            f"{normal}/{name} already holds a different checkpoint of size {checkpoint.size}",
            hint="two different ledgers claim the same size: a split view or a rewrite",
        )
    if published:
        newest = _read_witness_note(backend, published[max(published)])
        previous = open_checkpoint(newest, identity.verifier, identity.origin)
        _check_extends(app, previous, checkpoint)
    backend.put(name, [note.encode("utf-8")], retain_until=None)
    return normal, f"{normal}/{name}"


def _read_witness_note(backend: VaultBackend, path: str) -> str:
    with backend.open(path) as fh:
        raw = fh.read(_MAX_CHECKPOINT_FILE + 1)
    if len(raw) > _MAX_CHECKPOINT_FILE:
        raise IntegrityError(f"the witness object {path} is too large to be a checkpoint")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"the witness object {path} is not a checkpoint") from exc


def _publish(
    app: App, identity: LedgerIdentity, folder: Path, checkpoint: Checkpoint, note: str
) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaultError(f"cannot create the witness folder {folder}: {exc.strerror}") from exc
    latest = folder / "latest.note"
    if latest.exists():
        previous = open_checkpoint(_read_note(latest), identity.verifier, identity.origin)
        _check_extends(app, previous, checkpoint)
    target = folder / f"checkpoint-{checkpoint.size}.note"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        if _read_note(target) != note:
            raise IntegrityError(
                f"{target} already holds a different checkpoint of size {checkpoint.size}",
                hint="two different ledgers claim the same size: a split view or a rewrite",
            ) from None
    except OSError as exc:
        raise VaultError(f"cannot publish to {folder}: {exc.strerror}") from exc
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(note)
            fh.flush()
            os.fsync(fh.fileno())
    _write_text(latest, note)
    return target


def _check_extends(app: App, previous: Checkpoint, current: Checkpoint) -> None:
    if previous.size > current.size:
        raise IntegrityError(
            f"the published checkpoint has {previous.size} entries, the ledger {current.size}",
            hint="the ledger was truncated; run `affidavit ledger verify --checkpoint` with it",
        )
    if previous.size == 0:
        return
    with app.read() as uow:
        proof = LedgerLog(uow.ledger).consistency_proof(previous.size, current.size)
    merkle.verify_consistency(previous.size, current.size, previous.root, current.root, proof)


def _write_text(path: Path, text: str) -> None:
    try:
        write_atomic(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc


def _read_note(path: Path) -> str:
    """A signed note from a file: a regular file (never a pipe that would block, never
    through a link), of at most 64 KiB (only that much is read)."""
    try:
        with open_regular(path, what="the checkpoint file") as fh:
            data = fh.read(_MAX_CHECKPOINT_FILE + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > _MAX_CHECKPOINT_FILE:
        raise FormatError(f"{path} is too large to be a signed checkpoint")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path} is not a signed checkpoint (not UTF-8)") from exc


def read_saved_checkpoint(path: Path) -> str:
    """Read a checkpoint saved earlier (``ledger checkpoint --out``); exit 2 unless it is a
    well-formed signed checkpoint. Its signature is judged by the verifier (a finding)."""
    note = _read_note(path)
    hint = "give a file written by `affidavit ledger checkpoint --out FILE`"
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise FormatError(f"{path} is not a signed checkpoint (no signature block)", hint=hint)
    try:
        Checkpoint.from_text(note[: split + 1])
    except FormatError as exc:
        raise FormatError(f"{path} is not a signed checkpoint: {exc.message}", hint=hint) from exc
    return note


# -- proofs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InclusionResult:
    """An entry, its inclusion proof and the signed checkpoint the proof leads to."""

    seq: int
    entry: bytes
    leaf_hash: bytes
    proof: list[bytes]
    checkpoint: Checkpoint
    note: str

    def to_json(self) -> dict[str, Any]:
        """``{"seq", "tree_size", "leaf_hash", "root", "proof", "entry", "checkpoint",
        "verified"}``; ``entry`` is the canonical JSON text that was hashed."""
        return {
            "seq": self.seq,
            "tree_size": self.checkpoint.size,
            "leaf_hash": self.leaf_hash.hex(),
            "root": self.checkpoint.root.hex(),
            "proof": _hex(self.proof),
            "entry": self.entry.decode("utf-8", errors="replace"),
            "checkpoint": self.note,
            "verified": True,
        }


def _checkpoint_of_size(app: App, size: int | None) -> tuple[int, str]:
    with app.read() as uow:
        if size is None:
            row = uow.ledger.latest_checkpoint()
            if row is None:
                raise NotFound("the ledger has no checkpoint yet", hint="run `affidavit init`")
            return row
        note = uow.ledger.checkpoint_of_size(size)
    if note is None:
        raise NotFound(
            f"no signed checkpoint has size {size}",
            hint="omit --size to use the newest checkpoint, or pick a size `ledger show` lists",
        )
    return size, note


def inclusion_proof(app: App, seq: int, *, size: int | None = None) -> InclusionResult:
    """Prove that entry ``seq`` is in the signed checkpoint of ``size`` (default: newest).

    The proof is built from stored subtree hashes and verified against the signed root before
    it is returned: corrupt stored hashes raise :class:`IntegrityError` (exit 1).
    """
    identity = _identity(app)
    tree_size, note = _checkpoint_of_size(app, size)
    checkpoint = open_checkpoint(note, identity.verifier, identity.origin)
    if not 0 <= seq < checkpoint.size:
        raise InputError(
            f"seq {seq} is out of range: the checkpoint covers seq 0..{checkpoint.size - 1}",
            hint="`affidavit ledger show` lists the entries",
        )
    with app.read() as uow:
        records = list(uow.ledger.entries(seq, seq + 1))
        if not records:
            raise IntegrityError(
                f"entry {seq} is missing from the catalog",
                hint="run `affidavit ledger verify`",
            )
        proof = LedgerLog(uow.ledger).inclusion_proof(seq, tree_size)
    entry = records[0].entry
    leaf = merkle.leaf_hash(entry)
    try:
        merkle.verify_inclusion(leaf, seq, checkpoint.size, proof, checkpoint.root)
    except IntegrityError as exc:
        raise IntegrityError(
            f"the inclusion proof of seq {seq} does not lead to the signed root: {exc.message}",
            hint="the entry or the stored subtree hashes were altered; "
            "run `affidavit ledger verify`",
        ) from exc
    return InclusionResult(
        seq=seq, entry=entry, leaf_hash=leaf, proof=proof, checkpoint=checkpoint, note=note
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyResult:
    """A consistency proof between two tree sizes and the newer signed checkpoint."""

    old_size: int
    old_root: bytes
    proof: list[bytes]
    checkpoint: Checkpoint
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """``{"old_size", "old_root", "new_size", "new_root", "proof", "checkpoint",
        "verified"}``; ``checkpoint`` is the signed note of the newer tree."""
        return {
            "old_size": self.old_size,
            "old_root": self.old_root.hex(),
            "new_size": self.checkpoint.size,
            "new_root": self.checkpoint.root.hex(),
            "proof": _hex(self.proof),
            "checkpoint": self.note,
            "verified": True,
        }


def consistency_proof(app: App, old_size: int) -> ConsistencyResult:
    """Prove that the tree of ``old_size`` is a prefix of the newest signed checkpoint."""
    identity = _identity(app)
    _size, note = _checkpoint_of_size(app, None)
    checkpoint = open_checkpoint(note, identity.verifier, identity.origin)
    if not 0 < old_size <= checkpoint.size:
        raise InputError(f"old size must be 1..{checkpoint.size}, not {old_size}")
    with app.read() as uow:
        log = LedgerLog(uow.ledger)
        proof = log.consistency_proof(old_size, checkpoint.size)
        old_root = log.root(old_size)
    merkle.verify_consistency(old_size, checkpoint.size, old_root, checkpoint.root, proof)
    return ConsistencyResult(
        old_size=old_size, old_root=old_root, proof=proof, checkpoint=checkpoint, note=note
    )


# -- export -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """An export file written and recorded."""

    path: Path
    entries: int
    checkpoints: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """``{"path", "entries", "checkpoints", "sha256"}``."""
        return {
            "path": str(self.path),
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "sha256": self.sha256,
        }


def export_ledger(app: App, out: Path) -> ExportResult:
    """Write every entry and checkpoint to ``out`` (JSON Lines, see ``ledger.export``).

    The file is written to a temporary name, recorded as ``ledger.exported`` with its SHA-256,
    and renamed into place inside that change, so an export exists exactly when it is
    recorded. The recorded event itself is not in the file (it follows it).
    """
    identity = _identity(app)
    if out.exists():
        raise AlreadyExists(f"{out} already exists", hint="choose another --out path")
    tmp = out.with_name(f".{out.name}.{_random_hex()}.tmp")
    try:
        with app.read() as uow:
            checkpoints = [note for _size, note in uow.ledger.checkpoints()]
            size = uow.ledger.size()
            header = ExportHeader(
                origin=identity.origin,
                vkey=identity.vkey,
                size=size,
                checkpoints=len(checkpoints),
                exported_at=_now(),
            )
            try:
                with tmp.open("xb") as fh:
                    summary = write_export(fh, header, checkpoints, uow.ledger.entry_rows())
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise InputError(f"cannot write {out}: {exc.strerror}") from exc
        try:
            with app.change() as change:
                change.record(
                    "ledger.exported",
                    f"ledger:{identity.origin}",
                    {
                        "file": str(out),
                        "sha256": summary.sha256,
                        "entries": summary.entries,
                        "checkpoints": summary.checkpoints,
                    },
                )
                tmp.replace(out)
        except BaseException:  # not recorded (e.g. refused at commit): no export either
            with contextlib.suppress(OSError):
                out.unlink()
            raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return ExportResult(
        path=out, entries=summary.entries, checkpoints=summary.checkpoints, sha256=summary.sha256
    )


# -- listing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShownEntry:
    """An entry for display: the event, or the raw bytes when they are not a valid event."""

    seq: int
    event: Event | None
    raw: bytes

    def to_json(self) -> dict[str, Any]:
        """The event's JSON, or ``{"seq", "invalid": true, "entry"}``."""
        if self.event is not None:
            return self.event.to_json()
        return {"seq": self.seq, "invalid": True, "entry": self.raw.decode("utf-8", "replace")}


def parse_since(text: str) -> str:
    """An RFC 3339 time (with offset, or ``Z``) as the ledger's UTC string form."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"--since {text!r} is not an RFC 3339 time", hint="e.g. 2026-01-31T00:00:00Z"
        ) from exc
    if moment.tzinfo is None:
        raise InputError(f"--since {text!r} has no UTC offset", hint="add Z or +HH:MM")
    return rfc3339_utc(moment)


def show_events(
    app: App, *, since: str | None = None, action: str | None = None, limit: int | None = None
) -> list[ShownEntry]:
    """Entries in sequence order, filtered by time (``since`` RFC 3339) and action; the
    first ``limit`` that match."""
    since_key = parse_since(since) if since is not None else None
    with app.read() as uow:
        rows = uow.ledger.find(action=action, since=since_key, limit=limit)
    shown = []
    for row in rows:
        try:
            event: Event | None = Event.from_canonical(row.entry)
        except FormatError:
            event = None
        shown.append(ShownEntry(seq=row.seq, event=event, raw=row.entry))
    return shown


# -- verification -----------------------------------------------------------------------------


def verify_catalog(
    app: App,
    *,
    vkey: str | None = None,
    old_checkpoint: Path | None = None,
    full: bool = False,
) -> VerifyReport:
    """Verify the catalog's ledger with the home's key (or ``vkey``); never raises for a
    discrepancy.

    Beyond what :func:`verify_ledger` checks, from the catalog: every stored subtree hash
    (the ones proofs are built from) against the entries (``stored-nodes-mismatch``); the
    signer's own memory of the newest checkpoint it signed (``HOME/keys/ledger.signed``) as
    one more signed checkpoint, so a ledger cut short or extended behind its back fails even
    when every checkpoint row was removed; and that the key used is the one whose creation
    the ledger's seq 0 records (``key-not-creator``): a key file swapped for another, with
    every checkpoint re-signed, is caught here, not only by an auditor's copy of the key.
    The report names the key it used.
    """
    identity = _identity(app) if vkey is None else None
    verifier = identity.verifier if identity is not None else parse_vkey(str(vkey))
    old = read_saved_checkpoint(old_checkpoint) if old_checkpoint is not None else None
    remembered = None
    if identity is not None:
        path = signed_path(app.settings.home)
        if path.exists():
            remembered = _read_note(path)
    with app.read() as uow:
        rows = uow.ledger.checkpoints()
        checkpoints = [note for _size, note in rows]
        report = verify_ledger(
            uow.ledger.entry_rows_with_nodes(),
            checkpoints,
            verifier,
            old_checkpoint=old,
            full=full,
            remembered=remembered,
        )
        first = list(uow.ledger.entries(0, 1))
    extra = [
        f
        for f in (
            _creator_finding(first[0].entry if first else None, verifier),
            _checkpoint_row_finding(rows),
        )
        if f is not None
    ]
    return VerifyReport(
        size=report.size,
        root=report.root,
        checkpoint=report.checkpoint,
        findings=(*report.findings, *extra),
        vkey=verifier.vkey(),
        key_source="the home's key file" if vkey is None else "--public-key",
    )


def require_verified_ledger(app: App, *, refusing: str, nothing: str) -> VerifyReport:
    """Verify the catalog's ledger in full (:func:`verify_catalog`) before an act that cannot
    be undone or that vouches for the ledger (a deletion, an evidence package); raise
    :class:`IntegrityError` (exit 1) naming the first finding when it does not verify.
    ``refusing``: what is refused ("to delete backup X"); ``nothing``: what was not done."""
    report = verify_catalog(app)
    if not report.ok:
        first = report.findings[0]
        raise IntegrityError(
            f"refusing {refusing}: the ledger does not verify ({len(report.findings)} "
            f"finding(s); first: {first.code.value}: {first.message})",
            hint=f"run `affidavit ledger verify`; nothing was {nothing}",
        )
    return report


def _checkpoint_row_finding(rows: list[tuple[int, str]]) -> Finding | None:
    """A finding when a checkpoint row's ``size`` column (what the signer looks up) is not
    the size its note signs (judged for signatures by the verifier itself)."""
    wrong = []
    for size, note in rows:
        try:
            signed = Checkpoint.from_text(note[: note.rfind("\n\n") + 1]).size
        except FormatError:
            continue  # malformed notes are the verifier's checkpoint-malformed
        if signed != size:
            wrong.append(f"row {size} holds a checkpoint of {signed}")
    if not wrong:
        return None
    return Finding(
        code=FindingCode.COLUMN_MISMATCH,
        seq=None,
        message="checkpoint rows hold checkpoints of other sizes: " + "; ".join(wrong[:5]),
    )


def _creator_finding(entry: bytes | None, verifier: NoteVerifier) -> Finding | None:
    """A finding unless seq 0 is the ``ledger.key_created`` event of the verifier's key."""
    if entry is None:
        return None  # an empty ledger: judged by the verifier (no-checkpoint)
    problem = creation_problem(entry, verifier.vkey())
    if problem is None:
        return None
    kind, found = problem
    message = (
        f"seq 0 is {found}, not the {KEY_CREATED} event of the key used"
        if kind == "not-created"
        else f"the ledger was created with key {found} (seq 0), but is verified with "
        f"{verifier.vkey()!r}: the key was swapped"
    )
    return Finding(code=FindingCode.KEY_NOT_CREATOR, seq=0, message=message)


def verify_export(
    path: Path,
    *,
    vkey: str | None,
    settings: Settings | None = None,
    old_checkpoint: Path | None = None,
    full: bool = False,
) -> VerifyReport:
    """Verify an export file with a verifier key alone (the auditor's path; no catalog).

    ``vkey`` defaults to the key of ``settings.home`` when that home has one; the vkey in the
    file's header is never trusted. A malformed or truncated file raises :class:`FormatError`.
    """
    if vkey is not None:
        verifier = parse_vkey(vkey)
    else:
        identity = load_ledger_identity(settings.home) if settings is not None else None
        if identity is None:
            raise InputError(
                "verifying an export file needs the verifier key",
                hint="pass --public-key with the key the ledger's owner gave you "
                "(the key inside the file is not trusted)",
            )
        verifier = identity.verifier
    old = read_saved_checkpoint(old_checkpoint) if old_checkpoint is not None else None
    with ExportReader(path) as reader:
        return verify_ledger(
            reader.records(), reader.checkpoints, verifier, old_checkpoint=old, full=full
        )


# -- attestations -----------------------------------------------------------------------------


def attest_and_record(change: Change, statement: Statement) -> Envelope:
    """Sign ``statement`` with the ledger key and record ``attestation.created`` in ``change``.

    The event's details carry the SHA-256 of the envelope's JSON and of the statement
    payload, the predicate type and the subjects, so each attestation has an inclusion proof.
    """
    identity = change.identity
    if identity is None:
        raise InputError(
            "this home has no ledger signing key yet", hint="run `affidavit init` to create it"
        )
    envelope = attest(statement, identity.signer.key, identity.keyid)
    payload_digest = sha256_hex(envelope.payload)
    change.record(
        "attestation.created",
        f"attestation:{payload_digest}",
        {
            "envelope_sha256": sha256_hex(envelope.to_json().encode("utf-8")),
            "payload_sha256": payload_digest,
            "predicate_type": statement.predicate_type,
            "keyid": identity.keyid,
            "subjects": [s.to_dict() for s in statement.subjects],
        },
    )
    return envelope
