"""The batch paths of the exact profile (framed batches hashed where they lie, documents
checked in one decode per batch, an accumulator without keys, index entries written in one
piece) give exactly what the per-record reference paths give, and the same errors."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import bson
import pytest

from affidavit.errors import FormatError
from affidavit.fingerprint.accumulator import Accumulator, hash_records
from affidavit.fingerprint.index import IndexReader
from affidavit.formats.base import BsonFramer
from affidavit.formats.bson_codec import (
    check_documents,
    exact_keys,
    exact_record,
    exact_record_checked,
    frame_exact_keys,
)
from affidavit.services import fingerprint as fp_service
from affidavit.services import fingerprint_threads as fp_threads
from affidavit.services.fingerprint import add_bson_file, fingerprint_bson_stream, hash_exact_batch


def _docs() -> list[bytes]:
    """Documents whose _id takes every path: fixed-size types, strings, and the slow path
    (documents, binary, _id not first)."""
    ids: list[object] = [
        bson.ObjectId(),
        7,
        2**40,
        1.5,
        True,
        None,
        "short",
        "ü" * 300,
        {"a": 1},
        bson.Binary(b"\x00" * 20, 4),
        bson.Decimal128("1.25"),
        bson.Timestamp(5, 6),
        bson.MinKey(),
    ]
    docs = [bson.encode({"_id": i, "n": n, "s": "x" * n}) for n, i in enumerate(ids)]
    docs.append(bson.encode({"first": 1, "_id": "not first"}))
    docs.append(bson.encode({"_id": "k" * 2000, "big": True}))  # a key over the index prefix
    return docs


def _batch(docs: list[bytes]) -> tuple[bytes, list[int]]:
    starts, pos = [], 0
    for doc in docs:
        starts.append(pos)
        pos += len(doc)
    return b"".join(docs), starts


def test_exact_keys_and_frame_exact_keys_equal_exact_record() -> None:
    docs = _docs()
    buffer, starts = _batch(docs)
    expected = [exact_record(doc)[0] for doc in docs]
    assert exact_keys(buffer, starts) == expected
    framed_starts, keys, stop = frame_exact_keys(buffer + docs[0][:7])  # a cut-off document
    assert (framed_starts, keys, stop) == (starts, expected, len(buffer))


@pytest.mark.parametrize("check", [False, True])
def test_hash_exact_batch_equals_hash_records(check: bool) -> None:
    docs = _docs()
    buffer, starts = _batch(docs)
    codec = exact_record_checked if check else exact_record
    assert hash_exact_batch(buffer, starts, check=check) == hash_records(
        "exact", (codec(doc) for doc in docs)
    )


def _lying_string() -> bytes:
    body = b"\x10_id\x00" + struct.pack("<i", 2) + b"\x02s\x00" + struct.pack("<i", 9999)
    body += b"abc\x00"
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def _no_id() -> bytes:
    return bson.encode({"name": "no id"})


@pytest.mark.parametrize(
    ("bad", "check"),
    [(_lying_string(), True), (_no_id(), True), (_no_id(), False)],
)
def test_the_first_bad_document_is_reported_as_the_reference_reports_it(
    bad: bytes, check: bool
) -> None:
    docs = [*_docs()[:3], bad, *_docs()[3:], _lying_string()]
    buffer, starts = _batch(docs)
    codec = exact_record_checked if check else exact_record
    with pytest.raises(FormatError) as reference:
        for doc in docs:
            codec(doc)
    with pytest.raises(FormatError) as batch:
        hash_exact_batch(buffer, starts, check=check)
    assert batch.value.message == reference.value.message


def test_check_documents_refuses_what_the_per_document_check_refuses() -> None:
    docs = [_docs()[0], _lying_string()]
    buffer, starts = _batch(docs)
    with pytest.raises(FormatError, match="malformed BSON document"):
        check_documents(buffer, starts)
    check_documents(*_batch(_docs()))


@pytest.mark.parametrize(
    "tail",
    [struct.pack("<i", 3) + b"\x00" * 8, struct.pack("<i", 20) + b"\x01" * 16 + b"\x07"],
)
def test_frame_exact_keys_refuses_bad_frames(tail: bytes) -> None:
    buffer, _ = _batch(_docs())
    with pytest.raises(FormatError):
        frame_exact_keys(buffer + tail)


def test_the_stream_fingerprint_equals_the_accumulator_of_every_record() -> None:
    docs = _docs() * 50
    acc = Accumulator("exact")
    acc.add_records(exact_record(doc) for doc in docs)
    expected, _ = acc.finish()
    stream = io.BytesIO(b"".join(docs))
    assert fingerprint_bson_stream(stream, dataset="d") == expected
    with pytest.raises(FormatError, match="ends inside a document"):
        fingerprint_bson_stream(io.BytesIO(b"".join(docs)[:-3]), dataset="d")


def test_an_accumulator_without_keys_gives_the_same_fingerprint(tmp_path: Path) -> None:
    docs = _docs() * 40
    records = [exact_record(doc) for doc in docs]
    with_keys = Accumulator("exact", buffer_records=64)
    without = Accumulator("exact", buffer_records=64, keep_keys=False)
    with_keys.add_records(records)
    pairs, _ = hash_records("exact", records)
    without.add_pairs(pairs, None)
    index = tmp_path / "i.afpidx"
    assert with_keys.finish(index) == without.finish()
    with pytest.raises(ValueError, match="keeps no keys"):
        Accumulator("exact", keep_keys=False).finish(tmp_path / "no.afpidx")
    with pytest.raises(ValueError, match="keeps keys"):
        Accumulator("exact").add_pairs(pairs, None)
    reader = IndexReader(index)
    reader.verify_trailer()
    entries = list(reader.entries())
    assert len(entries) == len(docs)
    long_key = exact_record(_docs()[-1])[0]
    (truncated,) = {e.key for e in entries if e.key_truncated}
    assert truncated == long_key[:1024]


def test_the_framer_batches_and_the_stream_agree() -> None:
    data = b"".join(_docs() * 300)
    framer = BsonFramer(io.BytesIO(data), source="x")
    acc = Accumulator("exact", keep_keys=False)
    while (batch := framer.next_batch(4096)) is not None:
        acc.add_pairs(hash_exact_batch(*batch, check=False, keys=False)[0], None)
    expected, _ = acc.finish()
    assert fingerprint_bson_stream(io.BytesIO(data), dataset="x") == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bson_file_read_in_ranges_by_the_processes(tmp_path: Path, workers: int) -> None:
    docs = _docs() * 400  # several ranges of 1 MiB
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    reference = Accumulator("exact")
    reference.add_records(exact_record_checked(doc) for doc in docs)
    acc = Accumulator("exact")
    add_bson_file(acc, path, workers=workers, check=True)
    assert acc.finish(tmp_path / "a.afpidx") == reference.finish(tmp_path / "r.afpidx")
    assert (tmp_path / "a.afpidx").read_bytes() == (tmp_path / "r.afpidx").read_bytes()


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(_lying_string(), id="inner_string_length_lies"),
        pytest.param(struct.pack("<i", 1 << 30) + b"\x00" * 8, id="lying_length_prefix"),
        pytest.param(_docs()[0][:-3], id="truncated_last_document"),
        pytest.param(_docs()[0][:-1] + b"\x01", id="last_byte_not_nul"),
        pytest.param(_no_id(), id="no_id"),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_bson_file_read_in_ranges_is_refused(
    tmp_path: Path, tail: bytes, workers: int
) -> None:
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(_docs() * 400) + tail)
    with pytest.raises(FormatError):
        add_bson_file(Accumulator("exact"), path, workers=workers, check=True)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_bson_file_shared_by_threads_gives_the_one_worker_fingerprint(
    tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without keys and full decode, threads share the ranges (issue 18; one worker: the
    same steps in this thread); the fingerprint is byte-identical to one worker's and to
    the per-record reference."""
    if not fp_service.bson_codec_compiled():
        pytest.skip("the compiled module is not built: processes are used")
    docs = _docs() * 2000  # several ranges of 8 MiB would be many MB: ranges made small
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    monkeypatch.setattr(fp_threads, "RANGE", 64 * 1024)
    used: list[int] = []
    real = fp_threads.hash_file_threaded

    def spy(*args: object, **kwargs: object) -> None:
        used.append(1)
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fp_threads, "hash_file_threaded", spy)
    reference = Accumulator("exact", keep_keys=False)
    reference.add_records(exact_record(doc) for doc in docs)
    one = Accumulator("exact", keep_keys=False)
    add_bson_file(one, path, workers=1, check=False)
    many = Accumulator("exact", keep_keys=False)
    add_bson_file(many, path, workers=workers, check=False)
    assert used == [1, 1]  # one worker takes the same steps, in the caller's thread
    expected = reference.finish()
    assert one.finish() == expected
    assert many.finish() == expected


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(struct.pack("<i", 1 << 30) + b"\x00" * 8, id="lying_length_prefix"),
        pytest.param(_docs()[0][:-3], id="truncated_last_document"),
        pytest.param(_docs()[0][:-1] + b"\x01", id="last_byte_not_nul"),
        pytest.param(_no_id(), id="no_id"),
    ],
)
def test_a_bad_bson_file_shared_by_threads_is_refused(
    tmp_path: Path, tail: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fp_threads, "RANGE", 64 * 1024)
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(_docs() * 400) + tail)
    with pytest.raises(FormatError):
        add_bson_file(Accumulator("exact", keep_keys=False), path, workers=2, check=False)
