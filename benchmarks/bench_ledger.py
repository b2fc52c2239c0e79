"""Ledger benchmarks (issue 3): durable appends, proof latency and full verification.

    .venv/bin/python benchmarks/bench_ledger.py            # full sizes (1,000,000 entries)
    .venv/bin/python benchmarks/bench_ledger.py --quick    # small sizes, a smoke run

Prints one table with the measured figures, the goals and the ratios. Everything runs on
SQLite files in a temporary folder on the same disk as ``--dir`` (default: the current one).
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from affidavit.config import load_settings
from affidavit.ledger import merkle
from affidavit.ledger.log import LedgerLog
from affidavit.models.ledger import ClientInfo, Event
from affidavit.services import ledger as svc
from affidavit.services.context import App
from affidavit.services.setup import initialise

DETAILS = {"dataset": "orders", "bytes": 123456789, "note": "benchmark event " + "x" * 60}


def _home(root: Path, name: str) -> App:
    settings = load_settings(home=root / name, environ={"AFFIDAVIT_ACTOR": "bench@example.com"})
    initialise(settings)
    return App(settings)


def bench_appends(root: Path, n: int, slice_size: int = 20) -> tuple[float, float, float]:
    """Durable single-event appends through App.change() vs plain sqlite3 inserts.

    The two alternate in slices of ``slice_size`` writes, so that both see the same disk and
    the same neighbours (this VM's fsync latency drifts by a factor of two and more within
    seconds when others run tests); ``slice_size=0`` runs all appends, then all inserts (the
    benchmark's first form). Returns the ledger rate, the plain rate and the median of the
    per-slice ratios.
    """
    app = _home(root, "appends")
    con = sqlite3.connect(root / "plain.sqlite", isolation_level=None)
    try:
        app.catalog.check_schema()
        with app.change() as change:  # warm up (imports, first connection)
            change.record("bench.append", "warmup", DETAILS)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute(
            "CREATE TABLE ledger_entries (seq INTEGER PRIMARY KEY, time TEXT, actor TEXT, "
            "action TEXT, subject TEXT, entry BLOB, leaf_hash BLOB)"
        )
        payload = [
            (e.seq, e.time, e.actor, e.action, e.subject, e.canonical(), bytes(32))
            for e in (
                Event(
                    seq=i,
                    time="2026-01-01T00:00:00.000000Z",
                    actor="bench@example.com",
                    action="bench.append",
                    subject=f"subject:{i}",
                    details=DETAILS,
                    client=ClientInfo(agent="affidavit-cli"),
                )
                for i in range(n)
            )
        ]
        ledger_time = plain_time = 0.0
        ratios: list[float] = []
        step = slice_size or n
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            start = time.perf_counter()
            for i in range(lo, hi):
                with app.change() as change:
                    change.record("bench.append", f"subject:{i}", DETAILS)
            ledger = time.perf_counter() - start
            start = time.perf_counter()
            for row in payload[lo:hi]:
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                con.execute("COMMIT")
            plain = time.perf_counter() - start
            ledger_time += ledger
            plain_time += plain
            ratios.append(plain / ledger)
    finally:
        con.close()
        app.close()
    return n / ledger_time, n / plain_time, statistics.median(ratios)


def build_big(root: Path, n: int) -> App:
    """A ledger of ``n`` entries: the rows LedgerLog writes, inserted in large batches."""
    app = _home(root, "big")
    app.close()
    db = sqlite3.connect(app.settings.home / "catalog.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    (start,) = db.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
    leaves = [bytes(r[0]) for r in db.execute("SELECT leaf_hash FROM ledger_entries ORDER BY seq")]
    stack: list[bytes] = []
    for count, stored in enumerate(leaves):  # rebuild the frontier of the entries init wrote
        digest, carry = stored, count
        while carry & 1:
            digest = merkle.node_hash(stack.pop(), digest)
            carry >>= 1
        stack.append(digest)
    batch = 50_000
    seq = start
    while seq < n:
        entries: list[tuple[object, ...]] = []
        for _ in range(min(batch, n - seq)):
            entry = Event(
                seq=seq,
                time="2026-01-01T00:00:00.000000Z",
                actor="bench@example.com",
                action="bench.bulk",
                subject=f"subject:{seq}",
                details={"i": seq, "note": "bulk"},
                client=ClientInfo(agent="bench"),
            ).canonical()
            leaf = merkle.leaf_hash(entry)
            closed = bytearray()  # the subtrees this leaf closes, stored in its row
            digest, carry = leaf, seq
            while carry & 1:
                digest = merkle.node_hash(stack.pop(), digest)
                carry >>= 1
                closed += digest
            stack.append(digest)
            entries.append(
                (  # the query columns are the entry's own, as LedgerLog writes them
                    seq,
                    "2026-01-01T00:00:00.000000Z",
                    "bench@example.com",
                    "bench.bulk",
                    f"subject:{seq}",
                    entry,
                    leaf,
                    bytes(closed),
                )
            )
            seq += 1
        db.execute("BEGIN")
        db.executemany("INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", entries)
        db.execute("COMMIT")
    db.close()
    app = App(app.settings)
    memory = app.signer_memory()
    assert memory is not None
    # the bulk rows were written behind the signer's back, which it rightly refuses to sign
    # over: sign their tree directly and make that the signer's memory (a benchmark shortcut)
    with app.catalog.unit_of_work() as uow:
        log = LedgerLog(uow.ledger)
        signed = memory.sign(log.size(), log.root())
        uow.ledger.add_checkpoint(
            size=signed.size, root=signed.root, note=signed.note, created_at="2026-01-01T00:00:00Z"
        )
    memory.save(signed)
    return app


def _latency(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--appends", type=int, default=None, help="single-event appends")
    parser.add_argument("--entries", type=int, default=None, help="ledger size for proofs/verify")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the temp folder goes")
    parser.add_argument(
        "--slice",
        type=int,
        default=20,
        help="appends and plain inserts alternate in slices of this many (0: one after the other)",
    )
    args = parser.parse_args()
    appends = args.appends or (200 if args.quick else 2000)
    entries = args.entries or (20_000 if args.quick else 1_000_000)
    root = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=args.dir))
    rng = random.Random(3)
    rows: list[tuple[str, str, str, str]] = []
    try:
        ledger_rate, plain_rate, median_ratio = bench_appends(root, appends, args.slice)
        ratio = ledger_rate / plain_rate
        rows.append(
            (
                "durable single-event appends",
                f"{ledger_rate:,.0f} events/s",
                ">= 2,000",
                "met" if ledger_rate >= 2000 else "MISSED",
            )
        )
        rows.append(
            ("plain sqlite3 inserts (same rows, no hashing)", f"{plain_rate:,.0f} rows/s", "-", "-")
        )
        rows.append(
            ("ratio ledger / plain", f"{ratio:.3f}", ">= 0.5", "met" if ratio >= 0.5 else "MISSED")
        )
        if args.slice:
            rows.append(
                (f"ratio, median of the {args.slice}-write slices", f"{median_ratio:.3f}", "-", "-")
            )

        start = time.perf_counter()
        app = build_big(root, entries)
        rows.append(
            (
                f"build {entries:,} entries (bulk, untimed goal)",
                f"{time.perf_counter() - start:.1f} s",
                "-",
                "-",
            )
        )
        try:
            app.catalog.check_schema()
            with app.read() as uow:
                log = LedgerLog(uow.ledger)
                size = log.size()
                med, p99 = _latency(lambda: log.inclusion_proof(rng.randrange(size), size), 500)
                rows.append(
                    (
                        f"inclusion proof at {size:,} (log, median/p99)",
                        f"{med:.3f} / {p99:.3f} ms",
                        "< 5 ms",
                        "met" if p99 < 5 else "MISSED",
                    )
                )
                med, p99 = _latency(
                    lambda: log.consistency_proof(rng.randrange(1, size), size), 500
                )
                rows.append(
                    (
                        f"consistency proof at {size:,} (log, median/p99)",
                        f"{med:.3f} / {p99:.3f} ms",
                        "< 5 ms",
                        "met" if p99 < 5 else "MISSED",
                    )
                )
            med, p99 = _latency(lambda: svc.inclusion_proof(app, rng.randrange(size)), 200)
            rows.append(
                (
                    "`ledger proof` service call, verified (median/p99)",
                    f"{med:.3f} / {p99:.3f} ms",
                    "-",
                    "-",
                )
            )
            med, p99 = _latency(lambda: svc.consistency_proof(app, rng.randrange(1, size)), 200)
            rows.append(
                (
                    "consistency service call, verified (median/p99)",
                    f"{med:.3f} / {p99:.3f} ms",
                    "-",
                    "-",
                )
            )

            start = time.perf_counter()
            report = svc.verify_catalog(app)
            elapsed = time.perf_counter() - start
            assert report.ok, report.findings[:3]
            rate = report.size / elapsed
            rows.append(
                (
                    f"`ledger verify` of {report.size:,} entries (catalog)",
                    f"{rate:,.0f} entries/s ({elapsed:.1f} s)",
                    ">= 200,000/s",
                    "met" if rate >= 200_000 else "MISSED",
                )
            )

            export = root / "ledger.jsonl"
            svc.export_ledger(app, export)
            start = time.perf_counter()
            report = svc.verify_export(export, vkey=app.ledger_identity().vkey)  # type: ignore[union-attr]
            elapsed = time.perf_counter() - start
            assert report.ok, report.findings[:3]
            rows.append(
                (
                    f"`ledger verify --file` of {report.size:,} entries",
                    f"{report.size / elapsed:,.0f} entries/s",
                    "-",
                    "-",
                )
            )

            start = time.perf_counter()
            report = svc.verify_catalog(app, full=True)
            elapsed = time.perf_counter() - start
            rows.append(
                (
                    f"`ledger verify --full` of {report.size:,} entries",
                    f"{report.size / elapsed:,.0f} entries/s",
                    "-",
                    "-",
                )
            )
        finally:
            app.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {platform.platform()}, "
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "figure", "goal", "status")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
