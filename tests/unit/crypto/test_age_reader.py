"""The parallel age reader: the C2SP test kit, byte identity with pyrage and the `age` CLI,
and a flipped, cut or extended file in every region."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from affidavit.crypto.age import encrypt_chunks, new_identity
from affidavit.crypto.age_reader import (
    CHUNK_SIZE,
    MAX_HEADER,
    SEALED_CHUNK_SIZE,
    AgeDecryptError,
    AgeFailure,
    AgeFile,
    AgeHeader,
    DecryptedRange,
    Pool,
    X25519Identity,
    _bech32_decode,
    _hkdf,
    decrypt_stream,
)
from affidavit.errors import IntegrityError, KeystoreError, OperationError

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "age" / "testdata"
AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="the `age` CLI is not installed")
MIB = 1024 * 1024


# --- the test kit ---------------------------------------------------------------------------


def _vector(path: Path) -> tuple[dict[str, list[str]], bytes]:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)  # how the kit stores large files; not a feature of age
    return meta, body


def _unsupported(meta: dict[str, list[str]]) -> str | None:
    """Why this reader cannot run a vector (None: it can)."""
    if meta.get("armored") == ["yes"]:
        return "armored"
    if "passphrase" in meta:
        return "scrypt"
    if any(not i.startswith("AGE-SECRET-KEY-1") for i in meta.get("identity", [])):
        return "other recipient type"
    return None


def _kit() -> tuple[list[Path], dict[str, int]]:
    if not VECTORS.is_dir():
        return [], {}
    files = sorted(p for p in VECTORS.iterdir() if p.is_file())
    skipped: dict[str, int] = {}
    for path in files:
        reason = _unsupported(_vector(path)[0])
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
    return files, skipped


KIT, KIT_SKIPPED = _kit()
SKIP_SUMMARY = ", ".join(f"{n} {why}" for why, n in sorted(KIT_SKIPPED.items()))


def _outcome(
    path: Path, identity: str, workers: int, pool: Pool = "threads"
) -> tuple[str, bytes, AgeDecryptError | None]:
    released = bytearray()
    try:
        with AgeFile.open(path, identity) as age:
            for piece in age.plaintext(workers=workers, range_chunks=2, pool=pool):
                released += piece
    except AgeDecryptError as exc:
        return exc.failure.value, bytes(released), exc
    return "success", bytes(released), None


def _stream_outcome(data: bytes, identity: str, piece: int) -> tuple[str, bytes]:
    released = bytearray()
    try:
        for plain in decrypt_stream(
            (data[i : i + piece] for i in range(0, len(data), piece)), identity
        ):
            released += plain
    except AgeDecryptError as exc:
        return exc.failure.value, bytes(released)
    return "success", bytes(released)


@pytest.mark.skipif(not KIT, reason=f"{VECTORS} is not present (it comes with ../shared)")
@pytest.mark.parametrize("path", KIT, ids=lambda p: p.name)
def test_vector(path: Path, tmp_path: Path) -> None:
    meta, body = _vector(path)
    reason = _unsupported(meta)
    if reason is not None:
        pytest.skip(
            f"{reason}: not implemented by this reader "
            f"(test kit vectors skipped: {SKIP_SUMMARY} of {len(KIT)})"
        )
    identities = meta.get("identity") or [new_identity()[0]]  # `empty` names none
    assert len(identities) == 1
    target = tmp_path / "file.age"
    target.write_bytes(body)
    expect = meta["expect"][0]
    kind, released, error = _outcome(target, identities[0], workers=1)
    assert kind == expect, error
    if "payload" in meta:
        # success: the whole payload; payload failure: exactly what was released before it
        assert hashlib.sha256(released).hexdigest() == meta["payload"][0]
    if kind == "success" or (error is not None and error.chunk):
        with AgeFile.open(target, identities[0]) as age:
            chunks = age.layout.chunks
        if chunks > 2:  # several ranges: the same through worker threads and processes
            assert _outcome(target, identities[0], workers=3)[:2] == (kind, released)
            assert _outcome(target, identities[0], 3, "processes")[:2] == (kind, released)
    # the same outcome and released bytes through the stream decryptor verify uses, whatever
    # the sizes of the pieces the vault hands over
    for piece in (1, 1000, 1 << 20):
        assert _stream_outcome(body, identities[0], piece) == (kind, released)


def test_the_kit_runs_most_of_its_vectors() -> None:
    if not KIT:
        pytest.skip(f"{VECTORS} is not present (it comes with ../shared)")
    assert len(KIT) - sum(KIT_SKIPPED.values()) >= 60, SKIP_SUMMARY


# --- byte identity with pyrage and the age CLI -------------------------------------------


def _data(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _pyrage_file(tmp_path: Path, plaintext: bytes, recipient: str) -> Path:
    path = tmp_path / "pyrage.age"
    pieces = (plaintext[i : i + 300_000] for i in range(0, len(plaintext), 300_000))
    with path.open("wb") as out:
        for piece in encrypt_chunks(pieces, recipient):
            out.write(piece)
    return path


POOLS: list[tuple[int, Pool]] = [(1, "threads"), (3, "threads"), (3, "processes")]
SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536, 3 * 65536 + 1, 5 * MIB + 12345]


def _check_all_ways(path: Path, identity: str, plaintext: bytes) -> None:
    data = path.read_bytes()
    for piece in (7, 65536 + 16, 1 << 20):
        stream = decrypt_stream((data[i : i + piece] for i in range(0, len(data), piece)), identity)
        assert b"".join(stream) == plaintext
    with AgeFile.open(path, identity) as age:
        assert age.plaintext_size == len(plaintext)
        assert age.layout.chunks == max(1, -(-len(plaintext) // CHUNK_SIZE))
        for workers, pool in POOLS:
            got = age.plaintext(workers=workers, range_chunks=5, pool=pool)
            assert b"".join(got) == plaintext
            ranges = list(age.ranges(workers=workers, range_chunks=5, sha256=True, pool=pool))
            assert b"".join(r.plaintext or b"" for r in ranges) == plaintext
            for r in ranges:
                piece = plaintext[r.plaintext_offset : r.plaintext_offset + r.plaintext_size]
                assert r.sha256 == hashlib.sha256(piece).hexdigest()
            hashed = list(
                age.ranges(workers=workers, range_chunks=5, plaintext=False, sha256=True, pool=pool)
            )
            assert [r.sha256 for r in hashed] == [r.sha256 for r in ranges]
            assert all(r.plaintext is None for r in hashed)
        chunks = age.layout.chunks
        for first in {0, chunks // 2, chunks - 1}:
            count = min(3, chunks - first)
            expected = plaintext[first * CHUNK_SIZE : (first + count) * CHUNK_SIZE]
            assert age.decrypt_range(first, count) == expected


@pytest.mark.parametrize("size", SIZES)
def test_same_bytes_as_pyrage(size: int, tmp_path: Path) -> None:
    identity, recipient = new_identity()
    plaintext = _data(size)
    _check_all_ways(_pyrage_file(tmp_path, plaintext, recipient), identity, plaintext)


@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_same_bytes_as_the_age_cli(size: int, tmp_path: Path) -> None:
    identity, recipient = new_identity()
    _, other_recipient = new_identity()
    plaintext = _data(size, seed=size)
    source, target = tmp_path / "plain", tmp_path / "cli.age"
    source.write_bytes(plaintext)
    assert AGE is not None
    subprocess.run(
        [AGE, "-r", other_recipient, "-r", recipient, "-o", str(target), str(source)],
        check=True,
    )
    _check_all_ways(target, identity, plaintext)
    key_file = tmp_path / "key.txt"
    key_file.write_text(identity + "\n")
    cli = subprocess.run(
        [AGE, "-d", "-i", str(key_file), str(target)], check=True, capture_output=True
    )
    with AgeFile.open(target, identity) as age:
        assert b"".join(age.plaintext(workers=2, range_chunks=7)) == cli.stdout


# --- tampering ------------------------------------------------------------------------------

PLAIN = _data(3 * CHUNK_SIZE + 1000, seed=3)  # four chunks, the last one short


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return new_identity()


@pytest.fixture
def good(tmp_path: Path, keys: tuple[str, str]) -> bytes:
    return _pyrage_file(tmp_path, PLAIN, keys[1]).read_bytes()


def _header_size(blob: bytes) -> int:
    return blob.index(b"\n", blob.index(b"\n---") + 1) + 1


def _released(
    tmp_path: Path, blob: bytes, identity: str, workers: int = 1, pool: Pool = "threads"
) -> tuple[bytes, AgeDecryptError]:
    path = tmp_path / "bad.age"
    path.write_bytes(blob)
    released = bytearray()
    with pytest.raises(AgeDecryptError) as caught, AgeFile.open(path, identity) as age:
        for piece in age.plaintext(workers=workers, range_chunks=1, pool=pool):
            released += piece
    return bytes(released), caught.value


def _swap_b64(blob: bytes, at: int) -> bytes:
    """Another base64 letter at ``at`` (so the line still parses)."""
    out = bytearray(blob)
    out[at] = ord("A") if out[at] != ord("A") else ord("B")
    return bytes(out)


def test_header_regions(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    identity = keys[0]
    stanza_line = good.index(b"\n-> X25519 ") + 1
    body_line = good.index(b"\n", stanza_line) + 1
    mac_line = good.index(b"\n--- ") + 1
    cases = {
        "intro": (bytes([good[0] ^ 1]) + good[1:], AgeFailure.HEADER),
        "share": (_swap_b64(good, stanza_line + 12), AgeFailure.NO_MATCH),
        "body": (_swap_b64(good, body_line + 3), AgeFailure.NO_MATCH),
        "stanza type": (good.replace(b"-> X25519", b"-> X25518", 1), AgeFailure.NO_MATCH),
        "stanza newline": (good[:body_line] + b"\n" + good[body_line:], AgeFailure.HEADER),
        "mac": (_swap_b64(good, mac_line + 5), AgeFailure.HMAC),
        "mac line": (good[:mac_line] + b"---  " + good[mac_line + 4 :], AgeFailure.HEADER),
    }
    for name, (blob, failure) in cases.items():
        released, error = _released(tmp_path, blob, identity)
        assert error.failure is failure, name
        assert released == b"", name
        assert isinstance(error, IntegrityError)


def test_a_flipped_nonce_opens_no_chunk(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    blob = bytearray(good)
    blob[_header_size(good) + 3] ^= 0x80
    released, error = _released(tmp_path, bytes(blob), keys[0])
    assert released == b""
    assert (error.failure, error.chunk) == (AgeFailure.PAYLOAD, 0)
    assert error.offset == _header_size(good) + 16
    assert "chunk 0 at offset" in str(error)


@pytest.mark.parametrize(("workers", "pool"), [(1, "threads"), (2, "threads"), (2, "processes")])
@pytest.mark.parametrize("chunk", [1, 3])
def test_a_flipped_chunk_releases_only_the_chunks_before(
    tmp_path: Path, good: bytes, keys: tuple[str, str], chunk: int, workers: int, pool: Pool
) -> None:
    start = _header_size(good) + 16 + chunk * SEALED_CHUNK_SIZE
    blob = bytearray(good)
    blob[start + 50] ^= 0x01
    released, error = _released(tmp_path, bytes(blob), keys[0], workers, pool)
    assert released == PLAIN[: chunk * CHUNK_SIZE]
    assert (error.failure, error.chunk, error.offset) == (AgeFailure.PAYLOAD, chunk, start)
    assert "does not authenticate" in str(error)
    path = tmp_path / "bad.age"
    with AgeFile.open(path, keys[0]) as age:
        with pytest.raises(AgeDecryptError, match=f"chunk {chunk} at offset {start}"):
            age.decrypt_range(chunk, 1)
        with pytest.raises(AgeDecryptError):
            list(age.ranges(workers=workers, range_chunks=2, plaintext=False, pool=pool))
        others = [i for i in range(4) if i != chunk]
        for i in others:  # every other range opens on its own
            assert age.decrypt_range(i, 1) == PLAIN[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        ranges: list[DecryptedRange] = []
        with pytest.raises(AgeDecryptError):
            ranges.extend(age.ranges(workers=workers, range_chunks=1, pool=pool))
        assert [r.first_chunk for r in ranges] == list(range(chunk))


def test_a_missing_final_chunk_is_truncation(
    tmp_path: Path, good: bytes, keys: tuple[str, str]
) -> None:
    cut = _header_size(good) + 16 + 3 * SEALED_CHUNK_SIZE  # chunks 0-2 kept, all full
    released, error = _released(tmp_path, good[:cut], keys[0])
    assert released == PLAIN[: 3 * CHUNK_SIZE]  # authentic chunks, then the error
    assert (error.failure, error.chunk) == (AgeFailure.PAYLOAD, 2)
    assert "truncated" in str(error)
    path = tmp_path / "bad.age"
    with AgeFile.open(path, keys[0]) as age, pytest.raises(AgeDecryptError, match="truncated"):
        age.decrypt_range(0, 3)  # a range is all or nothing


def test_a_chunk_cut_short(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    released, error = _released(tmp_path, good[:-100], keys[0])
    assert released == PLAIN[: 3 * CHUNK_SIZE]
    assert (error.failure, error.chunk) == (AgeFailure.PAYLOAD, 3)
    released, error = _released(tmp_path, good[:-1010], keys[0])  # 6 bytes: less than a tag
    assert released == PLAIN[: 3 * CHUNK_SIZE]
    assert "shorter than its tag" in str(error)


def test_appended_bytes(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    released, error = _released(tmp_path, good + b"\x00", keys[0])
    assert released == PLAIN[: 3 * CHUNK_SIZE]  # the short last chunk no longer opens
    assert (error.failure, error.chunk) == (AgeFailure.PAYLOAD, 3)
    exact = PLAIN[: 2 * CHUNK_SIZE]  # a full final chunk, then one byte
    blob = _pyrage_file(tmp_path, exact, keys[1]).read_bytes() + b"x"
    released, error = _released(tmp_path, blob, keys[0], 2, "processes")
    assert released == exact
    assert (error.failure, error.chunk) == (AgeFailure.PAYLOAD, 1)
    assert "1 bytes follow it" in str(error)


def test_swapped_chunks(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    at = _header_size(good) + 16
    one, two = at + SEALED_CHUNK_SIZE, at + 2 * SEALED_CHUNK_SIZE
    blob = (
        good[:one]
        + good[two : two + SEALED_CHUNK_SIZE]
        + good[one:two]
        + good[two + SEALED_CHUNK_SIZE :]
    )
    released, error = _released(tmp_path, blob, keys[0])
    assert released == PLAIN[:CHUNK_SIZE]
    assert error.chunk == 1


def test_no_payload_and_not_age(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    size = _header_size(good)
    for blob, failure in [
        (good[: size + 16], AgeFailure.PAYLOAD),  # a nonce and no chunk
        (good[: size + 5], AgeFailure.HEADER),  # a short nonce
        (good[: size - 1], AgeFailure.HEADER),  # the MAC line cut
        (b"", AgeFailure.HEADER),
        (b"hello, world\n" * 100, AgeFailure.HEADER),
    ]:
        assert _released(tmp_path, blob, keys[0])[1].failure is failure


def test_a_header_over_the_limit_is_refused(tmp_path: Path, keys: tuple[str, str]) -> None:
    body = b"\n".join([b"A" * 64] * (MAX_HEADER // 65 + 10)) + b"\n\n"
    blob = b"age-encryption.org/v1\n-> junk\n" + body + b"--- " + b"A" * 43 + b"\n"
    _, error = _released(tmp_path, blob + bytes(100), keys[0])
    assert error.failure is AgeFailure.HEADER
    assert "longer than" in str(error)


def test_wrong_and_malformed_identities(tmp_path: Path, good: bytes) -> None:
    path = tmp_path / "f.age"
    path.write_bytes(good)
    with pytest.raises(AgeDecryptError, match="no match") as caught:
        AgeFile.open(path, new_identity()[0])
    assert caught.value.failure is AgeFailure.NO_MATCH
    for bad in ["AGE-SECRET-KEY-1NOPE", "not a key", new_identity()[1]]:
        with pytest.raises(KeystoreError):
            AgeFile.open(path, bad)
    identity = new_identity()[0]
    with pytest.raises(KeystoreError):  # a flipped checksum character
        X25519Identity.from_str(identity[:-1] + ("Q" if identity[-1] != "Q" else "P"))


def test_the_identity_gives_its_recipient() -> None:
    identity, recipient = new_identity()
    assert _bech32_decode(recipient) == ("age", X25519Identity.from_str(identity).public)
    assert X25519Identity.from_str(identity).secret.hex() not in repr(
        X25519Identity.from_str(identity)
    )


def test_header_from_a_stream(good: bytes, keys: tuple[str, str]) -> None:
    header, rest = AgeHeader.read(io.BytesIO(good))
    assert header.size == _header_size(good)
    assert good[header.size :].startswith(rest)
    assert len(header.file_key(X25519Identity.from_str(keys[0]))) == 16


def _children() -> Iterator[str]:
    return (cmd for _, cmd in _child_processes())


def _child_processes() -> Iterator[tuple[int, str]]:
    me = os.getpid()
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmd:
                yield int(pid), cmd.read().decode(errors="replace")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_abandoned_iteration_ends_the_workers(tmp_path: Path, keys: tuple[str, str]) -> None:
    path = _pyrage_file(tmp_path, _data(2 * MIB), keys[1])
    with AgeFile.open(path, keys[0]) as age:
        stream = age.plaintext(workers=2, range_chunks=2, pool="processes")
        assert len(next(stream)) == 2 * CHUNK_SIZE
        assert any("age_reader" in c for c in _children())
        stream.close()
        assert not any("age_reader" in c for c in _children())
        stream = age.plaintext(workers=2, range_chunks=2)
        assert len(next(stream)) == 2 * CHUNK_SIZE
        stream.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("affidavit-age-reader")]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_worker_that_dies_is_an_operation_error(tmp_path: Path, keys: tuple[str, str]) -> None:
    path = _pyrage_file(tmp_path, _data(2 * MIB), keys[1])
    with AgeFile.open(path, keys[0]) as age:
        stream = age.plaintext(workers=2, range_chunks=1, pool="processes")
        next(stream)
        victim = next(pid for pid, cmd in _child_processes() if "age_reader" in cmd)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(OperationError, match="worker process ended unexpectedly"):
            list(stream)
    assert not any("age_reader" in c for c in _children())


def test_bad_arguments(tmp_path: Path, good: bytes, keys: tuple[str, str]) -> None:
    path = tmp_path / "f.age"
    path.write_bytes(good)
    with AgeFile.open(path, keys[0]) as age:
        with pytest.raises(ValueError, match="not within"):
            age.decrypt_range(3, 2)
        with pytest.raises(ValueError, match="at least 1"):
            list(age.plaintext(workers=0))
        with pytest.raises(ValueError, match="threads or processes"):
            list(age.plaintext(workers=2, pool="fork"))  # type: ignore[arg-type]
        assert age.decrypt_range(2, 0) == b""


# --- a hostile stream (decrypt_stream, as verify reads vault artifacts) -----------------------


def _with_header(good: bytes, identity: str, extra: bytes) -> bytes:
    """``good`` with ``extra`` stanzas before its own and a header MAC that fits (what the
    holder of the file key could write: a header must be judged by its shape and size)."""
    header = AgeHeader.from_bytes(good)
    file_key = header.file_key(X25519Identity.from_str(identity))
    intro = b"age-encryption.org/v1\n"
    head = intro + extra + header.mac_input[len(intro) :]
    mac = hmac.new(_hkdf(file_key, salt=b"", info=b"header"), head, hashlib.sha256).digest()
    return head + b" " + base64.b64encode(mac).rstrip(b"=") + b"\n" + good[header.size :]


def _padding(good: bytes, identity: str, header_size: int) -> bytes:
    """A stanza of another type whose body makes the header exactly ``header_size`` bytes."""
    for name in (b"pad", b"padd", b"paddd", b"padddd"):
        base = _header_size(_with_header(good, identity, b"-> " + name + b"\n\n"))
        full, rest = divmod(header_size - base, 65)
        if rest < 64 and rest % 4 != 1:
            return b"-> " + name + b"\n" + (b"A" * 64 + b"\n") * full + b"A" * rest + b"\n"
    raise AssertionError(f"no padding for {header_size}")


def _counted(pieces: Iterator[bytes], seen: list[int]) -> Iterator[bytes]:
    for piece in pieces:
        seen.append(len(piece))
        yield piece


def test_a_hostile_header_in_a_stream(good: bytes, keys: tuple[str, str]) -> None:
    identity = keys[0]

    def endless(piece: bytes, first: bytes = b"") -> Iterator[bytes]:
        yield first
        while True:
            yield piece

    # no newline ever, or stanzas without end: refused after at most a header's worth
    for source in (endless(b"a" * 4096), endless(b"-> a\n\n", b"age-encryption.org/v1\n"),
                   endless(b"A" * 64 + b"\n", b"age-encryption.org/v1\n-> a\n")):  # fmt: skip
        seen: list[int] = []
        with pytest.raises(AgeDecryptError, match="longer than") as caught:
            list(decrypt_stream(_counted(source, seen), identity))
        assert caught.value.failure is AgeFailure.HEADER
        assert sum(seen) <= MAX_HEADER + CHUNK_SIZE + 4096
    # the MAC line without its newline at the end of the file, and nothing at all
    cut = good[: _header_size(good) - 1]
    for data in (cut, b"", b"\n", b"age-encryption.org/v1"):
        for piece in (1, 1 << 20):
            assert _stream_outcome(data, identity, piece) == ("header failure", b"")
    assert list(decrypt_stream(iter([b""] * 3 + [good] + [b""] * 3), identity))  # empty pieces


def test_many_stanzas_cost_a_bounded_time(good: bytes, keys: tuple[str, str]) -> None:
    """A header of 64 KiB holds some 660 X25519 stanzas for other keys (one X25519 exchange
    each) or ten thousand stanzas of another type: both are read in well under a second."""
    identity = keys[0]
    others = b""
    while len(others) < MAX_HEADER - 400:
        share = base64.b64encode(X25519Identity.from_str(new_identity()[0]).public).rstrip(b"=")
        others += b"-> X25519 " + share + b"\n" + base64.b64encode(bytes(32)).rstrip(b"=") + b"\n"
    tiny = b"-> a\n\n" * ((MAX_HEADER - 400) // 6)
    for extra in (others, tiny):
        blob = _with_header(good, identity, extra)
        assert _header_size(blob) <= MAX_HEADER
        started = time.perf_counter()
        assert _stream_outcome(blob, identity, 65536) == ("success", PLAIN)
        assert time.perf_counter() - started < 5
    # and none of them ours: no match, after the same bounded work
    header = AgeHeader.from_bytes(good)
    mine = header.mac_input[len(b"age-encryption.org/v1\n") : -3]
    alone = _with_header(good, identity, others).replace(mine, b"", 1)
    assert _stream_outcome(alone, identity, 65536)[0] == "no match"


@pytest.mark.parametrize("piece", [1, 4096, 65536, 1 << 20])
def test_a_header_at_the_64_kib_boundary(good: bytes, keys: tuple[str, str], piece: int) -> None:
    identity = keys[0]
    for size in (MAX_HEADER - 1, MAX_HEADER):
        blob = _with_header(good, identity, _padding(good, identity, size))
        assert _header_size(blob) == size
        assert _stream_outcome(blob, identity, piece) == ("success", PLAIN)
    blob = _with_header(good, identity, _padding(good, identity, MAX_HEADER + 1))
    failure, released = _stream_outcome(blob, identity, piece)
    assert (failure, released) == ("header failure", b"")


def test_a_stream_cut_at_every_chunk_boundary(
    tmp_path: Path, good: bytes, keys: tuple[str, str]
) -> None:
    """Cut at the nonce and at every chunk boundary (and a byte and a tag either side): never
    a success, only the chunks that authenticated before the cut are released, the same
    bytes whatever the pieces, and the same as the file reader releases."""
    identity = keys[0]
    start = _header_size(good) + 16
    cuts = {_header_size(good), start}
    for i in range(5):
        boundary = start + i * SEALED_CHUNK_SIZE
        cuts |= {boundary + d for d in (-17, -16, -1, 0, 1, 15, 16, 17)}
    cuts = {c for c in cuts if _header_size(good) <= c < len(good)}
    for cut in sorted(cuts):
        data = good[:cut]
        full = max(0, (cut - start) // SEALED_CHUNK_SIZE)  # whole chunks before the cut
        outcomes = {_stream_outcome(data, identity, piece) for piece in (7, SEALED_CHUNK_SIZE,
                                                                        1 << 20)}  # fmt: skip
        assert len(outcomes) == 1, cut
        ((failure, released),) = outcomes
        assert failure in ("payload failure", "header failure"), cut
        assert released == PLAIN[: full * CHUNK_SIZE], cut
        if failure == "payload failure":
            assert _released(tmp_path, data, identity)[0] == released, cut
    # one cut read byte by byte
    cut = start + 2 * SEALED_CHUNK_SIZE
    assert _stream_outcome(good[:cut], identity, 1) == ("payload failure", PLAIN[: 2 * CHUNK_SIZE])


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1])
def test_a_stream_in_pieces_of_one_byte(tmp_path: Path, keys: tuple[str, str], size: int) -> None:
    plaintext = _data(size, seed=size)
    data = _pyrage_file(tmp_path, plaintext, keys[1]).read_bytes()
    assert _stream_outcome(data, keys[0], 1) == ("success", plaintext)
    assert _stream_outcome(data + b"\x00", keys[0], 1)[0] == "payload failure"
