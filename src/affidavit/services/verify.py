"""Verification of a backup: is it intact, is it what its signed manifest says, and how does it
compare with its live source now.

A verifier collects every discrepancy as a :class:`~affidavit.models.checks.Finding` with a
stable code (:class:`~affidavit.models.checks.CheckCode`, shared with drills) and never stops
at the first; a separate decision step (:func:`decide`) turns the list into pass/fail,
failing closed: a backup with no artifacts or no signed manifest is not ok, and only
``drift`` (expected change at the source after the backup) does not fail a verification.

Trust is anchored in the ledger key: the DSSE envelope must verify with it, and the values the
artifacts are checked against (sizes, ciphertext and plaintext SHA-256, dataset fingerprints)
are read from the *signed* statement, not from catalog rows that anyone with write access to
the database could edit; so is the source that ``--against-source`` may read (name, engine and
URI without secrets: :meth:`_Run.check_source_identity`, ``source-mismatch``). Every artifact
is read once, streaming: its ciphertext is hashed, decrypted with the backup's unwrapped age
identity (in a child process from 32 MiB on, so that the cipher runs on another core:
:mod:`affidavit.crypto.age_process`), the plaintext hashed and, for data artifacts,
re-fingerprinted in the same pass (mongodump ``.bson``: framing-only while the plaintext hash
proves the rest, see :meth:`_Run.content`) or from a private spool (RDB and archive files, whose
parsers need a file; :mod:`affidavit.private_temp`).

Sampling (``sample_percent``) checks a random subset of the data artifacts chosen by a
recorded seed (:func:`sample_paths`); the manifest, its signature, its vault copy and every
metadata and fingerprint-index artifact are always checked.

Could-not-run. An unreadable vault or unreachable source raises
:class:`~affidavit.errors.OperationError` (exit 3) and **no verification is recorded**: a
verification row is a statement about the backup, and an outage says nothing about it. The
attempt is recorded honestly as a ``verification.could_not_run`` ledger event with the error,
so cadence and auditors see it. A key that cannot be unwrapped is different: it is a finding
(``key-unwrap-failed``), because a backup whose key cannot be unwrapped cannot be restored. So
is a vault that answers with something wrong: a link, folder or FIFO where an artifact should
be (``artifact-not-a-file``), anything in the backup's folder it never recorded, hidden or not
(``artifact-unexpected``, :meth:`~affidavit.vaults.base.VaultBackend.foreign`), and a lock
weaker than the one the backup wrote and signed (``artifact-lock-weakened``,
:meth:`~affidavit.vaults.base.VaultBackend.lock_shortfalls`).
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from affidavit import __version__
from affidavit.crypto.age import decrypt_chunks, recipient_of
from affidavit.crypto.age_process import AgeProcess
from affidavit.crypto.digest import Sha256Stream, constant_time_equal, sha256, sha256_hex
from affidavit.crypto.dsse import Envelope
from affidavit.errors import (
    FormatError,
    InputError,
    IntegrityError,
    KeystoreError,
    NotFound,
    OperationError,
)
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.diff import Change, DiffResult, diff_indexes
from affidavit.fingerprint.index import IndexReader
from affidavit.formats.base import BsonFramer
from affidavit.formats.bson_codec import exact_record
from affidavit.formats.keys import describe_key
from affidavit.formats.redis_codec import encode_redis_record
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    VERIFICATION_PREDICATE_TYPE,
    Statement,
    Subject,
    verify_attestation,
)
from affidavit.models.backup import ArtifactRole, Backup, BackupStatus
from affidavit.models.checks import NON_FAILING, CheckCode, Finding, Verification
from affidavit.models.inventory import Source
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.private_temp import open_private, private_folder, sweep
from affidavit.services.artifacts import PROCESS_FROM
from affidavit.services.backends import engine_for, reader_class, vault_backend
from affidavit.services.context import App
from affidavit.services.fingerprint import (
    fingerprint_bson_stream,
    fingerprint_records,
    prefers_snapshot,
    redis_snapshot_fingerprints,
)
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.ledger import _identity, attest_and_record
from affidavit.vaults.base import (
    ArtifactNotFound,
    ArtifactReplaced,
    EntryKind,
    ForeignEntry,
    RetentionDamaged,
    VaultBackend,
)

__all__ = [
    "NON_FAILING",
    "CheckCode",
    "ManifestCopy",
    "check_manifest_copy",
    "decide",
    "list_verifications",
    "new_seed",
    "sample_paths",
    "verify_backup",
]

_CHUNK = 1 << 20
_KEYS_SHOWN = 100  # keys named in one finding
_KEYS_CLASSIFIED = 10_000  # keys looked up in the source's change log per dataset
_IRREGULAR: tuple[str, Path | None] = ("", None)  # a fast content pass that met a defect


def _now() -> datetime:
    return datetime.now(UTC)


def new_seed() -> str:
    """A fresh sample seed: 16 hex digits."""
    return os.urandom(8).hex()


def sample_paths(paths: Sequence[str], percent: float, seed: str) -> list[str]:
    """The artifacts a sample of ``percent`` with ``seed`` checks, sorted.

    Each path is ranked by ``SHA-256(seed || 0x00 || path)`` and the ``ceil(n * percent /
    100)`` lowest ranks are taken (at least one when there is any): the same seed and paths
    always give the same sample, on any machine, without affidavit's code (``sha256sum``
    reproduces it)."""
    if not paths:
        return []
    k = max(1, math.ceil(len(paths) * percent / 100))
    ranked = sorted(set(paths), key=lambda p: sha256(seed.encode() + b"\x00" + p.encode()))
    return sorted(ranked[:k])


def decide(findings: Sequence[Finding], *, checked: int) -> bool:
    """Pass/fail: ok only when something was checked and every finding is non-failing."""
    return checked > 0 and all(f.code in NON_FAILING for f in findings)


_MANIFEST_COPY_MAX = 16 << 20  # bytes of a manifest copy read (a genuine one is far smaller)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestCopy:
    """What the vault holds as the copy of a backup's signed manifest."""

    path: str | None  # where the backup recorded it (None: no copy was recorded)
    sha256: str | None  # of the bytes read (None: nothing could be read)
    findings: tuple[Finding, ...]


