"""Dashboard benchmark (issue 16): the web dashboard over a large catalog, in process and over
HTTP, against the goal p95 < 300 ms, with the SQL statements per page.

    .venv/bin/python benchmarks/bench_dashboard.py              # 10,000 backups, 50,000 events
    .venv/bin/python benchmarks/bench_dashboard.py --quick      # 1,000 backups, 5,000 events
    .venv/bin/python benchmarks/bench_dashboard.py --renders 50 --keep /tmp/dash-home

The catalog (SQLite, the embedded default) is built in a few minutes:

- through the services: ``init``, 20 sources and a folder vault (``inventory.add_source`` and
  ``add_vault``), a policy proposed by one person and approved by another, the accounts
  (an administrator bootstrapped, an ``operator`` with TOTP);
- then one year of history, one write transaction per day (``App.change``: every row goes in
  with its ledger event, and the day's signed checkpoint, in the same transaction). The rows
  are **direct inserts** (SQLAlchemy core ``insert`` of many rows at once into ``backups``,
  ``backup_artifacts``, ``backup_datasets``, ``verifications``, ``drills``, ``holds`` and,
  through the repository, ``check_runs``), because running 10,000 real backups would take a
  day; the **events** are appended through the real ledger log (``Change.record``) with a
  clock set to the day being written (the log's ``clock``), and carry the details the
  services record (``backup.started`` with source, format and retention; ``backup.completed``;
  ``verification.completed``; ``drill.completed`` with restore and RTO seconds;
  ``hold.added``; ``policy.checked`` with the run id and the SHA-256 of the RFC 8785 results).
  So the ledger verifies (checked at the end: ``ledger.verify_catalog``) and the schedule,
  the policy facts and the adherence grid read what they would read in a real home.

Per day: ~27 backups (5% failed) of 5 datasets each, 3 artifacts per backup, verifications
for the rest of the event budget (~2.7 per backup), ~5 drills against a 600 s RTO, ~3 legal
holds, and one policy check whose results cover every control for every dataset (~2,900
results a day: 29 controls x 100 datasets; mostly pass, some fail, a few excepted).

Then the dashboard ``GET /`` as the operator (every section: backup.read, source.read,
policy.read, schedule.read), N times in process (FastAPI's TestClient over the app
``affidavit serve`` builds, bearer session) and N times over HTTP against ``affidavit serve``
started as a real process on a random loopback port (stopped by its PID); and in process
again with every view the first after a backup, verification or drill was recorded (the
overview and the due list, remembered while no such event is recorded, read again). Prints
p50/p95/max, the time of ``schedule.due`` alone, the SQL statements of one render (counted in
process), the size of the page, and the load average of the machine before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import rfc8785
from sqlalchemy import event, insert

from affidavit.catalog.schema import (
    BackupArtifactRow,
    BackupDatasetRow,
    BackupRow,
    DrillRow,
    HoldRow,
    VerificationRow,
)
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.crypto import totp
from affidavit.crypto.digest import sha256_hex
from affidavit.ledger.log import LedgerLog
from affidavit.models.governance import CheckRun
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import Role
from affidavit.services import identity as idn
from affidavit.services import inventory as inv
from affidavit.services import ledger as ledger_service
from affidavit.services import policy as policy_service
from affidavit.services import principals, roles
from affidavit.services.context import App, Change, open_app
from affidavit.services.demo import DEMO_POLICY
from affidavit.services.setup import initialise

PASSWORD = "bench dashboard password 1"
CLIENT = ClientInfo(address="127.0.0.1", agent="bench_dashboard")
SOURCES = 20
DATASETS_PER_SOURCE = 5
GOAL_P95_MS = 300.0
STATUSES = ("pass",) * 90 + ("fail",) * 6 + ("excepted",) * 2 + ("not-applicable",) * 2


def _iso(at: datetime) -> str:
    return at.isoformat()


@contextmanager
def _day(app: App, clock: Callable[[], datetime]) -> Iterator[Change]:
    """A write transaction whose events get their times from ``clock``."""
    with app.change() as change:
        last, _ = change.uow.ledger.head()
        # the bench back-dates its events: the real log, with the day's clock
        change._log = LedgerLog(
            change.uow.ledger, size=0 if last is None else last + 1, clock=clock
        )
        yield change


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _people(app: App, settings: Settings) -> str:
    """An administrator and the ``operator`` (TOTP enrolled, ten minutes ago); the operator's
    TOTP secret."""
    at = datetime.now(UTC) - timedelta(minutes=10)
    idn.bootstrap_admin(app, principals.local_principal(app), "admin", PASSWORD, now=at)

    def enrol(name: str, when: datetime) -> str:
        first = idn.login(app, name, PASSWORD, client=CLIENT, now=when)
        enrolment = idn.begin_totp(app, first.principal, name, now=when)
        idn.confirm_totp(app, first.principal, name, totp.code_at(enrolment.secret, when), now=when)
        idn.logout(app, first.principal, now=when)
        return enrolment.secret

    secret = enrol("admin", at)
    later = at + timedelta(seconds=30)
    admin = idn.login(
        app, "admin", PASSWORD, totp.code_at(secret, later), client=CLIENT, now=later
    ).principal
    idn.create_account(app, admin, "operator", password=PASSWORD, now=later)
    roles.grant_role(app, admin, "operator", Role.OPERATOR, now=later)
    return enrol("operator", later)


def build(home: Path, *, backups: int, events: int, days: int, seed: int = 16) -> str:
    """The catalog described in the module docstring; the operator's TOTP secret."""
    rng = random.Random(seed)
    settings = load_settings(home=home, environ={})
    initialise(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=days)
    with open_app(settings) as app:
        for s in range(SOURCES):
            inv.add_source(
                app,
                name=f"src-{s:02d}",
                engine=EngineName.MONGODB,
                uri=f"mongodb://127.0.0.1:{20000 + s}/",
                secret=None,
                classification=Classification.CONFIDENTIAL if s % 2 else Classification.INTERNAL,
                region="eu-west-1",
                owner="sre@example.com",
            )
        inv.add_vault(
            app, name="vault", url=f"file://{home / 'vault'}", region="eu-west-1", immutable_days=35
        )
        with app.change() as change:  # what an inventory would have found
            for s in range(SOURCES):
                change.uow.datasets.record_discovery(
                    f"src-{s:02d}",
                    [(f"db.coll{d}", 1000 * (d + 1)) for d in range(DATASETS_PER_SOURCE)],
                )
            change.record("inventory.taken", "inventory", {"bench": True})
        secret = _people(app, settings)
    (home / "policy.toml").write_text(DEMO_POLICY, encoding="utf-8")
    with open_app(settings.model_copy(update={"actor": "alice@example.com"})) as app:
        version = policy_service.propose_policy(app, home / "policy.toml")
    with open_app(settings.model_copy(update={"actor": "bob@example.com"})) as app:
        policy_service.approve_policy(app, version.version)

    controls = [c.id for c in policy_service.list_controls()]
    datasets = [
        (f"src-{s:02d}", f"db.coll{d}") for s in range(SOURCES) for d in range(DATASETS_PER_SOURCE)
    ]
    drills_total, holds_total = max(days * 5, 1), max(days * 3, 1)
    verifications_total = max(events - 2 * backups - drills_total - holds_total - days, backups)
    made = {"backups": 0, "verifications": 0, "drills": 0, "holds": 0, "checks": 0}
    manifest = b"{" + b'"x":"' + b"m" * 4000 + b'"}'
    envelope = json.dumps({"payload": "e" * 6000, "signatures": []})
    with open_app(settings.model_copy(update={"actor": "ci-bot"})) as app:
        for day in range(days):
            midnight = start + timedelta(days=day)

            def share(total: int, day: int = day) -> int:
                return total * (day + 1) // days - total * day // days

            clock = _Clock(midnight)
            rows: dict[Any, list[dict[str, Any]]] = {
                BackupRow: [],
                BackupArtifactRow: [],
                BackupDatasetRow: [],
                VerificationRow: [],
                DrillRow: [],
                HoldRow: [],
            }
            ids: list[str] = []
            with _day(app, clock) as change:
                for n in range(share(backups)):
                    made["backups"] += 1
                    at = midnight + timedelta(seconds=30 * n + 1)
                    clock.at = at
                    source = f"src-{rng.randrange(SOURCES):02d}"
                    bid = f"bk-{at:%Y%m%dT%H%M%S}Z-{made['backups']:06x}"
                    failed = rng.random() < 0.05
                    retain = at + timedelta(days=400)
                    change.record(
                        "backup.started",
                        f"backup:{bid}",
                        {
                            "format": "mongodump",
                            "kind": "run",
                            "retain_until": _iso(retain),
                            "source": source,
                            "vault": "vault",
                        },
                    )
                    done = at + timedelta(seconds=20)
                    clock.at = done
                    rows[BackupRow].append(
                        {
                            "id": bid,
                            "source": source,
                            "vault": "vault",
                            "kind": "run",
                            "format": "mongodump",
                            "status": "failed" if failed else "complete",
                            "started_at": at,
                            "finished_at": done,
                            "retain_until": retain,
                            "manifest": None if failed else manifest,
                            "manifest_sha256": None if failed else sha256_hex(manifest),
                            "envelope": None if failed else envelope,
                            "error": "bench: failed" if failed else None,
                        }
                    )
                    if failed:
                        change.record("backup.failed", f"backup:{bid}", {"error": "bench"})
                        continue
                    ids.append(bid)
                    names = [d for s, d in datasets if s == source]
                    for name in names:
                        rows[BackupDatasetRow].append(
                            {
                                "backup_id": bid,
                                "name": name,
                                "records": 1000,
                                "fingerprint": "afp1:exact:b12:n1000:"
                                + sha256_hex(f"{bid}/{name}".encode()),
                                "classification": "confidential",
                            }
                        )
                    for k in range(3):
                        rows[BackupArtifactRow].append(
                            {
                                "backup_id": bid,
                                "path": f"{source}/{bid}/part{k}.bson.age",
                                "role": "data",
                                "size": 4096,
                                "sha256": sha256_hex(f"{bid}/{k}".encode()),
                                "dataset": names[k % len(names)],
                                "deleted": False,
                            }
                        )
                    change.record(
                        "backup.completed",
                        f"backup:{bid}",
                        {"artifacts": 3, "manifest_sha256": sha256_hex(manifest)},
                    )
                for n in range(share(verifications_total)):
                    if not ids:
                        break
                    made["verifications"] += 1
                    bid = ids[n % len(ids)]
                    vid = f"vf-{made['verifications']:08x}"
                    at = midnight + timedelta(hours=20, seconds=n)
                    clock.at = at
                    ok = rng.random() > 0.02
                    kind = "full" if n % 3 == 0 else "sample"
                    rows[VerificationRow].append(
                        {
                            "id": vid,
                            "backup_id": bid,
                            "kind": kind,
                            "started_at": at - timedelta(seconds=5),
                            "finished_at": at,
                            "ok": ok,
                            "coverage": json.dumps({"artifacts": 3}),
                            "findings": "[]",
                            "envelope": envelope[:3000],
                        }
                    )
                    change.record(
                        "verification.completed",
                        f"backup:{bid}",
                        {"kind": kind, "ok": ok, "findings": [], "verification_id": vid},
                    )
                for n in range(share(drills_total)):
                    if not ids:
                        break
                    made["drills"] += 1
                    bid = ids[-1 - n % len(ids)]
                    did = f"dr-{made['drills']:08x}"
                    at = midnight + timedelta(hours=22, seconds=n)
                    clock.at = at
                    seconds = rng.uniform(0.1, 900)
                    rows[DrillRow].append(
                        {
                            "id": did,
                            "backup_id": bid,
                            "target": "scratch:secantus",
                            "started_at": at - timedelta(seconds=seconds),
                            "finished_at": at,
                            "ok": seconds <= 600,
                            "rto_seconds": 600.0,
                            "restore_seconds": seconds,
                            "fingerprint_match": True,
                            "phases": json.dumps({"load": seconds}),
                            "probes": "[]",
                            "findings": "[]",
                            "envelope": envelope[:3000],
                        }
                    )
                    change.record(
                        "drill.completed",
                        f"backup:{bid}",
                        {
                            "drill_id": did,
                            "ok": seconds <= 600,
                            "restore_seconds": seconds,
                            "rto_seconds": 600,
                            "fingerprint_match": True,
                            "findings": [],
                        },
                    )
                for n in range(share(holds_total)):
                    if not ids:
                        break
                    made["holds"] += 1
                    bid = ids[n % len(ids)]
                    at = midnight + timedelta(hours=23, seconds=n)
                    clock.at = at
                    rows[HoldRow].append(
                        {
                            "backup_id": bid,
                            "case_id": f"CASE-{made['holds']}",
                            "reason": "bench",
                            "created_at": at,
                            "created_by": "ci-bot",
                        }
                    )
                    change.record(
                        "hold.added", f"backup:{bid}", {"case_id": f"CASE-{made['holds']}"}
                    )
                session = change.uow.session
                for table, values in rows.items():
                    if values:
                        session.execute(insert(table), values)
                # the day's policy check: every control for every dataset
                at = midnight + timedelta(hours=23, minutes=59)
                clock.at = at
                results = [
                    {
                        "control": control,
                        "subject": f"dataset:{s}/{d}",
                        "status": rng.choice(STATUSES),
                        "message": "bench",
                        "owner": "sre@example.com",
                        "severity": "medium",
                        "evidence": [],
                        "exception": None,
                    }
                    for control in controls
                    for s, d in datasets
                ]
                run_id = f"chk-{day:08x}"
                checked = change.record(
                    "policy.checked",
                    f"check:{run_id}",
                    {
                        "run_id": run_id,
                        "policy_version": version.version,
                        "ok": False,
                        "results_sha256": sha256_hex(rfc8785.dumps(results)),
                        "failed": sum(r["status"] == "fail" for r in results),
                    },
                )
                change.uow.governance.add_check_run(
                    CheckRun(
                        id=run_id,
                        at=at,
                        actor="ci-bot",
                        policy_version=version.version,
                        ok=False,
                        results=tuple(results),
                        seq=checked.seq,
                    )
                )
                made["checks"] += 1
        size = ledger_service.verify_catalog(app)
        if not size.ok:
            raise SystemExit(f"the built ledger does not verify: {size.to_json()}")
        print(
            f"built: {made['backups']:,} backups, {made['verifications']:,} verifications, "
            f"{made['drills']:,} drills, {made['holds']:,} holds, {made['checks']} policy "
            f"checks over {days} days; ledger {size.size:,} events, verifies",
            flush=True,
        )
    return secret


