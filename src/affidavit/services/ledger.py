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
from affidavit.errors import (
    AlreadyExists,
    FormatError,
    InputError,
    IntegrityError,
    NotFound,
    VaultError,
)
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
from affidavit.models.ledger import Event, rfc3339_utc
from affidavit.services.backends import vault_backend
from affidavit.services.context import (
    App,
    Change,
    LedgerIdentity,
    ledger_key_path,
    ledger_origin_path,
    load_ledger_identity,
    store_checkpoint,
)
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

    Writes ``HOME/keys/ledger.key`` (mode 0600) and ``HOME/keys/ledger.origin`` and records
    ``ledger.key_created`` with the verifier key; the checkpoint signed with that change
    covers every entry before it (entries made before the ledger had a key). Raises
    :class:`KeystoreError` when only one of the two files exists.
    """
    home = app.settings.home
    existing = load_ledger_identity(home)
    if existing is not None:
        return SetupResult(origin=existing.origin, vkey=existing.vkey, created=False)
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
    with app.change() as change:
        change.record(
            "ledger.key_created",
            f"ledger:{origin}",
            {"origin": origin, "vkey": identity.vkey, "key_file": str(ledger_key_path(home))},
        )
    return SetupResult(origin=origin, vkey=identity.vkey, created=True)


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
    """A signed checkpoint covering the whole ledger (the newest stored one when it does,
    else a fresh one)."""
    return _current_checkpoint(app, _identity(app))


def _current_checkpoint(app: App, identity: LedgerIdentity) -> str:
    """The newest stored checkpoint when it covers the whole ledger, else a fresh one."""
    with app.read() as uow:
        latest = uow.ledger.latest_checkpoint()
        size = uow.ledger.size()
    if latest is not None and latest[0] == size:
        return latest[1]
    with app.change() as change:  # signs on demand (a ledger that predates its key)
        latest = change.uow.ledger.latest_checkpoint()
        if latest is not None and latest[0] == change.log.size():
            return latest[1]
        return store_checkpoint(change.uow, change.log, identity)


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
    note = _current_checkpoint(app, identity)
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
_MAX_NOTE_BYTES = 64 * 1024


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
        raw = fh.read(_MAX_NOTE_BYTES + 1)
    if len(raw) > _MAX_NOTE_BYTES:
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
    tmp = path.with_name(f".{path.name}.{_random_hex()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc


def _read_note(path: Path) -> str:
    try:
        data = path.read_bytes()[: _MAX_CHECKPOINT_FILE + 1]
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
    discrepancy. Adds ``stored-nodes-mismatch`` when the stored subtree hashes (used by
    proofs) do not give the root recomputed from the entries."""
    verifier = parse_vkey(vkey) if vkey is not None else _identity(app).verifier
    old = read_saved_checkpoint(old_checkpoint) if old_checkpoint is not None else None
    with app.read() as uow:
        checkpoints = [note for _size, note in uow.ledger.checkpoints()]
        report = verify_ledger(
            uow.ledger.entry_rows(), checkpoints, verifier, old_checkpoint=old, full=full
        )
        extra = _check_nodes(LedgerLog(uow.ledger), report)
    if extra is None:
        return report
    return VerifyReport(
        size=report.size,
        root=report.root,
        checkpoint=report.checkpoint,
        findings=(*report.findings, extra),
    )


def _check_nodes(log: LedgerLog, report: VerifyReport) -> Finding | None:
    try:
        stored = log.root(report.size) if report.size == log.size() else None
    except IntegrityError as exc:
        return Finding(code=FindingCode.STORED_NODES_MISMATCH, seq=None, message=exc.message)
    if stored is not None and stored == report.root:
        return None
    return Finding(
        code=FindingCode.STORED_NODES_MISMATCH,
        seq=None,
        message="the stored subtree hashes do not give the root recomputed from the entries "
        "(proofs from this catalog will fail)",
    )


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
