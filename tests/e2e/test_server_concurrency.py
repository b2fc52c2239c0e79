"""The server under concurrent requests, on each catalog (the embedded SQLite file and a real
PostgreSQL server), served by one process (one App, uvicorn's thread pool) and by two forked
workers (``serve --workers 2``: two Apps, two connection pools, two signers' caches): writes
of many requests at once each commit with their event and checkpoint, name their own caller,
and leave a ledger and an access log that verify."""

from __future__ import annotations

import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from server_harness import SERVICE, make_world, serving

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import access_log
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

WRITERS = 12


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_home(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
    if request.param == "postgresql":
        monkeypatch.setenv("AFFIDAVIT_CATALOG_URL", request.getfixturevalue("postgres_url"))
    home = tmp_path / "home"
    initialise(load_settings(home=home))
    return home


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_writes_each_name_their_caller(
    catalog_home: Path, tmp_path: Path, fresh_redis: RedisScratch, workers: int
) -> None:
    home = catalog_home
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=2, scale=1)
    from affidavit.cli.main import main

    base = ["--home", str(home)]
    assert main([*base, "source", "add", "cache", "--engine", "redis", "--uri",
                 fresh_redis.uri, "--classification", "internal"]) == 0  # fmt: skip
    assert main([*base, "vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}"]) == 0
    world = make_world(home)
    with serving(home, "--workers", str(workers)) as served, served.client() as http:
        operator = world.session(http, "operator")
        token = {"Authorization": f"Bearer {world.token}"}
        answer = http.post("/backups", json={"source": "cache"}, headers=operator.bearer)
        assert answer.status_code == 201, answer.text
        backup_id = answer.json()["backup_id"]

        def write(i: int) -> tuple[int, str]:
            headers = operator.bearer if i % 2 else token
            with served.client() as own:
                reply = own.post(f"/backups/{backup_id}/holds",
                                 json={"case": f"case-{i}", "reason": "load"}, headers=headers)  # fmt: skip
                listed = own.get("/backups", headers=headers)
                assert listed.status_code == 200, listed.text
            return reply.status_code, reply.text

        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            results = list(pool.map(write, range(WRITERS)))
        assert all(code == 201 for code, _ in results), results

        verified = http.get("/ledger/verify", params={"full": "true"}, headers=operator.bearer)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.text

        shown = http.get(f"/backups/{backup_id}", headers=operator.bearer).json()
        assert len(shown["holds"]) == WRITERS
        by_case = {h["case"]: h["created_by"] for h in shown["holds"]}
        assert by_case == {f"case-{i}": "operator" if i % 2 else SERVICE for i in range(WRITERS)}

    with open_app(load_settings(home=home)) as app:
        report = access_log.verify(app)
    assert report.ok, report.to_json()
    assert report.size > WRITERS * 2  # every request of every worker, in one signed log

    if not os.environ.get("AFFIDAVIT_CATALOG_URL"):
        with sqlite3.connect(home / "catalog.sqlite") as db:
            rows = db.execute("select entry from ledger_entries where action = 'hold.added'")
            held = [json.loads(e) for (e,) in rows]
        assert sorted(e["details"]["case"] for e in held) == sorted(
            f"case-{i}" for i in range(WRITERS)
        )
        for event in held:
            expected = ("operator", "session") if int(event["details"]["case"][5:]) % 2 else (
                SERVICE, "token")  # fmt: skip
            assert (event["actor"], event["details"]["auth"]) == expected