def _percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def _code(secret: str, used: set[int]) -> str:
    """A code of a time step the server accepts now (one either side) and has not seen:
    ``used`` holds the steps used, by this run and (``--keep``) earlier ones."""
    while True:
        now = totp.time_step(datetime.now(UTC))
        step = max(now - 1, max(used, default=now - 2) + 1)
        if step <= now + 1:
            used.add(step)
            return totp.code_at(secret, datetime.fromtimestamp(step * 30, UTC))
        time.sleep(1)


def in_process(
    home: Path, secret: str, used: set[int], renders: int, *, changed: bool = False
) -> dict[str, Any]:
    """``renders`` timed views in process; ``changed``: each as the first after a backup,
    verification or drill was recorded (the overview and the due list forgotten: read
    again), the control adherence summaries kept (they change once a day)."""
    from fastapi.testclient import TestClient

    from affidavit.server.app import create_app
    from affidavit.services import overview

    statements: list[str] = []
    with TestClient(create_app(load_settings(home=home, environ={}))) as client:
        engine = client.app.state.affidavit.catalog._engine  # type: ignore[attr-defined]
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        login = client.post(
            "/api/v1/auth/login",
            json={"name": "operator", "password": PASSWORD, "totp": _code(secret, used)},
        )
        login.raise_for_status()
        bearer = {"Authorization": f"Bearer {login.json()['secret']}"}
        times = []
        counts = []
        size = 0
        for n in range(renders + 1):
            if changed:
                overview._memo.clear()
                overview._due_memo.clear()
            statements.clear()
            t0 = time.perf_counter()
            page = client.get("/", headers=bearer)
            elapsed = (time.perf_counter() - t0) * 1000
            if page.status_code != 200:
                raise SystemExit(f"dashboard: {page.status_code} {page.text[:300]}")
            size = len(page.content)
            counts.append(len(statements))
            if n == 0:
                first = elapsed  # the first view: imports, caches, the adherence memo
                continue
            times.append(elapsed)
    return {
        "first_ms": first,
        **_percentiles(times),
        "statements": sorted(set(counts)),
        "bytes": size,
    }


