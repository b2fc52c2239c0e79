"""Artifact encryption in the age format (https://age-encryption.org/v1) through ``pyrage``.

Every artifact is encrypted to one X25519 recipient (``age1...``); the matching identity
(``AGE-SECRET-KEY-1...``) is wrapped by a keystore. Because this is plain age, the stock
``age -d -i IDENTITY_FILE`` decrypts an artifact without affidavit.

Streaming: :func:`encrypt_chunks` and :func:`decrypt_chunks` turn an iterable of byte chunks
into an iterator of byte chunks. ``pyrage`` works on file objects only, so one worker thread
runs ``pyrage`` against a small queue-backed reader/writer pair while the caller's thread
pulls the input iterator and yields the output. The input queue holds at most
:data:`_IN_FLIGHT` chunks and the output is drained after every input chunk, so memory stays
bounded by a few input chunks, whatever the total size.

Errors: a malformed identity or recipient raises :class:`~affidavit.errors.KeystoreError`;
ciphertext that cannot be decrypted (wrong identity, altered or truncated ciphertext, not age
at all) raises :class:`~affidavit.errors.IntegrityError`. An exception raised by the caller's
input iterator, source or destination propagates unchanged.

Decryption streams, so plaintext is released 64 KiB at a time after each chunk's tag has been
checked; truncation is only detected at the end. Treat the output as untrusted until
:func:`decrypt_chunks` has finished (or :func:`decrypt_to` has returned) without error.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Final

import pyrage
from pyrage import x25519

from affidavit.errors import IntegrityError, InternalError, KeystoreError

__all__ = [
    "decrypt_chunks",
    "decrypt_to",
    "encrypt_chunks",
    "new_identity",
    "recipient_of",
]

_IN_FLIGHT: Final = 2
"""Input chunks the worker may have queued ahead of it."""
_OUT_BUFFER: Final = 64 * 1024
"""Output is handed back in pieces of about this size."""
_CANNOT_DECRYPT: Final = "cannot decrypt: wrong identity or altered ciphertext"


def new_identity() -> tuple[str, str]:
    """Return a fresh X25519 ``(identity, recipient)``: ``AGE-SECRET-KEY-1...``, ``age1...``."""
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def _identity(identity: str) -> Any:
    try:
        return x25519.Identity.from_str(identity.strip())
    except (pyrage.IdentityError, ValueError, TypeError) as exc:
        raise KeystoreError(
            "not an age X25519 identity",
            hint="an identity looks like AGE-SECRET-KEY-1...; check where it was copied from",
        ) from exc


def _recipient(recipient: str) -> Any:
    try:
        return x25519.Recipient.from_str(recipient.strip())
    except (pyrage.RecipientError, ValueError, TypeError) as exc:
        raise KeystoreError(
            "not an age X25519 recipient", hint="a recipient looks like age1..."
        ) from exc


def recipient_of(identity: str) -> str:
    """Return the ``age1...`` recipient of an ``AGE-SECRET-KEY-1...`` identity."""
    return str(_identity(identity).to_public())


# --- the bridge between iterators and pyrage's file objects ---------------------------------


class _Cancelled(Exception):
    """Raised inside the worker when the caller stopped consuming."""


_EOF: Final = object()
_CANCEL: Final = object()


class _QueueReader:
    """The file-like object ``pyrage`` reads from: fed by the caller's thread."""

    def __init__(self, source: queue.Queue[object]) -> None:
        self._source = source
        self._view = memoryview(b"")
        self._pos = 0
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._view) and not self._eof:
            item = self._source.get()
            if item is _EOF:
                self._eof = True
            elif item is _CANCEL:
                raise _Cancelled
            else:
                assert isinstance(item, bytes | bytearray | memoryview)
                self._view = memoryview(item).cast("B")
                self._pos = 0
        end = len(self._view) if size is None or size < 0 else self._pos + size
        out = bytes(self._view[self._pos : end])
        self._pos += len(out)
        return out


class _QueueWriter:
    """The file-like object ``pyrage`` writes to: drained by the caller's thread."""

    def __init__(self, sink: queue.SimpleQueue[object]) -> None:
        self._sink = sink
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        if not self._buffer and len(data) >= _OUT_BUFFER:
            self._sink.put(bytes(data))  # pyrage's encryption writes whole 64 KiB chunks
            return len(data)
        self._buffer += data
        if len(self._buffer) >= _OUT_BUFFER:
            self._sink.put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        """Nothing to do: buffered output is handed over by :meth:`close`."""

    def close(self) -> None:
        if self._buffer:
            self._sink.put(bytes(self._buffer))
            self._buffer.clear()


