"""A ``.bson`` file split by bytes among threads with no walk first
(:mod:`affidavit.services.fingerprint_threads`, issue 18): each thread guesses where
documents start again; the caller counts a range only when it lines up with the previous
one. These tests attack the guesses: documents that carry whole fake documents in their
bytes (binary payloads, nested documents), documents longer than a range and its read-ahead,
defects anywhere, and a file that shrinks during the run. The fingerprint must equal the
per-record reference, and an error must be the one the length-prefix walk gives."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import bson
import pytest

from affidavit.errors import FormatError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import Fingerprint
from affidavit.formats.bson_codec import exact_record
from affidavit.formats.bson_codec.file_ranges import bson_file_ranges
from affidavit.services import fingerprint as fp_service
from affidavit.services import fingerprint_threads as fp_threads
from affidavit.services.fingerprint import add_bson_file

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
    add_bson_file(acc, path, workers=workers, check=False)
    return acc.finish()[0]


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Small ranges (many guesses per file), and a count of the ranges read again by the
    walk because a guess did not line up."""
    monkeypatch.setattr(fp_threads, "RANGE", 4096)
    monkeypatch.setattr(fp_threads, "SLACK", 512)
    monkeypatch.setattr(fp_threads, "GROW_LIMIT", 2048)
    used: list[int] = []
    real = fp_threads._walk_range

    def spy(*args: object, **kwargs: object) -> object:
        used.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fp_threads, "_walk_range", spy)
    return used


def _fake_chain(n: int) -> bytes:
    """Whole, valid BSON documents back to back: what a guess looks for."""
    return b"".join(bson.encode({"_id": k, "fake": "f" * k}) for k in range(n))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_documents_that_carry_fake_documents_give_the_reference_fingerprint(
    tmp_path: Path, workers: int, walks: list[int]
) -> None:
    rng = random.Random(18)
    docs = []
    for i in range(600):
        chain = _fake_chain(rng.randrange(1, 12))
        kind = rng.randrange(3)
        if kind == 0:
            docs.append(bson.encode({"_id": i, "blob": bson.Binary(chain)}))
        elif kind == 1:  # embedded documents: the same bytes as top-level ones
            inner = {str(k): d for k, d in enumerate(bson.decode_all(chain))}
            docs.append(bson.encode({"_id": i, "nested": inner}))
        else:
            docs.append(bson.encode({"_id": i, "pad": "p" * rng.randrange(0, 300)}))
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    assert _threaded(path, workers) == _reference(docs)


def test_a_guess_inside_a_payload_is_caught_and_read_again(
    tmp_path: Path, walks: list[int]
) -> None:
    """Every nominal range starts inside a binary payload made of whole fake documents, so
    each thread's guess is wrong; the ranges are read again and the fingerprint holds."""
    docs = []
    payload = _fake_chain(40)  # > RANGE + SLACK: the guesses land in it
    for i in range(30):
        docs.append(bson.encode({"_id": i, "blob": bson.Binary(payload)}))
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    assert _threaded(path, 2) == _reference(docs)
    assert walks  # the wrong guesses were not taken


@pytest.mark.parametrize("workers", [1, 2])
def test_documents_longer_than_a_range_and_its_read_ahead(
    tmp_path: Path, workers: int, walks: list[int]
) -> None:
    rng = random.Random(7)
    docs = [
        bson.encode({"_id": i, "big": "b" * rng.choice([10, 5000, 9000, 20000])}) for i in range(60)
    ]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    assert _threaded(path, workers) == _reference(docs)


