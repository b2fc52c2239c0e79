"""Attack pass on the fingerprint threads that split a ``.bson`` file by bytes with no walk
first (issue 18, session 11: ``services/fingerprint_threads.py``, the compiled
``_native.resync`` and the fold without keys in chunks, ``Accumulator._chunks``).

Tried here, each a test: the compiled guess against a Python model of it at every offset of
buffers that end mid-document (its bounds), its argument checks; garbage handed to the
framing from a wrong guess (only ``FormatError``, so a wrong guess falls back to the walk
instead of crashing the run); random files with random defects, splits and worker counts
against the length-prefix walk; files of 1 to 100 bytes; documents of exactly a range's
length and one of 16 MiB; a file that grows during the run; the fold in chunks with spilled
runs and duplicate keys against the fold per segment (the index path) and the reference
accumulator; the CLI's exit code and one-line message on bad files with two workers."""

from __future__ import annotations

import contextlib
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import bson
import pytest
from tests.unit.fingerprint.accumulator_v1 import RefAccumulator

from affidavit.errors import FormatError
from affidavit.fingerprint import accumulator as acc_module
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import Fingerprint
from affidavit.formats import bson_codec
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE
from affidavit.formats.bson_codec import exact_record
from affidavit.formats.bson_codec.file_ranges import bson_file_ranges
from affidavit.services import fingerprint as fp_service
from affidavit.services import fingerprint_threads as fp_threads
from affidavit.services.fingerprint import _hash_file_range, add_bson_file

pytestmark = pytest.mark.skipif(
    not fp_service.bson_codec_compiled(),
    reason="the compiled module is not built: the file is walked and read by processes",
)


def _reference(docs: list[bytes]) -> Fingerprint:
    acc = Accumulator("exact", keep_keys=False)
    acc.add_records(exact_record(doc) for doc in docs)
    return acc.finish()[0]


def _threaded(path: Path, workers: int) -> Fingerprint:
    acc = Accumulator("exact", keep_keys=False)
    try:
        add_bson_file(acc, path, workers=workers, check=False)
    except BaseException:
        acc.close()
        raise
    return acc.finish()[0]


def _walked(path: Path) -> Fingerprint | FormatError:
    """What the length-prefix walk and the framing after it give (the path before issue 18's
    threads): the fingerprint, or the error."""
    acc = Accumulator("exact", keep_keys=False)
    try:
        for offset, length in bson_file_ranges(path, 1 << 30):
            pairs, _ = _hash_file_range(str(path), offset, length, False, False)
            acc.add_pairs(pairs, None)
    except FormatError as exc:
        acc.close()
        return exc
    return acc.finish()[0]


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp_threads, "RANGE", 4096)
    monkeypatch.setattr(fp_threads, "SLACK", 512)
    monkeypatch.setattr(fp_threads, "GROW_LIMIT", 2048)


# -- the compiled guess ---------------------------------------------------------------------------


def _resync_model(buf: bytes, at: int, chain: int, lo: int, hi: int) -> int:
    """``resync_at`` of ``_native.c`` in Python, every read bounds-checked by Python: the
    offset found, or ``-1 - resume`` (where a scan with more bytes after ``buf`` resumes:
    the first offset refused only because its first document ran past the end)."""
    end = len(buf)
    resume = end - 3 if end >= 3 and end - 3 > at else at
    types = set(range(0x01, 0x14)) | {0x7F, 0xFF}
    for p in range(at, end - 3):
        q, good = p, True
        for whole in range(chain):
            if q + 4 > end:
                break
            (length,) = struct.unpack_from("<i", buf, q)
            if length < lo or length > hi:
                good = False
                break
            if length > end - q:
                good = whole > 0
                if not good:
                    resume = min(resume, p)
                break
            if buf[q + length - 1] != 0 or (length > 5 and buf[q + 4] not in types):
                good = False
                break
            q += length
        if good:
            return p
    return -1 - resume