def check_manifest_copy(vault: VaultBackend, backup: Backup) -> ManifestCopy:
    """The vault's copy of the signed envelope (``SOURCE/BACKUP/manifest.dsse.json``) must be
    there, a regular file, and byte-identical to the catalog's envelope (which the caller
    checks against the ledger key). Verifications and drills check it alike. Raises
    ``VaultError`` when the vault cannot be read."""
    copies = [a for a in backup.artifacts if a.role is ArtifactRole.MANIFEST]
    if not copies:
        missing = Finding(
            code=CheckCode.MANIFEST_COPY_MISSING.value,
            message="no copy of the signed manifest was recorded in the vault",
            subject=backup.id,
        )
        return ManifestCopy(path=None, sha256=None, findings=(missing,))
    copy = copies[0]
    try:
        with vault.open(copy.path) as fh:
            data = fh.read(_MANIFEST_COPY_MAX)
    except ArtifactReplaced as exc:
        replaced = _not_a_file(copy.path, exc.kind, exc.message)
        return ManifestCopy(path=copy.path, sha256=None, findings=(replaced,))
    except ArtifactNotFound:
        gone = Finding(
            code=CheckCode.MANIFEST_COPY_MISSING.value,
            message="the vault's manifest copy is gone",
            subject=copy.path,
        )
        return ManifestCopy(path=copy.path, sha256=None, findings=(gone,))
    digest = sha256_hex(data)
    if backup.envelope is not None and constant_time_equal(data, backup.envelope.encode()):
        return ManifestCopy(path=copy.path, sha256=digest, findings=())
    differs = Finding(
        code=CheckCode.MANIFEST_COPY_MISMATCH.value,
        message="the vault's copy of the signed manifest differs from the catalog's",
        subject=copy.path,
        details={"vault_sha256": digest, "recorded_sha256": copy.sha256},
    )
    return ManifestCopy(path=copy.path, sha256=digest, findings=(differs,))


def _not_a_file(path: str, kind: str, error: str) -> Finding:
    article = "an" if kind[:1] in "aeiouAEIOU" else "a"
    return Finding(
        code=CheckCode.ARTIFACT_NOT_A_FILE.value,
        message=f"{article} {kind} stands where the artifact should be",
        subject=path,
        details={"kind": kind, "error": error},
    )


