"""The independent-restore path an auditor walks without affidavit: export the backup's age
identity, decrypt every artifact with the stock ``age`` CLI, then read the plaintext with
standard tools (pymongo's ``bson``, a real ``redis-server``) and compare with the source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import bson
import pytest
import redis
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.integration


def seed(engine: EngineName, uri: str, scale: int) -> dict[str, int]:
    with engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None, timeout=5) as e:
        return dict(e.seed_sample(seed=11, scale=scale))


def backup_and_decrypt(
    cli: Any, tmp_path: Path, source: str, engine: str, uri: str
) -> tuple[dict[str, Any], Path]:
    """Back ``source`` up, export its identity, decrypt every artifact with ``age -d``."""
    vault = tmp_path / "vault"
    assert cli("source", "add", source, "--engine", engine, "--uri", uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    r = cli("backup", "run", source, "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    r = cli("keys", "export-identity", out["backup_id"], "--reason", "independent restore test")
    assert r.code == 0, r.err
    identity = tmp_path / "identity.txt"
    identity.write_text(r.out)
    identity.chmod(0o600)
    plain = tmp_path / "plain"
    prefix = f"{source}/{out['backup_id']}/"
    for artifact in out["artifacts"]:
        if not artifact["path"].endswith(".age"):
            continue
        target = plain / artifact["path"].removeprefix(prefix).removesuffix(".age")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["age", "-d", "-i", str(identity), "-o", str(target), str(vault / artifact["path"])],
            check=True,
            capture_output=True,
        )
        assert target.stat().st_size == artifact["plain_size"]
    return out, plain


def test_mongo_backup_restores_with_age_and_bson_alone(
    cli: Any, tmp_path: Path, fresh_mongo: SecantusScratch
) -> None:
    seeded = seed(EngineName.MONGODB, fresh_mongo.uri, scale=40)
    out, plain = backup_and_decrypt(cli, tmp_path, "orders", "mongodb", fresh_mongo.uri)
    dump = plain / "dump"
    client: MongoClient[Any] = MongoClient(fresh_mongo.uri)
    try:
        for name, count in seeded.items():
            db, coll = name.split(".", 1)
            with (dump / db / f"{coll}.bson").open("rb") as fh:
                restored = list(bson.decode_file_iter(fh))
            live = list(client[db][coll].find())
            assert len(restored) == len(live) == count
            assert {d["_id"] for d in restored} == {d["_id"] for d in live}
            by_id = {d["_id"]: d for d in live}
            for doc in restored:
                assert doc == by_id[doc["_id"]]
            # bit for bit: field order and types as the server stores them
            raw_opts = bson.CodecOptions(document_class=RawBSONDocument)
            with (dump / db / f"{coll}.bson").open("rb") as fh:
                raw_restored = {d.raw for d in bson.decode_file_iter(fh, raw_opts)}
            raw_live = {d.raw for d in client[db].get_collection(coll, raw_opts).find()}
            assert raw_restored == raw_live
            metadata = json.loads((dump / db / f"{coll}.metadata.json").read_text())
            live_indexes = {ix["name"]: dict(ix["key"]) for ix in client[db][coll].list_indexes()}
            meta_indexes = {ix["name"]: ix["key"] for ix in metadata["indexes"]}
            assert set(meta_indexes) == set(live_indexes)
            for ix_name, key in live_indexes.items():
                assert {k: int(v) if not isinstance(v, str) else v for k, v in key.items()} == {
                    k: int(v["$numberInt"]) if isinstance(v, dict) else v
                    for k, v in meta_indexes[ix_name].items()
                }
    finally:
        client.close()
    # our own mongodump reader over the plain folder gives the manifest's fingerprints
    r = cli("fingerprint", str(dump), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    plain_fps = {d["name"]: d["fingerprint"] for d in json.loads(r.out)["datasets"]}
    assert plain_fps == {d["name"]: d["fingerprint"] for d in out["datasets"]}


def test_redis_backup_restores_into_a_real_redis_server(
    cli: Any, tmp_path: Path, fresh_redis: RedisScratch
) -> None:
    seeded = seed(EngineName.REDIS, fresh_redis.uri, scale=50)
    out, plain = backup_and_decrypt(cli, tmp_path, "cache", "redis", fresh_redis.uri)
    rdb = plain / "dump.rdb"
    assert rdb.read_bytes().startswith(b"REDIS")
    restored = RedisScratch(workdir=tmp_path / "restored")
    base = restored.command

    def with_dump(port: int) -> list[str]:
        return [*base(port), "--dbfilename", "dump.rdb"]

    (tmp_path / "restored").mkdir()
    (tmp_path / "restored" / "dump.rdb").write_bytes(rdb.read_bytes())
    restored.command = with_dump  # type: ignore[method-assign]
    with restored:
        for name, count in seeded.items():
            db = int(name.removeprefix("db"))
            with redis.Redis(host="127.0.0.1", port=restored.port, db=db) as client:
                assert client.dbsize() == count
        assert cli("source", "add", "restored", "--engine", "redis", "--uri", restored.uri,
                   "--classification", "internal").code == 0  # fmt: skip
        r = cli("fingerprint", "restored", "--json")
        assert r.code == 0, r.err
        live = {d["name"]: d["fingerprint"] for d in json.loads(r.out)["datasets"]}
    assert live == {d["name"]: d["fingerprint"] for d in out["datasets"]}
