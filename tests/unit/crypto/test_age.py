"""Artifact encryption in the age format, checked against the stock ``age`` CLI too."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from affidavit.crypto.age import (
    decrypt_chunks,
    decrypt_to,
    encrypt_chunks,
    new_identity,
    recipient_of,
)
from affidavit.errors import IntegrityError, KeystoreError

MIB = 1024 * 1024
AGE = shutil.which("age")
needs_age = pytest.mark.skipif(
    AGE is None, reason="the `age` CLI is not installed (`make test` installs the Debian package)"
)


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def pieces(blob: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(blob), size):
        yield blob[start : start + size]


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "affidavit-age"]


def encrypt(plaintext: bytes, recipient: str, chunk: int = 100_000) -> bytes:
    return b"".join(encrypt_chunks(pieces(plaintext, chunk), recipient))


def test_identity_and_recipient() -> None:
    identity, recipient = new_identity()
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert recipient.startswith("age1")
    assert recipient_of(identity) == recipient
    assert new_identity()[0] != identity


@pytest.mark.parametrize("size", [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 3 * MIB + 5])
def test_round_trip(size: int) -> None:
    identity, recipient = new_identity()
    plaintext = data(size)
    ciphertext = encrypt(plaintext, recipient)
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert b"".join(decrypt_chunks(pieces(ciphertext, 7000), identity)) == plaintext
    out = io.BytesIO()
    decrypt_to(io.BytesIO(ciphertext), out, identity)
    assert out.getvalue() == plaintext


def test_wrong_identity_is_an_integrity_error() -> None:
    _, recipient = new_identity()
    other, _ = new_identity()
    ciphertext = encrypt(b"secret", recipient)
    with pytest.raises(IntegrityError, match="wrong identity or altered ciphertext"):
        decrypt_to(io.BytesIO(ciphertext), io.BytesIO(), other)
    with pytest.raises(IntegrityError):
        b"".join(decrypt_chunks([ciphertext], other))


@pytest.mark.parametrize("where", ["header", "body", "last"])
def test_flipped_byte_is_an_integrity_error(where: str) -> None:
    identity, recipient = new_identity()
    ciphertext = bytearray(encrypt(data(200_000), recipient))
    index = {"header": 40, "body": len(ciphertext) // 2, "last": len(ciphertext) - 1}[where]
    ciphertext[index] ^= 0x01
    with pytest.raises(IntegrityError):
        decrypt_to(io.BytesIO(bytes(ciphertext)), io.BytesIO(), identity)
    with pytest.raises(IntegrityError):
        b"".join(decrypt_chunks([bytes(ciphertext)], identity))


@pytest.mark.parametrize(
    "defect", ["truncated", "trailing_garbage", "not_age", "empty"], ids=lambda d: d
)
def test_damaged_ciphertext_is_an_integrity_error(defect: str) -> None:
    identity, recipient = new_identity()
    good = encrypt(data(150_000), recipient)
    bad = {
        "truncated": good[:-100],
        "trailing_garbage": good + b"junk",
        "not_age": b"hello, world\n" * 100,
        "empty": b"",
    }[defect]
    with pytest.raises(IntegrityError):
        b"".join(decrypt_chunks(pieces(bad, 5000), identity))


def test_malformed_keys_are_keystore_errors() -> None:
    with pytest.raises(KeystoreError, match="identity"):
        recipient_of("AGE-SECRET-KEY-1NOPE")
    with pytest.raises(KeystoreError, match="recipient"):
        encrypt_chunks([b"x"], "age1nope")
    with pytest.raises(KeystoreError):
        decrypt_to(io.BytesIO(b""), io.BytesIO(), "not a key")


def test_an_error_of_the_source_propagates_unchanged() -> None:
    _, recipient = new_identity()

    def dying() -> Iterator[bytes]:
        yield data(300_000)
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):
        b"".join(encrypt_chunks(dying(), recipient))
    assert not workers(), "the worker thread ended"

    class BrokenDisk(io.BytesIO):
        def write(self, b: object) -> int:
            raise OSError(28, "No space left on device")

    identity, recipient = new_identity()
    with pytest.raises(OSError, match="No space left"):
        decrypt_to(io.BytesIO(encrypt(b"x" * 100_000, recipient)), BrokenDisk(), identity)


def test_abandoning_the_iterator_stops_the_worker() -> None:
    _, recipient = new_identity()
    stream = encrypt_chunks((data(64 * 1024, i) for i in range(100)), recipient)
    next(stream)
    stream.close()
    assert not workers()


def test_encryption_streams_in_bounded_memory() -> None:
    """200 MiB through encryption and decryption while at most a few MiB are allocated."""
    identity, recipient = new_identity()
    block = data(MIB)
    total = 200

    def source() -> Iterator[bytes]:
        for _ in range(total):
            yield bytes(block)  # a fresh object each time, as a real reader would give

    size = 0
    tracemalloc.start()
    try:
        ciphertext = encrypt_chunks(source(), recipient)
        plaintext = decrypt_chunks(ciphertext, identity)
        for piece in plaintext:
            size += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total * MIB
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB for {total} MiB of data"


_RSS_PROBE = """
import random, resource
from affidavit.crypto.age import decrypt_chunks, encrypt_chunks, new_identity
identity, recipient = new_identity()
block = random.Random(1).randbytes(1 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = sum(len(p) for p in decrypt_chunks(
    encrypt_chunks((bytes(block) for _ in range(200)), recipient), identity))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(size, before, after)
"""


def test_resident_memory_stays_bounded_for_200_mib() -> None:
    """The same pipeline in a fresh process: pyrage's own (Rust) buffers are not seen by
    tracemalloc, so the peak resident set size is measured too (Linux: KiB)."""
    result = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE], capture_output=True, check=True, timeout=120
    )
    size, before, after = (int(x) for x in result.stdout.split())
    assert size == 200 * MIB
    assert (after - before) * 1024 < 32 * MIB, f"resident set grew {(after - before) // 1024} MiB"


# --- the independent path: the stock age CLI ----------------------------------------------


@needs_age
def test_stock_age_decrypts_what_affidavit_encrypted(tmp_path: Path) -> None:
    identity, recipient = new_identity()
    plaintext = data(MIB + 17)
    (tmp_path / "artifact.age").write_bytes(encrypt(plaintext, recipient))
    key = tmp_path / "identity.txt"
    key.write_text(identity + "\n")
    key.chmod(0o600)
    result = subprocess.run(
        [str(AGE), "-d", "-i", str(key), str(tmp_path / "artifact.age")],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == plaintext


@needs_age
def test_affidavit_decrypts_what_stock_age_encrypted(tmp_path: Path) -> None:
    identity, recipient = new_identity()
    plaintext = data(MIB + 33, seed=2)
    source = tmp_path / "plain.bin"
    source.write_bytes(plaintext)
    result = subprocess.run(
        [str(AGE), "-r", recipient, "-o", str(tmp_path / "by-age.age"), str(source)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert result.returncode == 0
    with (tmp_path / "by-age.age").open("rb") as src:
        out = io.BytesIO()
        decrypt_to(src, out, identity)
    assert out.getvalue() == plaintext
    ciphertext = (tmp_path / "by-age.age").read_bytes()
    assert b"".join(decrypt_chunks(pieces(ciphertext, 4096), identity)) == plaintext
