"""The one road from plaintext into a vault: plaintext in, age ciphertext stored, both
digested, described as a :class:`~affidavit.models.backup.BackupArtifact`.

:class:`ArtifactWriter` is that road for one backup. How the bytes travel is chosen here and
nowhere else:

- a stream the caller pushes (:meth:`ArtifactWriter.sink`, :class:`ArtifactSink`) is
  encrypted in this process by a background thread that feeds the vault's ``put``, so records
  are fingerprinted in the same pass that stores them;
- a local file (:meth:`ArtifactWriter.store_file`) under :data:`PROCESS_FROM` bytes goes the
  same way; a larger one is encrypted by a child process
  (:class:`~affidavit.crypto.age_process.AgeProcess`, another core) whose ciphertext streams
  into ``put``;
- a file encrypted ahead of time (:func:`stage_file`: a child encrypts it into a staging file
  of the vault while the caller does other work) is stored with the vault's ``put_file``,
  which a folder vault takes over without copying.

Every road also builds the artifact's segment table (:mod:`affidavit.services.segment_tables`:
both sides hashed per segment while they pass, and where each segment's first record starts),
which the manifest signs and ``verify`` checks segment by segment, in parallel.

Vaults store bytes and never see a key; the crypto package never sees a vault.
:class:`TeeReader` is the pull-side twin of a sink: a file-like object over a stream that
hands every byte it reads to a sink, for parsers that read files.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from affidavit.crypto.age import encrypt_chunks
from affidavit.crypto.age_process import AgeProcess, FileEncryption, encrypt_file
from affidavit.crypto.age_reader import decrypt_stream
from affidavit.errors import Error, OperationError
from affidavit.models.backup import ArtifactRole, BackupArtifact
from affidavit.models.segments import SegmentTable
from affidavit.services import segment_tables
from affidavit.services.segment_tables import PlainSide, TableBuilder, table_of_staged
from affidavit.vaults.base import StoredArtifact, VaultBackend

CHUNK = 1 << 20
PROCESS_FROM = 32 << 20
"""Artifact size from which a separate process (encryption, decryption, a worker reading a
file) pays for its start-up: below it, work stays in this process. One threshold for backup,
ingest and verify: ask :func:`worth_a_process`."""
_QUEUE_DEPTH = 8
_DONE = object()


class ArtifactSink:
    """Write plaintext; on :meth:`close` the encrypted artifact is in the vault.

    Memory is bounded by a small queue of chunks. If the vault side fails, the next write
    raises; if the writer fails (exception inside ``with``), the put is cancelled and the
    vault keeps nothing (its ``put`` contract).
    """

    def __init__(
        self,
        vault: VaultBackend,
        path: str,
        *,
        recipient: str,
        retain_until: datetime | None,
        role: ArtifactRole,
        dataset: str | None = None,
    ) -> None:
        self.path = path
        self.role = role
        self.dataset = dataset
        self._table = TableBuilder(path, role)  # hashes the plaintext whole, too
        self._buffer = bytearray()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._result: StoredArtifact | None = None
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._run,
            args=(vault, path, recipient, retain_until),
            name=f"affidavit-put-{path}",
            daemon=True,
        )
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._cancelled:
                raise OperationError(f"writing {self.path} was abandoned")
            assert isinstance(item, bytes)
            yield item

    def _run(
        self, vault: VaultBackend, path: str, recipient: str, retain_until: datetime | None
    ) -> None:
        try:
            self._result = vault.put(
                path,
                _teed(encrypt_chunks(self._chunks(), recipient), self._table.cipher),
                retain_until=retain_until,
            )
        except BaseException as exc:
            self._error = exc  # the writing thread raises it at its next write or close

    def write(self, data: bytes | memoryview) -> None:
        """Append plaintext."""
        self._table.plain(data)
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._push(bytes(self._buffer))
            self._buffer.clear()

    def _push(self, chunk: bytes) -> None:
        while True:
            if self._error is not None:
                raise self._wrap(self._error)
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def _wrap(self, exc: BaseException) -> BaseException:
        return exc if isinstance(exc, Error) else _store_failed(self.path, exc)

    def close(self) -> BackupArtifact:
        """Flush, wait for the vault, and describe the stored artifact."""
        if self._buffer:
            self._push(bytes(self._buffer))
            self._buffer.clear()
        self._push_done()
        self._thread.join()
        if self._error is not None:
            raise self._wrap(self._error) from self._error
        assert self._result is not None
        plain = self._table.plain_whole  # the sink's plaintext digest is the table's own
        digest = plain.hexdigest()
        table = self._table.table(cipher_sha256=self._result.sha256, plain_sha256=digest)
        return _described(self._result, self.role, self.dataset, plain.length, digest, table)

    def _push_done(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=0.1)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        """Give up: the vault's put fails and stores nothing."""
        self._cancelled = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(b"")  # wake the consumer so it sees the cancellation
        self._push_done()
        self._thread.join(timeout=60)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.abort()


