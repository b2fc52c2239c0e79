"""The compiled fast path of the exact BSON fingerprint (``affidavit.formats.bson_codec.
_native``) against the pure-Python reference: :func:`frame_exact_pairs` gives the same pairs,
keys and stop offset as ``frame_exact_keys`` + ``RecordHasher.pairs_framed``, or raises the
same error at the same document, whatever the ``_id`` type, the buffer boundaries or the
damage; and the service paths built on it (``fingerprint_bson_stream``, ``hash_exact_batch``,
``add_bson_file``) give what they give without it.

Hostile input is the point: hypothesis mutates, truncates and splices generated documents
and feeds random bytes; the genuine mongo-tools test dumps are read when they are there.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import FormatError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import record_tag
from affidavit.formats import bson_codec
from affidavit.formats.bson_codec import (
    exact_keys,
    exact_pairs_framed,
    exact_record,
    frame_exact_keys,
    frame_exact_pairs,
)
from affidavit.services import fingerprint as fp_service

NATIVE = bson_codec._load_native()
needs_native = pytest.mark.skipif(
    NATIVE is None,
    reason="the compiled fast path is not built (pip install -e . builds it) or is switched off",
)
TAG = record_tag("exact")
SHARED = Path("/work/shared/formats/mongodump")

Outcome = tuple[str, Any, Any, Any]


# --- documents ---------------------------------------------------------------------------


def _cstr(text: bytes) -> bytes:
    return text + b"\x00"


def _string(text: bytes) -> bytes:
    return struct.pack("<i", len(text) + 1) + text + b"\x00"


def _doc(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def _element(t: int, name: bytes, value: bytes) -> bytes:
    return bytes([t]) + _cstr(name) + value


#: a value of every BSON type (raw bytes, as _id values)
ID_VALUES: list[tuple[int, bytes]] = [
    (0x01, struct.pack("<d", 1.5)),
    (0x02, _string(b"an id")),
    (0x02, _string("ü".encode() * 300)),
    (0x02, _string(b"")),
    (0x03, _doc(_element(0x10, b"a", struct.pack("<i", 1)))),
    (0x03, _doc()),
    (0x04, _doc(_element(0x10, b"0", struct.pack("<i", 1)))),
    (0x05, struct.pack("<i", 16) + b"\x04" + bytes(range(16))),
    (0x05, struct.pack("<i", 0) + b"\x00"),
    (0x05, struct.pack("<i", 8) + b"\x02" + struct.pack("<i", 4) + b"abcd"),
    (0x06, b""),
    (0x07, bytes(range(12))),
    (0x08, b"\x01"),
    (0x08, b"\x00"),
    (0x09, struct.pack("<q", 1_700_000_000_000)),
    (0x0A, b""),
    (0x0B, _cstr(b"^a.*") + _cstr(b"i")),
    (0x0C, _string(b"db.coll") + bytes(12)),
    (0x0D, _string(b"function() {}")),
    (0x0E, _string(b"sym")),
    (0x0F, struct.pack("<i", 4 + 6 + 5 + 4) + _string(b"code!") + _doc()),
    (0x10, struct.pack("<i", -7)),
    (0x11, struct.pack("<II", 1, 2)),
    (0x12, struct.pack("<q", 2**40)),
    (0x13, bytes(range(16))),
    (0x7F, b""),
    (0xFF, b""),
]


def _id_docs() -> list[bytes]:
    """One document per _id value, _id first, with some more fields."""
    out = []
    for n, (t, value) in enumerate(ID_VALUES):
        out.append(
            _doc(
                _element(t, b"_id", value),
                _element(0x10, b"n", struct.pack("<i", n)),
                _element(0x02, b"s", _string(b"x" * (n * 7))),
            )
        )
    return out


def _odd_docs() -> list[bytes]:
    """Documents for the Python path: _id not first, no _id, a name that only starts
    with _id, a type the compiled module leaves to Python."""
    return [
        _doc(_element(0x10, b"first", b"\1\0\0\0"), _element(0x02, b"_id", _string(b"second"))),
        bson.encode({"a": 1}),
        _doc(_element(0x10, b"_idx", struct.pack("<i", 1)), _element(0x10, b"_id", b"\x01\0\0\0")),
        _doc(),
    ]


def _generated(rng: random.Random, n: int) -> list[bytes]:
    docs = []
    for i in range(n):
        value: object = rng.choice(
            [
                bson.ObjectId(bytes(rng.randrange(256) for _ in range(12))),
                rng.randrange(-(2**31), 2**31),
                rng.randrange(2**62),
                rng.random(),
                "k" * rng.randrange(0, 3000),
                {"a": i, "b": [i, "x"]},
                [i, i + 1],
                bson.Binary(bytes(rng.randrange(256) for _ in range(rng.randrange(40))), 0),
                bson.Decimal128(f"{i}.5"),
                bson.Timestamp(i, 1),
                bson.Code("x"),
                bson.Regex("^a", "i"),
                None,
                True,
            ]
        )
        body = {"_id": value, "v": "y" * rng.randrange(0, 2000), "i": i}
        docs.append(bson.encode(body))
    return docs


# --- the reference and the comparison ------------------------------------------------------


def _pure(buffer: bytes, keys: bool = True) -> Outcome:
    try:
        starts, found, stop = frame_exact_keys(buffer)
    except FormatError as exc:
        return ("error", exc.message, None, None)
    pairs = RecordHasher(TAG).pairs_framed(buffer, starts, found, stop) if starts else b""
    return ("ok", pairs, found if keys else None, stop)


def _fast(buffer: bytes, keys: bool = True) -> Outcome:
    try:
        pairs, found, stop = frame_exact_pairs(buffer, TAG, keys=keys)
    except FormatError as exc:
        return ("error", exc.message, None, None)
    return ("ok", pairs, found, stop)


def _same(buffer: bytes) -> Outcome:
    """The fast path's outcome, checked equal to the reference's, with and without keys."""
    expected = _pure(buffer)
    got = _fast(buffer)
    assert got == expected
    assert _fast(buffer, keys=False) == _pure(buffer, keys=False)
    return got


def test_pure_python_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFIDAVIT_PURE_PYTHON", "1")
    assert bson_codec._load_native() is None
    monkeypatch.setattr(bson_codec, "_NATIVE", None)
    buffer = b"".join(_id_docs())
    assert _fast(buffer) == _pure(buffer)
    assert exact_pairs_framed(buffer, [0], TAG) is None


@needs_native
def test_native_limits_are_the_readers() -> None:
    assert NATIVE is not None
    from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE

    assert NATIVE.MAX_DOCUMENT == MAX_BSON_DOCUMENT_SIZE


@needs_native
@pytest.mark.parametrize("index", range(len(ID_VALUES)))
def test_every_id_type(index: int) -> None:
    """Each _id type: the same pairs and keys; the compiled module itself takes the types
    it bounds (and only documents whose _id is first) and stops at the others."""
    assert NATIVE is not None
    doc = _id_docs()[index]
    key = exact_record(doc)[0]
    assert _same(doc) == ("ok", RecordHasher(TAG).pair(key, doc), [key], len(doc))
    stop, pairs, keys, status = NATIVE.frame(doc, 0, TAG, True)
    if ID_VALUES[index][0] in (0x0B, 0x0C):  # regex, DBPointer: left to Python
        assert (stop, pairs, keys, status) == (0, b"", [], NATIVE.STOP)
    else:
        assert (stop, pairs, keys, status) == (
            len(doc),
            RecordHasher(TAG).pair(key, doc),
            [key],
            NATIVE.MORE,
        )


@needs_native
def test_odd_documents_go_to_python() -> None:
    assert NATIVE is not None
    good = _id_docs()
    for odd in _odd_docs():
        stop, pairs, _, status = NATIVE.frame(good[0] + odd + good[1], 0, TAG, False)
        assert (stop, len(pairs), status) == (len(good[0]), 64, NATIVE.STOP)
        _same(good[0] + odd + good[1])  # read by Python, then the compiled module goes on


@needs_native
def test_mixed_buffer_and_every_boundary() -> None:
    """Every cut of a buffer of all kinds of documents: the whole documents before the cut,
    the cut-off one carried over (stop), as the reference does."""
    docs = _id_docs() + _odd_docs()[:1] + _generated(random.Random(3), 20)
    buffer = b"".join(docs)
    assert _same(buffer)[3] == len(buffer)
    cuts = set(range(0, len(buffer) + 1, 97))
    pos = 0
    for doc in docs:  # around every document boundary, and inside its _id
        cuts.update(range(max(0, pos - 2), min(len(buffer), pos + 30) + 1))
        pos += len(doc)
    for cut in sorted(cuts):
        _same(buffer[:cut])


@needs_native
def test_streams_and_batches_equal_the_pure_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """fingerprint_bson_stream (with documents across its read boundaries), hash_exact_batch
    (checked or not, keys or not) and add_bson_file give what they give without the module."""
    docs = _generated(random.Random(7), 300) + _id_docs() + _odd_docs()[:1]
    data = b"".join(docs)
    starts = []
    pos = 0
    for doc in docs:
        starts.append(pos)
        pos += len(doc)
    path = tmp_path / "c.bson"
    path.write_bytes(data)

    def run() -> tuple[Any, ...]:
        monkeypatch.setattr(fp_service, "_STREAM_BATCH", 1000)
        streamed = fp_service.fingerprint_bson_stream(io.BytesIO(data), dataset="d")
        batches = [
            fp_service.hash_exact_batch(data, starts, check=check, keys=keys)
            for check in (True, False)
            for keys in (True, False)
        ]
        acc = Accumulator("exact")
        fp_service.add_bson_file(acc, path, workers=1, check=True)
        return streamed, batches, acc.finish(None)

    fast = run()
    monkeypatch.setattr(bson_codec, "_NATIVE", None)
    assert run() == fast


@needs_native
def test_wrong_starts_are_not_trusted() -> None:
    docs = _generated(random.Random(1), 5)
    data = b"".join(docs)
    starts = [0, len(docs[0]), len(docs[0]) + len(docs[1])]
    assert exact_pairs_framed(data, starts, TAG) is None  # fewer starts than documents
    full = [sum(map(len, docs[:i])) for i in range(5)]
    assert exact_pairs_framed(data, [0, 1, *full[2:]], TAG) is None
    got = exact_pairs_framed(data, full, TAG)
    assert got is not None
    assert got[1] == exact_keys(data, full)
    assert got[0] == RecordHasher(TAG).pairs_framed(data, full, got[1])


@needs_native
def test_openssl_and_hashlib_hashes_agree() -> None:
    assert NATIVE is not None
    buffer = b"".join(_id_docs() + _generated(random.Random(2), 50))
    expected = _pure(buffer)
    first = NATIVE.hash_backend()
    assert first in {"openssl", "hashlib"}
    try:
        assert NATIVE.hash_backend(True) == "hashlib"
        assert _fast(buffer) == expected
        if first == "openssl":
            assert NATIVE.hash_backend(False) == "openssl"
            assert _fast(buffer) == expected
    finally:
        NATIVE.hash_backend(first != "openssl")
    assert NATIVE.hash_backend() == first


@needs_native
def test_arguments_are_checked() -> None:
    assert NATIVE is not None
    with pytest.raises(ValueError, match="pos"):
        NATIVE.frame(b"abc", 4, TAG, True)
    with pytest.raises(ValueError, match="pos"):
        NATIVE.frame(b"abc", -1, TAG, True)
    with pytest.raises(TypeError):
        NATIVE.frame(b"abc", 0, TAG, True, (0,))  # type: ignore[arg-type]
    assert NATIVE.frame(b"", 0, TAG, False) == (0, b"", None, NATIVE.MORE)
    assert NATIVE.frame(b"\x05\0\0", 0, TAG, True) == (0, b"", [], NATIVE.MORE)
    doc = _id_docs()[0]
    assert NATIVE.frame(doc * 2, len(doc), TAG, True)[0] == 2 * len(doc)


# --- hostile input -------------------------------------------------------------------------

_SEED_DOCS = _id_docs() + _odd_docs()


@st.composite
def _buffers(draw: st.DrawFn) -> bytes:
    """Genuine-looking documents, then damage: bytes changed (lengths and type bytes
    especially), a cut, a splice, random bytes."""
    n = draw(st.integers(1, 6))
    docs = [draw(st.sampled_from(_SEED_DOCS)) for _ in range(n)]
    data = bytearray(b"".join(docs))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["byte", "int32", "type", "cut", "splice", "random"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "int32":
            value = draw(
                st.sampled_from([-1, 0, 1, 4, 5, 6, 9, 13, 14, 2**31 - 1, -(2**31)])
                | st.integers(-(2**31), 2**31 - 1)
            )
            data[at : at + 4] = struct.pack("<i", value)
        elif kind == "type":
            data[at] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 0x0B, 0x0C, 0x0F, 0x13, 0x14, 0xFF]))
        elif kind == "cut":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(_SEED_DOCS))[: draw(st.integers(0, 40))]
        else:
            data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


@needs_native
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_buffers())
def test_damaged_buffers_give_the_reference_result(buffer: bytes) -> None:
    _same(buffer)


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 40))
def test_random_bytes_give_the_reference_result(noise: bytes, length_at: int) -> None:
    _same(noise)
    # random bytes behind a plausible length prefix and an _id name: the _id bounds checks
    body = bytes([noise[0] if noise else 2]) + b"_id\x00" + noise[1:]
    _same(struct.pack("<i", len(body) + 5) + body + b"\x00")
    _same(struct.pack("<i", len(body) + 5 + length_at) + body + b"\x00" * (1 + length_at))


# --- genuine dumps ---------------------------------------------------------------------------


def _shared_files() -> Iterator[Path]:
    if SHARED.is_dir():
        yield from sorted(SHARED.rglob("*.bson"))
        yield from sorted(SHARED.rglob("*.bson.gz"))


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


@needs_native
def test_genuine_mongodump_files() -> None:
    files = list(_shared_files())
    if not files:
        pytest.skip(f"no mongodump samples under {SHARED}")
    taken = 0
    for path in files:
        try:
            data = _content(path)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        outcome = _same(data)
        taken += outcome[0] == "ok"
        for cut in (1, 4, len(data) // 3, len(data) - 1):  # a stream cut inside a document
            _same(data[: max(0, cut)])
    assert taken > 0


def _chunked(data: bytes, size: int) -> Callable[[], Any]:
    def read() -> Any:
        return fp_service.fingerprint_bson_stream(_Chunks(data, size), dataset="d")

    return read


class _Chunks(io.RawIOBase):
    """A stream that returns at most ``size`` bytes per read (documents across reads)."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = data
        self._pos = 0
        self._size = size

    def read(self, n: int = -1) -> bytes:
        take = self._size if n < 0 else min(n, self._size)
        out = self._data[self._pos : self._pos + take]
        self._pos += len(out)
        return out


@needs_native
@pytest.mark.parametrize("size", [1, 7, 1000, 1 << 20])
def test_stream_reads_of_any_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    data = b"".join(_generated(random.Random(size), 60) + _id_docs())
    fast = _chunked(data, size)()
    monkeypatch.setattr(bson_codec, "_NATIVE", None)
    assert _chunked(data, size)() == fast


@needs_native
def test_threads_hashing_at_once_each_get_their_own_result() -> None:
    """Without keys the compiled pass releases the GIL (each call with its own OpenSSL
    context): calls in several threads at once give each its own, correct, result."""
    from concurrent.futures import ThreadPoolExecutor

    buffers = [b"".join(_generated(random.Random(seed), 400)) for seed in range(4)]
    expected = [_pure(b, keys=False) for b in buffers]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda b: _fast(b, keys=False), buffers * 2))
            assert got == expected * 2
