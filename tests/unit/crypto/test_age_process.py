"""age in a child process (:mod:`affidavit.crypto.age_process`): the same bytes as the
in-process functions, the same errors, and no process left behind whatever happens."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from affidavit.crypto import age_process
from affidavit.crypto.age import decrypt_chunks, encrypt_chunks, new_identity
from affidavit.crypto.age_process import AgeProcess
from affidavit.errors import IntegrityError, KeystoreError, OperationError

PLAIN = os.urandom(3 * (1 << 20) + 12345)  # several age chunks and pipe buffers


def pieces(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def children() -> list[int]:
    """Live (not reaped) child processes of this process that run the age child."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"affidavit.crypto.age_process" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    yield
    assert children() == []


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return new_identity()


def test_encrypt_in_a_child_decrypts_in_process(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    child = AgeProcess("encrypt", recipient, pieces(PLAIN))
    ciphertext = b"".join(child)
    assert b"".join(decrypt_chunks([ciphertext], identity)) == PLAIN
    assert child.plain_sha256 == hashlib.sha256(PLAIN).hexdigest()
    assert child.plain_size == len(PLAIN)


def test_decrypt_in_a_child_of_in_process_ciphertext(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks(pieces(PLAIN), recipient))
    child = AgeProcess("decrypt", identity, pieces(ciphertext, 4096))
    assert b"".join(child) == PLAIN
    assert child.plain_sha256 == hashlib.sha256(PLAIN).hexdigest()
    assert child.plain_size == len(PLAIN)


def test_empty_plaintext(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(AgeProcess("encrypt", recipient, iter([])))
    child = AgeProcess("decrypt", identity, [ciphertext])
    assert b"".join(child) == b""
    assert child.plain_size == 0


def test_corrupt_ciphertext_mid_file_is_an_integrity_error(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = bytearray(b"".join(encrypt_chunks([PLAIN], recipient)))
    ciphertext[len(ciphertext) // 2] ^= 0x40
    out = []
    with pytest.raises(IntegrityError, match="cannot decrypt"):
        out.extend(AgeProcess("decrypt", identity, pieces(bytes(ciphertext))))
    assert len(b"".join(out)) < len(PLAIN)  # released up to the altered chunk, no further


@pytest.mark.parametrize("cut", [1, 100, 70_000])
def test_truncated_ciphertext_is_an_integrity_error(keys: tuple[str, str], cut: int) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([PLAIN], recipient))
    with pytest.raises(IntegrityError):
        b"".join(AgeProcess("decrypt", identity, [ciphertext[:-cut]]))


def test_data_after_the_end_is_an_integrity_error(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([b"short"], recipient))
    with pytest.raises(IntegrityError):
        b"".join(AgeProcess("decrypt", identity, [ciphertext + b"trailing"]))


def test_wrong_identity_and_not_age(keys: tuple[str, str]) -> None:
    _, recipient = keys
    other, _ = new_identity()
    ciphertext = b"".join(encrypt_chunks([b"secret"], recipient))
    with pytest.raises(IntegrityError):
        b"".join(AgeProcess("decrypt", other, [ciphertext]))
    with pytest.raises(IntegrityError):
        b"".join(AgeProcess("decrypt", other, [b"this is not age at all\n" * 100]))


def test_malformed_keys_are_keystore_errors() -> None:
    with pytest.raises(KeystoreError):
        b"".join(AgeProcess("decrypt", "AGE-SECRET-KEY-1NOPE", [b"x"]))
    with pytest.raises(KeystoreError):
        b"".join(AgeProcess("encrypt", "age1nope", [b"x"]))


def test_the_key_is_not_on_the_command_line(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([PLAIN], recipient))
    child = AgeProcess("decrypt", identity, pieces(ciphertext))
    stream = iter(child)
    next(stream)
    assert child.pid is not None
    cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
    assert identity.encode() not in cmdline
    stream.close()  # type: ignore[attr-defined]


def test_an_abandoned_iteration_ends_the_child(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([PLAIN * 4], recipient))
    source = pieces(ciphertext)
    child = AgeProcess("decrypt", identity, source)
    stream = iter(child)
    assert next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert children() == []
    rest = sum(len(c) for c in source)  # the caller may read the rest of its input itself
    assert 0 < rest < len(ciphertext)


def test_an_input_error_propagates_and_ends_the_child(keys: tuple[str, str]) -> None:
    _, recipient = keys

    def failing() -> Iterator[bytes]:
        yield PLAIN
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="disk went away"):
        b"".join(AgeProcess("encrypt", recipient, failing()))


def test_a_child_that_dies_is_an_operation_error(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([PLAIN * 4], recipient))
    child = AgeProcess("decrypt", identity, pieces(ciphertext))
    stream = iter(child)
    next(stream)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(OperationError, match="ended unexpectedly"):
        for _ in stream:
            pass


def test_a_child_that_cannot_start_is_an_operation_error(
    keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, recipient = keys
    monkeypatch.setattr(
        age_process, "_command", lambda mode: [sys.executable, "-c", "raise SystemExit(9)"]
    )
    with pytest.raises(OperationError, match="ended unexpectedly"):
        b"".join(AgeProcess("encrypt", recipient, pieces(PLAIN)))


def test_interrupt_while_reading_ends_the_child(keys: tuple[str, str]) -> None:
    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([PLAIN * 4], recipient))
    stream = iter(AgeProcess("decrypt", identity, pieces(ciphertext)))
    next(stream)
    with pytest.raises(KeyboardInterrupt):
        stream.throw(KeyboardInterrupt)  # type: ignore[attr-defined]


def _wait_for(event: Any) -> None:
    event.wait()


def test_a_process_forked_meanwhile_does_not_hold_up_the_end(keys: tuple[str, str]) -> None:
    """A forked process inherits the write end of the child's input and keeps it open until
    the whole output has been read; the end of the input is marked in the stream, so the
    child finishes all the same (relying on end-of-file, this would wait forever)."""
    import multiprocessing

    identity, recipient = keys
    ciphertext = b"".join(encrypt_chunks([PLAIN], recipient))
    child = AgeProcess("decrypt", identity, pieces(ciphertext))
    stream = iter(child)
    out = [next(stream)]
    context = multiprocessing.get_context("fork")
    done = context.Event()
    forked = context.Process(target=_wait_for, args=(done,))
    forked.start()
    try:
        out.extend(stream)
    finally:
        done.set()
        forked.join()
    assert b"".join(out) == PLAIN
