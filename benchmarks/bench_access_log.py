"""Access-log benchmark (issue 15): `record()` per request against plain inserts of the rows.

    .venv/bin/python benchmarks/bench_access_log.py            # 2,000 requests per batch size
    .venv/bin/python benchmarks/bench_access_log.py --quick    # 200, a smoke run

The server calls ``access_log.record`` once per request with that request's entries (one, or a
few with its reads). Each call is one committed transaction that appends the entries (leaf and
subtree hashes as the ledger stores them) and signs and stores a checkpoint of the access-log
tree. The named reference is the same rows inserted with plain ``sqlite3``, one transaction per
batch, with the same PRAGMAs (WAL, ``synchronous = FULL``): what logging a request costs at
the least on this disk. Both alternate in slices so that they see the same disk. Prints
entries/s for batches of 1 and of 10, the plain rates and the ratios (record / plain), and the
throughput of ``access-log verify`` over the entries written.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from affidavit.config import load_settings
from affidavit.models.access import AccessEntry, Outcome
from affidavit.services import access_log as svc
from affidavit.services.context import App
from affidavit.services.setup import initialise

AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _entry(n: int) -> AccessEntry:
    return svc.request_entry(
        started=T0 + timedelta(milliseconds=n),
        identity=f"user{n % 50}",
        auth_method="session",
        method="GET",
        route="/api/v1/backups/{backup_id}",
        outcome=Outcome.ALLOWED,
        client_ip="192.0.2.10",
        user_agent=AGENT,
        subject=f"backup:bk-{n % 1000}",
        status=200,
        latency_us=1800,
    )


def _plain(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE access_log_entries (seq INTEGER PRIMARY KEY, time TEXT, identity TEXT, "
        "action TEXT, subject TEXT, outcome TEXT, entry BLOB, leaf_hash BLOB)"
    )
    return con


def bench(root: Path, requests: int, batch: int, slice_size: int) -> tuple[float, float, float]:
    """``requests`` entries recorded ``batch`` at a time vs the same rows inserted plainly,
    ``batch`` per transaction; returns record's entries/s, plain rows/s and the median of the
    per-slice ratios."""
    settings = load_settings(home=root / f"home{batch}", environ={"AFFIDAVIT_ACTOR": "bench"})
    initialise(settings)
    app = App(settings)
    con = _plain(root / f"plain{batch}.sqlite")
    try:
        svc.record(app, [_entry(-1)])  # warm up: imports, the user-agent rules, a connection
        entries = [_entry(n) for n in range(requests)]
        rows = [
            (n, e.time, e.identity, e.action, e.subject, e.outcome.value,
             replace(e, seq=n).canonical(), bytes(32))
            for n, e in enumerate(entries)
        ]  # fmt: skip
        record_time = plain_time = 0.0
        ratios: list[float] = []
        step = max(batch, slice_size - slice_size % batch)
        for lo in range(0, requests, step):
            hi = min(lo + step, requests)
            start = time.perf_counter()
            for at in range(lo, hi, batch):
                svc.record(app, entries[at : min(at + batch, hi)])
            spent = time.perf_counter() - start
            start = time.perf_counter()
            for at in range(lo, hi, batch):
                con.execute("BEGIN IMMEDIATE")
                con.executemany(
                    "INSERT INTO access_log_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows[at : min(at + batch, hi)],
                )
                con.execute("COMMIT")
            plain = time.perf_counter() - start
            record_time += spent
            plain_time += plain
            ratios.append(plain / spent)
        start = time.perf_counter()
        report = svc.verify(app)
        verify_rate = report.size / (time.perf_counter() - start)
        assert report.ok, report.findings
        print(f"  verify of {report.size} entries: {verify_rate:,.0f} entries/s")
    finally:
        con.close()
        app.close()
    return requests / record_time, requests / plain_time, statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--requests", type=int, default=None, help="entries per batch size")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the temp folder goes")
    parser.add_argument("--slice", type=int, default=20, help="entries per alternating slice")
    args = parser.parse_args()
    requests = args.requests or (200 if args.quick else 2000)
    root = Path(tempfile.mkdtemp(prefix="bench-access-log-", dir=args.dir))
    try:
        rows = []
        for batch in (1, 10):
            rate, plain, median = bench(root, requests, batch, max(args.slice, batch))
            rows.append((batch, rate, plain, rate / plain, median))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\naccess-log record(), {requests} entries per batch size (SQLite, synchronous=FULL)")
    print(f"{'batch':>5} {'record entries/s':>17} {'plain rows/s':>13} {'ratio':>6} {'median':>7}")
    for batch, rate, plain, ratio, median in rows:
        print(f"{batch:>5} {rate:>17,.0f} {plain:>13,.0f} {ratio:>6.2f} {median:>7.2f}")


if __name__ == "__main__":
    main()
