"""Ingest of genuine mongodump folders, ``--archive`` files and RDB files (../shared/formats):
record counts equal the ground truth and what a real redis-server loading the same RDB reports;
RDB versions the installed Redis cannot load ingest with GROUND_TRUTH counts; Valkey and
module files are refused with exit 2 and nothing recorded."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.scratch.base import free_port

pytestmark = pytest.mark.e2e

MONGODUMP = "mongodump/mongo-tools/mongorestore/testdata"
REDIS7 = "redis-server 7.0.15 (Debian 12)"

#: complete dump folders: GROUND_TRUTH names every .bson file with its document count
DUMP_FOLDERS = [
    "coll_with_index",
    "indextestdump",
    "indexmetadata",
    "collMod_ttl_index",
    "aws_test_db",
    "duplicate_index_key_with_oplog",
]
ARCHIVES = ["test.bar.archive", "dump-w-oplog.archive", "timeseries_tests/dump.archive",
            "bad-format.archive"]  # fmt: skip
LOADABLE_RDBS = [
    "redis-rdb/redis-replicator/src/test/resources/dumpV6.rdb",
    "redis-rdb/redis-replicator/src/test/resources/dumpV7.rdb",
    "redis-rdb/redis-replicator/src/test/resources/listpack-bug.rdb",
    "redis-rdb/redis-replicator/src/test/resources/dump-stream.rdb",
    "redis-rdb/redis/tests/assets/encodings.rdb",
    "redis-rdb/redis-rdb-tools/tests/dumps/multiple_databases.rdb",
    "redis-rdb/redis-rdb-tools/tests/dumps/redis_50_with_streams.rdb",
    "redis-rdb/redis-rdb-tools/tests/dumps/keys_with_expiry.rdb",
]
NEWER_RDBS = [  # RDB 11 and 12: Redis 7.0 refuses them
    "redis-rdb/redis-replicator/src/test/resources/dumpV11.rdb",
    "redis-rdb/redis-replicator/src/test/resources/dump-ttlhash.rdb",
    "redis-rdb/redis-replicator/src/test/resources/dump-slot.rdb",
]


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2].parent / "shared" / "formats" / "GROUND_TRUTH.json"
    if not path.is_file():
        pytest.skip("GROUND_TRUTH.json comes with the shared folder")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def vault(cli: Any, tmp_path: Path) -> Path:
    folder = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{folder}").code == 0
    return folder


def ingest(cli: Any, path: Path, fmt: str) -> dict[str, Any]:
    r = cli("backup", "ingest", str(path), "--format", fmt, "--json")
    assert r.code == 0, (path, r.err)
    out: dict[str, Any] = json.loads(r.out)
    assert out["status"] == "complete"
    return out


def counts(out: dict[str, Any]) -> dict[str, int]:
    return {d["name"]: d["records"] for d in out["datasets"]}


def expected_dump_counts(truth: dict[str, Any], folder: str) -> dict[str, int]:
    """``db.coll`` -> doc_count for the collection files of a dump folder (oplog and system.*
    are not datasets)."""
    prefix = f"{MONGODUMP}/{folder}/"
    out: dict[str, int] = {}
    for key, entry in truth.items():
        if not key.startswith(prefix) or not key.endswith(".bson"):
            continue
        rel = key[len(prefix) :]
        if "/" not in rel:  # a single-database folder, or oplog.bson at a dump's root
            if key.removesuffix(".bson") + ".metadata.json" not in truth:
                continue
            rel = f"{folder}/{rel}"
        db, _, name = rel.rpartition("/")
        coll = name.removesuffix(".bson")
        if coll.startswith("system."):
            continue
        out[f"{db.split('/')[-1]}.{coll}"] = entry["doc_count"]
    return out


@pytest.mark.parametrize("folder", DUMP_FOLDERS)
def test_genuine_mongodump_folder_ingests_with_ground_truth_counts(
    cli: Any, vault: Path, shared_formats: Path, truth: dict[str, Any], folder: str
) -> None:
    expected = expected_dump_counts(truth, folder)
    assert expected, folder
    out = ingest(cli, shared_formats / MONGODUMP / folder, "mongodump")
    assert counts(out) == expected
    # every file of the dump is stored, encrypted, under ingested/BACKUP_ID/
    source = shared_formats / MONGODUMP / folder
    files = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    stored = {a["path"].split("/", 2)[2] for a in out["artifacts"] if a["role"] != "index"}
    assert {f + ".age" for f in files} <= stored
    for a in out["artifacts"]:
        assert (vault / a["path"]).is_file()


@pytest.mark.parametrize("archive", ARCHIVES)
def test_genuine_mongodump_archive_ingests_with_ground_truth_counts(
    cli: Any, vault: Path, shared_formats: Path, truth: dict[str, Any], archive: str
) -> None:
    entry = truth[f"{MONGODUMP}/{archive}"]
    expected = {
        ns: v["docs"]
        for ns, v in entry["namespaces"].items()
        if not ns.startswith(".") and ".system." not in ns and not ns.endswith(".oplog")
    }
    out = ingest(cli, shared_formats / MONGODUMP / archive, "mongodump-archive")
    assert counts(out) == expected
    (data,) = [a for a in out["artifacts"] if a["role"] == "data"]
    assert data["plain_size"] == entry["size"]


def redis_load_counts(rdb: Path, workdir: Path) -> dict[str, int] | None:
    """Start a real redis-server on a copy of ``rdb``; keys per db, or None if it refuses."""
    workdir.mkdir()
    shutil.copy(rdb, workdir / "dump.rdb")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        # no retries: the loop polls itself, and redis-py's default retries a refused
        # connection for ~4 s, long after a server that refuses the file has exited
        client = redis.Redis(host="127.0.0.1", port=port, retry=None)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None  # it refused the file
            try:
                if client.info("persistence").get("loading") == 0:
                    break
            except redis.ConnectionError:
                pass
            except redis.BusyLoadingError:
                pass
            time.sleep(0.05)
        space = client.info("keyspace")
        client.close()
        return {f"db{k[2:]}": v["keys"] for k, v in space.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("rel", LOADABLE_RDBS)
def test_genuine_rdb_ingests_with_the_counts_redis_server_loads(
    cli: Any, vault: Path, shared_formats: Path, truth: dict[str, Any], rel: str, tmp_path: Path
) -> None:
    loaded = redis_load_counts(shared_formats / rel, tmp_path / "load")
    assert loaded is not None, f"redis-server could not load {rel}"
    ground = truth[rel]["load"][REDIS7]["dbs"]
    assert loaded == {f"db{k}": v["dbsize"] for k, v in ground.items()}
    out = ingest(cli, shared_formats / rel, "rdb")
    assert {k: v for k, v in counts(out).items() if v} == loaded


@pytest.mark.parametrize("rel", NEWER_RDBS)
def test_rdb_newer_than_the_installed_redis_ingests_with_ground_truth_counts(
    cli: Any, home: Path, vault: Path, shared_formats: Path, truth: dict[str, Any], rel: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    entry = truth[rel]
    assert entry["rdb_version"] in (11, 12)
    assert redis_load_counts(shared_formats / rel, tmp_path / "load") is None  # 7.0 refuses
    (newer,) = [v for k, v in entry["load"].items() if k != REDIS7 and "dbs" in v]
    expected = {f"db{k}": v["dbsize"] for k, v in newer["dbs"].items()}
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(shared_formats / rel), "--format", "rdb", "--json")
    if r.code == 0:  # our reader supports the version: the counts must be right
        assert {k: v for k, v in counts(json.loads(r.out)).items() if v} == expected
    else:  # or it is refused clearly, and nothing is recorded
        assert r.code == 2 and "error:" in r.err and "Traceback" not in r.err
        assert catalog_dump(home) == before


@pytest.mark.parametrize(
    "rel",
    [
        "redis-rdb/HDT3213-rdb/cases/valkey_hash2_with_hfe.rdb",
        "redis-rdb/redis-rdb-tools/tests/dumps/redis_40_with_module.rdb",
        "redis-rdb/redis-rdb-tools/tests/dumps/redis_60_with_module_aux.rdb",
        "redis-rdb/redis-replicator/src/test/resources/module.rdb",
    ],
)
def test_valkey_and_module_rdbs_are_refused(
    cli: Any, home: Path, vault: Path, shared_formats: Path, truth: dict[str, Any], rel: str
) -> None:
    path = shared_formats / rel
    if not path.is_file():
        (path,) = [shared_formats / k for k in truth if k.endswith("/" + rel.rsplit("/", 1)[1])][:1]
    before = catalog_dump(home)
    r = cli("backup", "ingest", str(path), "--format", "rdb")
    assert r.code == 2, (r.code, r.err)
    assert "error:" in r.err and "hint:" in r.err and "Traceback" not in r.err
    assert catalog_dump(home) == before
    assert not vault.exists() or not any(p.is_file() for p in vault.rglob("*"))


@pytest.mark.parametrize("archive", ["test.bar.archive", "dump-w-oplog.archive"])
def test_a_genuine_archive_backup_restores_in_a_drill(
    cli: Any, vault: Path, shared_formats: Path, truth: dict[str, Any], archive: str
) -> None:
    """mongodump --archive backups drill like folder dumps: every namespace is loaded into a
    scratch SecantusDB from the one archive and re-fingerprinted to the signed manifest."""
    out = ingest(cli, shared_formats / MONGODUMP / archive, "mongodump-archive")
    r = cli("drill", "run", out["backup_id"], "--json")
    assert r.code == 0, r.err + r.out
    drill = json.loads(r.out)
    assert drill["ok"] and drill["fingerprint_match"] and drill["findings"] == []
    assert drill["phases"]["load"] > 0
