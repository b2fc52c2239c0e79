"""What one API request's catalog work costs, operation by operation (issue 15).

    .venv/bin/python benchmarks/bench_api_ops.py                  # 400 rounds per operation
    .venv/bin/python benchmarks/bench_api_ops.py --rounds 100 --json

The same home as ``bench_api_load.py`` (a scratch PostgreSQL catalog, a Redis source backed up
``--backups`` + 1 times into a folder vault, an administrator, the person ``operator`` and the
service account ``ci-bot`` with an operator API token), then, in this process and one thread,
each operation a request runs, ``--rounds`` times after a few warm-up rounds: its wall time,
its CPU time (this process) and the SQL statements it sends (every ``execute`` of a
PostgreSQL cursor, the pool's pre-ping included; commits and rollbacks are not counted).
Operations are measured in rounds, one of each per round, so that a slow spell of a shared
machine hits them all alike; the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import psycopg  # noqa: E402

import bench_api_load as load  # noqa: E402
from affidavit.crypto import totp  # noqa: E402
from affidavit.models.access import Outcome  # noqa: E402
from affidavit.models.ledger import ClientInfo  # noqa: E402
from affidavit.scratch.postgres_server import PostgresScratch, find_binaries  # noqa: E402
from affidavit.scratch.redis_server import RedisScratch  # noqa: E402
from affidavit.services import access_log, identity, inventory, ledger  # noqa: E402
from affidavit.services import backup as backups  # noqa: E402
from affidavit.services.context import App, open_app  # noqa: E402
from affidavit.services.leases import reclaim_abandoned  # noqa: E402

_STATEMENTS = [0]


def _count_statements() -> None:
    """Count every ``execute`` of a psycopg cursor (what SQLAlchemy and the raw ledger
    statements both go through)."""
    for cls in (psycopg.Cursor, psycopg.ClientCursor):
        for name in ("execute", "executemany"):
            original = getattr(cls, name)

            def counted(self: Any, *args: Any, __original: Any = original, **kw: Any) -> Any:
                _STATEMENTS[0] += 1
                return __original(self, *args, **kw)

            setattr(cls, name, counted)


def operations(app: App, world: load.World, session: str) -> dict[str, Callable[[], object]]:
    """The operations measured, by name."""
    client = ClientInfo(address="127.0.0.1", agent=f"api {load.AGENT}")
    target = world.backup_ids[0]
    holds = iter(range(10**9))

    def empty_read() -> None:
        with app.read():
            pass

    def entry() -> access_log.RecordResult:
        return access_log.record(
            app,
            [
                access_log.request_entry(
                    started=datetime.now(UTC),
                    identity="ci-bot",
                    auth_method="token",
                    method="GET",
                    route=f"{load.API}/backups/{{backup_id}}",
                    outcome=Outcome.ALLOWED,
                    client_ip="127.0.0.1",
                    user_agent=load.AGENT,
                    subject=f"backup:{target}",
                    status=200,
                    latency_us=1000,
                )
            ],
        )

    def hold() -> object:
        principal = identity.authenticate(app, world.token)
        with app.acting_as(principal, client=client):
            return backups.add_hold(
                app, world.hold_target, case_id=f"ops-{next(holds)}", reason="bench"
            )

    return {
        "an empty read transaction": empty_read,
        "authenticate a token": lambda: identity.authenticate(app, world.token),
        "authenticate a session secret": lambda: identity.authenticate(app, session),
        "the request's access-log entry (access_log.record)": entry,
        "list_sources": lambda: inventory.list_sources(app),
        f"list_backups ({len(world.backup_ids) + 1} backups)": lambda: backups.list_backups(app),
        "get_backup": lambda: backups.get_backup(app, target),
        "reclaim_abandoned alone": lambda: reclaim_abandoned(app),
        "create_checkpoint (GET /ledger/checkpoint)": lambda: ledger.create_checkpoint(app),
        "authenticate + add_hold (a write)": hold,
    }


def measure(ops: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
    """Per operation: the medians of wall ms, CPU ms and statements over ``rounds``."""
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in ops}
    for index in range(rounds + 5):
        for name, op in ops.items():
            statements = _STATEMENTS[0]
            wall, cpu = time.perf_counter(), time.process_time()
            op()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if index >= 5:  # warm-up rounds: imports, caches, pooled connections
                samples[name].append((wall, cpu, _STATEMENTS[0] - statements))
    return {
        name: {
            "wall_ms": 1e3 * statistics.median(s[0] for s in taken),
            "cpu_ms": 1e3 * statistics.median(s[1] for s in taken),
            "cpu_ms_mean": 1e3 * statistics.fmean(s[1] for s in taken),
            "statements": statistics.median(s[2] for s in taken),
        }
        for name, taken in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400, help="per operation")
    parser.add_argument("--backups", type=int, default=10, help="backups listed")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    args = parser.parse_args()
    if find_binaries() is None:
        raise SystemExit("PostgreSQL is not installed (make setup installs it)")
    root = Path(tempfile.mkdtemp(prefix="bench-api-ops-", dir=args.dir))
    postgres = redis = None
    try:
        postgres = PostgresScratch().start()
        redis = RedisScratch(replica_sync_delay=0).start()
        world = load.make_world(root, postgres, redis, args.backups)
        redis.stop()
        redis = None
        _count_statements()
        with open_app(world.settings, client=ClientInfo(agent=f"api {load.AGENT}")) as app:
            code = totp.code_at(world.operator_totp, datetime.now(UTC))
            grant = identity.login(
                app, "operator", load.PASSWORD, code, client=ClientInfo(address="127.0.0.1")
            )
            results = measure(operations(app, world, grant.secret), args.rounds)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'operation':<52} {'wall ms':>8} {'CPU ms':>8} {'(mean)':>8} {'statements':>10}")
    for name, r in results.items():
        print(
            f"{name:<52} {r['wall_ms']:>8.3f} {r['cpu_ms']:>8.3f} {r['cpu_ms_mean']:>8.3f} "
            f"{r['statements']:>10g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
