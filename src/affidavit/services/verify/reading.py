"""Each artifact of a backup read out of the vault once, and what else the vault holds.

:meth:`ArtifactReader.check_artifact` streams one artifact: its stored size and lock checked,
its ciphertext hashed, decrypted with the backup's unwrapped age identity (:meth:`unwrap`)
by the road out of a vault (:func:`affidavit.services.artifacts.decryption`), its plaintext
hashed and handed to a content consumer (:mod:`.content`) in the same pass. The reader also
checks the vault's copy of the signed manifest (:meth:`check_copy`), every entry of the
backup's folder that no manifest names (:meth:`check_unexpected`) and the storage's locks
(:meth:`check_lock`), and keeps what the signed result names: the ciphertext digests read and
the paths checked.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from affidavit.crypto.age import recipient_of
from affidavit.crypto.age_process import AgeProcess
from affidavit.crypto.age_reader import MAX_HEADER, AgeDecryptError, AgeFile
from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import FormatError, IntegrityError, KeystoreError, OperationError, VaultError
from affidavit.models.checks import CheckCode
from affidavit.models.inventory import VaultKind
from affidavit.private_temp import open_private
from affidavit.services.artifacts import decryption
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.verify.manifest_copy import check_manifest_copy, not_a_file
from affidavit.services.verify.segments import (
    Ahead,
    BufferPool,
    Pipeline,
    RangedFile,
    Remote,
    Segmented,
    SegmentUse,
    read_segments,
)
from affidavit.services.verify.state import CHUNK, Expected, Run, now
from affidavit.vaults.base import (
    ArtifactNotFound,
    ArtifactReplaced,
    EntryKind,
    ForeignEntry,
    RetentionDamaged,
)

_WHOLE_PIECE = 4 << 20  # bytes per pread of the whole-file digest
_ENTRY_WORDS = {
    EntryKind.HIDDEN_FILE: "a hidden file",
    EntryKind.UNFINISHED_WRITE: "an unfinished write (the temporary file of a put that never "
    "completed)",
    EntryKind.ORPHANED_RETENTION: "a retention record without its artifact",
    EntryKind.SYMLINK: "a symbolic link",
    EntryKind.FOLDER: "a folder without artifacts",
    EntryKind.SPECIAL_FILE: "a special file",
}


class PlainReader:
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


Consumer = Callable[[PlainReader], Any]
"""What reads an artifact's plaintext as it decrypts (a fingerprint pass, a spool)."""


