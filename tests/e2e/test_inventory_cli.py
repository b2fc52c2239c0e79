"""The inventory story through the CLI, against real servers, and every bad input named in
the foundation issue: right exit code, one-line error with a hint, catalog unchanged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.base import free_port
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e


def catalog_dump(home: Path) -> dict[str, list[Any]]:
    """Every row of every table: what 'the catalog is unchanged' compares."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, db.execute(f"select * from {t}"))) for t in tables}


def seed(engine: EngineName, uri: str) -> dict[str, int]:
    with engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None, timeout=5) as e:
        return dict(e.seed_sample(seed=3, scale=10))


@pytest.fixture(scope="module")
def servers(mongo_scratch_class: type[SecantusScratch]) -> Any:
    with mongo_scratch_class() as mongo, RedisScratch(replica_sync_delay=0) as redis:
        yield {
            "mongo": mongo.uri,
            "redis": redis.uri,
            "seeded": {**seed(EngineName.MONGODB, mongo.uri), **seed(EngineName.REDIS, redis.uri)},
        }


def test_register_inspect_classify_and_inventory(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    r = cli("source", "add", "orders", "--engine", "mongodb", "--uri", servers["mongo"],
            "--classification", "confidential", "--region", "eu-west-1", "--owner", "dba@example.com")  # fmt: skip
    assert r.code == 0, r.err
    r = cli("source", "add", "cache", "--engine", "redis", "--uri", servers["redis"],
            "--classification", "internal", "--secret-env", "CACHE_PASSWORD_UNUSED", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["secret"] == "$CACHE_PASSWORD_UNUSED"
    assert (
        cli(
            "vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}", "--immutable-days", "30"
        ).code
        == 0
    )

    listed = json.loads(cli("source", "list", "--json").out)["sources"]
    assert [s["name"] for s in listed] == ["cache", "orders"]

    # the secret is referenced but not set: the test says so, by name, and exits 2
    r = cli("source", "test", "cache", "--json")
    assert r.code == 2
    assert "CACHE_PASSWORD_UNUSED" in json.loads(r.out)["error"]
    assert cli("source", "remove", "cache", "--reason", "re-added without a secret").code == 0
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", servers["redis"],
               "--classification", "internal").code == 0  # fmt: skip

    r = cli("source", "test", "orders", "--json")
    assert r.code == 0, r.err
    tested = json.loads(r.out)
    assert tested["reachable"] and tested["server"]["version"]

    r = cli("inventory", "--json")
    assert r.code == 0, r.err
    inv = json.loads(r.out)
    counts = {f"{d['name']}": d["records"] for s in inv["sources"] for d in s["datasets"]}
    assert counts == servers["seeded"]
    assert all(s["reachable"] for s in inv["sources"])
    assert inv["vaults"][0]["immutable_days"] == 30
    assert inv["vaults"][0]["probe"]["reachable"] is True

    r = cli(
        "dataset", "classify", "orders/shop.customers", "restricted", "--reason", "PII", "--json"
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["classification"] == "restricted"
    shown = json.loads(cli("source", "show", "orders", "--json").out)
    levels = {
        d["name"]: (d["classification"], d["classification_inherited"]) for d in shown["datasets"]
    }
    assert levels == {
        "shop.customers": ("restricted", False),
        "shop.orders": ("confidential", True),
    }

    # people get tables
    r = cli("inventory")
    assert r.code == 0 and "shop.customers" in r.out and "restricted" in r.out

    # every change above is in the ledger, none of them carries a secret or password
    with sqlite3.connect(home / "catalog.sqlite") as db:
        actions = [a for (a,) in db.execute("select action from ledger_entries order by seq")]
    assert actions.count("source.added") == 3
    assert {"source.removed", "vault.added", "dataset.classified", "inventory.taken"} <= set(
        actions
    )


def test_unreachable_source_exits_3_quickly(cli: Any, home: Path) -> None:
    uri = f"redis://127.0.0.1:{free_port()}/0"
    assert (
        cli(
            "source", "add", "gone", "--engine", "redis", "--uri", uri, "--classification", "public"
        ).code
        == 0
    )
    r = cli("--timeout", "0.5", "source", "test", "gone")
    assert r.code == 3
    assert "unreachable" in r.err and "hint:" in r.err
    r = cli("--timeout", "0.5", "inventory", "--json")
    assert r.code == 3
    assert json.loads(r.out)["sources"][0]["reachable"] is False


BAD_INPUT = [
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "mongodb",
            "--uri",
            "mongodb//nohost",
            "--classification",
            "public",
        ],
        "URI",
        id="malformed-uri",
    ),
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "cassandra",
            "--uri",
            "x://y",
            "--classification",
            "public",
        ],
        "unknown engine",
        id="unknown-engine",
    ),
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "mongodb",
            "--uri",
            "mongodb://root:hunter2@db1/",
            "--classification",
            "public",
        ],
        "password",
        id="inline-password",
    ),
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "redis",
            "--uri",
            "redis://h/0",
            "--classification",
            "secret",
        ],
        "classification",
        id="invalid-classification",
    ),
    pytest.param(
        [
            "source",
            "add",
            "bad name",
            "--engine",
            "redis",
            "--uri",
            "redis://h/0",
            "--classification",
            "public",
        ],
        "name",
        id="invalid-name",
    ),
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "redis",
            "--uri",
            "redis://h/0",
            "--classification",
            "public",
            "--secret-env",
            "A",
            "--secret-file",
            "/f",
        ],
        "either",
        id="two-secrets",
    ),
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "redis",
            "--uri",
            "redis://h/0",
            "--classification",
            "public",
            "--secret-env",
            "hunter2 value",
        ],
        "name of an environment variable",
        id="secret-value-instead-of-name",
    ),
    pytest.param(
        [
            "source",
            "add",
            "x",
            "--engine",
            "redis",
            "--uri",
            "redis://h/0",
            "--classification",
            "public",
            "--owner",
            "bob",
        ],
        "e-mail",
        id="bad-owner",
    ),
    pytest.param(["source", "show", "nope"], "no source", id="unknown-source"),
    pytest.param(
        ["source", "remove", "nope", "--reason", "x"], "no source", id="remove-unknown-source"
    ),
    pytest.param(
        ["dataset", "classify", "nope/db0", "public", "--reason", "x"],
        "no source",
        id="classify-unknown-source",
    ),
    pytest.param(
        ["dataset", "classify", "no-slash", "public", "--reason", "x"],
        "SOURCE/DATASET",
        id="classify-bad-ref",
    ),
    pytest.param(["vault", "add", "v", "--url", "ftp://x"], "vault URL", id="bad-vault-url"),
    pytest.param(
        ["vault", "add", "v", "--url", "file://relative/path"], "absolute", id="relative-vault"
    ),
    pytest.param(["vault", "add", "v", "--url", "s3://UPPER_case"], "bucket", id="bad-bucket"),
    pytest.param(
        ["vault", "add", "v", "--url", "file:///tmp/v", "--immutable-days", "0"],
        "immutable",
        id="bad-immutable-days",
    ),
    pytest.param(["vault", "show", "nope"], "no vault", id="unknown-vault"),
    pytest.param(["source", "add"], "Missing", id="usage-error"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUT)
