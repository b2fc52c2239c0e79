"""The compiled length-prefix walk of ``bson_file_ranges`` goes window by window (issue 18:
the first ranges reach the hashing threads before the whole file is walked). Whatever the
window, it must give exactly the ranges and the error of the Python walk over the whole
file: windows that cut a document, a length prefix or a range, documents longer than a
window, and every corruption of ``test_bson_validate_native``."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_bson_validate_native import TARGETS, _corruptions, _doc, _random_file, _walk, needs_native

from affidavit.formats.bson_codec import file_ranges

WINDOWS = (1, 7, 64, 300, 4099)


@needs_native
@pytest.mark.parametrize("window", WINDOWS)
def test_windows_give_the_ranges_of_one_walk(
    tmp_path: Path, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(window)
    path = tmp_path / "c.bson"
    for _ in range(15):
        data = _random_file(rng)
        path.write_bytes(data)
        for target in TARGETS:
            expected = _walk(path, target, native=False)
            with monkeypatch.context() as mp:
                mp.setattr(file_ranges, "_WINDOW", window)
                assert _walk(path, target, native=True) == expected, (window, target)


@needs_native
@pytest.mark.parametrize("window", WINDOWS)
def test_windows_raise_the_errors_of_one_walk(
    tmp_path: Path, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(100 + window)
    path = tmp_path / "c.bson"
    errors = 0
    for _ in range(4):
        data = _random_file(rng) or _doc()
        for bad in _corruptions(data, rng):
            path.write_bytes(bad)
            for target in (1, 100, 4096):
                expected = _walk(path, target, native=False)
                with monkeypatch.context() as mp:
                    mp.setattr(file_ranges, "_WINDOW", window)
                    assert _walk(path, target, native=True) == expected, (bad[:16].hex(), target)
                errors += expected[1] is not None
    assert errors > 20
