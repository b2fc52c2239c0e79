"""The same records fingerprinted live, from a mongodump-format file, and from Extended JSON:
exact agrees between live and file; logical agrees across all three. Likewise for Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bson
import pytest
import redis
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from affidavit.constants import Classification, EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import fingerprint as fps
from affidavit.services import inventory as inv
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import App

pytestmark = pytest.mark.integration


def texts(results: list[fps.DatasetFingerprint]) -> dict[str, str]:
    return {r.name: r.fingerprint.text for r in results}


@pytest.fixture
def seeded_mongo(mongo_server: SecantusScratch) -> Any:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri)
    client.drop_database("roundtrip")
    # the demo sample covers every common BSON type; write it into its own database
    with engine_for_uri(
        EngineName.MONGODB,
        ConnectionUri.parse(EngineName.MONGODB, mongo_server.uri),
        password=None,
        timeout=5,
    ) as engine:
        client.drop_database("shop")
        engine.seed_sample(seed=11, scale=40)
    yield client
    client.drop_database("shop")
    client.close()


def test_live_file_and_extjson_agree(
    app: App, mongo_server: SecantusScratch, seeded_mongo: Any, tmp_path: Path
) -> None:
    inv.add_source(
        app,
        name="m",
        engine=EngineName.MONGODB,
        uri=mongo_server.uri,
        secret=None,
        classification=Classification.INTERNAL,
    )
    coll = seeded_mongo["shop"]["orders"]
    # a mongodump-layout file written with bson, and canonical Extended JSON lines
    dump = tmp_path / "dump" / "shop"
    dump.mkdir(parents=True)
    raw_coll = coll.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    with (dump / "orders.bson").open("wb") as fh:
        for doc in raw_coll.find():
            fh.write(doc.raw)
    (dump / "orders.metadata.json").write_text(
        json.dumps({"options": {}, "indexes": [], "uuid": "", "collectionName": "orders"})
    )
    with (tmp_path / "shop.orders.json").open("w") as fh:
        for doc in coll.find():
            fh.write(bson.json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS) + "\n")

    for profile in ("exact", "logical"):
        live = texts(
            fps.fingerprint_source(app, "m/shop.orders", dataset=None, profile=profile, out=None)
        )
        from_file = texts(
            fps.fingerprint_path(
                dump / "orders.bson", fmt="bson", dataset=None, profile=profile, out=None
            )
        )
        assert list(live.values()) == list(from_file.values()), profile
        from_dir = texts(
            fps.fingerprint_path(
                tmp_path / "dump", fmt="mongodump", dataset="shop.orders", profile=profile, out=None
            )
        )
        assert from_dir == {"shop.orders": live["shop.orders"]}
    logical_live = texts(
        fps.fingerprint_source(app, "m/shop.orders", dataset=None, profile="logical", out=None)
    )
    logical_json = texts(
        fps.fingerprint_path(
            tmp_path / "shop.orders.json", fmt="extjson", dataset=None, profile="logical", out=None
        )
    )
    assert list(logical_json.values()) == list(logical_live.values())
    exact = texts(
        fps.fingerprint_source(app, "m/shop.orders", dataset=None, profile="exact", out=None)
    )
    assert exact != logical_live


def test_parallel_workers_give_the_same_fingerprint(
    app: App, mongo_server: SecantusScratch, seeded_mongo: Any
) -> None:
    inv.add_source(
        app,
        name="m",
        engine=EngineName.MONGODB,
        uri=mongo_server.uri,
        secret=None,
        classification=Classification.INTERNAL,
    )
    one = texts(
        fps.fingerprint_source(app, "m", dataset=None, profile="exact", out=None, workers=1)
    )
    two = texts(
        fps.fingerprint_source(app, "m", dataset=None, profile="exact", out=None, workers=2)
    )
    assert one == two
    assert set(one) == {"shop.customers", "shop.orders"}


def test_a_changed_live_record_is_named_by_diff(
    app: App, mongo_server: SecantusScratch, seeded_mongo: Any, tmp_path: Path
) -> None:
    inv.add_source(
        app,
        name="m",
        engine=EngineName.MONGODB,
        uri=mongo_server.uri,
        secret=None,
        classification=Classification.INTERNAL,
    )
    fps.fingerprint_source(
        app, "m/shop.orders", dataset=None, profile="exact", out=tmp_path / "before.afpidx"
    )
    seeded_mongo["shop"]["orders"].update_one({"_id": 7}, {"$set": {"status": "tampered"}})
    seeded_mongo["shop"]["orders"].delete_one({"_id": 9})
    seeded_mongo["shop"]["orders"].insert_one({"_id": 100000, "status": "new"})
    fps.fingerprint_source(
        app, "m/shop.orders", dataset=None, profile="exact", out=tmp_path / "after.afpidx"
    )
    report = fps.diff_report(tmp_path / "before.afpidx", tmp_path / "after.afpidx", limit=None)
    assert not report["equal"]
    named = {(d["change"], d["key"]) for d in report["differences"]}
    assert named == {("changed", "7"), ("missing", "9"), ("extra", "100000")}


def test_redis_live_fingerprint_is_stable_and_sees_changes(
    app: App, fresh_redis: RedisScratch, tmp_path: Path
) -> None:
    client = redis.Redis(port=fresh_redis.port)
    client.set("s", b"\x00\xffbinary")
    client.set("t", "ttl", ex=5000)
    client.rpush("l", "a", "b", "c")
    client.sadd("set", "x", "y")
    client.zadd("z", {"m": 1.5, "n": -2})
    client.hset("h", mapping={"f": "v"})
    client.xadd("st", {"k": "v"}, id="1-1")
    inv.add_source(
        app,
        name="r",
        engine=EngineName.REDIS,
        uri=fresh_redis.uri,
        secret=None,
        classification=Classification.INTERNAL,
    )
    first = fps.fingerprint_source(
        app, "r/db0", dataset=None, profile="exact", out=tmp_path / "a.afpidx"
    )
    again = fps.fingerprint_source(app, "r/db0", dataset=None, profile="exact", out=None)
    assert first[0].fingerprint == again[0].fingerprint  # absolute expiry: stable over time
    assert first[0].fingerprint.count == 7
    client.lset("l", 1, "B")
    fps.fingerprint_source(app, "r/db0", dataset=None, profile="exact", out=tmp_path / "b.afpidx")
    report = fps.diff_report(tmp_path / "a.afpidx", tmp_path / "b.afpidx", limit=None)
    assert [(d["change"], d["key"]) for d in report["differences"]] == [("changed", "l")]
