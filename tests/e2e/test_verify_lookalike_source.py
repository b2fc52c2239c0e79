"""``verify --against-source`` against a look-alike server (M7): someone with write access to
the catalog points the backup's source at another server that holds the backup's data, so
that a source which drifted would seem to match. The source the catalog names must be the
one the signed manifest names (name, engine, URI without secrets); when it is not, the
verification fails with ``source-mismatch`` and the look-alike is never even contacted."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _verify(cli: Any, backup_id: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", backup_id, "--against-source", "--json")
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _connections(server: RedisScratch) -> int:
    """Connections the server has accepted so far (this one included)."""
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


@pytest.fixture
def source_and_lookalike(fresh_redis: RedisScratch) -> Iterator[tuple[RedisScratch, RedisScratch]]:
    """The real source, seeded, and a second server started from the source's RDB: a
    look-alike holding exactly the source's data at this moment."""
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=17, scale=3)
    client = redis.Redis(host="127.0.0.1", port=fresh_redis.port)
    client.config_set("repl-diskless-sync-delay", 0)
    client.save()
    client.close()
    with RedisScratch(rdb=fresh_redis.workdir / "dump.rdb") as lookalike:
        yield fresh_redis, lookalike


def test_a_lookalike_source_is_refused_and_never_read(
    cli: Any, home: Path, tmp_path: Path, source_and_lookalike: tuple[RedisScratch, RedisScratch]
) -> None:
    source, lookalike = source_and_lookalike
    _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", source.uri,
            "--classification", "internal"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}"))
    backup_id = json.loads(_ok(cli("backup", "run", "cache", "--json")).out)["backup_id"]
    # the source drifts: an honest comparison fails
    client = redis.Redis(host="127.0.0.1", port=source.port)
    client.set(b"drifted:key", b"written after the backup")
    client.close()
    code, out = _verify(cli, backup_id)
    assert code == 1 and [f["code"] for f in out["findings"]] == ["source-differs"], out

    # the catalog is edited to name the look-alike, which holds the backup's data
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update sources set uri = ? where name = 'cache'", (lookalike.uri,))
    before = _connections(lookalike)
    code, out = _verify(cli, backup_id)
    assert code == 1, out
    assert out["ok"] is False
    (finding,) = out["findings"]
    assert finding["code"] == "source-mismatch"
    assert finding["subject"] == "cache"
    assert finding["details"]["fields"] == {
        "uri": {"signed": source.uri, "registered": lookalike.uri}
    }
    assert out["coverage"]["against_source"] is False
    assert _connections(lookalike) == before + 1  # only this count's own connection

    # the same through the backup's row: it now names another registered source
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update sources set uri = ? where name = 'cache'", (source.uri,))
    _ok(cli("source", "add", "cache-copy", "--engine", "redis", "--uri", lookalike.uri,
            "--classification", "internal"))  # fmt: skip
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update backups set source = 'cache-copy' where id = ?", (backup_id,))
    code, out = _verify(cli, backup_id)
    assert code == 1, out
    codes = [f["code"] for f in out["findings"]]
    assert "source-mismatch" in codes and "source-differs" not in codes, out
    (mismatch,) = [f for f in out["findings"] if f["code"] == "source-mismatch"]
    assert set(mismatch["details"]["fields"]) == {"name", "uri"}
    assert mismatch["details"]["fields"]["name"] == {"signed": "cache", "registered": "cache-copy"}