_ENTRY_WORDS = {
    EntryKind.HIDDEN_FILE: "a hidden file",
    EntryKind.UNFINISHED_WRITE: "an unfinished write (the temporary file of a put that never "
    "completed)",
    EntryKind.ORPHANED_RETENTION: "a retention record without its artifact",
    EntryKind.SYMLINK: "a symbolic link",
    EntryKind.FOLDER: "a folder without artifacts",
    EntryKind.SPECIAL_FILE: "a special file",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Expected:
    """What the (signed) manifest says about one artifact."""

    path: str
    role: str
    dataset: str | None
    size: int
    sha256: str
    plain_size: int | None
    plain_sha256: str | None


class _PlainReader:
    """A file-like view of a plaintext chunk iterator that hashes every byte it pulls (unless
    the decryption process hashes them: ``hashing=False``)."""

    def __init__(self, chunks: Iterator[bytes], *, hashing: bool = True) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._hashing = hashing
        self.hash = Sha256Stream()
        self.size = 0

    def _pull(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        if self._hashing:
            self.hash.update(chunk)
        self.size += len(chunk)
        self._buf = memoryview(chunk)
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer only at the end): a framer asking for a batch gets it in
        one piece, however small the pieces of the decryption are."""
        if n is None or n < 0:
            parts = [bytes(self._buf)]
            self._buf = memoryview(b"")
            while self._pull():
                parts.append(bytes(self._buf))
            self._buf = memoryview(b"")
            return b"".join(parts)
        if len(self._buf) >= n:
            out = bytes(self._buf[:n])
            self._buf = self._buf[n:]
            return out
        parts = [bytes(self._buf)]
        have = len(parts[0])
        self._buf = memoryview(b"")
        while have < n and self._pull():
            take = self._buf[: n - have]
            parts.append(bytes(take))
            have += len(take)
            self._buf = self._buf[len(take) :]
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Pull (and hash) whatever the consumer did not read."""
        self._buf = memoryview(b"")
        while self._pull():
            self._buf = memoryview(b"")


@dataclass
class _Run:
    """One verification in progress."""

    app: App
    backup: Backup
    vault: VaultBackend
    rep: Reporter
    tmp: Path
    sample_percent: float | None
    seed: str | None
    findings: list[Finding] = field(default_factory=list)
    expected: list[_Expected] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # name -> signed fingerprint text
    indexes: dict[str, Path] = field(default_factory=dict)  # stored index, decrypted
    computed: dict[str, tuple[str, Path | None]] = field(default_factory=dict)  # fp, index
    observed: dict[str, str] = field(default_factory=dict)  # path -> ciphertext sha256 read
    checked_paths: list[str] = field(default_factory=list)
    plain_proven: set[str] = field(default_factory=set)  # plaintext SHA-256 = the signed one
    copy_sha256: str | None = None
    copy_path: str | None = None
    identity: str | None = None
    against: dict[str, Any] | None = None
    signed_source: dict[str, Any] | None = None  # the source the signed manifest names
    retain_until: datetime | None = None  # as signed: what every artifact's lock must hold
    not_files: set[str] = field(default_factory=set)  # artifact-not-a-file already reported

    def find(self, code: CheckCode, message: str, subject: str = "", **details: Any) -> None:
        self.findings.append(
            Finding(code=code.value, message=message, subject=subject, details=details)
        )

    # -- (a) the manifest ------------------------------------------------------------------

    def check_manifest(self) -> None:
        backup = self.backup
        identity = _identity(self.app)
        keys = {identity.keyid: identity.signer.key.public_key}
        catalog_rows = [a for a in backup.artifacts if a.role is not ArtifactRole.MANIFEST]
        statement: Statement | None = None
        if backup.status is not BackupStatus.COMPLETE:
            self.find(
                CheckCode.BACKUP_INCOMPLETE,
                f"backup {backup.id} is {backup.status.value}, not complete",
                backup.id,
                status=backup.status.value,
                error=backup.error,
            )
        if backup.envelope is None or backup.manifest is None:
            self.find(CheckCode.MANIFEST_MISSING, "the catalog holds no signed manifest", backup.id)
        else:
            try:
                envelope = Envelope.from_json(backup.envelope)
                statement = verify_attestation(envelope, keys, predicate_type=BACKUP_PREDICATE_TYPE)
            except (IntegrityError, FormatError) as exc:
                self.find(
                    CheckCode.MANIFEST_SIGNATURE_INVALID,
                    f"the manifest's signature does not verify with the ledger key: {exc.message}",
                    backup.id,
                    keyid=identity.keyid,
                )
            else:
                manifest_ok = constant_time_equal(envelope.payload, backup.manifest) and (
                    backup.manifest_sha256 == sha256_hex(backup.manifest)
                )
                if not manifest_ok:
                    self.find(
                        CheckCode.MANIFEST_MISMATCH,
                        "the catalog's manifest differs from the signed statement",
                        backup.id,
                        signed_sha256=sha256_hex(envelope.payload),
                        catalog_sha256=sha256_hex(backup.manifest),
                    )
                signed = {(s.name, s.sha256) for s in statement.subjects}
                recorded = {(a.path, a.sha256) for a in catalog_rows}
                if catalog_rows and signed != recorded:
                    self.find(
                        CheckCode.SUBJECTS_MISMATCH,
                        "the signed subjects differ from the catalog's artifact list",
                        backup.id,
                        only_signed=sorted(n for n, _ in signed - recorded),
                        only_in_catalog=sorted(n for n, _ in recorded - signed),
                    )
        if statement is not None:  # the signed values are the expectations
            pred = statement.predicate
            self.expected = [
                _Expected(
                    path=str(a["path"]),
                    role=str(a["role"]),
                    dataset=a.get("dataset"),
                    size=int(a["size"]),
                    sha256=str(a["sha256"]),
                    plain_size=a.get("plain_size"),
                    plain_sha256=a.get("plain_sha256"),
                )
                for a in pred.get("artifacts", [])
            ]
            self.datasets = {
                str(d["name"]): str(d["fingerprint"]) for d in pred.get("datasets", [])
            }
            self.retain_until = _signed_date(pred.get("retain_until")) or backup.retain_until
            named = pred.get("source")
            self.signed_source = named if isinstance(named, dict) else {}
        else:  # unsigned: the catalog rows, already reported as untrustworthy
            self.expected = [
                _Expected(
                    path=a.path,
                    role=a.role.value,
                    dataset=a.dataset,
                    size=a.size,
                    sha256=a.sha256,
                    plain_size=a.plain_size,
                    plain_sha256=a.plain_sha256,
                )
                for a in catalog_rows
            ]
            self.datasets = {d.name: d.fingerprint for d in backup.datasets}
            self.retain_until = backup.retain_until
        if not self.expected:
            self.find(CheckCode.NO_ARTIFACTS, "the backup has no artifacts to verify", backup.id)
        self.check_copy()

    def check_copy(self) -> None:
        """The envelope's copy in the vault must be byte-identical to the catalog's, and
        locked as it was written."""
        copy = check_manifest_copy(self.vault, self.backup)
        self.findings.extend(copy.findings)
        self.copy_path, self.copy_sha256 = copy.path, copy.sha256
        if copy.path is not None and copy.sha256 is not None:
            self.checked_paths.append(copy.path)
            self.check_lock(copy.path)
        elif copy.path is not None and any(
            f.code == CheckCode.ARTIFACT_NOT_A_FILE for f in copy.findings
        ):
            self.not_files.add(copy.path)

    def check_unexpected(self) -> None:
        """Everything in the backup's vault folder that no manifest names: files the vault
        lists, and what it does not list (:meth:`VaultBackend.foreign`: hidden files that are
        none of the vault's own, unfinished writes, symbolic links, special files, folders
        without artifacts). A recorded artifact whose path holds something else than a file is
        ``artifact-not-a-file``, whether or not this run reads it."""
        marker = f"/{self.backup.id}/"
        paths = {a.path for a in self.backup.artifacts} | {e.path for e in self.expected}
        prefixes = {p[: p.find(marker) + len(marker)] for p in paths if marker in p}
        known = paths | ({self.copy_path} if self.copy_path else set())
        for prefix in sorted(prefixes):
            for path in self.vault.list(prefix):
                if path not in known:
                    self.find(
                        CheckCode.ARTIFACT_UNEXPECTED,
                        "the vault holds a file this backup never recorded",
                        path,
                        kind="file",
                    )
            for entry in self.vault.foreign(prefix):
                self._foreign(entry, known)

    def _foreign(self, entry: ForeignEntry, known: set[str]) -> None:
        if entry.path in known:
            if entry.path not in self.not_files:
                self.not_files.add(entry.path)
                kind = {EntryKind.SYMLINK: "symbolic link", EntryKind.FOLDER: "folder"}.get(
                    entry.kind, entry.detail or "special file"
                )
                what = f"{entry.kind.value} {entry.detail}".strip()
                self.findings.append(_not_a_file(entry.path, kind, what))
            return
        if entry.kind is EntryKind.ORPHANED_RETENTION and entry.artifact in known:
            return  # the record of a recorded artifact: its absence is that artifact's finding
        words = _ENTRY_WORDS[entry.kind]
        if entry.kind is EntryKind.SPECIAL_FILE and entry.detail:
            words = f"a {entry.detail}"
        self.find(
            CheckCode.ARTIFACT_UNEXPECTED,
            f"the backup's folder holds {words} that the backup never recorded",
            entry.path,
            kind=entry.kind.value,
            detail=entry.detail,
            artifact=entry.artifact,
        )

    def check_lock(self, path: str) -> None:
        """The storage's lock on ``path`` must still hold as the backup wrote it, until the
        signed ``retain_until`` (:meth:`VaultBackend.lock_shortfalls`); once that date has
        passed the lock owes nothing more."""
        until = self.retain_until
        if until is None or until <= _now():
            return
        try:
            shortfalls = self.vault.lock_shortfalls(path, until)
        except (ArtifactNotFound, ArtifactReplaced):
            return  # reported where the artifact is read
        if shortfalls:
            self.find(
                CheckCode.ARTIFACT_LOCK_WEAKENED,
                "the storage no longer locks the artifact as it was written: "
                + "; ".join(shortfalls),
                path,
                shortfalls=list(shortfalls),
                retain_until=until.isoformat(),
                lock_mode=self.vault.lock_mode,
            )

    # -- (b) keys and artifacts ------------------------------------------------------------

    def unwrap(self) -> None:
        try:
            identity = unwrap_identity(keystore_for(self.app.settings), self.backup)
            if self.backup.recipient and recipient_of(identity) != self.backup.recipient:
                raise KeystoreError("the unwrapped identity is not the backup's recipient")
        except (KeystoreError, IntegrityError, FormatError) as exc:
            self.find(
                CheckCode.KEY_UNWRAP_FAILED,
                f"the backup's age identity cannot be unwrapped: {exc.message}",
                self.backup.id,
                kek_id=self.backup.kek_id,
                kek_version=self.backup.kek_version,
            )
            return
        self.identity = identity

    def check_artifact(self, art: _Expected, consume: Callable[[_PlainReader], Any] | None) -> Any:
        """Read one artifact once: size, ciphertext hash, decryption, plaintext hash, and the
        content consumer; returns what ``consume`` returned when the artifact decrypted."""
        self.checked_paths.append(art.path)
        opened = self._open(art)
        if opened is None:
            return None
        fh, size = opened
        cipher = Sha256Stream()
        result: Any = None
        decrypted = False
        with fh:

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(_CHUNK):
                    cipher.update(chunk)
                    self.rep.advance(len(chunk))
                    yield chunk

            source = chunks()
            plain: _PlainReader | None = None
            child: AgeProcess | None = None
            if self.identity is not None:
                child, pieces = self._decryption(art.size if size is None else size, source)
                plain = _PlainReader(pieces, hashing=child is None)
                try:
                    try:
                        result = consume(plain) if consume is not None else None
                    except FormatError as exc:
                        self.find(
                            CheckCode.CONTENT_UNREADABLE,
                            f"the decrypted content cannot be parsed: {exc.message}",
                            art.path,
                        )
                        result = None
                    plain.drain()
                    decrypted = True
                except IntegrityError as exc:
                    self.find(
                        CheckCode.ARTIFACT_UNDECRYPTABLE,
                        f"the artifact does not decrypt with the backup's identity: {exc.message}",
                        art.path,
                    )
                finally:
                    _close(pieces)
            for _ in source:  # hash whatever decryption did not read
                pass
        self.rep.finish()
        if size is None:
            self._check_size(art, cipher.length)
        actual = cipher.hexdigest()
        self.observed[art.path] = actual
        if actual != art.sha256:
            self._hash_mismatch(art, actual)
        self.plain_proven.discard(art.path)
        if plain is not None and decrypted and art.plain_sha256 is not None:
            self._check_plaintext(art, plain, child)
        return result if decrypted else None

    def _open(self, art: _Expected) -> tuple[BinaryIO, int | None] | None:
        """The artifact opened for reading and its stored size (None: the vault could not
        say, checked on the bytes read), after its lock and size are checked; None (with its
        finding) when it is missing or something else stands at its path."""
        size: int | None
        try:
            size = self.vault.stat(art.path).size
        except ArtifactReplaced as exc:
            self._not_a_file(art.path, exc)
            return None
        except ArtifactNotFound:
            self.find(CheckCode.ARTIFACT_MISSING, "the artifact is not in the vault", art.path)
            return None
        except RetentionDamaged:
            size = None  # check_lock reports it
        self.check_lock(art.path)
        if size is not None:
            self._check_size(art, size)
        self.rep.task(f"verifying {art.path}", size)
        try:
            return self.vault.open(art.path), size
        except ArtifactReplaced as exc:
            self._not_a_file(art.path, exc)
        except ArtifactNotFound:
            self.find(CheckCode.ARTIFACT_MISSING, "the artifact vanished while verifying", art.path)
        self.rep.finish()
        return None

    def _check_size(self, art: _Expected, size: int) -> None:
        if size != art.size:
            self.find(
                CheckCode.ARTIFACT_SIZE_MISMATCH,
                f"the artifact has {size} bytes, the manifest says {art.size}",
                art.path,
                expected=art.size,
                actual=size,
            )

    def _not_a_file(self, path: str, exc: ArtifactReplaced) -> None:
        if path not in self.not_files:
            self.not_files.add(path)
            self.findings.append(_not_a_file(path, exc.kind, exc.message))

    def _decryption(
        self, size: int, source: Iterator[bytes]
    ) -> tuple[AgeProcess | None, Iterator[bytes]]:
        """The plaintext pieces of ``source``: decrypted in a child process from
        :data:`.PROCESS_FROM` bytes on (the cipher then runs on another core), else in this
        one."""
        assert self.identity is not None
        if size >= PROCESS_FROM:
            child = AgeProcess("decrypt", self.identity, source)
            return child, iter(child)
        return None, decrypt_chunks(source, self.identity)

    def _check_plaintext(
        self, art: _Expected, plain: _PlainReader, child: AgeProcess | None
    ) -> None:
        actual = plain.hash.hexdigest() if child is None else child.plain_sha256
        if actual != art.plain_sha256 or (
            art.plain_size is not None and plain.size != art.plain_size
        ):
            self.find(
                CheckCode.ARTIFACT_PLAINTEXT_MISMATCH,
                "the decrypted artifact differs from what the backup wrote",
                art.path,
                expected=art.plain_sha256,
                actual=actual,
                expected_size=art.plain_size,
                actual_size=plain.size,
            )
        else:
            self.plain_proven.add(art.path)

    def _hash_mismatch(self, art: _Expected, actual: str) -> None:
        with self.app.read() as uow:
            owners = [
                (bid, path)
                for bid, path in uow.backups.artifacts_with_digest(actual)
                if bid != self.backup.id
            ]
        if owners:
            other, path = owners[0]
            self.find(
                CheckCode.ARTIFACT_FROM_OTHER_BACKUP,
                f"the artifact is a file of backup {other} swapped in",
                art.path,
                other_backup=other,
                other_path=path,
                actual=actual,
            )
            return
        self.find(
            CheckCode.ARTIFACT_HASH_MISMATCH,
            "the artifact's SHA-256 differs from the manifest",
            art.path,
            expected=art.sha256,
            actual=actual,
        )

    # -- (c) content -----------------------------------------------------------------------

    def spool(self, name: str) -> Callable[[_PlainReader], Path]:
        """A consumer that copies the plaintext to a private file."""

        def consume(plain: _PlainReader) -> Path:
            path = self.tmp / name
            with open_private(path) as out:
                while chunk := plain.read(_CHUNK):
                    out.write(chunk)
            return path

        return consume

    def bson_fingerprint(
        self, art: _Expected, *, full: bool
    ) -> Callable[[_PlainReader], tuple[str, Path | None]]:
        """A consumer that frames the mongodump ``.bson`` plaintext and fingerprints it.

        ``full``: every document is decoded in full and the index of the computed fingerprint
        is written (it names the keys of a mismatch). Otherwise the pass checks the framing
        only and keeps no keys: enough when the plaintext's SHA-256 matches the signed one
        (see :meth:`content`).

        The hashing stays in this process: the decryption process takes the other core, and
        a worker pool sharing the batches measured no faster on two cores while it costs
        more CPU time in copies (docs/performance.md). No worker process may be forked while
        a decryption process runs anyway (it would inherit the child's pipes)."""
        dataset = art.dataset or art.path

        def consume(plain: _PlainReader) -> tuple[str, Path | None]:
            stream: BinaryIO = cast(BinaryIO, plain)
            if not full and not art.path.endswith(".gz.age"):
                try:
                    return fingerprint_bson_stream(stream, dataset=dataset).text, None
                except FormatError:
                    return _IRREGULAR  # the full pass finds the defect and words it
            if art.path.endswith(".gz.age"):
                stream = cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
            framer = BsonFramer(stream, source=art.path)
            index = None
            if full:
                name = f"computed-{len(self.computed)}-{sha256_hex(dataset.encode())[:8]}"
                index = self.tmp / name
            result = fingerprint_records(
                [],
                framed=iter(framer.next_batch, None),
                encoding=RecordEncoding.BSON,
                profile="exact",
                workers=1,
                index=index,
                dataset=dataset,
                check_bson=full,
            )
            return result.fingerprint.text, index

        return consume

    def content(self, art: _Expected) -> tuple[str, Path | None] | None:
        """Check one mongodump data artifact and re-fingerprint its content.

        The first pass checks the framing of every document and computes the exact
        fingerprint without decoding each document in full. When the plaintext's SHA-256
        matched the signed manifest, the plaintext is byte for byte what the backup wrote
        after checking every document in full, so a full decode would only re-prove what the
        hash proved (docs/verification.md). Otherwise, or when the fingerprint differs from
        the signed one, a second pass decodes every document in full and writes the computed
        index: its findings (``content-unreadable``, the keys of a ``fingerprint-mismatch``)
        are those of a full check."""
        got = self.check_artifact(art, self.bson_fingerprint(art, full=False))
        if got is None:
            return None
        text, _ = got
        expected = self.datasets.get(art.dataset or "")
        if art.path in self.plain_proven and text == expected:
            return cast("tuple[str, Path | None]", got)
        before = len(self.findings)
        again = self.reread(art, self.bson_fingerprint(art, full=True))
        if again is None and got is not _IRREGULAR:
            unreadable = any(f.code == CheckCode.CONTENT_UNREADABLE for f in self.findings[before:])
            if not unreadable:  # the second pass could not run: the first pass's result stands
                return cast("tuple[str, Path | None]", got)
        return cast("tuple[str, Path | None] | None", again)

    def reread(self, art: _Expected, consume: Callable[[_PlainReader], Any]) -> Any:
        """Decrypt an artifact once more for a content pass; only content findings are
        recorded (the artifact's own were recorded by :meth:`check_artifact`)."""
        assert self.identity is not None
        try:
            fh = self.vault.open(art.path)
        except ArtifactNotFound:
            return None
        with fh:

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(_CHUNK):
                    yield chunk

            _, pieces = self._decryption(art.size, chunks())
            plain = _PlainReader(pieces, hashing=False)
            try:
                result = consume(plain)
                plain.drain()
            except FormatError as exc:
                self.find(
                    CheckCode.CONTENT_UNREADABLE,
                    f"the decrypted content cannot be parsed: {exc.message}",
                    art.path,
                )
                return None
            except IntegrityError:
                return None  # reported by check_artifact
            finally:
                _close(pieces)
        return result

    def fingerprint_file(self, spool: Path, fmt: str) -> None:
        """Fingerprint every manifest dataset from a spooled RDB or mongodump archive."""
        accs = {name: Accumulator("exact") for name in self.datasets}
        if fmt == "rdb":
            from affidavit.formats.rdb import RdbReader

            reader = RdbReader(spool, as_of_ms=self._as_of_ms())
            for name, record in reader.iter_all():  # one pass over the file, CRC checked
                acc = accs.get(name)
                if acc is None:
                    acc = accs[name] = Accumulator("exact")  # a dataset the manifest lacks
                acc.add(*encode_redis_record(record))
            encoding = "redis"
        else:
            archive: Any = reader_class(fmt)(spool)
            for name, raw in archive.iter_all():
                if name in accs:
                    accs[name].add(*exact_record(raw))
            encoding = "bson"
        for n, (name, acc) in enumerate(accs.items()):
            index = self.tmp / f"computed-file-{n}"
            fp, _ = acc.finish(index, dataset=name, encoding=encoding)
            self.computed[name] = (fp.text, index)

    def _as_of_ms(self) -> int:
        """The backup's capture time: keys that expired after it are still expected."""
        consistency = self.backup.consistency or {}
        captured = consistency.get("captured_at_ms")
        if isinstance(captured, int):
            return captured
        return int(self.backup.started_at.timestamp() * 1000)

    def compare_fingerprints(self) -> None:
        if self.backup.format == "mongodump":
            # every signed dataset must have a data artifact: one without must not pass
            # silently (whether or not this run samples or can decrypt)
            tagged = {
                e.dataset for e in self.expected if e.role == ArtifactRole.DATA.value and e.dataset
            }
            for name in sorted(set(self.datasets) - tagged):
                self.find(
                    CheckCode.FINGERPRINT_MISMATCH,
                    "no data artifact holds this signed dataset: its content cannot be checked",
                    name,
                    expected=self.datasets[name],
                    actual=None,
                )
        for name, (text, index) in sorted(self.computed.items()):
            expected = self.datasets.get(name)
            if expected is None:
                self.find(
                    CheckCode.FINGERPRINT_MISMATCH,
                    "a data artifact holds a dataset the signed manifest does not name",
                    name,
                    expected=None,
                    actual=text,
                )
                continue
            if text == expected:
                continue
            details: dict[str, Any] = {"expected": expected, "actual": text}
            stored = self.indexes.get(name)
            message = "the re-fingerprinted content differs from the manifest"
            if stored is not None and index is not None:
                diff, encoding = self._diff(stored, index)
                details.update(_diff_details(diff, encoding))
                keys = details["keys"]
                if keys:
                    shown = ", ".join(k["key"] for k in keys[:5])
                    message += f" (keys: {shown}{', ...' if len(keys) > 5 else ''})"
            else:
                details["keys"] = []
                details["note"] = "the stored index is unusable: keys cannot be named"
            self.find(CheckCode.FINGERPRINT_MISMATCH, message, name, **details)

    def _diff(self, left: Path, right: Path, limit: int | None = 200) -> tuple[DiffResult, str]:
        stored = IndexReader(left)
        return diff_indexes(stored, IndexReader(right), limit=limit), stored.header.encoding

    # -- (d) against the live source -------------------------------------------------------

    def check_source_identity(self, source: Source) -> bool:
        """Whether the registered source (catalog row) is the one the signed manifest names:
        same name, engine and URI as recorded without secrets (the user name redacted, as
        :attr:`ConnectionUri.redacted` gives it; host list, port, database and options
        compared as text). Anything that differs is one ``source-mismatch`` finding naming
        each field, and False: the live server is then not read at all (nor sent the
        source's secret), for a look-alike server holding the backup's data would pass.
        True when no signed manifest could be read: there is nothing signed to compare with,
        and the verification fails on that already."""
        signed = self.signed_source
        if signed is None:
            return True
        try:
            uri = ConnectionUri.parse(source.engine, source.uri).redacted
        except InputError:
            uri = "(not a valid URI)"
        registered = {"name": source.name, "engine": source.engine.value, "uri": uri}
        differ = {
            key: {"signed": signed.get(key), "registered": value}
            for key, value in registered.items()
            if signed.get(key) != value
        }
        if not differ:
            return True
        self.find(
            CheckCode.SOURCE_MISMATCH,
            f"the registered source {source.name!r} is not the source the signed manifest "
            f"names ({', '.join(differ)} differ): the live data was not compared",
            source.name,
            fields=differ,
        )
        return False

    def _live_index(self, name: str) -> Path:
        return self.tmp / f"live-{sha256_hex(name.encode())[:12]}"

    def _redis_snapshot(self, engine: Any) -> dict[str, str]:
        """The live fingerprints of a large Redis source's datasets from one RDB snapshot of
        it (:func:`~affidavit.services.fingerprint.redis_snapshot_fingerprints`); empty when
        the source is no Redis server, is small (:func:`prefers_snapshot`) or refuses
        ``SYNC``: each dataset is then read key by key. A dataset the server no longer has is
        left out (it is reported as gone)."""
        if engine.record_encoding is not RecordEncoding.REDIS:
            return {}
        names = []
        for name in sorted(self.datasets):
            try:
                engine.count_records(name)
            except NotFound:
                continue
            names.append(name)
        if not prefers_snapshot(engine, names):
            return {}
        found = redis_snapshot_fingerprints(
            engine, names, profile="exact", index_for=self._live_index, rep=self.rep
        )
        return {} if found is None else {r.name: r.fingerprint.text for r in found}

    def check_source(self, source: Source, engine: Any) -> None:
        summary: dict[str, Any] = {"source": source.name, "datasets": {}}
        snapshot = self._redis_snapshot(engine)
        for name, expected in sorted(self.datasets.items()):
            live_index = self._live_index(name)
            live: str | None = snapshot.get(name)
            if live is None:
                self.rep.task(f"fingerprinting {source.name}/{name} (live)", None)
                try:
                    live = fingerprint_records(
                        engine.iter_records(name),
                        encoding=engine.record_encoding,
                        profile="exact",
                        workers=1,
                        index=live_index,
                        dataset=name,
                    ).fingerprint.text
                except NotFound:
                    live = None
                self.rep.finish()
            summary["datasets"][name] = {
                "live": live,
                "backup": expected,
                "equal": live == expected,
            }
            if live == expected:
                continue
            stored = self.indexes.get(name)
            if live is None:
                self.find(
                    CheckCode.SOURCE_DIFFERS,
                    f"the dataset no longer exists on source {source.name}",
                    name,
                    keys=[],
                )
                continue
            if stored is None:
                self.find(
                    CheckCode.SOURCE_DIFFERS,
                    "the live dataset differs from the backup; the stored index is unusable, "
                    "so the keys cannot be named",
                    name,
                    live=live,
                    backup=expected,
                    keys=[],
                )
                continue
            diff, encoding = self._diff(stored, live_index, limit=_KEYS_CLASSIFIED)
            self._classify(name, diff, encoding, engine, source)
        self.against = summary

    def _classify(
        self, name: str, diff: DiffResult, encoding: str, engine: Any, source: Source
    ) -> None:
        differences = [d for d in diff.differences if d.change is not Change.DUPLICATE]
        total = sum(n for c, n in diff.counts.items() if c is not Change.DUPLICATE)
        lookup = [d.key for d in differences if not d.key_truncated]
        changed = engine.keys_changed_since(name, lookup, self.backup.consistency)
        if changed is None:
            note = (
                f"{source.engine.value} keeps no change log affidavit can read: drift since "
                "the backup cannot be told apart from corruption"
                if source.engine.value != "mongodb"
                else "the oplog is unavailable (standalone server, or rolled over past the "
                "backup): drift cannot be told apart from corruption"
            )
            drift, other = [], differences
        else:
            note = "keys without an oplog entry after the backup's consistency point"
            drift = [d for d in differences if d.key in changed]
            other = [d for d in differences if d.key not in changed]
        unclassified = total - len(differences)  # beyond the lookup limit: not drift
        if drift:
            keys = [_key_json(d, encoding) for d in drift]
            self.find(
                CheckCode.DRIFT,
                f"{len(drift)} record(s) changed at the source after the backup "
                f"(oplog): {', '.join(k['key'] for k in keys[:5])}",
                name,
                count=len(drift),
                keys=keys[:_KEYS_SHOWN],
            )
        if other or unclassified:
            keys = [_key_json(d, encoding) for d in other]
            shown = ", ".join(k["key"] for k in keys[:5])
            self.find(
                CheckCode.SOURCE_DIFFERS,
                f"{len(other) + unclassified} record(s) differ from the live source"
                + (f": {shown}" if shown else ""),
                name,
                count=len(other) + unclassified,
                keys=keys[:_KEYS_SHOWN],
                note=note,
            )

    # -- the whole run ---------------------------------------------------------------------

    def select(self) -> tuple[list[_Expected], dict[str, Any]]:
        """The artifacts to read, and the coverage that gives."""
        data = [e for e in self.expected if e.role == ArtifactRole.DATA.value]
        others = [e for e in self.expected if e.role != ArtifactRole.DATA.value]
        if self.sample_percent is None:
            chosen = data
        else:
            assert self.seed is not None
            picked = set(sample_paths([e.path for e in data], self.sample_percent, self.seed))
            chosen = [e for e in data if e.path in picked]
        total_bytes = sum(e.size for e in data)
        checked_bytes = sum(e.size for e in chosen)
        coverage: dict[str, Any] = {
            "artifacts_total": len(self.expected),
            "artifacts_checked": len(chosen) + len(others),
            "data_artifacts_total": len(data),
            "data_artifacts_checked": len(chosen),
            "data_bytes_total": total_bytes,
            "data_bytes_checked": checked_bytes,
            "data_paths_checked": sorted(e.path for e in chosen),
            "always_checked": "signature, manifest, manifest copy, metadata and index artifacts",
        }
        if self.sample_percent is not None:
            coverage["selection"] = "sha256(seed || 0x00 || path), lowest ceil(n * p / 100)"
        # indexes first (they name keys), then metadata, then data
        order = {ArtifactRole.INDEX.value: 0, ArtifactRole.METADATA.value: 1}
        return sorted([*others, *chosen], key=lambda e: (order.get(e.role, 2), e.path)), coverage

    def run(self, source: Source | None) -> dict[str, Any]:
        engine = None
        self.rep.stage(f"checking the signed manifest of {self.backup.id}")
        self.check_manifest()
        # the source must be the one the signed manifest names (a look-alike server holding
        # the backup's data is never read); then reach it: fail before reading a GiB
        if source is not None and self.check_source_identity(source):
            engine = engine_for(source, timeout=self.app.settings.connect_timeout)
            engine.__enter__()
        try:
            if engine is not None:
                engine.describe()
            self.check_unexpected()
            self.unwrap()
            artifacts, coverage = self.select()
            fmt = self.backup.format
            datasets_checked: set[str] = set()
            for art in artifacts:
                if art.role == ArtifactRole.INDEX.value and art.dataset:
                    spooled = self.check_artifact(art, self.spool(f"stored-{len(self.indexes)}"))
                    if spooled is not None and self._index_usable(art, spooled):
                        self.indexes[art.dataset] = spooled
                elif art.role == ArtifactRole.DATA.value and fmt == "mongodump":
                    got = self.content(art)
                    if got is not None and art.dataset:
                        self.computed[art.dataset] = got
                        datasets_checked.add(art.dataset)
                elif art.role == ArtifactRole.DATA.value and fmt in ("rdb", "mongodump-archive"):
                    spooled = self.check_artifact(art, self.spool("data"))
                    if spooled is not None:
                        try:
                            self.fingerprint_file(spooled, fmt)
                            datasets_checked.update(self.datasets)
                        except FormatError as exc:
                            self.find(
                                CheckCode.CONTENT_UNREADABLE,
                                f"the decrypted content cannot be parsed: {exc.message}",
                                art.path,
                            )
                        spooled.unlink(missing_ok=True)
                else:
                    self.check_artifact(art, None)
            self.compare_fingerprints()
            coverage["datasets_checked"] = sorted(datasets_checked)
            coverage["datasets_total"] = len(self.datasets)
            if source is not None and engine is not None:
                self.check_source(source, engine)
                coverage["against_source"] = True
            elif source is not None:  # source-mismatch: the live server was not read
                self.against = {"source": source.name, "compared": False, "datasets": {}}
                coverage["against_source"] = False
            return coverage
        finally:
            if engine is not None:
                engine.__exit__(None, None, None)

    def _index_usable(self, art: _Expected, path: Path) -> bool:
        bad = [f for f in self.findings if f.subject == art.path]
        try:
            IndexReader(path).verify_trailer()
        except (FormatError, InputError) as exc:
            self.find(
                CheckCode.INDEX_UNUSABLE, f"the stored index is unusable: {exc.message}", art.path
            )
            return False
        return not bad


def _close(pieces: Iterator[bytes]) -> None:
    """End a decryption that was not read to its end (a process is stopped and waited for)."""
    close = getattr(pieces, "close", None)
    if close is not None:
        close()


def _signed_date(value: Any) -> datetime | None:
    """A timezone-aware date of the signed manifest (None: absent or not one)."""
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.utcoffset() is not None else None


def _key_json(diff: Any, encoding: str) -> dict[str, Any]:
    return {
        "change": diff.change.value,
        "key": describe_key(encoding, "exact", diff.key, truncated=diff.key_truncated),
        "key_hash": diff.key_hash.hex(),
    }


def _diff_details(diff: DiffResult, encoding: str) -> dict[str, Any]:
    return {
        "counts": {c.value: n for c, n in diff.counts.items() if n},
        "keys": [
            _key_json(d, encoding)
            for d in diff.differences[:_KEYS_SHOWN]
            if d.change is not Change.DUPLICATE
        ],
    }


def _new_id(moment: datetime) -> str:
    return f"vf-{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"


def verify_backup(
    app: App,
    backup_id: str,
    *,
    against_source: bool = False,
    sample_percent: float | None = None,
    seed: str | None = None,
    reporter: Reporter | None = None,
) -> Verification:
    """Verify a backup, record the signed result and return it.

    ``sample_percent`` (0 < p <= 100) checks a seeded random subset of the data artifacts;
    ``seed`` repeats an earlier sample. ``against_source`` also compares each dataset with
    the live source now. Raises :class:`NotFound` / :class:`InputError` (exit 2) for an
    unknown or deleted backup or bad arguments, and :class:`OperationError` (exit 3) when
    the vault or the source cannot be read (recorded only as ``verification.could_not_run``).
    """
    rep = reporter or SilentReporter()
    if sample_percent is not None and not (
        math.isfinite(sample_percent) and 0 < sample_percent <= 100
    ):
        raise InputError(
            f"--sample {sample_percent:g} is outside 0 < PERCENT <= 100",
            hint="for example --sample 10 checks a tenth of the data artifacts",
        )
    if seed is not None and sample_percent is None:
        raise InputError("a seed repeats a sample: give --sample PERCENT with it")
    if seed is not None and not (1 <= len(seed) <= 64 and seed.isprintable()):
        raise InputError("a seed is 1 to 64 printable characters")
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
        vault = uow.vaults.get(backup.vault)
        source = None
        if against_source and backup.source is not None:
            source = uow.sources.get(backup.source)
    if backup.status is BackupStatus.DELETED:
        deleted = backup.deleted_at.isoformat() if backup.deleted_at else "earlier"
        raise InputError(
            f"backup {backup_id} was deleted ({deleted}): its artifacts are gone",
            hint=f"its manifest and fingerprints stay on record: `affidavit backup show "
            f"{backup_id}`; verify a newer backup",
        )
    if against_source and source is None:
        raise InputError(
            f"backup {backup_id} has no registered source to compare with",
            hint="it was ingested without --source",
        )
    _identity(app)  # no ledger key: exit 2 before anything is read
    kind = "sample" if sample_percent is not None else (
        "against-source" if against_source else "full"
    )  # fmt: skip
    if sample_percent is not None and seed is None:
        seed = new_seed()
    sweep()  # plaintext spools of killed commands (affidavit.private_temp)
    started = _now()
    try:
        with private_folder("verify") as tmp:  # plaintext: swept if this process is killed
            run = _Run(
                app=app,
                backup=backup,
                vault=vault_backend(vault),
                rep=rep,
                tmp=tmp,
                sample_percent=sample_percent,
                seed=seed,
            )
            coverage = run.run(source)
    except OperationError as exc:
        with app.change() as change:
            change.record(
                "verification.could_not_run",
                f"backup:{backup_id}",
                {"kind": kind, "error": exc.message},
            )
        raise
    return _record(app, run, kind=kind, started=started, coverage=coverage)


def _record(
    app: App, run: _Run, *, kind: str, started: datetime, coverage: dict[str, Any]
) -> Verification:
    backup = run.backup
    findings = tuple(run.findings)
    checked = len(run.checked_paths)
    ok = decide(findings, checked=checked)
    finished = _now()
    verification_id = _new_id(started)
    subjects = [Subject(name=path, sha256=sha) for path, sha in sorted(run.observed.items())]
    if run.copy_path is not None and run.copy_sha256 is not None:
        subjects.append(Subject(name=run.copy_path, sha256=run.copy_sha256))
    if not subjects:
        subjects = [
            Subject(
                name=f"backup:{backup.id}/manifest",
                sha256=backup.manifest_sha256 or sha256_hex(backup.manifest or b""),
            )
        ]
    statement = Statement(
        subjects=tuple(subjects),
        predicate_type=VERIFICATION_PREDICATE_TYPE,
        predicate={
            "verification_id": verification_id,
            "backup_id": backup.id,
            "manifest_sha256": backup.manifest_sha256,
            "kind": kind,
            "ok": ok,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "sample": None
            if run.sample_percent is None
            else {"percent": run.sample_percent, "seed": run.seed},
            "coverage": coverage,
            "against_source": run.against,
            "findings": [f.to_json() for f in findings],
            "tool": {"name": "affidavit", "version": __version__},
        },
    )
    with app.change() as change:
        envelope = attest_and_record(change, statement)
        verification = Verification(
            id=verification_id,
            backup_id=backup.id,
            kind=kind,
            started_at=started,
            finished_at=finished,
            ok=ok,
            findings=findings,
            sample_percent=run.sample_percent,
            sample_seed=run.seed,
            coverage=coverage,
            envelope=envelope.to_json(),
        )
        change.uow.checks.add_verification(verification)
        change.record(
            "verification.completed",
            f"backup:{backup.id}",
            {
                "verification_id": verification_id,
                "kind": kind,
                "ok": ok,
                "findings": sorted({f.code for f in findings}),
                "sample_seed": run.seed,
                "artifacts_checked": coverage.get("artifacts_checked"),
                "payload_sha256": sha256_hex(envelope.payload),
            },
        )
    return verification


def list_verifications(app: App, backup_id: str | None = None) -> list[Verification]:
    """Recorded verifications (of one backup), newest first."""
    with app.read() as uow:
        if backup_id is not None:
            uow.backups.get(backup_id)
        return uow.checks.verifications(backup_id)
