"""The compiled RDB fast path on RDB files written by a real redis-server: every encoding the
installed server chooses (listpacks, intsets, quicklists, hashtables, skiplists, LZF, integer
strings, expiries, several databases, a stream for the Python path) gives the same pairs as the
pure-Python path and the reference chain, and the backup's fingerprint pass equals the
fingerprint of the live server."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.constants import EngineName
from affidavit.crypto.record_digest import RecordHasher
from affidavit.engines.redis import RedisEngine
from affidavit.errors import FormatError
from affidavit.fingerprint.model import record_tag
from affidavit.formats import rdb
from affidavit.formats.rdb import RdbReader
from affidavit.formats.redis_codec import _encode_general, encode_redis_record
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.fingerprint import fingerprint_datasets, fingerprint_records

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is absent"),
]
NATIVE = rdb._load_native()
HASHER = RecordHasher(record_tag("exact"))


def _seed(client: redis.Redis, expire_at_ms: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(400):
        pipe.set(f"s:{i}", f"value-{i}" * (i % 7))  # short, empty, LZF-compressible
        pipe.set(f"n:{i}", str(i * 7919 - 1_000_000))  # integer-encoded strings
    pipe.set("n:big", str(1 << 62))
    pipe.set("lzf", "abcdefgh" * 2000)
    pipe.rpush("l:small", "a", "b", 3, -4, 2**40, "x" * 100)
    pipe.rpush("l:big", *[f"e{i}" if i % 3 else i for i in range(5000)])
    pipe.rpush("l:long", "y" * 20_000, "z")
    pipe.sadd("set:int", *range(-50, 50))
    pipe.sadd("set:bigint", *range(0, 3000, 3))
    pipe.sadd("set:str", "a", "b", "ccc", "1", "01")
    pipe.sadd("set:big", *[f"m{i}" for i in range(1000)])
    pipe.hset("h:small", mapping={"a": 1, "b": "two", "c": -3, "d": "x" * 50})
    pipe.hset("h:big", mapping={f"f{i}": i for i in range(300)})
    pipe.hset("h:longvalue", mapping={"f": "v" * 200})
    scores = {"a": 1.5, "b": -0.0, "c": float("inf"), "d": float("-inf"), "e": 1e-300}
    scores |= {"f": 0.1, "g": 2**53 + 1, "h": -7, "i": 65504.5, "j": 3.4028234663852886e38}
    pipe.zadd("z:small", scores)
    pipe.zadd("z:big", {f"m{i}": i / 3 for i in range(500)} | scores)
    pipe.xadd("stream", {"f": "v"})
    for i in range(50):
        pipe.set(f"ttl:{i}", i)
        pipe.pexpireat(f"ttl:{i}", expire_at_ms + i)
    pipe.select(2)
    pipe.set("other-db", "x")
    pipe.hset("other-h", mapping={"k": "v"})
    pipe.execute()


def _flat(path: Path, *, native: bool, as_of: int | None) -> Any:
    saved = rdb._NATIVE
    rdb._NATIVE = NATIVE if native else None
    try:
        reader = RdbReader(path, as_of_ms=as_of, keep_expired=as_of is None)
        out = []
        try:
            for dataset, pairs, keys in reader.iter_pairs(HASHER, encode_redis_record, batch=64):
                out += [(dataset, k, pairs[64 * i : 64 * i + 64]) for i, k in enumerate(keys)]
        except FormatError as exc:
            return ("error", str(exc))
        return ("ok", out, reader.key_counts())
    finally:
        rdb._NATIVE = saved


def _reference(path: Path, as_of: int | None) -> Any:
    reader = RdbReader(path, as_of_ms=as_of, keep_expired=as_of is None)

    out = []
    for dataset, record in reader.iter_all():
        key, value = _encode_general(record)
        out.append((dataset, key, HASHER.pair(key, value)))
    return ("ok", out, reader.key_counts())


@pytest.mark.skipif(NATIVE is None, reason="the compiled fast path is not built or switched off")
def test_native_on_a_real_servers_rdb(tmp_path: Path) -> None:
    with RedisScratch() as server:
        client = redis.Redis(port=server.port)
        now_ms = int(client.time()[0]) * 1000
        expire_at = now_ms + 3_600_000
        _seed(client, expire_at)
        client.save()
        path = tmp_path / "dump.rdb"
        shutil.copyfile(server.workdir / "dump.rdb", path)
        uri = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with RedisEngine(uri, password=None, timeout=10.0) as engine:
            live = {
                d: fingerprint_records(
                    engine.iter_records(d), encoding=RecordEncoding.REDIS, profile="exact"
                ).fingerprint
                for d in engine.list_datasets()
            }
        client.close()
    for as_of in (now_ms, expire_at + 25, None):
        expected = _reference(path, as_of)
        assert _flat(path, native=True, as_of=as_of) == expected
        assert _flat(path, native=False, as_of=as_of) == expected
    assert {d for d, _, _ in expected[1]} == {"db0", "db2"}
    # the backup's pass (compiled) against the live server that wrote the file
    accumulators = fingerprint_datasets(RdbReader(path, as_of_ms=now_ms), None)
    assert {d: acc.finish()[0] for d, acc in accumulators.items()} == live
    # the real file damaged: both paths give the same records or the same error
    data = path.read_bytes()
    rng = random.Random(20261128)
    for attempt in range(60):
        damaged = bytearray(data[:-8])
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(9, len(damaged))
            if rng.random() < 0.7:
                damaged[at] = rng.randrange(256)
            else:
                del damaged[at : at + rng.randint(1, 5)]
        if attempt % 4 == 0:
            damaged = damaged[: rng.randrange(9, len(damaged))]
        crc = rdb.crc64(bytes(damaged)) if attempt % 2 else 0x1234
        bad = tmp_path / "damaged.rdb"
        bad.write_bytes(bytes(damaged) + struct.pack("<Q", crc))
        assert _flat(bad, native=True, as_of=now_ms) == _flat(bad, native=False, as_of=now_ms)