class TeeReader:
    """A read-only binary stream over ``source`` that passes every byte read to ``tee``."""

    def __init__(self, source: BinaryIO, tee: Callable[[bytes], None]) -> None:
        self._source = source
        self._tee = tee

    def read(self, n: int = -1) -> bytes:
        """Read and tee."""
        data = self._source.read(n)
        if data:
            self._tee(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """For readers that fill buffers."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        """Always."""
        return True

    def drain(self) -> None:
        """Read (and tee) whatever the parser left unread, so the artifact is complete."""
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        """Close the source."""
        self._source.close()


def worth_a_process(size: int) -> bool:
    """True when work on ``size`` bytes pays for a separate process (:data:`PROCESS_FROM`)."""
    return size >= PROCESS_FROM


@dataclass(frozen=True, slots=True, kw_only=True)
class Staged:
    """A file's ciphertext written in full into a staging file of the vault
    (:meth:`VaultBackend.spool`), with the digests its writer took."""

    cipher: Path
    encryption: FileEncryption
    plain: PlainSide | None  # the table's plaintext side, hashed meanwhile


def stage_file(
    vault: VaultBackend, recipient: str, file: Path, *, stop: threading.Event | None = None
) -> Staged:
    """Encrypt ``file`` to ``recipient`` into a new staging file of ``vault``, in a child
    process that reads, encrypts, hashes both sides (the ciphertext per segment too) and
    writes the staging file itself (see :func:`~affidavit.crypto.age_process.encrypt_file`);
    meanwhile a thread here hashes the plaintext's segments (:class:`PlainSide`). Setting
    ``stop`` ends the child. On any failure the staging file is removed and the error
    raised; the caller removes a returned one that it does not store."""
    cipher = vault.spool()
    plain = PlainSide(file, segment_tables.SEGMENT_SIZE)  # beside the child, on this side
    try:
        done = encrypt_file(recipient, file, cipher, stop=stop, segment_size=plain.segment_size)
    except BaseException:
        plain.stop()
        cipher.unlink(missing_ok=True)
        raise
    return Staged(cipher=cipher, encryption=done, plain=plain)


class ArtifactWriter:
    """Stores the artifacts of one backup under ``PREFIX/``, encrypted to ``recipient`` and
    locked until ``retain_until``; every method returns (or its sink's ``close`` returns) the
    artifact with both digests. A vault error not of affidavit's own is worded as one
    :class:`~affidavit.errors.OperationError`; a failed store leaves nothing in the vault
    (the vault's ``put`` contract)."""

    def __init__(
        self, vault: VaultBackend, *, prefix: str, recipient: str, retain_until: datetime
    ) -> None:
        self.vault = vault
        self.prefix = prefix
        self.recipient = recipient
        self.retain_until = retain_until

    def target(self, rel: str) -> str:
        """The vault path of the encrypted artifact ``rel``."""
        return f"{self.prefix}/{rel}.age"

    def sink(self, rel: str, role: ArtifactRole, dataset: str | None = None) -> ArtifactSink:
        """A sink for the artifact ``PREFIX/rel.age``: write plaintext, ``close`` for it."""
        return ArtifactSink(
            self.vault,
            self.target(rel),
            recipient=self.recipient,
            retain_until=self.retain_until,
            role=role,
            dataset=dataset,
        )

    def store_bytes(
        self, rel: str, data: bytes, role: ArtifactRole, dataset: str | None = None
    ) -> BackupArtifact:
        """Store a small artifact held in memory."""
        with self.sink(rel, role, dataset) as sink:
            for i in range(0, len(data), CHUNK):
                sink.write(data[i : i + CHUNK])
            return sink.close()

    def store_file(
        self,
        rel: str,
        file: Path,
        *,
        role: ArtifactRole,
        dataset: str | None = None,
        staged: Staged | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> BackupArtifact:
        """Store the local ``file`` as ``PREFIX/rel.age``: from its ``staged`` ciphertext when
        :func:`stage_file` made one (which is then gone), else encrypted here (in a child
        process from :data:`PROCESS_FROM` bytes on). ``advance`` is told the plaintext bytes
        as they are stored."""
        tick = advance or (lambda n: None)
        if staged is not None:
            return self._store_staged(rel, staged, role=role, dataset=dataset, advance=tick)
        if worth_a_process(file.stat().st_size):
            return self._store_by_child(rel, file, role=role, dataset=dataset, advance=tick)
        with self.sink(rel, role, dataset) as sink, file.open("rb") as raw:
            while chunk := raw.read(CHUNK):
                sink.write(chunk)
                tick(len(chunk))
            return sink.close()

    def store_clear(self, name: str, data: bytes) -> StoredArtifact:
        """Store ``PREFIX/name`` unencrypted (the signed manifest's copy for auditors)."""
        path = f"{self.prefix}/{name}"
        return self._stored(
            path, lambda: self.vault.put(path, [data], retain_until=self.retain_until)
        )

    def _store_staged(
        self,
        rel: str,
        staged: Staged,
        *,
        role: ArtifactRole,
        dataset: str | None,
        advance: Callable[[int], None],
    ) -> BackupArtifact:
        done = staged.encryption
        target = self.target(rel)
        table = table_of_staged(target, role, done, staged.plain)
        stored = self._stored(
            target,
            lambda: self.vault.put_file(
                target, staged.cipher, retain_until=self.retain_until,
                sha256=done.cipher_sha256, size=done.cipher_size,
            ),
        )  # fmt: skip
        advance(done.plain_size)
        return _described(stored, role, dataset, done.plain_size, done.plain_sha256, table)

    def _store_by_child(
        self,
        rel: str,
        file: Path,
        *,
        role: ArtifactRole,
        dataset: str | None,
        advance: Callable[[int], None],
    ) -> BackupArtifact:
        """The cipher runs in a child on another core while this one reads the file and the
        vault hashes and writes the ciphertext; the child hashes the plaintext it encrypts.
        Any failure leaves no process behind."""
        target = self.target(rel)
        table = TableBuilder(target, role)
        with file.open("rb") as raw:

            def chunks() -> Iterator[bytes]:
                while chunk := raw.read(CHUNK):
                    advance(len(chunk))
                    table.plain(chunk)
                    yield chunk

            child = AgeProcess("encrypt", self.recipient, chunks())
            pieces = iter(child)
            try:
                stored = self._stored(
                    target,
                    lambda: self.vault.put(
                        target, _teed(pieces, table.cipher), retain_until=self.retain_until
                    ),
                )
            finally:
                pieces.close()  # type: ignore[attr-defined]
        assert child.plain_sha256 is not None
        assert child.plain_size is not None
        proven = table.table(cipher_sha256=stored.sha256, plain_sha256=child.plain_sha256)
        return _described(stored, role, dataset, child.plain_size, child.plain_sha256, proven)

    @staticmethod
    def _stored(path: str, store: Callable[[], StoredArtifact]) -> StoredArtifact:
        try:
            return store()
        except Error:
            raise
        except Exception as exc:
            raise _store_failed(path, exc) from exc


def _store_failed(path: str, exc: BaseException) -> OperationError:
    return OperationError(
        f"storing {path} failed: {exc}",
        hint="check that the vault is reachable and writable; the backup is recorded as "
        "failed with every artifact written so far",
    )


def _teed(pieces: Iterator[bytes], tee: Callable[[bytes], None]) -> Iterator[bytes]:
    """``pieces`` as they are, each also handed to ``tee``."""
    for piece in pieces:
        tee(piece)
        yield piece


def _described(  # noqa: PLR0917 - one private helper, called positionally in four places
    stored: StoredArtifact,
    role: ArtifactRole,
    dataset: str | None,
    plain_size: int,
    plain_sha256: str,
    table: SegmentTable | None,
) -> BackupArtifact:
    if table is not None and (
        table.tiling_issues(size=stored.size, plain_size=plain_size)
        or sum(s.plain_size for s in table.segments) != plain_size
    ):
        table = None  # pragma: no cover - a table is built from the very bytes stored
    return BackupArtifact(
        path=stored.path,
        role=role,
        size=stored.size,
        sha256=stored.sha256,
        plain_size=plain_size,
        plain_sha256=plain_sha256,
        dataset=dataset,
        segments=table,
    )


def decryption(
    identity: str, size: int, source: Iterator[bytes]
) -> tuple[AgeProcess | None, Iterator[bytes]]:
    """The road out of a vault: the plaintext pieces of the age ciphertext ``source`` (an
    artifact of ``size`` bytes) decrypted with ``identity``, by a child process when that
    pays (:func:`worth_a_process`: the cipher then runs on another core, and the child, which
    is returned, hashes the plaintext: read its ``plain_sha256`` once the pieces are
    consumed), else in this process by the age reader on ``cryptography``
    (:func:`~affidavit.crypto.age_reader.decrypt_stream`, about four times pyrage's speed; no
    child: the caller hashes). A decryption that is not
    read to its end is ended by closing the pieces (a child is then stopped and waited for).
    Raises :class:`~affidavit.errors.IntegrityError` while the pieces are read when the
    ciphertext does not decrypt."""
    if worth_a_process(size):
        child = AgeProcess("decrypt", identity, source)
        return child, iter(child)
    return None, decrypt_stream(source, identity)
