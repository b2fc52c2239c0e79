"""``verify --cluster`` against the local thread path (issue 18): the cluster's overhead per
segment.

A mongodump folder of about ``--size`` MB of ~1 KiB documents is ingested into a folder vault
with segments of ``--segment-mib`` MiB (default 4: many segments, so that a per-segment cost
shows), in this process. Then, interleaved over ``--rounds`` rounds (medians reported), the
same backup is verified in-process (``affidavit verify BACKUP --json`` through the CLI's
``main``: the interpreter's start-up and imports are left out, the same on every path) by:

- ``local_1``: one local thread (``workers=1``);
- ``local_2``: two local threads;
- ``cluster_1``: a ``distributed.LocalCluster`` with one worker process (one thread);
- ``cluster_2``: the same cluster scaled to two worker processes.

Every run must verify and give the signed fingerprint. The cluster's overhead per segment is
``(cluster_1 - local_1) / segments``: what handing one segment to a worker process and taking
its part back costs over doing it on a thread (task scheduling, pickling the job, the worker
re-opening the vault's file, the record pairs travelling back). Separately, ``--noop N``
empty tasks measure the scheduler's own round trip per task. CPU seconds of this process and
the 1-minute load average around each run are reported: on a shared 2-core machine they say
how much of the wall time was waiting for a core.

``--mode deep`` (the default, as the figures in docs/performance.md were taken) times every
run with ``--deep``; ``--mode fast`` runs one untimed deep verification first, so that every
timed run is fast (no whole-file or plaintext digest, on threads or workers alike:
docs/verification.md).

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--size MB] [--segment-mib M] [--rounds R]
[--noop N] [--dir DIR] [--mode deep|fast] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_fingerprint import make_bson  # noqa: E402


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _noop(x: int) -> int:
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MB of documents")
    parser.add_argument("--segment-mib", type=int, default=4, help="segment size, MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noop", type=int, default=1000, help="empty tasks timed")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--mode", choices=("deep", "fast"), default="deep")
    parser.add_argument("--quick", action="store_true", help="16 MB, 1 MiB segments, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.size, args.segment_mib, args.rounds, args.noop = 16, 1, 1, 200

    from distributed import Client, LocalCluster

    from affidavit.cli.main import main as affidavit
    from affidavit.services import segment_tables

    segment_tables.SEGMENT_SIZE = args.segment_mib << 20
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=args.dir))
    local = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    )
    watcher = Client(local)
    try:
        dump = work / "dump"
        (dump / "shop").mkdir(parents=True)
        n = max(1, args.size * 1_000_000 // 999)
        size = make_bson(dump / "shop" / "customers.bson", n)
        (dump / "shop" / "customers.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
        )
        os.environ["AFFIDAVIT_ACTOR"] = "bench@example.com"
        home = ["--home", str(work / "home")]

        def command(*argv: str) -> dict[str, Any]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = affidavit([*home, *argv])
            if code != 0:
                raise SystemExit(f"affidavit {' '.join(argv[:3])} failed ({code})")
            text = out.getvalue()
            return json.loads(text) if text.strip().startswith("{") else {}

        command("init")
        command("vault", "add", "v1", "--url", f"file://{work / 'vault'}")
        backup_id = command("backup", "ingest", str(dump), "--format", "mongodump", "--json")[
            "backup_id"
        ]
        segments = -(-size // (args.segment_mib << 20))

        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        loads: dict[str, list[list[float]]] = {}

        def timed(name: str, *flags: str) -> None:
            before_load = os.getloadavg()[0]
            before_cpu = _cpu()
            start = time.perf_counter()
            mode = ("--deep",) if args.mode == "deep" else ()
            result = command("verify", backup_id, "--json", *flags, *mode)
            seconds = time.perf_counter() - start
            assert result["ok"] is True, result["findings"]
            assert result["mode"] == args.mode, result["mode"]
            times.setdefault(name, []).append(seconds)
            cpu.setdefault(name, []).append(_cpu() - before_cpu)
            loads.setdefault(name, []).append([round(before_load, 2), round(os.getloadavg()[0], 2)])

        address = local.scheduler_address
        if args.mode == "fast":  # one deep run vouches the fast ones
            command("verify", backup_id, "--json", "--deep")
        for _ in range(max(1, args.rounds)):
            timed("local_1", "--workers", "1")
            timed("local_2", "--workers", "2")
            local.scale(1)
            while len(watcher.scheduler_info()["workers"]) != 1:
                time.sleep(0.05)
            timed("cluster_1", "--cluster", address)
            local.scale(2)
            watcher.wait_for_workers(2)
            timed("cluster_2", "--cluster", address)

        start = time.perf_counter()
        watcher.gather(watcher.map(_noop, range(args.noop), pure=False))
        noop_s = time.perf_counter() - start

        median = {k: statistics.median(v) for k, v in times.items()}
        report = {
            "plaintext_bytes": size,
            "documents": n,
            "segment_bytes": args.segment_mib << 20,
            "segments": segments,
            "mode": args.mode,
            "rounds": max(1, args.rounds),
            "runs": {
                k: {
                    "seconds_median": round(median[k], 3),
                    "seconds_all": [round(t, 3) for t in times[k]],
                    "mb_s": round(size / 1e6 / median[k], 1),
                    "client_cpu_seconds_median": round(statistics.median(cpu[k]), 3),
                    "load_average_1min_before_after": loads[k],
                }
                for k in times
            },
            "local_thread_seconds_per_segment": round(median["local_1"] / segments, 4),
            "cluster_overhead_seconds_per_segment_1_worker": round(
                (median["cluster_1"] - median["local_1"]) / segments, 4
            ),
            "cluster_overhead_seconds_per_segment_2_workers_vs_2_threads": round(
                (median["cluster_2"] - median["local_2"]) / segments, 4
            ),
            "noop_tasks": args.noop,
            "scheduler_round_trip_ms_per_noop_task": round(noop_s / args.noop * 1000, 3),
            "cpus": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(report, indent=2))
    finally:
        watcher.close()
        local.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