def test_bad_input_exits_2_with_a_hint_and_changes_nothing(
    cli: Any, home: Path, argv: list[str], fragment: str
) -> None:
    before = catalog_dump(home)
    r = cli(*argv)
    assert r.code == 2, (r.out, r.err)
    assert fragment.lower() in r.err.lower()
    assert "Traceback" not in r.err + r.out
    assert "hunter2" not in r.err + r.out
    assert catalog_dump(home) == before


def test_duplicate_source_name_changes_nothing(cli: Any, home: Path) -> None:
    args = [
        "source",
        "add",
        "dup",
        "--engine",
        "redis",
        "--uri",
        "redis://h/0",
        "--classification",
        "public",
    ]
    assert cli(*args).code == 0
    before = catalog_dump(home)
    r = cli(*args)
    assert r.code == 2 and "already exists" in r.err and "hint:" in r.err
    assert catalog_dump(home) == before


def test_unknown_dataset_on_a_live_source(cli: Any, home: Path, servers: Any) -> None:
    assert (
        cli(
            "source",
            "add",
            "m",
            "--engine",
            "mongodb",
            "--uri",
            servers["mongo"],
            "--classification",
            "public",
        ).code
        == 0
    )
    before = catalog_dump(home)
    r = cli("dataset", "classify", "m/shop.nope", "internal", "--reason", "x")
    assert r.code == 2 and "no collection" in r.err and "hint:" in r.err
    assert catalog_dump(home) == before


def test_corrupted_config_file(cli: Any, home: Path) -> None:
    before = catalog_dump(home)
    (home / "affidavit.toml").write_text("[affidavit]\nconnect_timeout = 'x'\n")
    r = cli("source", "list")
    assert r.code == 2 and "connect_timeout" in r.err
    assert len(r.err.strip().splitlines()) <= 2
    assert catalog_dump(home) == before


def test_catalog_from_a_newer_schema(cli: Any, home: Path) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("update alembic_version set version_num = '0099'")
    before = catalog_dump(home)
    for argv in (["source", "list"], ["init"], ["inventory"]):
        r = cli(*argv)
        assert r.code == 2 and "newer" in r.err and "hint:" in r.err
    assert catalog_dump(home) == before


def test_commands_before_init_say_run_init(cli: Any, tmp_path: Path) -> None:
    r = cli("source", "list", home_dir=tmp_path / "empty")
    assert r.code == 2 and "affidavit init" in r.err


def test_init_twice_is_idempotent(cli: Any, home: Path) -> None:
    before = catalog_dump(home)
    r = cli("init", "--json")
    assert r.code == 0 and json.loads(r.out)["changed"] is False
    assert catalog_dump(home) == before


def test_secret_file_is_resolved_at_connect_time_and_never_stored(
    cli: Any, home: Path, tmp_path: Path, servers: Any
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o644)
    assert cli("source", "add", "r", "--engine", "redis", "--uri", servers["redis"], "--classification", "public",
               "--secret-file", str(secret)).code == 0  # fmt: skip
    r = cli("source", "test", "r")
    assert r.code == 2 and "readable by other users" in r.err and "chmod 600" in r.err
    secret.chmod(0o600)
    r = cli("source", "test", "r", "--json")
    # redis without requirepass rejects AUTH: the error is the server's, and the secret is not shown
    assert "s3cr3t-value" not in r.out + r.err
    assert b"s3cr3t-value" not in (home / "catalog.sqlite").read_bytes()