def _near_miss_buffer(rng: random.Random) -> bytes:
    """Documents, some whole, some cut, lengths that reach exactly the end or one past it."""
    parts = []
    for _ in range(rng.randrange(1, 6)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(bson.encode({"_id": rng.randrange(99), "s": "x" * rng.randrange(9)}))
        elif kind == 1:
            parts.append(struct.pack("<i", rng.choice([5, 6, 7, 12, 64])) + b"\x02")
        elif kind == 2:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))))
        else:
            parts.append(b"\x05\x00\x00\x00\x00")
    buf = b"".join(parts)
    if rng.random() < 0.5 and len(buf) >= 4:  # a length that ends exactly at / past the end
        at = rng.randrange(len(buf) - 3)
        tail = len(buf) - at + rng.choice([-1, 0, 1])
        buf = buf[:at] + struct.pack("<i", max(5, tail)) + buf[at + 4 :]
    return buf


def test_the_compiled_guess_is_its_model_at_every_offset_up_to_the_end() -> None:
    """Every offset of buffers that end inside a length prefix, exactly at a document's end
    or one byte before it: the compiled guess (and where it says a longer scan resumes)
    equals the Python model (which cannot read past the buffer), for chains of 1 to 4 and
    tight size bounds; and a guess resumed there over the buffer grown finds what a guess
    from the start finds."""
    native = bson_codec._NATIVE
    assert native is not None
    rng = random.Random(1811)
    for _ in range(400):
        buf = _near_miss_buffer(rng)
        for chain in (1, 2, 4):
            for lo, hi in ((5, MAX_BSON_DOCUMENT_SIZE), (6, 40)):
                grown = buf + _near_miss_buffer(rng)
                for at in range(len(buf) + 1):
                    got = native.resync(buf, at, chain, lo, hi)
                    assert got == _resync_model(buf, at, chain, lo, hi), (buf.hex(), at, chain)
                    if got < 0:
                        again = native.resync(grown, -1 - got, chain, lo, hi)
                        fresh = native.resync(grown, at, chain, lo, hi)
                        assert (again >= 0, again) == (fresh >= 0, fresh) or (
                            again < 0 and fresh < 0
                        ), (grown.hex(), at, chain)


@pytest.mark.parametrize(
    ("at", "chain", "lo", "hi"),
    [
        (-1, 4, 5, 64),
        (11, 4, 5, 64),
        (0, 0, 5, 64),
        (0, 4, 4, 64),
        (0, 4, 9, 8),
        (0, 4, 5, 1 << 31),
    ],
)
def test_the_compiled_guess_refuses_arguments_out_of_bounds(
    at: int, chain: int, lo: int, hi: int
) -> None:
    native = bson_codec._NATIVE
    assert native is not None
    with pytest.raises((ValueError, OverflowError)):
        native.resync(b"\x05\x00\x00\x00\x00" * 2, at, chain, lo, hi)


def test_the_guess_at_the_very_end_of_a_buffer_finds_nothing() -> None:
    native = bson_codec._NATIVE
    assert native is not None
    doc = bson.encode({"_id": 1})
    for cut in range(len(doc) * 2 + 1):
        buf = (doc * 2)[:cut]
        found = native.resync(buf, len(buf), 4, MIN_BSON_DOCUMENT_SIZE, MAX_BSON_DOCUMENT_SIZE)
        assert found == -1 - len(buf)  # nothing, and nothing before the end to scan again


# -- garbage from a wrong guess -------------------------------------------------------------------


def _garbage_document(rng: random.Random) -> bytes:
    """A length-prefixed frame whose elements are anything: odd types, ``_id`` not first or
    of any type, lengths that lie (what a wrong guess may hand the Python path)."""
    body = b""
    for _ in range(rng.randrange(0, 4)):
        t = rng.choice([*range(0x14), 0x7F, 0xFF, 0x20, 0x80])
        name = rng.choice([b"_id", b"a", b"", b"_i"])
        value = struct.pack("<i", rng.choice([-5, -1, 0, 1, 3, 5, 12, 1 << 30]))
        value += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16)))
        body += bytes([t]) + name + b"\x00" + value
    body += b"\x00"
    length = len(body) + 4 + (rng.randrange(-3, 3) if rng.random() < 0.1 else 0)
    return struct.pack("<i", length) + body