def _due_alone(home: Path) -> float:
    """The median of three ``schedule.due`` calls (the dashboard's due list, read again)."""
    from affidavit.services import schedule

    times = []
    with open_app(load_settings(home=home, environ={})) as app:
        for _ in range(3):
            t0 = time.perf_counter()
            schedule.due(app)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def over_http(home: Path, secret: str, used: set[int], renders: int) -> dict[str, Any]:
    port = _free_port()
    log = home.parent / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "affidavit", "--home", str(home), "serve", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")},
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"affidavit serve exited: {log.read_text()}")
                try:
                    if http.get("/api/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"affidavit serve did not start: {log.read_text()}")
                time.sleep(0.2)
            login = http.post(
                "/api/v1/auth/login",
                json={"name": "operator", "password": PASSWORD, "totp": _code(secret, used)},
            )
            login.raise_for_status()
            bearer = {"Authorization": f"Bearer {login.json()['secret']}"}
            times = []
            for n in range(renders + 1):
                t0 = time.perf_counter()
                page = http.get("/", headers=bearer)
                elapsed = (time.perf_counter() - t0) * 1000
                page.raise_for_status()
                if n == 0:
                    first = elapsed
                    continue
                times.append(elapsed)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    return {"first_ms": first, **_percentiles(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--backups", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--renders", type=int, default=None, help="timed renders per way")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the temp folder goes")
    parser.add_argument("--keep", type=Path, default=None, help="build (or reuse) this home")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    backups = args.backups or (1_000 if args.quick else 10_000)
    events = args.events or (5_000 if args.quick else 50_000)
    days = min(args.days, 30) if args.quick else args.days
    renders = args.renders or (5 if args.quick else 30)
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-", dir=args.dir))
    home = args.keep or root / "home"
    try:
        secret_file = home.parent / f"{home.name}.operator-totp"
        if args.keep is not None and secret_file.exists():
            secret = secret_file.read_text().strip()
            print(f"reusing {home}", flush=True)
        else:
            t0 = time.perf_counter()
            secret = build(home, backups=backups, events=events, days=days)
            secret_file.write_text(secret)
            print(f"build: {time.perf_counter() - t0:.0f} s", flush=True)
        steps = home.parent / f"{home.name}.operator-steps"
        used: set[int] = {int(x) for x in steps.read_text().split()} if steps.exists() else set()
        try:
            local = in_process(home, secret, used, renders)
            changed = in_process(home, secret, used, max(renders // 3, 3), changed=True)
            remote = over_http(home, secret, used, renders)
        finally:
            steps.write_text(" ".join(str(x) for x in sorted(used)[-4:]))
        due_ms = _due_alone(home)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"\ndashboard GET /, {renders} renders each (after one untimed first view)")
    print(f"{'way':<11} {'first ms':>9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, r in (("in process", local), ("over HTTP", remote), ("changed", changed)):
        print(
            f"{name:<11} {r['first_ms']:>9.0f} {r['p50']:>8.0f} {r['p95']:>8.0f} {r['max']:>8.0f}"
        )
    print(
        "changed: each view the first after a backup, verification or drill was recorded "
        f"(overview and due list read again); of which schedule.due alone: {due_ms:.0f} ms"
    )
    print(
        f"SQL statements per render: {local['statements']} (changed: {changed['statements']}); "
        f"page {local['bytes']:,} bytes"
    )
    verdict = "met" if max(local["p95"], remote["p95"]) < GOAL_P95_MS else "NOT met"
    print(f"goal p95 < {GOAL_P95_MS:.0f} ms: {verdict}")
    print(
        "load average (1/5/15 min) before "
        + "/".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + "/".join(f"{x:.2f}" for x in load_after)
        + f"; {os.cpu_count()} cores"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "in_process": local,
                    "http": remote,
                    "changed": changed,
                    "schedule_due_ms": due_ms,
                    "load": [load_before, load_after],
                    "backups": backups,
                    "events": events,
                    "days": days,
                }
            )
        )


if __name__ == "__main__":
    main()