@dataclass(slots=True)
class ArtifactReader:
    """Reads the artifacts of one verification's backup out of its vault."""

    run: Run
    identity: str | None = None  # the backup's age identity, once unwrapped
    observed: dict[str, str] = field(default_factory=dict)  # path -> ciphertext sha256 read
    checked_paths: list[str] = field(default_factory=list)
    plain_proven: set[str] = field(default_factory=set)  # plaintext SHA-256 = the signed one
    # artifacts whose signed segment table this (deep) run proved self-consistent: every
    # segment as signed, the whole-file and every plaintext digest recomputed and equal
    proven: set[str] = field(default_factory=set)
    copy_path: str | None = None  # the vault's copy of the signed manifest
    copy_sha256: str | None = None  # of the copy's bytes read
    not_files: set[str] = field(default_factory=set)  # artifact-not-a-file already reported
    buffers: BufferPool = field(default_factory=BufferPool)  # segment memory, reused
    pipeline: Pipeline | None = None  # the segments of the artifacts to come, under way
    ahead_order: dict[str, int] = field(default_factory=dict)  # path -> its place in it

    # -- the vault's folder ------------------------------------------------------------------

    def check_copy(self) -> None:
        """The envelope's copy in the vault must be byte-identical to the catalog's, and
        locked as it was written."""
        copy = check_manifest_copy(self.run.vault, self.run.backup)
        self.run.findings.extend(copy.findings)
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
        run = self.run
        marker = f"/{run.backup.id}/"
        paths = {a.path for a in run.backup.artifacts} | {e.path for e in run.signed.artifacts}
        prefixes = {p[: p.find(marker) + len(marker)] for p in paths if marker in p}
        known = paths | ({self.copy_path} if self.copy_path else set())
        for prefix in sorted(prefixes):
            for path in run.vault.list(prefix):
                if path not in known:
                    run.find(
                        CheckCode.ARTIFACT_UNEXPECTED,
                        "the vault holds a file this backup never recorded",
                        path,
                        kind="file",
                    )
            for entry in run.vault.foreign(prefix):
                self._foreign(entry, known)

    def _foreign(self, entry: ForeignEntry, known: set[str]) -> None:
        if entry.path in known:
            if entry.path not in self.not_files:
                self.not_files.add(entry.path)
                kind = {EntryKind.SYMLINK: "symbolic link", EntryKind.FOLDER: "folder"}.get(
                    entry.kind, entry.detail or "special file"
                )
                what = f"{entry.kind.value} {entry.detail}".strip()
                self.run.findings.append(not_a_file(entry.path, kind, what))
            return
        if entry.kind is EntryKind.ORPHANED_RETENTION and entry.artifact in known:
            return  # the record of a recorded artifact: its absence is that artifact's finding
        words = _ENTRY_WORDS[entry.kind]
        if entry.kind is EntryKind.SPECIAL_FILE and entry.detail:
            words = f"a {entry.detail}"
        self.run.find(
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
        vault = self.run.vault
        until = self.run.signed.retain_until
        if until is None or until <= now():
            return
        try:
            shortfalls = vault.lock_shortfalls(path, until)
        except (ArtifactNotFound, ArtifactReplaced):
            return  # reported where the artifact is read
        if shortfalls:
            self.run.find(
                CheckCode.ARTIFACT_LOCK_WEAKENED,
                "the storage no longer locks the artifact as it was written: "
                + "; ".join(shortfalls),
                path,
                shortfalls=list(shortfalls),
                retain_until=until.isoformat(),
                lock_mode=vault.lock_mode,
            )

    # -- the key and the artifacts -----------------------------------------------------------

    def unwrap(self) -> None:
        """The backup's age identity, unwrapped with the keystore's KEK; a key that cannot be
        unwrapped (or is not the backup's recipient) is ``key-unwrap-failed``."""
        backup = self.run.backup
        try:
            identity = unwrap_identity(keystore_for(self.run.app.settings), backup)
            if backup.recipient and recipient_of(identity) != backup.recipient:
                raise KeystoreError("the unwrapped identity is not the backup's recipient")
        except (KeystoreError, IntegrityError, FormatError) as exc:
            self.run.find(
                CheckCode.KEY_UNWRAP_FAILED,
                f"the backup's age identity cannot be unwrapped: {exc.message}",
                backup.id,
                kek_id=backup.kek_id,
                kek_version=backup.kek_version,
            )
            return
        self.identity = identity

    # -- the segments of every artifact, on one pool --------------------------------------

    def start_pipeline(self, planned: list[tuple[Expected, SegmentUse | None]]) -> None:
        """Start checking the segments of ``planned`` (the artifacts in the order this run
        will check them, each with what its content check will ask of it: None, the
        sequential pass) on one :class:`Pipeline` of :attr:`Run.workers` threads, so that
        an artifact's segments start while the one before is merged and finished. Only a
        folder vault's files on local threads (a cluster, a stream: as before); an artifact
        the pipeline does not take, or whose file is not the one :meth:`check_artifact`
        opens, is read as before."""
        run = self.run
        local_file = run.vault.vault.kind is VaultKind.FILE
        if run.cluster is not None or self.identity is None or not local_file:
            return
        chosen = [(a, u) for a, u in planned if u is not None and a.segments is not None]
        if not chosen:
            return
        identity = self.identity

        def prepare(
            n: int,
        ) -> tuple[str, BinaryIO, AgeFile, Any, int, SegmentUse, Path | None] | None:
            art, use = chosen[n]
            table = art.segments
            if table is None or art.plain_size is None:
                return None
            if use.frame and table.framing != "bson":
                return None
            fh = run.vault.open(art.path)
            try:
                if _regular_descriptor(fh) is None:
                    fh.close()
                    return None
                age = AgeFile.from_file(fh, identity)
                if age.layout.file_size != art.size:
                    fh.close()
                    return None
            except BaseException:
                fh.close()
                raise
            spool = run.tmp / f"ahead-{n}" if use.spool is not None else None
            return art.path, fh, age, table, art.plain_size, use, spool

        self.ahead_order = {a.path: n for n, (a, _) in enumerate(chosen)}
        self.pipeline = Pipeline(
            len(chosen), prepare, workers=run.workers, buffers=self.buffers, deep=run.deep
        )
        self.pipeline.start()  # held first: closed by stop_pipeline even if Ctrl-C lands here

    def stop_pipeline(self) -> None:
        """Drop what the pipeline holds that was not claimed; stop its threads."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def _claim(self, art: Expected, fh: BinaryIO, use: SegmentUse) -> Ahead | None:
        n = self.ahead_order.get(art.path)
        fd = _regular_descriptor(fh)
        if self.pipeline is None or n is None or fd is None:
            return None
        return self.pipeline.claim(n, use, fd)

    def check_artifact(
        self, art: Expected, consume: Consumer | None, use: SegmentUse | None = None
    ) -> Any:
        """Read one artifact once: size, ciphertext hash, decryption, plaintext hash, and the
        content consumer; returns what ``consume`` returned when the artifact decrypted.

        An artifact with a signed segment table, in a vault that hands out a regular file,
        is read segment by segment on :attr:`Run.workers` threads instead (:meth:`_segmented`;
        ``use`` says what the content check needs of its plaintext, in place of ``consume``:
        None for an artifact that has a consumer means the sequential pass). When its
        segments all match, the result is the one ``consume`` would have given; otherwise it
        is also read by the sequential pass, whose findings are a sequential run's."""
        self.checked_paths.append(art.path)
        opened = self._open(art)
        if opened is None:
            return None
        fh, size = opened
        if (consume is None or use is not None) and size == art.size:
            done, segmented = self._segmented(art, fh, use or SegmentUse())
            if done:
                fh.close()
                return segmented
        cipher = Sha256Stream()
        result: Any = None
        decrypted = False
        rep = self.run.rep
        with fh:

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(CHUNK):
                    cipher.update(chunk)
                    rep.advance(len(chunk))
                    yield chunk

            source = chunks()
            plain: PlainReader | None = None
            child: AgeProcess | None = None
            if self.identity is not None:
                child, pieces = decryption(
                    self.identity, art.size if size is None else size, source
                )
                plain = PlainReader(pieces, hashing=child is None)
                try:
                    try:
                        result = consume(plain) if consume is not None else None
                    except FormatError as exc:
                        self.content_unreadable(art, exc)
                        result = None
                    plain.drain()
                    decrypted = True
                except IntegrityError as exc:
                    self.run.find(
                        CheckCode.ARTIFACT_UNDECRYPTABLE,
                        f"the artifact does not decrypt with the backup's identity: {exc.message}",
                        art.path,
                    )
                finally:
                    _close(pieces)
            for _ in source:  # hash whatever decryption did not read
                pass
        rep.finish()
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

    def _segmented(self, art: Expected, fh: BinaryIO, use: SegmentUse) -> tuple[bool, Any]:
        """Check an artifact by its signed segment table (:mod:`.segments`): ``(True,
        result)`` when every segment matched and the content asked for was produced;
        ``(False, None)`` when the artifact must (also) be read sequentially: no table, no
        identity, not a regular file, a header that does not open (the sequential pass words
        it), or any discrepancy, which is reported here as ``segment-mismatch`` or
        ``segment-table-invalid`` first."""
        table = art.segments
        if table is None or self.identity is None or art.plain_size is None:
            return False, None
        if use.frame and table.framing != "bson":
            return False, None
        # on a cluster (verify --cluster) when nothing must be spooled here: its workers
        # open the same vault and read only their segments
        remote = None
        if self.run.cluster is not None and use.spool is None:
            remote = Remote(vault=self.run.vault.vault, path=art.path, run=self.run.cluster)
        header: BinaryIO = fh
        if _regular_descriptor(fh) is None:
            if remote is None:
                return False, None  # a stream (S3): sequential, from where it stands
            # the workers take ranges of it; here only the header is needed (ranged read)
            with RangedFile(self.run.vault, art.path, art.size) as ranged:
                try:
                    ranged.fetch(0, MAX_HEADER + 1 + 16)
                except (VaultError, OSError):
                    return False, None  # the sequential pass words it
                header = ranged.as_file()
        try:
            with contextlib.ExitStack() as stack:
                if header is not fh:
                    stack.enter_context(header)
                age = AgeFile.from_file(header, self.identity)
        except (AgeDecryptError, KeystoreError, OSError):
            return False, None
        if header is fh:
            fh.seek(0)  # ``pread`` only: the sequential pass, if any, starts at 0 anyway
        if age.layout.file_size != art.size:
            return False, None
        # the whole-file SHA-256 is signed too (for sha256sum users) and recomputed, so that
        # the verdict is the sequential pass's even when the table and the digest disagree:
        # on local threads from the very ciphertext the segments read, in file order (no
        # second read); with a cluster's workers reading a folder vault's file, here on a
        # thread of its own. A stream (S3) on a cluster has no descriptor here: there the
        # digest is vouched by the signed table alone (docs/verification.md). A fast run
        # (the ledger vouches a deep one of this manifest) computes neither that digest nor
        # the plaintext ones: the deep run proved them for the bytes the table describes.
        deep = self.run.deep
        fd = _regular_descriptor(fh) if deep else None
        local = remote is None or use.spool is not None
        whole = None if local else _WholeFileDigest.start(fd, art.size)
        ahead = self._claim(art, fh, use) if remote is None else None
        try:
            got = read_segments(
                age,
                table,
                size=art.size,
                plain_size=art.plain_size,
                workers=self.run.workers,
                use=use,
                dataset=art.dataset or art.path,
                advance=self.run.rep.advance,
                open_spool=open_private,
                remote=remote,
                whole_digest=local and fd is not None,
                buffers=self.buffers,
                deep=deep,
                ahead=ahead,
            )
        except OSError as exc:  # the vault's file could not be read: says nothing of the backup
            fh.close()
            raise OperationError(
                f"reading {art.path} from the vault failed: {exc}",
                hint="check the vault's storage and run the verification again"
                + (
                    "; a cluster's workers must see the vault's folder at the same path"
                    if remote is not None
                    else ""
                ),
            ) from exc
        finally:
            digest = whole.result() if whole is not None else None
        if local and fd is not None:
            whole_checked, digest = True, got.whole_sha256
        else:
            whole_checked = whole is not None
        self._segment_findings(art, got)
        if not got.ok or _resized(fh, art.size):  # grown or cut while read: sequentially
            return False, None
        if whole_checked and digest != art.sha256:
            return False, None  # the sequential pass words it (artifact-hash-mismatch)
        self.run.rep.finish()
        # every byte read, each segment's ciphertext as signed (and, from a file, the whole
        # file's digest recomputed): the file is the signed one
        self.observed[art.path] = art.sha256
        self.plain_proven.add(art.path)  # fast: as the vouching deep run proved it
        if deep and whole_checked:
            self.proven.add(art.path)
        if use.frame:
            return True, (got.fingerprint, None)
        return True, got.spool

    def _segment_findings(self, art: Expected, got: Segmented) -> None:
        """``segment-table-invalid`` and ``segment-mismatch``, as the segments showed."""
        if got.table_issues:
            self.run.find(
                CheckCode.SEGMENT_TABLE_INVALID,
                "the signed segment table does not describe the artifact: "
                + "; ".join(got.table_issues[:3]),
                art.path,
                issues=got.table_issues[:100],
            )
        if got.problems:
            shown = ", ".join(str(p["segment"]) for p in got.problems[:10])
            self.run.find(
                CheckCode.SEGMENT_MISMATCH,
                f"{len(got.problems)} segment(s) differ from the signed table (segments {shown}"
                f"{', ...' if len(got.problems) > 10 else ''})",
                art.path,
                segments=got.problems[:100],
            )

    def reread(self, art: Expected, consume: Consumer) -> Any:
        """Decrypt an artifact once more for a content pass; only content findings are
        recorded (the artifact's own were recorded by :meth:`check_artifact`)."""
        assert self.identity is not None
        try:
            fh = self.run.vault.open(art.path)
        except ArtifactNotFound:
            return None
        with fh:

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(CHUNK):
                    yield chunk

            _, pieces = decryption(self.identity, art.size, chunks())
            plain = PlainReader(pieces, hashing=False)
            try:
                result = consume(plain)
                plain.drain()
            except FormatError as exc:
                self.content_unreadable(art, exc)
                return None
            except IntegrityError:
                return None  # reported by check_artifact
            finally:
                _close(pieces)
        return result

    def spool(self, name: str) -> Callable[[PlainReader], Path]:
        """A consumer that copies the plaintext to a private file."""

        def consume(plain: PlainReader) -> Path:
            path = self.run.tmp / name
            with open_private(path) as out:
                while chunk := plain.read(CHUNK):
                    out.write(chunk)
            return path

        return consume

    def _open(self, art: Expected) -> tuple[BinaryIO, int | None] | None:
        """The artifact opened for reading and its stored size (None: the vault could not
        say, checked on the bytes read), after its lock and size are checked; None (with its
        finding) when it is missing or something else stands at its path."""
        run = self.run
        size: int | None
        try:
            size = run.vault.stat(art.path).size
        except ArtifactReplaced as exc:
            self._not_a_file(art.path, exc)
            return None
        except ArtifactNotFound:
            run.find(CheckCode.ARTIFACT_MISSING, "the artifact is not in the vault", art.path)
            return None
        except RetentionDamaged:
            size = None  # check_lock reports it
        self.check_lock(art.path)
        if size is not None:
            self._check_size(art, size)
        run.rep.task(f"verifying {art.path}", size)
        try:
            return run.vault.open(art.path), size
        except ArtifactReplaced as exc:
            self._not_a_file(art.path, exc)
        except ArtifactNotFound:
            run.find(CheckCode.ARTIFACT_MISSING, "the artifact vanished while verifying", art.path)
        run.rep.finish()
        return None

    def _check_size(self, art: Expected, size: int) -> None:
        if size != art.size:
            self.run.find(
                CheckCode.ARTIFACT_SIZE_MISMATCH,
                f"the artifact has {size} bytes, the manifest says {art.size}",
                art.path,
                expected=art.size,
                actual=size,
            )

    def _not_a_file(self, path: str, exc: ArtifactReplaced) -> None:
        if path not in self.not_files:
            self.not_files.add(path)
            self.run.findings.append(not_a_file(path, exc.kind, exc.message))

    def content_unreadable(self, art: Expected, exc: FormatError) -> None:
        """``content-unreadable``: the decrypted ``art`` cannot be parsed."""
        self.run.find(
            CheckCode.CONTENT_UNREADABLE,
            f"the decrypted content cannot be parsed: {exc.message}",
            art.path,
        )

    def _check_plaintext(self, art: Expected, plain: PlainReader, child: AgeProcess | None) -> None:
        actual = plain.hash.hexdigest() if child is None else child.plain_sha256
        if actual != art.plain_sha256 or (
            art.plain_size is not None and plain.size != art.plain_size
        ):
            self.run.find(
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

    def _hash_mismatch(self, art: Expected, actual: str) -> None:
        run = self.run
        with run.app.read() as uow:
            owners = [
                (bid, path)
                for bid, path in uow.backups.artifacts_with_digest(actual)
                if bid != run.backup.id
            ]
        if owners:
            other, path = owners[0]
            run.find(
                CheckCode.ARTIFACT_FROM_OTHER_BACKUP,
                f"the artifact is a file of backup {other} swapped in",
                art.path,
                other_backup=other,
                other_path=path,
                actual=actual,
            )
            return
        run.find(
            CheckCode.ARTIFACT_HASH_MISMATCH,
            "the artifact's SHA-256 differs from the manifest",
            art.path,
            expected=art.sha256,
            actual=actual,
        )


class _WholeFileDigest:
    """The SHA-256 of a file read with ``pread`` on a thread of its own."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size = fd, size
        self._digest: str | None = None
        self._thread = threading.Thread(target=self._run, name="whole-file-sha256", daemon=True)

    @classmethod
    def start(cls, fd: int | None, size: int) -> _WholeFileDigest | None:
        """Begin hashing ``size`` bytes of ``fd`` (None: no descriptor, nothing to hash)."""
        if fd is None:
            return None
        started = cls(fd, size)
        started._thread.start()
        return started

    def _run(self) -> None:
        stream, offset = Sha256Stream(), 0
        try:
            while offset < self._size:
                piece = os.pread(self._fd, min(_WHOLE_PIECE, self._size - offset), offset)
                if not piece:
                    return  # shorter than signed: no digest, so no match
                stream.update(piece)
                offset += len(piece)
        except OSError:
            return
        self._digest = stream.hexdigest()

    def result(self) -> str | None:
        """The hex digest (None: the file could not be read to its signed size)."""
        self._thread.join()
        return self._digest


def _resized(fh: BinaryIO, size: int) -> bool:
    """Whether the regular file ``fh`` no longer has ``size`` bytes (its segments read only
    the signed ranges: bytes appended meanwhile would go unseen)."""
    fd = _regular_descriptor(fh)
    return fd is not None and os.fstat(fd).st_size != size


def _regular_descriptor(fh: BinaryIO) -> int | None:
    """The descriptor of ``fh`` when it is a regular file (a folder vault's), else None (a
    stream: S3, or anything else a vault hands out)."""
    try:
        fd = fh.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


def _close(pieces: Iterator[bytes]) -> None:
    """End a decryption that was not read to its end (a process is stopped and waited for)."""
    close = getattr(pieces, "close", None)
    if close is not None:
        close()
