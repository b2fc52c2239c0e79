"""Streaming an artifact into a vault: plaintext in, age ciphertext stored, both digested.

:class:`ArtifactSink` is written to (push) while a background thread feeds the vault's
``put`` (pull) through age encryption, so records can be fingerprinted in the same pass that
stores them. :class:`TeeReader` is the pull-side twin: a file-like object over a stream that
hands every byte it reads to a sink, for parsers that read files.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, Self

from affidavit.crypto.age import encrypt_chunks
from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import Error, OperationError
from affidavit.models.backup import ArtifactRole, BackupArtifact
from affidavit.vaults.base import StoredArtifact, VaultBackend

CHUNK = 1 << 20
PROCESS_FROM = 32 << 20
"""Artifact size from which a separate process (encryption, decryption, a worker reading a
file) pays for its start-up: below it, work stays in this process. One threshold for backup,
ingest and verify."""
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
        self._hash = Sha256Stream()
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
                path, encrypt_chunks(self._chunks(), recipient), retain_until=retain_until
            )
        except BaseException as exc:
            self._error = exc  # the writing thread raises it at its next write or close

    def write(self, data: bytes | memoryview) -> None:
        """Append plaintext."""
        self._hash.update(bytes(data))
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
        if isinstance(exc, Error):
            return exc
        return OperationError(
            f"storing {self.path} failed: {exc}",
            hint="check that the vault is reachable and writable; the backup is recorded as "
            "failed with every artifact written so far",
        )

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
        return BackupArtifact(
            path=self._result.path,
            role=self.role,
            size=self._result.size,
            sha256=self._result.sha256,
            plain_size=self._hash.length,
            plain_sha256=self._hash.hexdigest(),
            dataset=self.dataset,
        )

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
