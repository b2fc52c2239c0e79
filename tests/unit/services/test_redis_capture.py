"""``services.capture._capture_stream``: the fingerprint pass runs in a second thread over the
spool while the RDB streams in, and gives the fingerprints of the complete file; a damaged
RDB is still stored whole and then refused, a transfer that fails stops the pass, and no
thread is left behind either way."""

from __future__ import annotations

import random
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from affidavit.errors import EngineError, FormatError
from affidavit.formats.rdb import RdbReader, crc64
from affidavit.models.progress import SilentReporter
from affidavit.services.backup import capture
from affidavit.services.fingerprint import fingerprint_datasets

NOW_MS = 1_790_000_000_000  # the capture's moment; the keys' expiries are later


def _str(s: bytes) -> bytes:
    assert len(s) < 64
    return bytes([len(s)]) + s


def _rdb(n: int, *, damaged_at: int | None = None) -> bytes:
    rng = random.Random(n)
    parts = [b"REDIS0011", b"\xfa" + _str(b"redis-ver") + _str(b"7.2.4"), b"\xfe\x00"]
    for i in range(n):
        if i == damaged_at:
            parts.append(b"\x0b" + _str(b"bad") + _str(b"\x05\x00\x00\x00"))  # a broken intset
        if i % 3 == 0:
            parts.append(b"\xfc" + struct.pack("<q", 4_000_000_000_000 + i))
        value = b"v%d" % rng.randrange(10**6)
        parts.append(b"\x00" + _str(b"key:%d" % i) + _str(value))
        if i == n // 2:
            parts.append(b"\xfe\x02")
    data = b"".join(parts) + b"\xff"
    return data + struct.pack("<Q", crc64(data))


class _Sink:
    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def close(self) -> str:
        self.store["artifact"] = bytes(self.data)
        return "artifact"

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[1] is not None:
            self.store["aborted"] = True


class _FakeRun:
    """What ``_capture_stream`` uses of a backup run."""

    def __init__(self) -> None:
        self.reporter = SilentReporter()
        self.store: dict[str, Any] = {}
        self.fingerprints: dict[str, str] = {}

    def sink(self, name: str, role: Any, dataset: str | None = None) -> _Sink:
        return _Sink(self.store)

    def stored(self, artifact: Any) -> None:
        self.store["stored"] = artifact

    def store_index(self, acc: Any, name: str, encoding: str) -> tuple[str, int, int]:
        fingerprint, duplicates = acc.finish()
        self.fingerprints[name] = fingerprint.text
        return fingerprint.text, fingerprint.count, duplicates


class _Transfer:
    """An RDB transfer (``RedisEngine.request_rdb``'s) of ``data`` in pieces of odd sizes."""

    def __init__(self, data: bytes, *, fail_after: int | None = None) -> None:
        self.data = data
        self.fail_after = fail_after

    def payload(self) -> Iterator[bytes]:
        rng = random.Random(len(self.data))
        pos = 0
        while pos < len(self.data):
            if self.fail_after is not None and pos >= self.fail_after:
                raise EngineError("the server closed the connection mid-stream")
            n = rng.randint(1, 700)
            yield self.data[pos : pos + n]
            pos += n


def _file_fingerprints(tmp_path: Path, data: bytes) -> dict[str, str]:
    path = tmp_path / "whole.rdb"
    path.write_bytes(data)
    accs = fingerprint_datasets(RdbReader(path, keep_expired=True), None)
    return {name: acc.finish()[0].text for name, acc in accs.items()}


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("affidavit-rdb")}


def test_capture_fingerprints_the_stream_as_the_complete_file(tmp_path: Path) -> None:
    data = _rdb(3000)
    run = _FakeRun()
    captured = capture._capture_stream(run, _Transfer(data), NOW_MS, ["db0", "db2"], "7.2.4")
    assert run.store["artifact"] == data
    assert run.fingerprints == _file_fingerprints(tmp_path, data)
    assert [(name, count) for name, count, _ in captured.datasets] == [("db0", 1501), ("db2", 1499)]
    assert not _threads()


def test_capture_stores_a_damaged_rdb_whole_then_refuses_it() -> None:
    data = _rdb(2000, damaged_at=100)
    run = _FakeRun()
    with pytest.raises(FormatError, match="intset"):
        capture._capture_stream(run, _Transfer(data), NOW_MS, ["db0"], "7.2.4")
    assert run.store["artifact"] == data  # stored, as before the pass overlapped the transfer
    assert not _threads()


def test_capture_stops_the_pass_when_the_transfer_fails() -> None:
    data = _rdb(3000)
    run = _FakeRun()
    with pytest.raises(EngineError, match="mid-stream"):
        capture._capture_stream(
            run, _Transfer(data, fail_after=len(data) // 2), NOW_MS, ["db0"], "7"
        )
    assert run.store.get("aborted")
    assert "stored" not in run.store
    assert not _threads()
