"""The compiled index-entry assembly (``affidavit.fingerprint._native``) writes exactly what
the Python loop of :meth:`IndexWriter.add_many` writes, and refuses what it cannot take."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.fingerprint import index
from affidavit.fingerprint.index import KEY_PREFIX_MAX, encode_key_field

NATIVE = index._load_native()
needs_native = pytest.mark.skipif(
    NATIVE is None, reason="the compiled module is not built (pip install -e . builds it)"
)


def _python(pairs: bytes, keys: list[bytes]) -> bytes:
    return b"".join(
        pairs[i * 64 : (i + 1) * 64] + encode_key_field(key) for i, key in enumerate(keys)
    )


@needs_native
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=KEY_PREFIX_MAX), max_size=50))
def test_same_bytes_as_the_python_loop(keys: list[bytes]) -> None:
    assert NATIVE is not None
    pairs = os.urandom(64 * len(keys))
    assert NATIVE.index_entries(pairs, keys, KEY_PREFIX_MAX) == _python(pairs, keys)


@needs_native
def test_refuses_what_it_cannot_take() -> None:
    assert NATIVE is not None
    with pytest.raises(ValueError, match="disagree"):
        NATIVE.index_entries(bytes(63), [b"k"], KEY_PREFIX_MAX)
    with pytest.raises(ValueError, match="longer"):
        NATIVE.index_entries(bytes(64), [b"k" * (KEY_PREFIX_MAX + 1)], KEY_PREFIX_MAX)
    with pytest.raises(TypeError, match="bytes"):
        NATIVE.index_entries(bytes(64), ["k"], KEY_PREFIX_MAX)
    with pytest.raises(ValueError, match="prefix_max"):
        NATIVE.index_entries(b"", [], -1)


def test_add_many_truncates_long_keys_on_either_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key longer than the prefix goes through the Python path (flagged, truncated)."""
    keys = [b"short", b"x" * (KEY_PREFIX_MAX + 10), b""]
    pairs = os.urandom(64 * len(keys))
    written: list[bytes] = []
    for native in (NATIVE, None):
        monkeypatch.setattr(index, "_NATIVE", native)
        writer = index.IndexWriter.__new__(index.IndexWriter)
        chunks: list[bytes] = []
        monkeypatch.setattr(writer, "_write", chunks.append, raising=False)
        writer.add_many(pairs, keys)
        written.append(b"".join(chunks))
    assert written[0] == written[1] == _python(pairs, keys)