@pytest.mark.parametrize("seed", range(12))
def test_random_files_and_splits_match_the_reference(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(fp_threads, "RANGE", rng.choice([64, 300, 1024, 4096]))
    monkeypatch.setattr(fp_threads, "SLACK", rng.choice([16, 100, 512]))
    monkeypatch.setattr(fp_threads, "GROW_LIMIT", rng.choice([32, 1024, 1 << 20]))
    docs = []
    for i in range(rng.randrange(0, 300)):
        fields: dict[str, object] = {"_id": rng.choice([i, str(i), bson.ObjectId()])}
        if rng.random() < 0.3:
            fields["blob"] = bson.Binary(_fake_chain(rng.randrange(1, 6)))
        fields["s"] = "x" * rng.randrange(0, 2000)
        docs.append(bson.encode(fields))
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    expected = _reference(docs)
    for workers in (1, 2, 3):
        assert _threaded(path, workers) == expected


def _walk_error(path: Path) -> str:
    """The message the length-prefix walk gives for ``path`` (or the framing after it)."""
    try:
        for offset, length in bson_file_ranges(path, 1 << 30):
            from affidavit.services.fingerprint import _hash_file_range

            _hash_file_range(str(path), offset, length, False, False)
    except FormatError as exc:
        return str(exc)
    raise AssertionError("the walk found no defect")


@pytest.mark.parametrize(
    "defect",
    [
        pytest.param(lambda doc: struct.pack("<i", 1 << 30) + doc[4:], id="lying_length"),
        pytest.param(lambda doc: struct.pack("<i", 3) + doc[4:], id="short_length"),
        pytest.param(lambda doc: doc[:-1] + b"\x01", id="last_byte_not_nul"),
        pytest.param(lambda doc: doc[:-5], id="cut_short"),
    ],
)
@pytest.mark.parametrize("where", [0, 1, 150, 299])
def test_a_defect_anywhere_is_the_walks_error(
    tmp_path: Path, walks: list[int], defect: object, where: int
) -> None:
    docs = [bson.encode({"_id": i, "s": "y" * (i % 97)}) for i in range(300)]
    docs[where] = defect(docs[where])  # type: ignore[operator]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    expected = _walk_error(path)
    for workers in (1, 2):
        with pytest.raises(FormatError) as raised:
            _threaded(path, workers)
        assert str(raised.value) == expected


def test_a_file_that_shrinks_during_the_run_is_an_error_not_a_fingerprint(
    tmp_path: Path, walks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [bson.encode({"_id": i, "s": "z" * 100}) for i in range(400)]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    real = fp_threads._hash_range

    def shrink_then_read(fd: int, index: int, size: int, bits: int) -> object:
        if index == 3:
            with path.open("r+b") as fh:
                fh.truncate(size // 2)
        return real(fd, index, size, bits)

    monkeypatch.setattr(fp_threads, "_hash_range", shrink_then_read)
    with pytest.raises(FormatError):
        _threaded(path, 1)


def test_an_empty_file_and_one_document(tmp_path: Path, walks: list[int]) -> None:
    path = tmp_path / "c.bson"
    path.write_bytes(b"")
    assert _threaded(path, 2) == _reference([])
    doc = bson.encode({"_id": 1})
    path.write_bytes(doc)
    assert _threaded(path, 2) == _reference([doc])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_where_guesses_keep_failing_the_walk_takes_over(
    tmp_path: Path, workers: int, walks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents longer than a range: the guesses fail, and after GIVE_UP such ranges the
    rest of the file is cut by the walk and shared among the threads (same fingerprint, and
    a defect there is the walk's error)."""
    walked: list[int] = []
    real = fp_threads._hash_walked

    def spy(*args: object, words: bool = False) -> object:
        if not words:  # a range of the walk's, not one read again after a failed guess
            walked.append(1)
        return real(*args, words=words)  # type: ignore[arg-type]

    monkeypatch.setattr(fp_threads, "_hash_walked", spy)
    docs = [bson.encode({"_id": i, "big": "b" * 9000}) for i in range(40)]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    assert _threaded(path, workers) == _reference(docs)
    assert len(walks) >= fp_threads.GIVE_UP and walked  # gave up guessing, then walked
    docs[30] = struct.pack("<i", 1 << 30) + docs[30][4:]
    path.write_bytes(b"".join(docs))
    expected = _walk_error(path)
    with pytest.raises(FormatError) as raised:
        _threaded(path, workers)
    assert str(raised.value) == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_of_long_documents_is_cut_by_the_walk_from_the_start(
    tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents averaging 64 KiB or more: the walk touches a page per document, so no
    range is guessed (a guess would read a whole document past each range's end)."""
    guessed: list[int] = []
    real = fp_threads._hash_range

    def spy(*args: object) -> object:
        guessed.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fp_threads, "_hash_range", spy)
    monkeypatch.setattr(fp_threads, "RANGE", 256 * 1024)
    docs = [bson.encode({"_id": i, "blob": bson.Binary(bytes([i]) * 70_000)}) for i in range(40)]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    assert _threaded(path, workers) == _reference(docs)
    assert guessed == []
    short = [bson.encode({"_id": i, "s": "x" * 100}) for i in range(20_000)]
    path.write_bytes(b"".join(short))
    assert _threaded(path, workers) == _reference(short)
    assert guessed  # short documents: guessed
