"""The catalog on a real PostgreSQL server: the migrations build the declared schema, a change
and its events commit or roll back together, timestamps come back in UTC, and writers that run
at the same time (threads with their own App, separate processes) all append to one dense,
verifiable ledger. The server is the session's ``postgres_server``; each test has a database
of its own (``postgres_url``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from affidavit.catalog.store import MIGRATIONS_DIR, SCHEMA_HEAD, Catalog
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.errors import CatalogError
from affidavit.ledger import merkle
from affidavit.models.inventory import Source, SourceName
from affidavit.scratch.postgres_server import PostgresScratch
from affidavit.services import ledger as ledger_svc
from affidavit.services.context import App
from affidavit.services.setup import initialise

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _database(url: str) -> str:
    name = make_url(url).database
    assert name is not None
    return name


@pytest.fixture
def pg_settings(postgres_url: str, tmp_path: Path) -> Settings:
    """An initialised home whose catalog is this test's PostgreSQL database."""
    settings = load_settings(
        home=tmp_path / "home",
        environ={"AFFIDAVIT_CATALOG_URL": postgres_url, "AFFIDAVIT_ACTOR": "t@example.com"},
    )
    initialise(settings)
    return settings


@pytest.fixture
def pg_app(pg_settings: Settings) -> Any:
    app = App(pg_settings)
    try:
        yield app
    finally:
        app.close()


def _source(name: str, created_at: datetime | None = None) -> Source:
    return Source(
        name=SourceName(name),
        engine=EngineName.REDIS,
        uri="redis://127.0.0.1:6379/0",
        secret=None,
        classification=Classification.INTERNAL,
        region=None,
        owner=None,
        created_at=created_at or datetime.now(UTC),
    )


def _state(app: App) -> tuple[int, list[str], int]:
    with app.read() as uow:
        return (
            uow.ledger.size(),
            [s.name for s in uow.sources.list()],
            len(uow.ledger.checkpoints()),
        )


def _seqs(server: PostgresScratch, url: str) -> list[int]:
    rows = server.execute(_database(url), "SELECT seq FROM ledger_entries ORDER BY seq")
    return [int(seq) for (seq,) in rows]


# -- schema -----------------------------------------------------------------------------------


