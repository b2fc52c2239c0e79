"""RdbReader against the genuine RDB files under ../shared/formats/redis-rdb.

Key counts per database must equal GROUND_TRUTH.json (what a real redis-server reports after
loading the file); files that no redis-server can load give a clear FormatError; and for every
file that the installed redis-server loads, the fingerprint of the file read by RdbReader
equals the fingerprint of the live server that loaded it (the oracle).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from affidavit.constants import EngineName, ExitCode
from affidavit.engines.redis import RedisEngine
from affidavit.errors import FormatError
from affidavit.formats.rdb import RdbReader, crc64, lzf_decompress
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.fingerprint import fingerprint_records

FORMATS = Path(__file__).resolve().parents[3].parent / "shared" / "formats"
RDB_DIR = FORMATS / "redis-rdb"
GROUND_TRUTH = FORMATS / "GROUND_TRUTH.json"


def _truth() -> dict[str, dict[str, Any]]:
    if not GROUND_TRUTH.is_file():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(GROUND_TRUTH.read_text())
    return {k: v for k, v in data.items() if v.get("kind") == "redis-rdb"}


TRUTH = _truth()
CASES = sorted(TRUTH)


def _installed_redis() -> str | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v=(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else None


INSTALLED = _installed_redis()


def _loads_here(entry: dict[str, Any]) -> bool:
    """True when the ground truth says the installed redis-server version loads the file."""
    if INSTALLED is None:
        return False
    for name, result in entry.get("load", {}).items():
        if name.startswith(f"redis-server {INSTALLED} "):
            return bool(result.get("loaded"))
    return False


def _path(case: str) -> Path:
    if not RDB_DIR.is_dir():
        pytest.skip(f"{RDB_DIR} is absent: genuine sample files come with the shared folder")
    path = FORMATS / case
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_rdb_ground_truth_is_present() -> None:
    if not GROUND_TRUTH.is_file():
        pytest.skip(f"{GROUND_TRUTH} is absent")
    assert len(CASES) >= 50


def test_rdb_crc64_is_redis_jones() -> None:
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64(b"56789", crc64(b"1234")) == 0xE9C6D914C4B8D9CA


def test_rdb_lzf_roundtrip_of_a_known_stream() -> None:
    # literal "abc" then a back reference of length 6 at distance 3 -> "abcabcabc"
    assert lzf_decompress(b"\x02abc\x80\x02", 9) == b"abcabcabc"
    with pytest.raises(ValueError, match="longer"):
        lzf_decompress(b"\x02abc\x80\x02", 5)


@pytest.mark.parametrize("case", CASES)
def test_rdb_genuine_file_key_counts(case: str) -> None:
    entry = TRUTH[case]
    path = _path(case)
    expected = entry.get("per_db_key_counts")
    reader = RdbReader(path)
    if expected is None:  # no redis-server loads it: corrupt, module data, Valkey
        with pytest.raises(FormatError) as info:
            reader.key_counts()
        assert info.value.exit_code == ExitCode.BAD_INPUT
        message = str(info.value)
        assert str(path) in message
        assert re.search(r"module|corrupt|Valkey|checksum|version|offset", message)
        return
    counts = reader.key_counts()
    assert counts == {f"db{db}": n for db, n in expected.items()}
    assert reader.datasets() == sorted(counts, key=lambda d: int(d[2:]))
    assert reader.version == entry["rdb_version"]
    for dataset, n in counts.items():
        assert sum(1 for _ in reader.records(dataset)) == n
        fp = fingerprint_records(
            reader.records(dataset), encoding=RecordEncoding.REDIS, profile="exact"
        )
        assert fp.fingerprint.count == n


class _LoadingRedis(RedisScratch):
    """A scratch redis-server that loads ``dbfilename`` from its folder at start."""

    def __init__(self, rdb: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shutil.copyfile(rdb, self.workdir / "load.rdb")

    def command(self, port: int) -> list[str]:
        return [*super().command(port), "--dbfilename", "load.rdb", "--databases", "16"]


#: every file the installed redis-server can load; this includes streams whose entries repeat
#: a field name (XADD s * k v k v), which the live reader must keep (it reads XRANGE raw)
LOADABLE = [c for c in CASES if TRUTH[c].get("per_db_key_counts") is not None]


@pytest.mark.parametrize("case", LOADABLE)
def test_rdb_fingerprint_equals_the_server_that_loads_it(case: str) -> None:
    entry = TRUTH[case]
    path = _path(case)
    if not _loads_here(entry):
        pytest.skip(f"redis-server {INSTALLED} cannot load {case} (see GROUND_TRUTH.json)")
    reader = RdbReader(path)
    with _LoadingRedis(path) as server:
        uri = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with RedisEngine(uri, password=None, timeout=10.0) as engine:
            live = {d: engine.count_records(d) for d in engine.list_datasets()}
            assert live == reader.key_counts()
            for dataset in live:
                on_server = fingerprint_records(
                    engine.iter_records(dataset), encoding=RecordEncoding.REDIS, profile="exact"
                )
                in_file = fingerprint_records(
                    reader.records(dataset), encoding=RecordEncoding.REDIS, profile="exact"
                )
                assert in_file.fingerprint == on_server.fingerprint, dataset
