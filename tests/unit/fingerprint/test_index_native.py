"""The compiled index-entry assembly (``affidavit.fingerprint._native.packed_entries``)
writes exactly what the Python loop of :meth:`IndexWriter.add_many` writes, long keys
truncated and flagged alike."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.fingerprint import index
from affidavit.fingerprint.index import KEY_PREFIX_MAX, encode_key_field

NATIVE = index._load_native()


def _python(pairs: bytes, keys: list[bytes]) -> bytes:
    return b"".join(
        pairs[i * 64 : (i + 1) * 64] + encode_key_field(key) for i, key in enumerate(keys)
    )


def _written(keys: list[bytes], pairs: bytes, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What add_many and add_packed (with and without the compiled module) write."""
    writer = index.IndexWriter.__new__(index.IndexWriter)
    chunks: list[bytes] = []
    monkeypatch.setattr(writer, "_write", chunks.append, raising=False)
    lengths = np.array([len(k) for k in keys], dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64))).astype(np.int64)
    out = []
    writer.add_many(pairs, keys)
    out.append(b"".join(chunks))
    for native in (NATIVE, None):
        chunks.clear()
        monkeypatch.setattr(index, "_NATIVE", native)
        writer.add_packed(pairs, b"".join(keys), offsets[: len(keys)], lengths)
        out.append(b"".join(chunks))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=KEY_PREFIX_MAX + 20), max_size=50))
def test_every_path_writes_the_same_bytes(keys: list[bytes]) -> None:
    pairs = os.urandom(64 * len(keys))
    with pytest.MonkeyPatch.context() as mp:
        written = _written(keys, pairs, mp)
    assert written == [_python(pairs, keys)] * 3


def test_long_keys_are_truncated_and_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [b"short", b"x" * (KEY_PREFIX_MAX + 10), b""]
    pairs = os.urandom(64 * len(keys))
    written = _written(keys, pairs, monkeypatch)
    assert written == [_python(pairs, keys)] * 3
    entry = written[0][64 + 2 + 5 + 64 :]
    assert int.from_bytes(entry[:2], "big") == KEY_PREFIX_MAX | 0x8000