def test_init_migrates_to_head_and_builds_exactly_the_declared_schema(
    pg_settings: Settings, postgres_server: PostgresScratch, postgres_url: str
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from affidavit.catalog.schema import Base

    catalog = Catalog(postgres_url)
    try:
        assert catalog.schema_state() == (SCHEMA_HEAD, SCHEMA_HEAD)
        catalog.check_schema()
        with catalog._engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        catalog.close()
    types = dict(
        postgres_server.execute(
            _database(postgres_url),
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public'",
        )
    )
    assert types["ledger_entries.seq"] == "bigint"
    assert types["ledger_checkpoints.size"] == "bigint"
    assert types["ledger_entries.entry"] == "bytea"
    assert types["ledger_entries.nodes"] == "bytea"
    assert types["backups.started_at"] == "timestamp with time zone"
    again = initialise(pg_settings)  # idempotent: nothing migrated, nothing recorded
    assert not again.changed
    assert again.catalog == Catalog(postgres_url).describe()


def test_0005_down_to_the_node_table_and_up_again_keeps_every_proof(
    pg_settings: Settings, postgres_server: PostgresScratch, postgres_url: str
) -> None:
    app = App(pg_settings)
    for i in range(21):
        with app.change() as change:
            change.record("test.event", f"s:{i}", {"i": i})
    app.close()
    db = _database(postgres_url)
    before = postgres_server.execute(
        db, "SELECT seq, leaf_hash, nodes FROM ledger_entries ORDER BY seq"
    )

    catalog = Catalog(postgres_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with catalog._engine.begin() as conn:  # building an old catalog on purpose
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    catalog.close()
    nodes = {
        (int(level), int(index)): bytes(digest)
        for level, index, digest in postgres_server.execute(
            db, 'SELECT level, "index", hash FROM ledger_nodes'
        )
    }
    leaves = [bytes(leaf) for _, leaf, _ in before]
    size = len(leaves)
    assert set(nodes) == {
        (level, index) for level in range(size.bit_length()) for index in range(size >> level)
    }
    assert nodes[(4, 0)] == merkle.root(leaves[:16])

    result = initialise(pg_settings)
    assert (result.schema_before, result.schema_after) == ("0004", SCHEMA_HEAD)
    after = postgres_server.execute(
        db, "SELECT seq, leaf_hash, nodes FROM ledger_entries ORDER BY seq"
    )
    assert after[:size] == before
    app = App(pg_settings)
    try:
        assert ledger_svc.verify_catalog(app).ok
        for seq in range(len(after)):
            assert ledger_svc.inclusion_proof(app, seq).seq == seq
    finally:
        app.close()


# -- units of work ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_first", [True, False])
def test_a_change_and_its_event_commit_or_roll_back_together(
    pg_app: App, event_first: bool
) -> None:
    before = _state(pg_app)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), pg_app.change() as change:
        if event_first:
            change.record("source.added", "source:s1")
        change.uow.sources.add(_source("s1"))
        if not event_first:
            change.record("source.added", "source:s1")
        raise Boom
    assert _state(pg_app) == before
    with pg_app.change() as change:
        if event_first:
            change.record("source.added", "source:s1")
        change.uow.sources.add(_source("s1"))
        if not event_first:
            change.record("source.added", "source:s1")
    size, names, checkpoints = before
    assert _state(pg_app) == (size + 1, [*names, "s1"], checkpoints + 1)
    assert ledger_svc.verify_catalog(pg_app).ok


def test_a_driver_error_is_a_catalog_error_and_the_connection_recovers(pg_app: App) -> None:
    before = _state(pg_app)
    with pytest.raises(CatalogError) as caught, pg_app.catalog.unit_of_work() as uow:
        uow.ledger.append(
            seq=0, time="t", actor="a", action="x", subject="s", entry=b"{}", leaf_hash=b"0" * 32
        )  # seq 0 exists: the primary key refuses it
    assert "could not write the catalog" in caught.value.message
    assert "duplicate key" in caught.value.message
    assert _state(pg_app) == before
    with pg_app.change() as change:  # the pooled connection is usable afterwards
        change.record("test.after", "s")
    assert _state(pg_app)[0] == before[0] + 1


def test_an_unreachable_server_is_a_catalog_error_with_a_hint(tmp_path: Path) -> None:
    from affidavit.scratch.base import free_port

    catalog = Catalog(f"postgresql+psycopg://affidavit@127.0.0.1:{free_port()}/affidavit")
    try:
        with pytest.raises(CatalogError) as caught:
            catalog.schema_state()
        assert "could not read the catalog's schema version" in caught.value.message
        assert caught.value.hint is not None and "reachable" in caught.value.hint
        with pytest.raises(CatalogError) as caught, catalog.unit_of_work():
            pass
        assert "could not write the catalog" in caught.value.message
        assert caught.value.hint is not None and "reachable" in caught.value.hint
    finally:
        catalog.close()


def test_timestamps_come_back_in_utc_whatever_the_servers_time_zone(
    postgres_server: PostgresScratch, postgres_url: str, tmp_path: Path
) -> None:
    db = _database(postgres_url)
    postgres_server.execute("postgres", f"ALTER DATABASE {db} SET timezone TO 'Asia/Kathmandu'")
    settings = load_settings(
        home=tmp_path / "home",
        environ={"AFFIDAVIT_CATALOG_URL": postgres_url, "AFFIDAVIT_ACTOR": "t@example.com"},
    )
    initialise(settings)
    created = datetime(2026, 3, 1, 23, 30, 5, 123456, tzinfo=UTC)
    app = App(settings)
    try:
        with app.change() as change:
            change.uow.sources.add(_source("s1", created))
            change.record("source.added", "source:s1")
        with app.read() as uow:
            stored = uow.sources.get("s1").created_at
    finally:
        app.close()
    assert stored == created
    assert stored.utcoffset() is not None and stored.utcoffset().total_seconds() == 0
    assert stored.isoformat() == "2026-03-01T23:30:05.123456+00:00"


# -- writers at the same time -----------------------------------------------------------------


def test_two_apps_in_threads_append_to_one_dense_ledger(
    pg_settings: Settings, postgres_server: PostgresScratch, postgres_url: str
) -> None:
    first = len(_seqs(postgres_server, postgres_url))
    per_writer = 15
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(name: str) -> None:
        app = App(pg_settings)  # one App per writer, as two commands would have
        try:
            start.wait()
            for i in range(per_writer):
                with app.change() as change:
                    change.record("test.concurrent", f"{name}:{i}", {"writer": name, "i": i})
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)
        finally:
            app.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    seqs = _seqs(postgres_server, postgres_url)
    assert seqs == list(range(first + 2 * per_writer))
    app = App(pg_settings)
    try:
        report = ledger_svc.verify_catalog(app)
        assert report.ok, report.findings
        with app.read() as uow:
            mine = [
                json.loads(e.entry)["subject"] for e in uow.ledger.find(action="test.concurrent")
            ]
            assert len(uow.ledger.checkpoints()) >= 2 * per_writer
    finally:
        app.close()
    for name in ("a", "b"):  # each writer's events in its own order
        assert [s for s in mine if s.startswith(name)] == [f"{name}:{i}" for i in range(15)]


