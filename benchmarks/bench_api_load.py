"""API under load (issue 15): 50 concurrent clients against ``affidavit serve`` on PostgreSQL.

    .venv/bin/python benchmarks/bench_api_load.py                 # 60 s per phase
    .venv/bin/python benchmarks/bench_api_load.py --seconds 10    # shorter phases
    .venv/bin/python benchmarks/bench_api_load.py --quick --json  # 5 s phases, JSON report

Set-up: a scratch PostgreSQL (``initdb`` + ``postgres`` in a temp folder, ``fsync=off`` as
every scratch server), a home whose catalog is that server, a scratch Redis source backed up
``--backups`` times into a folder vault, and the accounts a deployment has: an administrator,
a person ``operator`` (role operator, TOTP enrolled) and a service account ``ci-bot`` (role
operator) with an API token. ``affidavit serve`` then runs as a real process on a random
loopback port; the operator logs in through the API (password + TOTP) for a session secret.

Phases, each ``--seconds`` long (a bounded loop: no request starts after the deadline; the
ones in flight finish and count), ``--clients`` connections each with one request in flight
at all times (half send the service account's token, half the operator's session secret):

1. **reads**: every client cycles through ``GET /health`` (public: the floor, an access-log
   entry and nothing else), ``/whoami``, ``/sources``, ``/backups``, ``/backups/{id}`` and
   ``/ledger/checkpoint``;
2. **writes**: every client places legal holds, ``POST /backups/{id}/holds`` with a new case
   each time: one ``hold.added`` ledger event (with its signed checkpoint) and one hold row
   per request. Chosen over ``POST /policy/check`` because a policy check verifies the whole
   ledger each time (its cost grows with every event the run appends, so it measures
   verification, not appends) and over the MFA-gated or argon2-bound routes (role grants,
   step-up, login); an operator may place holds, the rows grow with the events and nothing
   else, and ``backup list`` of the other backups does not see them.
3. **in process**: the same service (``add_hold``) in a loop on the same PostgreSQL home, one
   thread, acting as the same service account: the named reference for the API's appends/s.
   Then, shorter (``--decompose-seconds``), what one request does to the catalog without
   HTTP: authenticate the token, run the service, record the access-log entry.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio (one connection per
client, the request bytes prepared beforehand): against the stub below, httpx.AsyncClient
with 50 requests in flight reached ~200 requests/s at ~4 ms of CPU each, which would have
measured the client, and the client shares the machine's cores with the server. Its own
cost is measured against a stub server that answers at once (``calibration``) and during
every phase (CPU of this process per request); the CPU of the server process and of the
PostgreSQL processes is reported too, and ``pg_stat_activity`` is sampled once a second
(connections in use, waiting for a lock). Every process started here is stopped by its PID
at the end, on Ctrl-C or SIGTERM as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from affidavit.config import Settings, load_settings  # noqa: E402
from affidavit.constants import EngineName  # noqa: E402
from affidavit.crypto import totp  # noqa: E402
from affidavit.models.access import Outcome  # noqa: E402
from affidavit.models.identity import AccountKind  # noqa: E402
from affidavit.models.ledger import ClientInfo  # noqa: E402
from affidavit.models.permissions import ROLES, Role  # noqa: E402
from affidavit.models.uri import ConnectionUri  # noqa: E402
from affidavit.scratch.base import free_port  # noqa: E402
from affidavit.scratch.postgres_server import PostgresScratch, find_binaries  # noqa: E402
from affidavit.scratch.redis_server import RedisScratch  # noqa: E402
from affidavit.services import access_log, identity, inventory, ledger, principals, roles  # noqa: E402
from affidavit.services import backup as backups  # noqa: E402
from affidavit.services.backends import engine_for_uri  # noqa: E402
from affidavit.services.context import open_app  # noqa: E402
from affidavit.services.setup import initialise  # noqa: E402

PASSWORD = "correct horse battery 9"
API = "/api/v1"
AGENT = "affidavit-bench-api-load"
SETUP_CLIENT = ClientInfo(address="127.0.0.1", agent="bench set-up")
READ_GOAL_P99_MS = 100.0

STUB = r"""
import asyncio, sys
BODY = b'{"status":"ok"}'
ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
          % (len(BODY), BODY))
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


