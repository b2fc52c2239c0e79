"""Shared fixtures: real servers on 127.0.0.1 (started here, stopped by PID), a fresh
affidavit home, the CLI, and the genuine sample files under ../shared."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from affidavit.cli.main import main
from affidavit.config import Settings, load_settings
from affidavit.scratch.base import ScratchServer
from affidavit.scratch.postgres_server import PostgresScratch, find_binaries
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.context import App, open_app
from affidavit.services.setup import initialise

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def first_run_deep(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup's first verification runs deep (``verify_first_run = "deep"``), not fast on
    its writer's proof of the segment tables: for tests of the deep run and what it vouches.
    (After ``home``, which clears the caller's AFFIDAVIT_* variables.)"""
    monkeypatch.setenv("AFFIDAVIT_VERIFY_FIRST_RUN", "deep")


@pytest.fixture(scope="session")
def shared_formats() -> Path:
    """``../shared/formats`` (genuine backup files); skips when absent."""
    path = SHARED / "formats"
    if not path.is_dir():
        pytest.skip(f"{path} is not present: genuine sample files come with the shared folder")
    return path


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisScratch]:
    """A real redis-server on a random loopback port for the whole session. It answers
    ``SYNC`` at once (``replica_sync_delay=0``): Redis' default waits 5 s for more replicas,
    which every backup would sit through; ``held_redis`` and ``test_redis_rdb_stream`` keep
    servers that wait (their keep-alive newlines included)."""
    with RedisScratch(replica_sync_delay=0) as server:
        yield server


class ThrowawaySecantus(SecantusScratch):
    """A test's SecantusDB server, killed (SIGKILL to its process group) when its ``with``
    block ends: its data is thrown away then, and on SIGTERM SecantusDB waits 2 s for its
    accept thread before it exits. :meth:`stop` during a test still sends SIGTERM."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        super().__exit__(exc_type, exc, tb)


@pytest.fixture(scope="session")
def mongo_scratch_class() -> type[SecantusScratch]:
    """:class:`ThrowawaySecantus`, for a module's own server (see ``moto_scratch_class``)."""
    return ThrowawaySecantus


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[SecantusScratch]:
    """A real SecantusDB (MongoDB wire protocol) server on a random loopback port."""
    with ThrowawaySecantus() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresScratch]:
    """A real PostgreSQL server (initdb into a temp folder, as an unprivileged user when the
    tests run as root) on a random loopback port for the whole session; skips only when the
    PostgreSQL binaries are not installed."""
    if find_binaries() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; make setup adds it)")
    with PostgresScratch() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresScratch) -> Iterator[str]:
    """The catalog URL of a new, empty database of ``postgres_server``, dropped after the
    test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def fresh_redis() -> Iterator[RedisScratch]:
    """A redis-server of this test's own (for tests that write or kill it); it answers
    ``SYNC`` at once, like ``redis_server``."""
    with RedisScratch(replica_sync_delay=0) as server:
        yield server


@pytest.fixture
def fresh_mongo() -> Iterator[SecantusScratch]:
    """A SecantusDB server of this test's own."""
    with ThrowawaySecantus() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised affidavit home; AFFIDAVIT_* variables of the caller are cleared."""
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
    path = tmp_path / "home"
    initialise(load_settings(home=path))
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings of the ``home`` fixture."""
    return load_settings(home=home)


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    """An opened application on the ``home`` fixture."""
    with open_app(settings) as application:
        yield application


@dataclass
class CliResult:
    """What one CLI run printed and returned."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``affidavit --home HOME ARGS...`` in-process; returns a :class:`CliResult`."""

    def run(*args: str, home_dir: Path | None = home) -> CliResult:
        capsys.readouterr()
        argv = (["--home", str(home_dir)] if home_dir is not None else []) + list(args)
        code = main(argv)
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return run


class MotoScratch(ScratchServer):
    """``moto`` in server mode: the S3 API on 127.0.0.1 (test-only dependency)."""

    kind = "moto"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/moto-api/", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


@pytest.fixture
def moto_scratch_class() -> type[MotoScratch]:
    """The class, for a test that needs a moto server of its own (to stop it mid-test);
    importing it from ``conftest`` would pick whichever conftest module loaded first."""
    return MotoScratch


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoScratch]:
    """One moto server for the session."""
    with MotoScratch() as server:
        yield server


@pytest.fixture
def s3_env(moto_server: MotoScratch, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the AWS SDK at the moto server with dummy credentials; returns the endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.uri)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return moto_server.uri


AR_SCHEMA = SHARED / "oscal" / "schemas" / "oscal_assessment-results_schema.json"
# RFC 3986 characters (unreserved, reserved, percent-encoded); jsonschema checks the `uri` and
# `uri-reference` formats only with optional packages, so the helper checks them itself
_URI_CHARS = r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"


def validate_oscal(document: Any, schema_path: Path) -> list[str]:
    """Every way ``document`` breaks NIST's JSON schema at ``schema_path`` (empty: valid).

    NIST's patterns use ``\\p{L}``/``\\p{N}``, which :mod:`re` rejects, so the ``pattern``
    keyword runs on the ``regex`` module; ``date-time`` is checked by ``rfc3339-validator``
    and ``uri``/``uri-reference`` by a strict RFC 3986 character check.
    """
    import jsonschema
    import regex
    from jsonschema import Draft7Validator, FormatChecker
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not regex.search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    checker = FormatChecker()  # every format jsonschema can check with what is installed
    if "date-time" not in checker.checkers:
        raise RuntimeError("rfc3339-validator is missing: date-time would go unchecked")

    @checker.checks("uri")
    def _uri(instance: object) -> bool:
        return not isinstance(instance, str) or bool(
            regex.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*:" + _URI_CHARS, instance)
        )

    @checker.checks("uri-reference")
    def _uri_reference(instance: object) -> bool:
        return not isinstance(instance, str) or bool(regex.fullmatch(_URI_CHARS, instance))

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.extend(Draft7Validator, {"pattern": pattern})
    validator = validator_class(schema, format_checker=checker)
    problems = []
    for error in validator.iter_errors(document):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        problems.append(f"{where}: {error.message}")
        for sub in error.context or ():  # anyOf/oneOf: say why each branch failed
            inner = "/".join(str(p) for p in sub.absolute_path)
            problems.append(f"  {inner}: {sub.message}")
    return sorted(problems)


@pytest.fixture(scope="session")
def oscal_validator() -> Callable[[Any], list[str]]:
    """``validate_oscal`` bound to NIST's assessment-results schema; skips without it."""
    if not AR_SCHEMA.is_file():
        pytest.skip(f"{AR_SCHEMA} is not present: NIST's OSCAL schema comes with ../shared")
    return lambda document: validate_oscal(document, AR_SCHEMA)
