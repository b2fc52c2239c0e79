"""``backup ingest --source`` files a backup only under a source of the engine its format
holds (issue 13): an RDB under a MongoDB source, or a mongodump under a Redis source, is
refused with exit 2, one line and a hint, and nothing is recorded — no row, no event, no file
in the vault. The same input under a source of its own engine is accepted."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import bson
import pytest
import redis

from affidavit.scratch.redis_server import RedisScratch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rdb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine RDB: what a real redis-server writes on SAVE."""
    out = tmp_path_factory.mktemp("rdb") / "dump.rdb"
    with RedisScratch() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.mset({f"key:{i}": f"value {i}" for i in range(50)})
        client.save()
        client.close()
        shutil.copyfile(server.workdir / "dump.rdb", out)
    assert out.read_bytes().startswith(b"REDIS")
    return out


@pytest.fixture
def mongodump(tmp_path: Path) -> Path:
    """A mongodump folder: one collection's .bson with its metadata."""
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    docs = b"".join(bson.encode({"_id": i, "name": f"n{i}"}) for i in range(20))
    (folder / "orders.bson").write_bytes(docs)
    (folder / "orders.metadata.json").write_text(
        json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
    )
    return tmp_path / "dump"


@pytest.fixture
def vault(cli: Any, tmp_path: Path) -> Path:
    """A folder vault and two sources of different engines (ingest never connects to them)."""
    folder = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{folder}").code == 0
    assert cli("source", "add", "orders", "--engine", "mongodb",
               "--uri", "mongodb://127.0.0.1:1/", "--classification", "internal").code == 0  # fmt: skip
    assert cli("source", "add", "cache", "--engine", "redis",
               "--uri", "redis://127.0.0.1:1/0", "--classification", "internal").code == 0  # fmt: skip
    return folder


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    """Every row of every table: what 'nothing recorded' compares."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


def vault_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_refused(r: Any, *words: str) -> None:
    """Exit 2, one error line and one hint line, no traceback."""
    assert r.code == 2, (r.code, r.out, r.err)
    lines = [line for line in r.err.strip().splitlines() if line]
    lines = lines[next((i for i, x in enumerate(lines) if x.startswith("error: ")), 0) :]
    assert len(lines) == 2, r.err
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), r.err
    assert "Traceback" not in r.err + r.out
    for word in words:
        assert word in r.err, (word, r.err)


@pytest.mark.parametrize(
    ("fmt", "wrong", "right"),
    [("rdb", "orders", "cache"), ("mongodump", "cache", "orders")],
    ids=["rdb-under-a-mongodb-source", "mongodump-under-a-redis-source"],
)
def test_ingest_refuses_a_format_of_another_engine(
    cli: Any, home: Path, vault: Path, rdb_file: Path, mongodump: Path,
    fmt: str, wrong: str, right: str,
) -> None:  # fmt: skip
    path = rdb_file if fmt == "rdb" else mongodump
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(path), "--format", fmt, "--source", wrong, "--json")
    engines = {"orders": "mongodb", "cache": "redis"}
    assert_refused(
        r,
        f"--format {fmt} holds {engines[right]} data, but source {wrong} is a "
        f"{engines[wrong]} source",
    )
    assert catalog_dump(home) == before  # no row, no event
    assert vault_files(vault) == []

    accepted = cli("backup", "ingest", str(path), "--format", fmt, "--source", right, "--json")
    assert accepted.code == 0, accepted.err
    assert json.loads(accepted.out)["source"] == right
