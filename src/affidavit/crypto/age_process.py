"""age encryption and decryption in a child process, for large artifacts.

``pyrage`` holds the GIL while it encrypts or decrypts (about 500 MB/s on one core), so the
in-process streaming of :mod:`affidavit.crypto.age` keeps the caller's interpreter busy with
the cipher. :class:`AgeProcess` runs the very same ``pyrage`` calls in a child interpreter
(``python -m affidavit.crypto.age_process``) connected by pipes, so the cipher runs on another
core while the caller hashes, frames or fingerprints. The bytes are those of
:func:`~affidavit.crypto.age.encrypt_chunks` / :func:`~affidavit.crypto.age.decrypt_chunks`:
the same library writes and reads the same format.

Protocol with the child: the key is the first line of its stdin (never its command line: an
identity is a secret), the input follows in frames (``uint32_be length || bytes``, ended by a
frame of length 0, so the end of the input does not depend on end-of-file); the output goes to
its stdout. The child also
hashes the plaintext (what it reads when encrypting, what it writes when decrypting) and ends by
writing one JSON line ``{"plain_sha256": HEX, "plain_size": N}`` to its stderr. Exit status
0: done; :data:`EXIT_UNDECRYPTABLE`: the input is not age ciphertext for that identity, or was
altered or truncated; :data:`EXIT_BAD_KEY`: the key is malformed.

Errors on the caller's side are those of the in-process functions: a malformed key raises
:class:`~affidavit.errors.KeystoreError`, ciphertext that cannot be decrypted raises
:class:`~affidavit.errors.IntegrityError` (possibly after some output: treat the output as
untrusted until the iteration has ended without error), and an exception of the caller's input
iterator propagates unchanged. A child that dies otherwise (killed, out of memory) raises
:class:`~affidavit.errors.OperationError`: that says nothing about the data. Whatever happens,
including ``KeyboardInterrupt`` and an abandoned iteration, the child is ended and waited for
before the iteration returns or raises: no process outlives it.

Do not fork (``multiprocessing``'s ``fork``) while an :class:`AgeProcess` is running: the forked
process would inherit the write end of the child's input pipe, and the child would then never
see the end of its input.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

from affidavit.crypto.segments import SegmentHasher
from affidavit.errors import IntegrityError, KeystoreError, OperationError

__all__ = [
    "EXIT_BAD_KEY",
    "EXIT_UNDECRYPTABLE",
    "AgeProcess",
    "EncryptionStopped",
    "FileEncryption",
    "encrypt_file",
]

EXIT_UNDECRYPTABLE: Final = 3
EXIT_BAD_KEY: Final = 4
_EXIT_INPUT_CUT: Final = 5
_EXIT_IO: Final = 6
_PR_SET_PDEATHSIG: Final = 1
_WRITEBACK: Final = 8 << 20
"""``encrypt-file`` writes the ciphertext in pieces of this size and starts their writeback."""
_READ: Final = 1 << 20
"""Output is handed back in pieces of up to this size."""
_PIPE_SIZE: Final = 1 << 20
_AHEAD: Final = 32
"""Output pieces read ahead of the caller, at most."""
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux), not exported before Python 3.12
_FRAME: Final = struct.Struct(">I")
"""The length of each input frame; a frame of length 0 ends the input."""
_CANNOT_DECRYPT: Final = "cannot decrypt: wrong identity or altered ciphertext"

Mode = Literal["encrypt", "decrypt"]


class AgeProcess:
    """Encrypt to a recipient or decrypt with an identity in a child process, streaming.

    Iterate to get the output in pieces; the input ``chunks`` are pulled by a feeder thread
    as the child takes them. After the iteration has ended without error,
    :attr:`plain_sha256` and :attr:`plain_size` describe the plaintext (the input when
    encrypting, the output when decrypting), hashed by the child.

    When the child stops reading early (the ciphertext is bad), the feeder stops pulling
    ``chunks``: the caller may go on reading them itself (to hash the rest, say).
    """

    def __init__(self, mode: Mode, key: str, chunks: Iterable[bytes]) -> None:
        self.mode: Mode = mode
        self._key = key.strip()
        self._chunks = chunks
        self.plain_sha256: str | None = None
        self.plain_size: int | None = None
        self._feed_error: BaseException | None = None
        self._drain_error: BaseException | None = None
        self._stop = threading.Event()
        self.pid: int | None = None
        """The child's process id while it runs (for tests and diagnostics)."""

    def __iter__(self) -> Iterator[bytes]:
        proc = subprocess.Popen(
            _command(self.mode),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            env=_environment(),
        )
        self.pid = proc.pid
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        for pipe in (proc.stdin, proc.stdout):
            _widen(pipe.fileno())
        feeder = threading.Thread(
            target=self._feed, args=(proc.stdin,), name="affidavit-age-feed", daemon=True
        )
        ahead: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD)
        drainer = threading.Thread(
            target=self._drain,
            args=(proc.stdout.fileno(), ahead),
            name="affidavit-age-drain",
            daemon=True,
        )
        finished = False
        try:
            feeder.start()
            drainer.start()
            while (piece := ahead.get()) is not None:
                yield piece
            feeder.join()
            drainer.join()
            status = proc.stderr.read()
            code = proc.wait()
            finished = True
            if self._feed_error is not None:
                raise self._feed_error
            if self._drain_error is not None:
                raise self._drain_error
            self._conclude(code, status)
        finally:
            if not finished:
                self._stop.set()
                with contextlib.suppress(OSError):
                    proc.kill()
            feeder.join()  # ends: its pipe breaks once the child is gone
            drainer.join()  # ends: the child's output ends when it is gone
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    pipe.close()

    def _drain(self, out: int, ahead: queue.Queue[bytes | None]) -> None:
        """The drainer thread: reads the child's output ahead of the caller (up to
        :data:`_AHEAD` pieces), so that the child does not wait while the caller works."""
        try:
            while piece := os.read(out, _READ):
                while True:
                    try:
                        ahead.put(piece, timeout=0.05)
                        break
                    except queue.Full:
                        if self._stop.is_set():
                            return
        except OSError as exc:
            self._drain_error = OperationError(f"reading from the age process failed: {exc}")
        finally:
            while not self._stop.is_set():
                try:
                    ahead.put(None, timeout=0.05)
                    break
                except queue.Full:
                    continue

    def _feed(self, stdin: BinaryIO) -> None:
        """The feeder thread: the key line, then the input in frames, then the end frame."""
        fd = stdin.fileno()
        try:
            _write_all(fd, self._key.encode() + b"\n")
            for chunk in self._chunks:
                if self._stop.is_set():
                    return
                if chunk:
                    _write_all(fd, _FRAME.pack(len(chunk)))
                    _write_all(fd, chunk)
            _write_all(fd, _FRAME.pack(0))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading: its exit status says why
        except BaseException as exc:  # the caller's input failed: end the child, re-raise
            self._feed_error = exc
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _conclude(self, code: int, status: bytes) -> None:
        if code == 0:
            try:
                report = json.loads(status.decode().strip().splitlines()[-1])
                self.plain_sha256 = str(report["plain_sha256"])
                self.plain_size = int(report["plain_size"])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise OperationError(f"the age {self.mode}ion process misreported: {exc}") from exc
            return
        if code == EXIT_BAD_KEY:
            raise KeystoreError(
                "not an age X25519 identity"
                if self.mode == "decrypt"
                else "not an age X25519 recipient"
            )
        if code == EXIT_UNDECRYPTABLE and self.mode == "decrypt":
            raise IntegrityError(
                _CANNOT_DECRYPT,
                hint="use the identity of this backup (`affidavit keys export-identity BACKUP`) "
                "and check the artifact's SHA-256 against the manifest",
            )
        detail = status.decode(errors="replace").strip().splitlines()[-1:] or [f"status {code}"]
        raise OperationError(
            f"the age {self.mode}ion process ended unexpectedly ({detail[0][:200]})",
            hint="run again; if it keeps failing, check memory and process limits",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEncryption:
    """What :func:`encrypt_file` wrote, as its child hashed it while reading and writing;
    ``cipher_segments``, when asked for, each ciphertext segment's ``(size, SHA-256)``
    hashed from the very bytes the whole-file digest was, and ``payload_offset`` (None:
    asked for none, or no age header came out)."""

    plain_size: int
    plain_sha256: str
    cipher_size: int
    cipher_sha256: str
    payload_offset: int | None = None
    cipher_segments: tuple[tuple[int, str], ...] | None = None


def encrypt_file(
    recipient: str,
    source: Path,
    target: Path,
    *,
    stop: threading.Event | None = None,
    segment_size: int | None = None,
) -> FileEncryption:
    """Encrypt the file ``source`` to ``recipient`` into ``target`` (an existing file: it is
    overwritten) in a child process that reads and writes both files itself, so that no byte
    crosses a pipe. The child hashes the plaintext it reads and the ciphertext it writes, and
    fsyncs ``target`` (starting its writeback as it goes) before it reports. With
    ``segment_size`` it also hashes the ciphertext per segment
    (:class:`~affidavit.crypto.segments.SegmentHasher`), from the same bytes as its
    whole-file digest (the plaintext side is the caller's: it can read the file meanwhile).

    Raises :class:`~affidavit.errors.KeystoreError` for a malformed recipient and
    :class:`~affidavit.errors.OperationError` when a file cannot be read or written or the
    child dies; ``target`` then holds nothing to rely on. Setting ``stop`` (or any exception
    here, ``KeyboardInterrupt`` included) ends the child: :class:`EncryptionStopped` is raised
    for ``stop``. The child is always waited for."""
    proc = subprocess.Popen(
        _command(
            "encrypt-file", str(source), str(target), str(segment_size or 0), str(os.getpid())
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=True,
        env=_environment(),
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stderr is not None
    finished = False
    try:
        with contextlib.suppress(BrokenPipeError):  # a child that died says so by its status
            proc.stdin.write(recipient.strip().encode() + b"\n")
            proc.stdin.close()
        while True:
            try:
                code = proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    raise EncryptionStopped from None
        status = proc.stderr.read()
        finished = True
    finally:
        if not finished:
            with contextlib.suppress(OSError):
                proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
    lines = status.decode(errors="replace").strip().splitlines()
    if code == EXIT_BAD_KEY:
        raise KeystoreError("not an age X25519 recipient")
    if code == 0:
        try:
            report = json.loads(lines[-1])
            payload_offset, cipher_segments = _cipher_segments(report.get("segments"))
            return FileEncryption(
                plain_size=int(report["plain_size"]),
                plain_sha256=str(report["plain_sha256"]),
                cipher_size=int(report["cipher_size"]),
                cipher_sha256=str(report["cipher_sha256"]),
                payload_offset=payload_offset,
                cipher_segments=cipher_segments,
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise OperationError(f"the age encryption process misreported: {exc}") from exc
    detail = lines[-1][:200] if lines else f"status {code}"
    raise OperationError(
        f"encrypting {source} failed ({detail})",
        hint="check that the file is readable and the vault has room; run again",
    )


def _cipher_segments(report: Any) -> tuple[int | None, tuple[tuple[int, str], ...] | None]:
    """The child's ``{"payload_offset", "digests": [[size, sha256], ...]}``, or Nones."""
    if report is None:
        return None, None
    rows = tuple((int(size), str(digest)) for size, digest in report["digests"])
    return int(report["payload_offset"]), rows


class EncryptionStopped(Exception):
    """:func:`encrypt_file` was told to stop."""


def _command(mode: str, *args: str) -> list[str]:
    """The child's command line (the key is not on it)."""
    return [sys.executable, "-m", "affidavit.crypto.age_process", mode, *args]


def _environment() -> dict[str, str]:
    """The child imports this very package, wherever it was imported from here."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    inherited = os.environ.get("PYTHONPATH")
    path = package_root if not inherited else package_root + os.pathsep + inherited
    return {**os.environ, "PYTHONPATH": path}


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _widen(fd: int) -> None:
    """Fewer, larger pipe transfers (best effort: Linux only)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


# --- the child --------------------------------------------------------------------------------


class _FramedInput:
    """The child's input: length-prefixed frames up to the empty one. The end is marked
    rather than left to end-of-file, so that it does not depend on every copy of the pipe's
    write end being closed (a process forked by the parent meanwhile holds one)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._left = 0
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        if self._ended:
            return b""
        if not self._left:
            head = self._raw.read(_FRAME.size)
            if len(head) < _FRAME.size:
                raise EOFError("the input ended without its end mark")
            (self._left,) = _FRAME.unpack(head)
            if not self._left:
                self._ended = True
                return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._raw.read(want)
        if len(data) < want:
            raise EOFError("the input ended inside a frame")
        self._left -= len(data)
        return data


class _HashingReader:
    def __init__(self, inner: BinaryIO | _FramedInput, hasher: Any) -> None:
        self._inner = inner
        self._hasher = hasher
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._hasher.update(data)
        self.size += len(data)
        return data


class _HashingWriter:
    def __init__(self, inner: BinaryIO, hasher: Any) -> None:
        self._inner = inner
        self._hasher = hasher
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hasher.update(data)
        self.size += len(data)
        self._inner.write(data)
        return len(data)

    def flush(self) -> None:
        self._inner.flush()


def _die_with(parent: int) -> None:
    """Have the kernel kill this child when the thread that started it ends (Linux
    ``PR_SET_PDEATHSIG``; :func:`encrypt_file` waits for its child in that thread), so that a
    parent killed with SIGKILL leaves no encryption running and writing; and end now when
    ``parent`` already died. Elsewhere: nothing (the stale-spool sweep removes the file)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:
        os._exit(_EXIT_IO)


def _child_encrypt_file(source: str, target: str, segment_size: int = 0, parent: int = 0) -> int:
    """``encrypt-file SOURCE TARGET [SEGMENT_SIZE [PARENT_PID]]``: the recipient on stdin; the
    report on stderr (with the ciphertext's segments when ``segment_size`` is not 0)."""
    _die_with(parent)  # first: the parent may be killed while this child still starts
    import pyrage
    from pyrage import x25519

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    key = sys.stdin.buffer.readline().decode(errors="replace").strip()
    try:
        recipient = x25519.Recipient.from_str(key)
    except (pyrage.RecipientError, ValueError, TypeError):
        sys.stderr.write("malformed key\n")
        return EXIT_BAD_KEY
    plain, cipher = hashlib.sha256(), hashlib.sha256()
    segments = SegmentHasher(segment_size) if segment_size else None
    try:
        with (
            open(source, "rb", buffering=_READ) as raw,
            open(target, "wb", buffering=_READ) as out,
        ):
            reader = _HashingReader(raw, plain)
            writer = _WritebackWriter(out, cipher, segments)
            pyrage.encrypt_io(reader, writer, [recipient])
            writer.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        sys.stderr.write(f"{exc.strerror or exc}: {exc.filename or target}\n")
        return _EXIT_IO
    report = {
        "plain_sha256": plain.hexdigest(),
        "plain_size": reader.size,
        "cipher_sha256": cipher.hexdigest(),
        "cipher_size": writer.size,
        "segments": _cipher_part(segments),
    }
    sys.stderr.write(json.dumps(report) + "\n")
    return 0


def _cipher_part(segments: SegmentHasher | None) -> dict[str, object] | None:
    """The ciphertext's segments for the report (None: none asked for, or no age header)."""
    if segments is None:
        return None
    try:
        payload_offset, digests = segments.cipher_part()
    except ValueError:
        return None
    return {"payload_offset": payload_offset, "digests": digests}


class _WritebackWriter:
    """The ciphertext's file, hashed as it is written (whole, and per segment with a
    ``segments`` hasher: the very same bytes); after every :data:`_WRITEBACK` bytes the
    kernel is asked to start writing them to disk (``POSIX_FADV_DONTNEED`` starts the
    writeback of a range's dirty pages on Linux), so that the final ``fsync`` waits for the
    last few megabytes instead of the whole file."""

    def __init__(self, out: BinaryIO, hasher: Any, segments: SegmentHasher | None = None) -> None:
        self._out = out
        self._hasher = hasher
        self._segments = segments
        self._started = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hasher.update(data)
        if self._segments is not None:
            self._segments.cipher(data)
        self._out.write(data)
        self.size += len(data)
        if self.size - self._started >= _WRITEBACK:
            self._out.flush()
            with contextlib.suppress(OSError, AttributeError):  # a hint: not everywhere
                os.posix_fadvise(
                    self._out.fileno(), self._started, self.size - self._started,
                    os.POSIX_FADV_DONTNEED,
                )  # fmt: skip
            self._started = self.size
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def _child(mode: str) -> int:
    import pyrage
    from pyrage import x25519

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the child

    _widen(0)
    _widen(1)
    raw = os.fdopen(0, "rb", buffering=_READ, closefd=False)
    stdout = os.fdopen(1, "wb", buffering=_READ, closefd=False)
    key = raw.readline().decode(errors="replace").strip()
    stdin = _FramedInput(raw)
    hasher = hashlib.sha256()
    try:
        if mode == "decrypt":
            identity = x25519.Identity.from_str(key)
        else:
            recipient = x25519.Recipient.from_str(key)
    except (pyrage.IdentityError, pyrage.RecipientError, ValueError, TypeError):
        sys.stderr.write("malformed key\n")
        return EXIT_BAD_KEY
    del key
    if mode == "decrypt":
        writer = _HashingWriter(stdout, hasher)
        try:
            pyrage.decrypt_io(stdin, writer, [identity])
            if stdin.read(1):
                raise ValueError("data after the end of the stream")
        except Exception as exc:
            sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            return EXIT_UNDECRYPTABLE
        size = writer.size
    else:
        reader = _HashingReader(stdin, hasher)
        try:
            pyrage.encrypt_io(reader, stdout, [recipient])
        except EOFError:  # the parent's input failed or the parent went away
            return _EXIT_INPUT_CUT
        size = reader.size
    stdout.flush()
    sys.stderr.write(json.dumps({"plain_sha256": hasher.hexdigest(), "plain_size": size}) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 5, 6) and sys.argv[1] == "encrypt-file":
        size = int(sys.argv[4]) if len(sys.argv) >= 5 else 0
        parent = int(sys.argv[5]) if len(sys.argv) == 6 else 0
        raise SystemExit(_child_encrypt_file(sys.argv[2], sys.argv[3], size, parent))
    if len(sys.argv) != 2 or sys.argv[1] not in ("encrypt", "decrypt"):
        sys.stderr.write(
            "usage: python -m affidavit.crypto.age_process encrypt|decrypt|"
            "encrypt-file SOURCE TARGET [SEGMENT_SIZE [PARENT_PID]]\n"
        )
        raise SystemExit(2)
    raise SystemExit(_child(sys.argv[1]))
