"""The one streaming hash loop (:func:`affidavit.crypto.digest.sha256_pieces`): it yields the
bytes it hashes, so a copy and its digest come from the same read."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from affidavit.crypto.digest import Sha256Stream, sha256_pieces, sha256_readable


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_the_pieces_are_the_file_and_the_digest_is_theirs(size: int) -> None:
    data = os.urandom(size)
    stream = Sha256Stream()
    pieces = list(sha256_pieces(io.BytesIO(data), stream, chunk=4096))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 4096 for p in pieces)
    assert stream.hexdigest() == hashlib.sha256(data).hexdigest()
    assert stream.length == size
    assert sha256_readable(io.BytesIO(data), chunk=4096).hexdigest() == stream.hexdigest()


def test_a_copy_stopped_early_has_hashed_only_what_it_yielded() -> None:
    data = b"a" * 10_000
    stream = Sha256Stream()
    pieces = sha256_pieces(io.BytesIO(data), stream, chunk=4096)
    first = next(pieces)
    assert stream.hexdigest() == hashlib.sha256(first).hexdigest()
    assert stream.length == 4096


def test_it_hashes_from_where_the_file_stands() -> None:
    fh = io.BytesIO(b"header|body")
    fh.seek(7)
    stream = Sha256Stream()
    assert b"".join(sha256_pieces(fh, stream)) == b"body"
    assert stream.hexdigest() == hashlib.sha256(b"body").hexdigest()
