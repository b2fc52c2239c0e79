"""RedisEngine.stream_rdb against real redis-server processes: the captured bytes are an RDB
that redis-server loads, whose RdbReader fingerprint equals the live server's and that of
`redis-cli --rdb`; a server that dies mid-stream or refuses AUTH gives an EngineError."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.constants import EngineName, ExitCode
from affidavit.engines.redis import RedisEngine
from affidavit.errors import EngineError
from affidavit.formats.rdb import RdbReader
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.fingerprint import fingerprint_records

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def _engine(uri: str, password: str | None = None) -> RedisEngine:
    return RedisEngine(ConnectionUri.parse(EngineName.REDIS, uri), password=password, timeout=10)


def _capture(engine: RedisEngine, out: Path) -> Path:
    with out.open("wb") as fh:
        for chunk in engine.stream_rdb():
            fh.write(chunk)
    return out


def _file_fingerprints(path: Path) -> dict[str, Any]:
    reader = RdbReader(path)
    return {
        d: fingerprint_records(
            reader.records(d), encoding=RecordEncoding.REDIS, profile="exact"
        ).fingerprint
        for d in reader.datasets()
    }


def _live_fingerprints(engine: RedisEngine) -> dict[str, Any]:
    return {
        d: fingerprint_records(
            engine.iter_records(d), encoding=RecordEncoding.REDIS, profile="exact"
        ).fingerprint
        for d in engine.list_datasets()
    }


class _Loading(RedisScratch):
    def __init__(self, rdb: Path) -> None:
        super().__init__()
        shutil.copyfile(rdb, self.workdir / "load.rdb")

    def command(self, port: int) -> list[str]:
        return [*super().command(port), "--dbfilename", "load.rdb"]


class _Protected(RedisScratch):
    def command(self, port: int) -> list[str]:
        return [*super().command(port), "--requirepass", "s3cret-pass"]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False


class _Diskless(RedisScratch):
    """Streams the RDB over the socket (the ``$EOF:<mark>`` form), no temp file."""

    def command(self, port: int) -> list[str]:
        return [
            *super().command(port),
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip


class _OnDisk(RedisScratch):
    """Saves the RDB to disk first, then sends it as ``$<len>``."""

    def command(self, port: int) -> list[str]:
        return [*super().command(port), "--repl-diskless-sync", "no"]


@pytest.fixture(params=[_OnDisk, _Diskless], ids=["disk", "diskless"])
def seeded(request: pytest.FixtureRequest) -> Iterator[RedisScratch]:
    with request.param() as server:
        with _engine(server.uri) as engine:
            engine.seed_sample(seed=11, scale=40)
        client = redis.Redis(port=server.port, db=0)
        # the encodings the small sample does not reach: big list/set/zset/hash, intsets,
        # absolute expiries, an empty stream, an LZF-compressible string
        client.rpush("big:list", *[f"item-{i}" * 5 for i in range(2000)])
        client.sadd("big:set", *[f"m{i}" for i in range(600)])
        client.sadd("int:set", *range(-5, 50))
        client.zadd("big:zset", {f"p{i}": i / 7 for i in range(300)} | {"neg0": -0.0})
        client.zadd("inf:zset", {"lo": float("-inf"), "hi": float("inf")})
        client.hset("big:hash", mapping={f"f{i}": "x" * (i % 90) for i in range(700)})
        client.set("lzf:string", "abc" * 5000)
        client.set("expiring", "soon", pxat=4_102_444_800_123)
        client.xgroup_create("app0:events:0", "readers", id="0")
        client.xadd("empty:stream", {"a": "1"}, id="1-1")
        client.xdel("empty:stream", "1-1")
        client.close()
        yield server


def test_stream_rdb_is_a_loadable_rdb_with_equal_content(
    seeded: RedisScratch, tmp_path: Path
) -> None:
    with _engine(seeded.uri) as engine:
        path = _capture(engine, tmp_path / "capture.rdb")
        live_counts = {d: engine.count_records(d) for d in engine.list_datasets()}
        live = _live_fingerprints(engine)
    assert path.read_bytes()[:5] == b"REDIS"
    # (a) redis-server loads the bytes with the same DBSIZE per db
    with _Loading(path) as loaded, _engine(loaded.uri) as engine:
        assert {d: engine.count_records(d) for d in engine.list_datasets()} == live_counts
    # (b) the file's fingerprint equals the live one, per db
    reader = RdbReader(path)
    assert reader.key_counts() == live_counts
    assert _file_fingerprints(path) == live
    # (c) and equals that of redis-cli --rdb
    cli = tmp_path / "cli.rdb"
    subprocess.run(
        ["redis-cli", "-p", str(seeded.port), "--rdb", str(cli)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _file_fingerprints(cli) == live


def test_stream_rdb_server_killed_mid_stream_is_an_engine_error(tmp_path: Path) -> None:
    server = RedisScratch().start()
    try:
        client = redis.Redis(port=server.port)
        pipe = client.pipeline(transaction=False)
        for i in range(96):
            pipe.set(f"blob:{i}", os.urandom(1 << 20))  # incompressible: ~96 MiB payload
        pipe.execute()
        client.close()
        with _engine(server.uri) as engine:
            chunks = engine.stream_rdb()
            received = len(next(chunks))
            assert server.pid is not None
            # SIGKILL: on SIGTERM, Redis 7 waits (shutdown-timeout) for replicas to catch up
            stopper = threading.Thread(target=os.killpg, args=(server.pid, signal.SIGKILL))
            stopper.start()
            with pytest.raises(EngineError) as info:
                for chunk in chunks:
                    received += len(chunk)
            stopper.join(timeout=30)
        assert received < 96 << 20
        assert info.value.exit_code == ExitCode.CANNOT_RUN
        assert "127.0.0.1" in str(info.value)
    finally:
        server.stop()


def test_stream_rdb_with_password(tmp_path: Path) -> None:
    with _Protected() as server:
        client = redis.Redis(port=server.port, password="s3cret-pass")
        client.set("guarded", "value", px=10_000_000)
        client.hset("guarded:hash", mapping={"a": "1"})
        client.close()
        with _engine(server.uri, password="s3cret-pass") as engine:
            path = _capture(engine, tmp_path / "auth.rdb")
            assert _file_fingerprints(path) == _live_fingerprints(engine)
        assert RdbReader(path).key_counts() == {"db0": 2}
        with _engine(server.uri) as engine, pytest.raises(EngineError, match="NOAUTH") as info:
            _capture(engine, tmp_path / "noauth.rdb")
        assert info.value.exit_code == ExitCode.CANNOT_RUN
        with (
            _engine(server.uri, password="wrong") as engine,
            pytest.raises(EngineError, match="refused AUTH"),
        ):
            _capture(engine, tmp_path / "wrong.rdb")


def test_stream_rdb_unreachable_server_is_an_engine_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with _engine(f"redis://127.0.0.1:{port}/0") as engine, pytest.raises(EngineError):
        _capture(engine, tmp_path / "none.rdb")
