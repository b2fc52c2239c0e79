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
        age_process, "_command", lambda mode, *args: [sys.executable, "-c", "raise SystemExit(9)"]
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


# -- encrypt_file: the child reads and writes the files itself ---------------------------------


def _file_case(tmp_path: Path, data: bytes = PLAIN) -> tuple[Path, Path]:
    source = tmp_path / "plain.bin"
    source.write_bytes(data)
    target = tmp_path / "cipher.age"
    target.write_bytes(b"stale bytes that must go")
    return source, target


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 9 * (1 << 20) + 17])
def test_encrypt_file_round_trips_and_reports_both_digests(
    keys: tuple[str, str], tmp_path: Path, size: int
) -> None:
    identity, recipient = keys
    data = (PLAIN * 4)[:size]
    source, target = _file_case(tmp_path, data)
    done = age_process.encrypt_file(recipient, source, target)
    ciphertext = target.read_bytes()
    assert b"".join(decrypt_chunks([ciphertext], identity)) == data
    assert (done.plain_size, done.plain_sha256) == (size, hashlib.sha256(data).hexdigest())
    assert (done.cipher_size, done.cipher_sha256) == (
        len(ciphertext),
        hashlib.sha256(ciphertext).hexdigest(),
    )


def test_encrypt_file_refuses_a_malformed_recipient(tmp_path: Path) -> None:
    source, target = _file_case(tmp_path)
    with pytest.raises(KeystoreError, match="not an age X25519 recipient"):
        age_process.encrypt_file("age1nope", source, target)


def test_encrypt_file_of_a_missing_source_is_an_operation_error(
    keys: tuple[str, str], tmp_path: Path
) -> None:
    _, recipient = keys
    with pytest.raises(OperationError, match=r"encrypting .*missing.* failed"):
        age_process.encrypt_file(recipient, tmp_path / "missing", tmp_path / "out.age")


def test_encrypt_file_stops_when_told(keys: tuple[str, str], tmp_path: Path) -> None:
    import threading

    _, recipient = keys
    source, target = _file_case(tmp_path, PLAIN * 40)  # long enough to be stopped midway
    stop = threading.Event()
    stop.set()
    with pytest.raises(age_process.EncryptionStopped):
        age_process.encrypt_file(recipient, source, target, stop=stop)
    # no_orphans: the child was ended and waited for


def test_encrypt_file_keeps_the_key_off_the_command_line(
    keys: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, recipient = keys
    seen: list[list[str]] = []
    real = age_process._command

    def spy(mode: str, *args: str) -> list[str]:
        seen.append(real(mode, *args))
        return seen[-1]

    monkeypatch.setattr(age_process, "_command", spy)
    age_process.encrypt_file(recipient, *_file_case(tmp_path))
    assert seen and all(recipient not in part for part in seen[0])


def test_encrypt_file_whose_child_dies_is_an_operation_error(
    keys: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, recipient = keys
    monkeypatch.setattr(
        age_process, "_command", lambda mode, *args: [sys.executable, "-c", "raise SystemExit(9)"]
    )
    with pytest.raises(OperationError, match=r"failed \(status 9\)"):
        age_process.encrypt_file(recipient, *_file_case(tmp_path))