_WRITER = """
import pathlib, sys
from affidavit.config import load_settings
from affidavit.services.context import App

app = App(load_settings(home=pathlib.Path(sys.argv[1])))
print("ready", flush=True)
sys.stdin.readline()  # both writers start together
for i in range(int(sys.argv[3])):
    with app.change() as change:
        change.record("test.concurrent", f"{sys.argv[2]}:{i}", {"i": i})
app.close()
"""


def test_two_processes_append_to_one_dense_ledger(
    pg_settings: Settings, postgres_server: PostgresScratch, postgres_url: str
) -> None:
    first = len(_seqs(postgres_server, postgres_url))
    per_writer = 15
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")},
        "AFFIDAVIT_CATALOG_URL": postgres_url,
        "AFFIDAVIT_ACTOR": "t@example.com",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(pg_settings.home), name, str(per_writer)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        for name in ("p", "q")
    ]
    try:
        for proc in procs:  # both have imported everything before either writes
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
    assert _seqs(postgres_server, postgres_url) == list(range(first + 2 * per_writer))
    app = App(pg_settings)
    try:
        report = ledger_svc.verify_catalog(app)
        assert report.ok, report.findings
    finally:
        app.close()


# -- attacks made with SQL --------------------------------------------------------------------


def test_an_entry_edited_with_sql_is_reported(
    pg_app: App, postgres_server: PostgresScratch, postgres_url: str
) -> None:
    for i in range(6):
        with pg_app.change() as change:
            change.record("test.event", f"thing:{i}", {"i": i, "name": f"item {i}"})
    assert ledger_svc.verify_catalog(pg_app).ok
    db = _database(postgres_url)
    ((entry,),) = postgres_server.execute(db, "SELECT entry FROM ledger_entries WHERE seq = 4")
    event = json.loads(bytes(entry))
    assert event["details"]["name"] == "item 2"
    forged = bytes(entry).replace(b'"item 2"', b'"item X"')
    postgres_server.execute(db, "UPDATE ledger_entries SET entry = %s WHERE seq = 4", (forged,))
    report = ledger_svc.verify_catalog(pg_app)
    assert not report.ok
    codes = {(f.code.value, f.seq) for f in report.findings}
    assert ("stored-leaf-mismatch", 4) in codes
    assert "root-mismatch" in {code for code, _ in codes}
    # later checkpoints do not launder it: the entry still differs from what was signed
    with pg_app.change() as change:
        change.record("test.after", "s")
    later = ledger_svc.verify_catalog(pg_app)
    assert ("stored-leaf-mismatch", 4) in {(f.code.value, f.seq) for f in later.findings}


def test_a_writer_that_waits_too_long_for_the_ledger_lock_is_told_why(
    pg_settings: Settings, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from affidavit.catalog import store

    monkeypatch.setattr(store, "_BUSY_TIMEOUT_MS", 200)
    catalog = Catalog(postgres_url)
    url = make_url(postgres_url)
    blocker = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    try:
        blocker.execute("LOCK TABLE ledger_entries IN SHARE ROW EXCLUSIVE MODE")
        with pytest.raises(CatalogError) as caught, catalog.unit_of_work() as uow:
            uow.ledger.size()
        assert caught.value.hint is not None
        assert "another affidavit process" in caught.value.hint
        with catalog.reader() as uow:  # a reader never waits for the writers' lock
            assert uow.ledger.size() == 2
    finally:
        blocker.rollback()
        blocker.close()
    with catalog.unit_of_work() as uow:  # the pooled connection is usable afterwards
        assert uow.ledger.size() == 2
    catalog.close()
