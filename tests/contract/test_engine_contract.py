"""One suite over every engine implementation, each against its real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from affidavit.constants import EngineName
from affidavit.engines.base import Engine
from affidavit.errors import EngineError, InputError, NotFound
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.base import ScratchServer, free_port
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.backends import (
    engine_class,
    engine_for_uri,
    format_engine,
    restore_layout,
    scratch_class,
)
from affidavit.services.fingerprint import fingerprint_records

pytestmark = pytest.mark.integration

SAMPLE = {EngineName.MONGODB: SecantusScratch, EngineName.REDIS: RedisScratch}
UNKNOWN = {EngineName.MONGODB: "shop.nope", EngineName.REDIS: "db99"}
MALFORMED = {EngineName.MONGODB: "nodot", EngineName.REDIS: "keys"}
DEAD = {
    EngineName.MONGODB: "mongodb://127.0.0.1:{port}/?directConnection=true",
    EngineName.REDIS: "redis://127.0.0.1:{port}/0",
}


@pytest.fixture(scope="module", params=list(EngineName), ids=lambda e: e.value)
def seeded(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[EngineName, ScratchServer, dict[str, int]]]:
    engine_name: EngineName = request.param
    with SAMPLE[engine_name]() as server:
        with connect(engine_name, server.uri) as engine:
            written = dict(engine.seed_sample(seed=7, scale=25))
        yield engine_name, server, written


def connect(engine: EngineName, uri: str, timeout: float = 5.0) -> Engine:
    return engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None, timeout=timeout)


def test_describe_reports_version_and_settings(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]],
) -> None:
    name, server, _ = seeded
    with connect(name, server.uri) as engine:
        desc = engine.describe()
    assert desc.engine is name
    assert desc.version[0].isdigit()
    assert desc.tls is False
    assert isinstance(dict(desc.settings), dict) and desc.settings


def test_lists_and_counts_exactly_what_was_written(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]],
) -> None:
    name, server, written = seeded
    with connect(name, server.uri) as engine:
        assert engine.list_datasets() == sorted(written)
        counts = {c.name: c.records for c in engine.count_all()}
        # a quiet server's estimate (for progress bars) is the count
        estimates = {d: engine.estimate_records(d) for d in written}
    assert counts == written
    assert estimates == written


@pytest.mark.parametrize("how", ["count_records", "estimate_records", "iter_records"])
def test_unknown_dataset_is_not_found(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]], how: str
) -> None:
    name, server, _ = seeded
    with connect(name, server.uri) as engine, pytest.raises(NotFound) as caught:
        result = getattr(engine, how)(UNKNOWN[name])
        if how == "iter_records":
            next(iter(result), None)  # a generator raises on its first step
    assert caught.value.hint


@pytest.mark.parametrize("how", ["count_records", "estimate_records"])
def test_malformed_dataset_name_is_bad_input(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]], how: str
) -> None:
    name, server, _ = seeded
    with connect(name, server.uri) as engine, pytest.raises(InputError):
        getattr(engine, how)(MALFORMED[name])


def test_seeding_refuses_a_non_empty_target(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]],
) -> None:
    name, server, _ = seeded
    with connect(name, server.uri) as engine, pytest.raises(InputError, match="already holds"):
        engine.seed_sample(seed=7, scale=1)


@pytest.mark.parametrize("engine_name", list(EngineName), ids=lambda e: e.value)
def test_unreachable_server_fails_fast_with_engine_error(engine_name: EngineName) -> None:
    uri = DEAD[engine_name].format(port=free_port())
    started = time.monotonic()
    with connect(engine_name, uri, timeout=0.5) as engine, pytest.raises(EngineError) as caught:
        engine.describe()
    assert int(caught.value.exit_code) == 3
    assert time.monotonic() - started < 30  # bounded by the timeout, not hanging
    assert caught.value.hint


@pytest.mark.parametrize("engine_name", list(EngineName), ids=lambda e: e.value)
def test_server_that_dies_mid_session_is_an_engine_error(engine_name: EngineName) -> None:
    server = SAMPLE[engine_name]().start()
    try:
        with connect(engine_name, server.uri, timeout=1.0) as engine:
            engine.describe()
            server.stop()
            with pytest.raises(EngineError):
                engine.list_datasets()
    finally:
        server.stop()


# -- the typed capabilities (engines/base.py) ---------------------------------------------------


@pytest.mark.parametrize("engine_name", list(EngineName), ids=lambda e: e.value)
def test_capabilities_are_declared_and_registered(engine_name: EngineName) -> None:
    cls = engine_class(engine_name)
    assert cls.name is engine_name
    assert isinstance(cls.record_encoding, RecordEncoding)
    assert format_engine(cls.backup_format) is engine_name  # a registered format of its data
    if cls.snapshot_format is not None:
        assert format_engine(cls.snapshot_format) is engine_name
    assert 0 < cls.default_port < 65536
    scratch = scratch_class(engine_name)
    assert scratch.label.startswith("scratch:")
    if scratch.preload_format is not None:  # it starts from a backup file of this engine's
        assert format_engine(scratch.preload_format) is engine_name
        assert restore_layout(scratch.preload_format) is not None


def _fingerprint(engine: Engine, dataset: str) -> str:
    records = engine.iter_records(dataset)
    result = fingerprint_records(records, encoding=engine.record_encoding, profile="exact")
    return result.fingerprint.text


def test_restore_writes_exactly_the_records_read_and_refuses_a_non_empty_dataset(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]],
) -> None:
    name, server, written = seeded
    dataset = sorted(written)[0]
    with (
        SAMPLE[name]() as empty,
        connect(name, server.uri) as source,
        connect(name, empty.uri) as target,
    ):
        restored = target.restore(dataset, source.iter_records(dataset), metadata=None)
        assert restored == written[dataset]
        assert target.count_records(dataset) == written[dataset]
        assert _fingerprint(target, dataset) == _fingerprint(source, dataset)
        with pytest.raises(InputError, match="already holds"):
            target.restore(dataset, source.iter_records(dataset))


def test_query_probes_answer_like_the_records_or_are_absent(
    seeded: tuple[EngineName, ScratchServer, dict[str, int]],
) -> None:
    name, server, written = seeded
    with connect(name, server.uri) as engine:
        queries = engine.query_probes()
        if queries is None:  # probes are answered from the records a drill reads back
            return
        for dataset, count in written.items():
            assert queries.count_matching(dataset, {}) == count
            first = queries.find_one_json(dataset, {})
            assert isinstance(first, dict) and first  # JSON-ready
            json.dumps(first)
        with pytest.raises(NotFound):
            queries.count_matching(UNKNOWN[name], {})