class _Done:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Worker:
    """One ``pyrage`` call in a thread, with its input queue and output queue.

    The worker only ever blocks on the input queue, so the caller can always feed it; the
    caller drains the output after every chunk, which bounds the memory in flight.
    """

    def __init__(self, run: Callable[[_QueueReader, _QueueWriter], None]) -> None:
        self.inbox: queue.Queue[object] = queue.Queue(maxsize=_IN_FLIGHT)
        self.outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._run = run
        self.thread = threading.Thread(target=self._work, name="affidavit-age", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        error: BaseException | None = None
        writer = _QueueWriter(self.outbox)
        try:
            self._run(_QueueReader(self.inbox), writer)
            writer.close()
        except BaseException as exc:
            error = exc
        self.outbox.put(_Done(error))

    def feed(self, item: object) -> bool:
        """Queue ``item`` for the worker; False when the worker has stopped."""
        while True:
            try:
                self.inbox.put(item, timeout=0.05)
            except queue.Full:
                if not self.thread.is_alive():
                    return False
            else:
                return True

    def take(self, *, block: bool) -> bytes | _Done | None:
        """The next output piece, the end marker, or None when nothing is ready."""
        try:
            item = self.outbox.get(block=block)
        except queue.Empty:
            return None
        assert isinstance(item, bytes | _Done)
        return item


def _pump(
    run: Callable[[_QueueReader, _QueueWriter], None],
    chunks: Iterable[bytes],
    map_error: Callable[[BaseException], BaseException],
) -> Iterator[bytes]:
    """Run ``run(reader, writer)`` in a worker thread, feeding ``chunks``, yielding output."""
    worker = _Worker(run)
    done: _Done | None = None
    consumed = True
    try:
        for chunk in chunks:
            if not chunk:
                continue
            if worker.feed(bytes(chunk)):
                while (item := worker.take(block=False)) is not None:
                    if isinstance(item, _Done):
                        done = item
                        break
                    yield item
            if done is not None or not worker.thread.is_alive():
                consumed = False  # the worker ended before the input did
                break
        if done is None:
            worker.feed(_EOF)
            while not isinstance(item := worker.take(block=True), _Done):
                assert item is not None
                yield item
            done = item
        if done.error is not None:
            raise map_error(done.error) from done.error
        if not consumed:
            error = ValueError("data after the end of the stream")
            raise map_error(error) from error
    finally:
        if done is None and worker.thread.is_alive():
            worker.feed(_CANCEL)  # the caller stopped early: let the worker end
        worker.thread.join()


def _encrypt_error(exc: BaseException) -> BaseException:
    if isinstance(exc, _Cancelled | KeyboardInterrupt | SystemExit):
        return exc
    return InternalError(f"age encryption failed: {exc}")


def _decrypt_error(exc: BaseException) -> BaseException:
    if isinstance(exc, _Cancelled | KeyboardInterrupt | SystemExit):
        return exc
    return IntegrityError(
        _CANNOT_DECRYPT,
        hint="use the identity of this backup (`affidavit keys export-identity BACKUP`) and "
        "check the artifact's SHA-256 against the manifest",
    )


def encrypt_chunks(chunks: Iterable[bytes], recipient: str) -> Iterator[bytes]:
    """Encrypt the concatenation of ``chunks`` to ``recipient``; yields the age file in pieces.

    Streams with bounded memory. The input iterator is consumed in the caller's thread.
    """
    target = _recipient(recipient)

    def run(reader: _QueueReader, writer: _QueueWriter) -> None:
        pyrage.encrypt_io(reader, writer, [target])

    return _pump(run, chunks, _encrypt_error)


def decrypt_chunks(chunks: Iterable[bytes], identity: str) -> Iterator[bytes]:
    """Decrypt an age file given as ``chunks`` with ``identity``; yields the plaintext.

    Raises :class:`IntegrityError` (possibly after some output, see the module docstring)
    when the ciphertext cannot be decrypted with that identity or was altered.
    """
    key = _identity(identity)

    def run(reader: _QueueReader, writer: _QueueWriter) -> None:
        pyrage.decrypt_io(reader, writer, [key])

    return _pump(run, chunks, _decrypt_error)


class _Guarded:
    """Wrap a file object so that its own exceptions can be told apart from pyrage's."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except BaseException as exc:
            self.error = exc
            raise

    def write(self, data: bytes) -> int:
        try:
            written = self._inner.write(data)
        except BaseException as exc:
            self.error = exc
            raise
        return len(data) if written is None else written

    def flush(self) -> None:
        try:
            self._inner.flush()
        except BaseException as exc:
            self.error = exc
            raise


def decrypt_to(src: BinaryIO, dst: BinaryIO, identity: str) -> None:
    """Decrypt the age file read from ``src`` into ``dst`` with ``identity``, streaming.

    Raises :class:`IntegrityError` when it cannot be decrypted; an error of ``src`` or
    ``dst`` itself (a vault read error, a full disk) propagates unchanged.
    """
    key = _identity(identity)
    reader, writer = _Guarded(src), _Guarded(dst)
    try:
        pyrage.decrypt_io(reader, writer, [key])
    except Exception as exc:
        own = reader.error or writer.error
        if own is not None:
            raise own from None
        raise _decrypt_error(exc) from exc