# -- the HTTP client -------------------------------------------------------------------------


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


TRANSPORT_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    TimeoutError,
    HttpError,
    ValueError,
)
"""What a request can fail with before an answer (counted as errors by exception name)."""


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send ``request``; return the status, the body and whether the server closes."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP answer: {lines[0][:80]!r}")
        status = int(parts[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            body = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
            return status, bytes(body), close
        if length is None:
            return status, await self.reader.read(), True
        return status, await self.reader.readexactly(length), close

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def request_bytes(method: str, path: str, port: int, secret: str | None, body: Any = None) -> bytes:
    """The bytes of one request (keep-alive, JSON body when given)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"User-Agent: {AGENT}"]
    if secret is not None:
        lines.append(f"Authorization: Bearer {secret}")
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class RouteStats:
    """What one route (or the whole phase) got."""

    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: RouteStats) -> None:
        self.latencies_ns += other.latencies_ns
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies_ns)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] / 1e6

        return {
            "requests": len(ordered),
            "per_second": len(ordered) / seconds if seconds else 0.0,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": ordered[-1] / 1e6 if ordered else None,
            "mean_ms": statistics.fmean(ordered) / 1e6 if ordered else None,
            "errors": sum(self.errors.values()),
            "errors_by_status": dict(sorted(self.errors.items())),
        }


Plan = Callable[[int, int], tuple[str, bytes, int]]
"""(client index, iteration) -> (route label, request bytes, expected status)."""


@dataclass
class PhaseResult:
    routes: dict[str, RouteStats]
    seconds: float
    inflight_mean: float
    client_cpu_s: float
    server_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    busy_cores: float | None = None
    pg_samples: list[dict[str, int]] = field(default_factory=list)

    def total(self) -> RouteStats:
        out = RouteStats()
        for stats in self.routes.values():
            out.add(stats)
        return out

    def to_json(self) -> dict[str, Any]:
        total = self.total()
        done = len(total.latencies_ns)
        pg = {}
        if self.pg_samples:
            keys = sorted({k for s in self.pg_samples for k in s})
            pg = {k: statistics.fmean(s.get(k, 0) for s in self.pg_samples) for k in keys}
        return {
            "seconds": self.seconds,
            "inflight_mean": self.inflight_mean,
            "routes": {name: s.summary(self.seconds) for name, s in self.routes.items()},
            "total": total.summary(self.seconds),
            "cpu": {
                "client_s": self.client_cpu_s,
                "client_us_per_request": 1e6 * self.client_cpu_s / done if done else None,
                "server_s": self.server_cpu_s,
                "server_us_per_request": (
                    1e6 * self.server_cpu_s / done if done and self.server_cpu_s else None
                ),
                "postgres_s": self.postgres_cpu_s,
                "machine_busy_cores": self.busy_cores,
            },
            "pg_stat_activity_mean": pg,
        }


def _children_ticks(parent: int) -> dict[int, int]:
    """Ticks of ``parent`` and of its children (PostgreSQL's backends), by pid."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == parent or int(fields[1]) == parent:
            out[int(entry.name)] = int(fields[11]) + int(fields[12])
    return out


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuWatch:
    """CPU used by this process, the server and PostgreSQL between start and stop."""

    def __init__(self, server_pid: int | None, postgres_pid: int | None) -> None:
        self.server_pid, self.postgres_pid = server_pid, postgres_pid
        self.hz = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuWatch:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._self = usage.ru_utime + usage.ru_stime
        self._server = _children_ticks(self.server_pid) if self.server_pid else None
        self._pg = _children_ticks(self.postgres_pid) if self.postgres_pid else {}
        self._machine = _machine_busy()
        return self

    def __exit__(self, *_: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client_s = usage.ru_utime + usage.ru_stime - self._self
        self.server_s = None
        if self.server_pid and self._server is not None:  # the server and its workers
            now = _children_ticks(self.server_pid)
            self.server_s = sum(t - self._server.get(p, 0) for p, t in now.items()) / self.hz
        self.postgres_s = None
        if self.postgres_pid:
            after = _children_ticks(self.postgres_pid)
            self.postgres_s = sum(t - self._pg.get(p, 0) for p, t in after.items()) / self.hz
        busy, total = _machine_busy()
        spent = total - self._machine[1]
        self.busy_cores = (busy - self._machine[0]) / spent * (os.cpu_count() or 1) if spent else 0


class PgSampler:
    """Samples ``pg_stat_activity`` over one connection of its own (left out of the counts):
    the catalog's connections in all, running, waiting for a lock, idle in a transaction."""

    def __init__(self, postgres: PostgresScratch) -> None:
        import psycopg

        self.conn = psycopg.connect(
            host="127.0.0.1",
            port=postgres.port,
            user="affidavit",
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def sample(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT state, wait_event_type, count(*) FROM pg_stat_activity "
            "WHERE datname = 'affidavit' AND pid <> pg_backend_pid() GROUP BY 1, 2"
        ).fetchall()
        out = Counter[str]()
        for state, wait, count in rows:
            out["connections"] += count
            if state == "active":
                out["active"] += count
                if wait == "Lock":
                    out["waiting_for_lock"] += count
            elif state and state.startswith("idle in transaction"):
                out["idle_in_transaction"] += count
        return dict(out)

    def close(self) -> None:
        self.conn.close()


async def run_phase(
    port: int,
    plan: Plan,
    *,
    clients: int,
    seconds: float,
    timeout: float,
    postgres: PostgresScratch | None = None,
    rate: float | None = None,
) -> tuple[dict[str, RouteStats], float, float, list[dict[str, int]]]:
    """``clients`` connections, each with one request in flight until ``seconds`` have passed;
    return the stats by route, the elapsed time (until the last answer), the mean number of
    requests in flight and the pg_stat_activity samples. With ``rate``, each client sends on
    a schedule of ``rate`` requests a second (open loop, wrk2-style) instead of at once, and a
    latency counts from the moment its request was due, so that a server falling behind the
    schedule is charged for the wait (no coordinated omission)."""
    connections: list[Connection | None] = [await Connection.open(port) for _ in range(clients)]
    stats: dict[str, RouteStats] = {}
    inflight = 0
    levels: list[int] = []
    samples: list[dict[str, int]] = []
    sampler = PgSampler(postgres) if postgres is not None else None
    start = time.perf_counter()
    deadline = start + seconds

    async def client(index: int) -> None:
        nonlocal inflight
        iteration = 0
        offset = index / (clients * rate) if rate else 0.0  # spread the clients' schedules
        while time.perf_counter() < deadline:
            due = start + offset + iteration / rate if rate else None
            if due is not None:
                if due >= deadline:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            label, data, expected = plan(index, iteration)
            iteration += 1
            route = stats.setdefault(label, RouteStats())
            inflight += 1
            began = time.perf_counter_ns()
            if due is not None:  # charged from when it was due
                began -= int(max(0.0, time.perf_counter() - due) * 1e9)
            try:
                conn = connections[index]
                if conn is None:
                    conn = connections[index] = await Connection.open(port)
                status, _, close = await asyncio.wait_for(conn.exchange(data), timeout)
            except TRANSPORT_ERRORS as exc:
                inflight -= 1
                route.errors[type(exc).__name__] += 1
                broken = connections[index]
                if broken is not None:
                    broken.close()
                    connections[index] = None
                continue
            inflight -= 1
            route.latencies_ns.append(time.perf_counter_ns() - began)
            route.statuses[str(status)] += 1
            if status != expected:
                route.errors[str(status)] += 1
            if close:
                conn.close()
                connections[index] = None

    async def watch() -> None:
        next_pg = time.perf_counter() + 0.5
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            levels.append(inflight)
            if sampler is not None and time.perf_counter() >= next_pg:
                next_pg += 1.0
                with contextlib.suppress(Exception):
                    samples.append(await asyncio.to_thread(sampler.sample))

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    await watcher
    if sampler is not None:
        sampler.close()
    for conn in connections:
        if conn is not None:
            conn.close()
    return stats, elapsed, statistics.fmean(levels) if levels else 0.0, samples


def measure(
    port: int,
    plan: Plan,
    *,
    clients: int,
    seconds: float,
    timeout: float,
    server_pid: int | None = None,
    postgres: PostgresScratch | None = None,
    rate: float | None = None,
) -> PhaseResult:
    """One phase with the CPU of every side measured."""
    with CpuWatch(server_pid, postgres.pid if postgres else None) as cpu:
        routes, elapsed, level, samples = asyncio.run(
            run_phase(
                port,
                plan,
                clients=clients,
                seconds=seconds,
                timeout=timeout,
                postgres=postgres,
                rate=rate,
            )
        )
    # the sampler's own backend is a PostgreSQL process too: its queries (1 Hz) count in it
    return PhaseResult(
        routes=routes,
        seconds=elapsed,
        inflight_mean=level,
        client_cpu_s=cpu.client_s,
        server_cpu_s=cpu.server_s,
        postgres_cpu_s=cpu.postgres_s,
        busy_cores=cpu.busy_cores,
        pg_samples=samples,
    )


# -- processes ---------------------------------------------------------------------------------


def stop_pid(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM to the process by its PID, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def stub_server() -> Iterator[int]:
    """A server that answers every request at once with a small JSON (its port)."""
    process = subprocess.Popen(
        [sys.executable, "-c", STUB], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        stop_pid(process, grace=5)


@contextlib.contextmanager
def serving(
    home: Path, env: dict[str, str], log: Path, workers: int = 1
) -> Iterator[tuple[int, int]]:
    """``affidavit serve --workers N`` on a random loopback port until the block ends:
    (port, pid of the server, the workers' parent when N > 1)."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "affidavit", "--home", str(home), "serve", "--port", str(port),
             "--workers", str(workers)],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"affidavit serve exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(Exception):
                status, _ = asyncio.run(
                    _once(port, request_bytes("GET", f"{API}/health", port, None))
                )
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"affidavit serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port, process.pid
    finally:
        stop_pid(process)


async def _once(port: int, request: bytes) -> tuple[int, bytes]:
    conn = await Connection.open(port)
    try:
        status, body, _ = await conn.exchange(request)
    finally:
        conn.close()
    return status, body


def call(port: int, method: str, path: str, secret: str | None, body: Any = None) -> Any:
    """One request; its JSON answer (SystemExit on an unexpected status)."""
    status, answer = asyncio.run(_once(port, request_bytes(method, path, port, secret, body)))
    if status >= 300:
        raise SystemExit(f"{method} {path}: {status} {answer[:300]!r}")
    return json.loads(answer)


# -- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    env: dict[str, str]
    token: str
    operator_totp: str
    backup_ids: list[str]
    hold_target: str


def make_world(root: Path, postgres: PostgresScratch, redis: RedisScratch, count: int) -> World:
    """The home on PostgreSQL, a Redis source with ``count`` backups, and the accounts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env |= {"AFFIDAVIT_CATALOG_URL": postgres.url, "AFFIDAVIT_ACTOR": "bench@example.com"}
    home = root / "home"
    settings = load_settings(home=home, environ=env)
    initialise(settings)
    uri = ConnectionUri.parse(EngineName.REDIS, redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=2, scale=1)
    from affidavit.cli.main import main as cli

    base = ["--home", str(home), "--catalog-url", postgres.url]
    for argv in (
        ["source", "add", "cache", "--engine", "redis", "--uri", redis.uri,
         "--classification", "internal"],
        ["vault", "add", "v1", "--url", f"file://{root / 'vault'}"],
    ):  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the --json report
            exit_code = cli([*base, *argv])
        if exit_code != 0:
            raise SystemExit(f"affidavit {' '.join(argv[:2])} failed")
    at = datetime.now(UTC) - timedelta(minutes=10)  # codes used later are newer than these
    ids: list[str] = []
    with open_app(settings) as app:
        for _ in range(count + 1):
            ids.append(backups.run_backup(app, "cache").id)
        secrets = {}

        def enrol(name: str) -> None:
            first = identity.login(app, name, PASSWORD, client=SETUP_CLIENT, now=at)
            enrolment = identity.begin_totp(app, first.principal, name, now=at)
            code = totp.code_at(enrolment.secret, at)
            identity.confirm_totp(app, first.principal, name, code, now=at)
            identity.logout(app, first.principal, now=at)
            secrets[name] = enrolment.secret

        identity.bootstrap_admin(app, principals.local_principal(app), "admin", PASSWORD, now=at)
        enrol("admin")
        later = at + timedelta(seconds=30)
        code = totp.code_at(secrets["admin"], later)
        admin = identity.login(
            app, "admin", PASSWORD, code, client=SETUP_CLIENT, now=later
        ).principal
        identity.create_account(app, admin, "operator", password=PASSWORD, now=later)
        roles.grant_role(app, admin, "operator", Role.OPERATOR, now=later)
        enrol("operator")
        identity.create_account(app, admin, "ci-bot", kind=AccountKind.SERVICE, now=later)
        roles.grant_role(app, admin, "ci-bot", Role.OPERATOR, now=later)
        issued = identity.create_token(
            app, admin, "ci-bot", ROLES[Role.OPERATOR], timedelta(days=1), now=later
        )
        identity.logout(app, admin, now=later)
    # the last backup takes the holds: the read phase's `backup list` never sees them grow
    return World(
        settings=settings,
        env=env,
        token=issued.secret,
        operator_totp=secrets["operator"],
        backup_ids=ids[:-1],
        hold_target=ids[-1],
    )


# -- the phases --------------------------------------------------------------------------------


def read_plan(port: int, secrets: list[str], backup_id: str) -> Plan:
    """Every client cycles through the read routes, starting at its own offset."""
    routes = [
        ("GET /health", f"{API}/health", False),
        ("GET /whoami", f"{API}/whoami", True),
        ("GET /sources", f"{API}/sources", True),
        ("GET /backups", f"{API}/backups", True),
        ("GET /backups/{id}", f"{API}/backups/{backup_id}", True),
        ("GET /ledger/checkpoint", f"{API}/ledger/checkpoint", True),
    ]
    prepared = [
        [(label, request_bytes("GET", path, port, secret if auth else None), 200)
         for label, path, auth in routes]
        for secret in secrets
    ]  # fmt: skip

    def plan(client: int, iteration: int) -> tuple[str, bytes, int]:
        table = prepared[client % len(secrets)]
        return table[(client + iteration) % len(table)]

    return plan


def hold_plan(port: int, secrets: list[str], backup_id: str, tag: str) -> Plan:
    """Every request places a new hold (its own case) on ``backup_id``."""
    path = f"{API}/backups/{backup_id}/holds"

    def plan(client: int, iteration: int) -> tuple[str, bytes, int]:
        body = {"case": f"{tag}-{client}-{iteration}", "reason": "load test"}
        secret = secrets[client % len(secrets)]
        return "POST /backups/{id}/holds", request_bytes("POST", path, port, secret, body), 201

    return plan


def in_process(world: World, seconds: float, *, whole_request: bool) -> dict[str, Any]:
    """``add_hold`` in a loop in this process on the same home, acting as the service
    account (``whole_request``: also authenticate the token and record the access entry, as
    a request does, without HTTP)."""
    count, latencies = 0, []
    with open_app(world.settings, client=ClientInfo(agent=f"api {AGENT}")) as app:
        principal = identity.authenticate(app, world.token)
        client = ClientInfo(address="127.0.0.1", agent=f"api {AGENT}")
        tag = "inproc-full" if whole_request else "inproc"
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            began = time.perf_counter_ns()
            stamp = datetime.now(UTC)
            if whole_request:
                principal = identity.authenticate(app, world.token)
            with app.acting_as(principal, client=client):
                backups.add_hold(
                    app, world.hold_target, case_id=f"{tag}-{count}", reason="load test"
                )
            if whole_request:
                entry = access_log.request_entry(
                    started=stamp,
                    identity=principal.name,
                    auth_method=principal.method.value,
                    method="POST",
                    route=f"{API}/backups/{{backup_id}}/holds",
                    outcome=Outcome.ALLOWED,
                    client_ip="127.0.0.1",
                    user_agent=AGENT,
                    subject=f"backup:{world.hold_target}",
                    status=201,
                    latency_us=(time.perf_counter_ns() - began) // 1000,
                )
                access_log.record(app, [entry])
            latencies.append(time.perf_counter_ns() - began)
            count += 1
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "appends": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))] / 1e6,
    }


def final_checks(world: World, postgres: PostgresScratch) -> dict[str, Any]:
    """The ledger and the access log after the run: both verify, and the counts add up."""
    with open_app(world.settings) as app:
        report = ledger.verify_catalog(app)
        logged = access_log.verify(app)
        holds = len(backups.list_holds(app, world.hold_target))
        sources = len(inventory.list_sources(app))
    (events,) = postgres.execute(
        "affidavit", "SELECT count(*) FROM ledger_entries WHERE action = 'hold.added'"
    )
    return {
        "ledger_verifies": report.ok,
        "ledger_size": report.size,
        "hold_added_events": int(events[0]),
        "holds_on_target": holds,
        "access_log_verifies": logged.ok,
        "access_log_size": logged.size,
        "sources": sources,
    }


# -- report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def print_phase(name: str, phase: dict[str, Any]) -> None:
    print(
        f"\n{name}: {phase['seconds']:.1f} s, {phase['inflight_mean']:.1f} requests in flight "
        "on average"
    )
    print(
        f"  {'route':<26} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}  errors"
    )
    rows = [*phase["routes"].items(), ("all", phase["total"])]
    for label, s in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors_by_status"].items()) or "0"
        print(
            f"  {label:<26} {s['requests']:>9,} {s['per_second']:>8,.1f} {_ms(s['p50_ms']):>8} "
            f"{_ms(s['p90_ms']):>8} {_ms(s['p99_ms']):>8} {_ms(s['max_ms']):>8}  {errors}"
        )
    cpu = phase["cpu"]
    parts = [f"client {cpu['client_s']:.1f} s ({_ms(cpu['client_us_per_request'])} us/request)"]
    if cpu["server_s"] is not None:
        parts.append(
            f"server {cpu['server_s']:.1f} s ({cpu['server_us_per_request']:,.0f} us/request)"
        )
    if cpu["postgres_s"] is not None:
        parts.append(f"postgres {cpu['postgres_s']:.1f} s")
    if cpu["machine_busy_cores"] is not None:
        parts.append(f"machine {cpu['machine_busy_cores']:.2f} of {os.cpu_count()} cores busy")
    print("  CPU: " + "; ".join(parts))
    if phase["pg_stat_activity_mean"]:
        pg = phase["pg_stat_activity_mean"]
        print(
            "  catalog connections (mean of 1 s samples): "
            + ", ".join(f"{k} {v:.1f}" for k, v in pg.items())
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="per phase (default 60)")
    parser.add_argument("--quick", action="store_true", help="5 s phases (a smoke run)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--backups", type=int, default=10, help="backups listed by reads")
    parser.add_argument(
        "--server-workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="affidavit serve --workers (default: the cores available)",
    )
    parser.add_argument(
        "--decompose-seconds", type=float, default=None, help="in-process request (default 20)"
    )
    parser.add_argument("--calibrate-seconds", type=float, default=None, help="default 5")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument(
        "--paced",
        default="2,4,6",
        help="also read at these rates per client (requests/s, comma-separated; open loop, "
        "latency from when each request was due): p99 below saturation; '' for none",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    decompose = args.decompose_seconds or min(seconds, 5.0 if args.quick else 20.0)
    calibrate = args.calibrate_seconds or min(seconds, 5.0)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    if find_binaries() is None:
        raise SystemExit("PostgreSQL is not installed (make setup installs it)")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
            "note": f"the client, affidavit serve and PostgreSQL share these {os.cpu_count()} "
            "CPUs; the client's own CPU is given per phase",
        },
        "clients": args.clients,
        "seconds_per_phase": seconds,
    }
    say(
        f"API under load: {args.clients} clients, {seconds:g} s per phase; {os.cpu_count()} "
        "CPUs shared by the client, the server and PostgreSQL"
    )
    say(f"  load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    with stub_server() as stub:
        plan = read_plan(stub, ["x"], "x")
        calib = measure(stub, plan, clients=args.clients, seconds=calibrate, timeout=args.timeout)
    total = calib.total()
    report["calibration"] = {
        "seconds": calib.seconds,
        "requests_per_second": len(total.latencies_ns) / calib.seconds,
        "client_us_per_request": 1e6 * calib.client_cpu_s / max(1, len(total.latencies_ns)),
        "p99_ms": total.summary(calib.seconds)["p99_ms"],
        "inflight_mean": calib.inflight_mean,
    }
    c = report["calibration"]
    say(
        f"  client against a stub that answers at once: {c['requests_per_second']:,.0f} req/s, "
        f"{c['client_us_per_request']:.0f} us of client CPU per request, p99 "
        f"{c['p99_ms']:.1f} ms, {c['inflight_mean']:.1f} in flight"
    )

    root = Path(tempfile.mkdtemp(prefix="bench-api-load-", dir=args.dir))
    postgres = redis = None
    try:
        postgres = PostgresScratch().start()
        redis = RedisScratch(replica_sync_delay=0).start()
        say(
            f"  PostgreSQL {postgres.bin_dir.parent.name} on port {postgres.port} (fsync=off, "
            f"as every scratch server); setting up {args.backups} backups and the accounts"
        )
        began = time.perf_counter()
        world = make_world(root, postgres, redis, args.backups)
        say(f"  set-up took {time.perf_counter() - began:.1f} s")
        redis.stop()
        redis = None
        with serving(world.settings.home, world.env, root / "serve.log", args.server_workers) as (
            port,
            pid,
        ):
            code = totp.code_at(world.operator_totp, datetime.now(UTC))
            body = {"name": "operator", "password": PASSWORD, "totp": code}
            login = call(port, "POST", f"{API}/auth/login", None, body)
            secrets = [world.token, login["secret"]]
            for secret in secrets:  # both credentials work and may read and hold
                call(port, "GET", f"{API}/whoami", secret)
            say(f"\n  phase 1/3: reads ({seconds:g} s) ...")
            phase = functools.partial(
                measure,
                port,
                clients=args.clients,
                seconds=seconds,
                timeout=args.timeout,
                server_pid=pid,
                postgres=postgres,
            )
            reads = phase(read_plan(port, secrets, world.backup_ids[0]))
            paced: dict[str, PhaseResult] = {}
            for rate in [float(r) for r in args.paced.split(",") if r.strip()]:
                say(
                    f"  phase 1b: reads paced at {rate:g}/s per client "
                    f"({rate * args.clients:g}/s offered, {seconds:g} s) ..."
                )
                paced[f"{rate:g}"] = phase(read_plan(port, secrets, world.backup_ids[0]), rate=rate)
            say(f"  phase 2/3: writes ({seconds:g} s) ...")
            writes = phase(hold_plan(port, secrets, world.hold_target, "api"))
        logged = (root / "serve.log").read_text(errors="replace").splitlines()
        report["server_log_errors"] = sum("ERROR" in line or "Traceback" in line for line in logged)
        say(f"  phase 3/3: in process ({seconds:g} s + {decompose:g} s) ...")
        inproc = in_process(world, seconds, whole_request=False)
        inproc_full = in_process(world, decompose, whole_request=True)
        checks = final_checks(world, postgres)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    report["reads"] = reads.to_json()
    report["paced_reads"] = {
        rate: {"offered_per_second": float(rate) * args.clients, **result.to_json()}
        for rate, result in paced.items()
    }
    report["writes"] = writes.to_json()
    report["in_process"] = inproc
    report["in_process_whole_request"] = inproc_full
    api_rate = report["writes"]["total"]["per_second"]
    report["ledger_appends"] = {
        "api_per_second": api_rate,
        "in_process_per_second": inproc["per_second"],
        "ratio_api_to_in_process": api_rate / inproc["per_second"],
        "in_process_whole_request_per_second": inproc_full["per_second"],
    }
    worst_p99 = max((v["p99_ms"] or 0.0) for v in report["reads"]["routes"].values())
    report["goals"] = {
        "zero_errors": report["reads"]["total"]["errors"] == 0
        and report["writes"]["total"]["errors"] == 0,
        "read_p99_under_100_ms": worst_p99 < READ_GOAL_P99_MS,
        "worst_read_p99_ms": worst_p99,
    }
    report["checks"] = checks
    report["machine"]["load_after"] = os.getloadavg()

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_phase("reads", report["reads"])
        for rate, result in report["paced_reads"].items():
            t = result["total"]
            print(
                f"\nreads paced at {rate}/s per client ({result['offered_per_second']:g}/s "
                f"offered by {args.clients} clients): {t['per_second']:,.1f} req/s served, "
                f"p50 {_ms(t['p50_ms'])} / p90 {_ms(t['p90_ms'])} / p99 {_ms(t['p99_ms'])} / "
                f"max {_ms(t['max_ms'])} ms, errors {t['errors']} (latency from when due)"
            )
        print_phase("writes (each request appends one ledger event)", report["writes"])
        a = report["ledger_appends"]
        print(
            f"\nledger appends: API {a['api_per_second']:,.1f}/s with {args.clients} clients; "
            f"in process (add_hold in a loop, one thread) {a['in_process_per_second']:,.1f}/s "
            f"(p50 {inproc['p50_ms']:.2f} ms); ratio API / in process "
            f"{a['ratio_api_to_in_process']:.3f}"
        )
        print(
            f"  in process with the request's catalog work (authenticate + add_hold + "
            f"access-log entry): {inproc_full['per_second']:,.1f}/s "
            f"(p50 {inproc_full['p50_ms']:.2f} ms)"
        )
        g = report["goals"]
        print(
            f"\ngoals: zero errors {'met' if g['zero_errors'] else 'MISSED'}; read p99 < "
            f"{READ_GOAL_P99_MS:.0f} ms {'met' if g['read_p99_under_100_ms'] else 'MISSED'} "
            f"(worst route p99 {g['worst_read_p99_ms']:,.1f} ms)"
        )
        print(f"checks: {json.dumps(checks)}")
        print(
            f"machine: {os.cpu_count()} CPUs shared by the client, the server and PostgreSQL; "
            f"load average after {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
        )
    ok = checks["ledger_verifies"] and checks["access_log_verifies"]
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: the server, PostgreSQL and Redis were stopped", file=sys.stderr)
        sys.exit(130)