def test_garbage_framed_from_a_wrong_guess_raises_only_format_error() -> None:
    """Anything other than ``FormatError`` would end the thread's range with an exception
    instead of handing it back to the caller's walk."""
    rng = random.Random(18)
    for _ in range(20000):
        buf = b"".join(_garbage_document(rng) for _ in range(rng.randrange(1, 5)))
        if rng.random() < 0.3:  # the compiled framer first, then the Python one
            buf = bson.encode({"_id": 1}) + buf
        with contextlib.suppress(FormatError):
            fp_threads._frame(memoryview(bytearray(buf)))


# -- whole files ----------------------------------------------------------------------------------


def _id_value(rng: random.Random, i: int) -> object:
    return rng.choice(
        [i, str(i), bson.ObjectId(), 1.5 * i, {"a": i}, [i], bson.Binary(b"x" * i), None,
         True, bson.Regex("a"), bson.Int64(i), bson.Decimal128(str(i))]
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_random_files_with_random_defects_agree_with_the_walk(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Odd ``_id`` types, ``_id`` not first or missing, fake documents in payloads, then a
    byte changed, bytes inserted or the file cut: with any split and any number of workers
    the threads give the walk's fingerprint, or a ``FormatError`` where the walk gives one."""
    rng = random.Random(seed)
    for it in range(60):
        monkeypatch.setattr(fp_threads, "RANGE", rng.choice([16, 64, 300, 1024, 4096]))
        monkeypatch.setattr(fp_threads, "SLACK", rng.choice([4, 16, 100, 512]))
        monkeypatch.setattr(fp_threads, "GROW_LIMIT", rng.choice([8, 32, 1024, 1 << 20]))
        docs = []
        for i in range(rng.randrange(0, 60)):
            fields: dict[str, object] = {}
            if rng.random() < 0.2:
                fields["first"] = 1
            if rng.random() < 0.97:
                fields["_id"] = _id_value(rng, i)
            fields["s"] = "x" * rng.randrange(0, 600)
            if rng.random() < 0.2:
                chain = b"".join(bson.encode({"_id": k}) for k in range(rng.randrange(1, 8)))
                fields["b"] = bson.Binary(chain)
            docs.append(bson.encode(fields))
        raw = bytearray(b"".join(docs))
        for _ in range(rng.choice([0, 0, 1, 2])):
            if not raw:
                break
            at = rng.randrange(len(raw))
            kind = rng.randrange(3)
            if kind == 0:
                raw[at] = rng.randrange(256)
            elif kind == 1:
                raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
            else:
                del raw[at:]
        path = tmp_path / f"c{it}.bson"
        path.write_bytes(bytes(raw))
        expected = _walked(path)
        for workers in (1, 2, 3):
            if isinstance(expected, FormatError):
                with pytest.raises(FormatError):
                    _threaded(path, workers)
            else:
                assert _threaded(path, workers) == expected, (it, workers)


def test_files_of_1_to_100_bytes(tmp_path: Path) -> None:
    """With the real range size: random bytes, cut documents, whole tiny documents."""
    rng = random.Random(100)
    doc = bson.encode({"_id": 7})
    path = tmp_path / "tiny.bson"
    for size in range(1, 101):
        for raw in (
            bytes(rng.randrange(256) for _ in range(size)),
            (doc * 10)[:size],
            b"\x05\x00\x00\x00\x00" * (size // 5) + b"\x00" * (size % 5),
        ):
            path.write_bytes(raw)
            expected = _walked(path)
            for workers in (1, 2):
                if isinstance(expected, FormatError):
                    with pytest.raises(FormatError):
                        _threaded(path, workers)
                else:
                    assert _threaded(path, workers) == expected


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_documents_of_exactly_a_ranges_length(
    tmp_path: Path, small_ranges: None, delta: int
) -> None:
    """Every range boundary falls exactly on (or one byte beside) a document boundary."""
    base = len(bson.encode({"_id": 0, "s": ""}))
    docs = [bson.encode({"_id": i, "s": "r" * (4096 + delta - base)}) for i in range(40)]
    assert all(len(d) == 4096 + delta for d in docs)
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    for workers in (1, 2):
        assert _threaded(path, workers) == _reference(docs)


@pytest.mark.slow
def test_a_16_mib_document_among_small_ones_with_the_real_ranges(tmp_path: Path) -> None:
    """A document of the largest size mongod writes spans three nominal ranges of 8 MiB; the
    range after it starts inside it."""
    big = bson.encode({"_id": "big", "b": bson.Binary(b"\x05\x00\x00\x00\x00" * 3_355_000)})
    assert 16_000_000 < len(big) <= MAX_BSON_DOCUMENT_SIZE
    docs = [bson.encode({"_id": i, "s": "s" * (i % 300)}) for i in range(20000)]
    docs.insert(7000, big)
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    expected = _reference(docs)
    for workers in (1, 2):
        assert _threaded(path, workers) == expected


def test_a_file_that_grows_during_the_run_gives_the_fingerprint_it_had_when_opened(
    tmp_path: Path, small_ranges: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents appended while the ranges are read are not counted (the size is the one
    the run started with), and nothing is counted twice or half."""
    docs = [bson.encode({"_id": i, "s": "g" * 100}) for i in range(400)]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    real = fp_threads._hash_range

    def grow_then_read(fd: int, index: int, size: int, bits: int) -> object:
        if index == 2:
            with path.open("ab") as fh:
                fh.write(bson.encode({"_id": "late", "s": "l" * 5000}))
        return real(fd, index, size, bits)

    monkeypatch.setattr(fp_threads, "_hash_range", grow_then_read)
    for workers in (1, 2):
        path.write_bytes(b"".join(docs))
        assert _threaded(path, workers) == _reference(docs)


@pytest.mark.parametrize("same_shape", [True, False])
def test_a_file_replaced_by_name_during_the_run_is_never_a_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_shape: bool
) -> None:
    """The threads read the file they opened; a range read again is walked by *name*
    (``bson_file_ranges(path)``). The name is pointed at another file midway (documents of
    the same lengths with other bytes, or other lengths): the fingerprint is the opened
    file's, or a ``FormatError``, never one of a mix of both files."""
    monkeypatch.setattr(fp_threads, "RANGE", 4096)
    monkeypatch.setattr(fp_threads, "SLACK", 512)
    monkeypatch.setattr(fp_threads, "GROW_LIMIT", 2048)
    payload = b"".join(bson.encode({"_id": k, "fake": "f" * k}) for k in range(40))
    docs = [bson.encode({"_id": i, "blob": bson.Binary(payload)}) for i in range(30)]
    flipped = bytes(b ^ 0x01 if b > 0x20 else b for b in payload)  # same lengths
    other_payload = flipped if same_shape else payload[:-7]
    others = [bson.encode({"_id": i, "blob": bson.Binary(other_payload)}) for i in range(30)]
    path = tmp_path / "c.bson"
    swap = tmp_path / "other.bson"
    real = fp_threads._hash_range
    walked: list[int] = []
    real_walk = fp_threads._walk_range

    def replace_then_read(fd: int, index: int, size: int, bits: int) -> object:
        if index == 1:
            swap.write_bytes(b"".join(others))
            os.replace(swap, path)
        return real(fd, index, size, bits)

    def counted(*args: object) -> object:
        walked.append(1)
        return real_walk(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fp_threads, "_hash_range", replace_then_read)
    monkeypatch.setattr(fp_threads, "_walk_range", counted)
    for workers in (1, 2):
        path.write_bytes(b"".join(docs))
        try:
            got = _threaded(path, workers)
        except FormatError:
            continue
        assert got == _reference(docs)
    assert walked  # the walk by name did run


def test_ranges_inside_long_documents_are_not_scanned_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents five times a range long, of random bytes (where a guess stays undecided:
    lengths that run past the read are everywhere). A thread whose range lies inside one
    used to grow its read and scan it again from its first byte each time (42x the file's
    bytes here; 244 MiB of 16 MiB documents took 9.0 s, now 0.4 s); now the guesses
    scan each byte a bounded number of times, and the fingerprint is the reference."""
    monkeypatch.setattr(fp_threads, "RANGE", 8192)
    monkeypatch.setattr(fp_threads, "SLACK", 256)
    monkeypatch.setattr(fp_threads, "GROW_LIMIT", 1 << 20)
    rng = random.Random(5)
    docs = [bson.encode({"_id": i, "b": bson.Binary(rng.randbytes(40_000))}) for i in range(60)]
    path = tmp_path / "long.bson"
    path.write_bytes(b"".join(docs))
    native = bson_codec._NATIVE
    scanned = [0]

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        def resync(self, buf: memoryview, at: int, *args: int) -> int:
            scanned[0] += len(buf) - at
            found: int = native.resync(buf, at, *args)  # type: ignore[union-attr]
            return found

    monkeypatch.setattr(bson_codec, "_NATIVE", Counting())
    for workers in (1, 2):
        scanned[0] = 0
        assert _threaded(path, workers) == _reference(docs)
        assert scanned[0] <= 4 * path.stat().st_size, scanned[0] / path.stat().st_size


# -- the fold in chunks ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_the_fold_in_chunks_with_spilled_runs_and_duplicates_is_the_reference(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny chunks and runs, many spilled to disk, keys repeated in many runs (a duplicate
    key's pairs always fall in one segment, so a chunk border never splits them): the
    chunked fold gives the reference accumulator's fingerprint and duplicate count, and the
    fold per segment's (the path that writes an index)."""
    rng = random.Random(seed)
    monkeypatch.setattr(acc_module, "FOLD_CHUNK", rng.choice([1, 7, 64]))
    monkeypatch.setattr(acc_module, "SORTED_IN_MEMORY", rng.choice([0, 64 * 50]))
    keys = [f"k{rng.randrange(300)}".encode() for _ in range(3000)]
    records = [(k, f"v{rng.randrange(3)}".encode()) for k in keys]
    bits = rng.choice([1, 4, 8, 12])
    chunked = Accumulator("exact", keep_keys=False, bucket_bits=bits, buffer_records=97)
    for start in range(0, len(records), 250):  # runs sorted away from it, as threads do
        run = acc_module.sort_pairs(
            b"".join(chunked.hasher.pairs(records[start : start + 250])), bucket_bits=bits
        )
        chunked.add_sorted(run)
    per_segment = Accumulator("exact", keep_keys=True, bucket_bits=bits, buffer_records=97)
    per_segment.add_records(records)
    reference = RefAccumulator("exact", keep_keys=True, bucket_bits=bits, buffer_records=97)
    reference.add_records(records)
    expected = reference.finish()
    assert expected[1] > 0  # duplicates there are
    assert chunked.finish(threads=rng.choice([1, 2])) == expected
    assert per_segment.finish() == expected


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff" * 3, id="3-bytes"),
        pytest.param(bson.encode({"_id": 1}) * 3 + b"\x10\x00\x00", id="cut-length"),
        pytest.param(bson.encode({"_id": 1}) + struct.pack("<i", 1 << 30) + b"\x00" * 9, id="lie"),
        pytest.param(bson.encode({"a": 1, "b": 2}) * 2, id="no-id"),
        pytest.param(struct.pack("<i", 9) + b"\x12_id\x00\x00\x00\x00\x00", id="overrun"),
    ],
)
def test_the_command_with_two_workers_on_a_bad_file_is_one_line_exit_2(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.bson"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "affidavit", "fingerprint", str(path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AFFIDAVIT_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    hints = [line for line in done.stderr.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1, done.stderr  # and what to do about it
    assert done.stdout.strip() == "" or "fingerprint" not in done.stdout.lower()
