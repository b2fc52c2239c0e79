"""Segment reads into reused buffers and the whole-file digest assembled from them (issue 18).

``AgePayload.read_segment(..., buffers=...)`` (one ``pread`` per segment into memory a
worker thread keeps) must give exactly what the batched read gives: the same digests, the
same plaintext, the same fault for a flipped bit, a cut file or appended bytes. And
:class:`OrderedDigest` must give the file's SHA-256 whatever order the segments are fed in,
and no digest when a segment was not read whole or the run stopped early."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest

from affidavit.crypto.age import encrypt_chunks, new_identity
from affidavit.crypto.age_reader import CHUNK_SIZE, AgeFile, SegmentBuffers
from affidavit.crypto.segments import OrderedDigest, geometry

SEGMENT = 3 * CHUNK_SIZE
IDENTITY, RECIPIENT = new_identity()


def _file(tmp_path: Path, size: int, name: str = "a.age") -> tuple[Path, bytes, bytes]:
    plain = random.Random(size).randbytes(size)
    cipher = b"".join(encrypt_chunks([plain], RECIPIENT))
    path = tmp_path / name
    path.write_bytes(cipher)
    return path, plain, cipher


def _reads(path: Path, plain_size: int) -> list[tuple[object, ...]]:
    """Each segment read both ways: (digests, sizes, plaintext, error) pairs."""
    out = []
    buffers = SegmentBuffers()
    with AgeFile.open(path, IDENTITY) as age:
        places = geometry(
            payload_offset=age.layout.payload_offset,
            plain_size=plain_size,
            segment_size=SEGMENT,
        )
        for place in places:
            if place.first_chunk + place.chunks > age.layout.chunks:
                break
            got = []
            for bufs in (None, buffers):
                read = age.payload.read_segment(
                    place.first_chunk, place.chunks, from_offset=place.offset, buffers=bufs
                )
                got.append(
                    (
                        read.cipher_sha256,
                        read.cipher_size,
                        read.plain_sha256,
                        bytes(read.plaintext) if read.plaintext is not None else None,
                        read.error.message if read.error is not None else None,
                    )
                )
            out.append(tuple(got))
    return out


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, SEGMENT, SEGMENT + 1, 4 * SEGMENT - 5])
def test_buffered_reads_equal_batched_reads(tmp_path: Path, size: int) -> None:
    path, plain, cipher = _file(tmp_path, size)
    reads = _reads(path, size)
    assert reads and all(batched == buffered for batched, buffered in reads)
    assert b"".join(r[0][3] for r in reads if r[0][3] is not None) == plain  # type: ignore[misc]
    with AgeFile.open(path, IDENTITY) as age:
        places = geometry(
            payload_offset=age.layout.payload_offset, plain_size=size, segment_size=SEGMENT
        )
        buffers = SegmentBuffers()
        whole = hashlib.sha256()
        for place in places:
            read = age.payload.read_segment(
                place.first_chunk, place.chunks, from_offset=place.offset, buffers=buffers
            )
            assert read.ciphertext is not None and len(read.ciphertext) == place.size
            whole.update(read.ciphertext)
    assert whole.hexdigest() == hashlib.sha256(cipher).hexdigest()  # the ranges tile the file


@pytest.mark.parametrize("defect", ["flip", "cut", "append"])
def test_buffered_reads_fail_as_batched_reads(tmp_path: Path, defect: str) -> None:
    size = 4 * SEGMENT - 5
    path, _, cipher = _file(tmp_path, size)
    raw = bytearray(cipher)
    if defect == "flip":
        raw[len(raw) // 2] ^= 0x01
    elif defect == "cut":
        del raw[-CHUNK_SIZE:]
    else:
        raw += b"appended"
    path.write_bytes(bytes(raw))
    reads = _reads(path, size)
    assert all(batched == buffered for batched, buffered in reads)
    assert any(buffered[4] is not None for _, buffered in reads)  # the defect is seen


def test_ordered_digest_in_any_feed_order() -> None:
    pieces = [random.Random(i).randbytes(1000 + i) for i in range(12)]
    digest = OrderedDigest(len(pieces))
    order = list(range(len(pieces)))
    random.Random(5).shuffle(order)
    threads = [threading.Thread(target=digest.feed, args=(k, memoryview(pieces[k]))) for k in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    joined = b"".join(pieces)
    assert digest.result(len(joined)) == hashlib.sha256(joined).hexdigest()
    assert OrderedDigest(1).result(0) is None  # nothing fed: no digest


def test_ordered_digest_refuses_a_missing_piece_or_a_short_total() -> None:
    digest = OrderedDigest(3)
    assert digest.feed(0, b"a")
    assert not digest.feed(2, b"c", wait=False)  # not its turn yet
    assert digest.feed(1, None)  # segment 1 was not read whole
    assert digest.feed(2, b"c")
    assert digest.result(2) is None
    short = OrderedDigest(2)
    short.feed(0, b"ab")
    short.feed(1, b"c")
    assert short.result(4) is None  # fewer bytes than the signed size
    assert short.result(3) == hashlib.sha256(b"abc").hexdigest()


def test_close_releases_a_feeder_waiting_for_its_turn() -> None:
    digest = OrderedDigest(3)
    done = threading.Event()

    def late() -> None:
        digest.feed(2, b"c")  # waits: 0 and 1 never come
        done.set()

    waiter = threading.Thread(target=late)
    waiter.start()
    assert not done.wait(0.2)
    digest.close()
    assert done.wait(10)
    waiter.join()
    assert digest.result(1) is None
