"""Fingerprint throughput (issue 4).

1. A mongodump ``.bson`` file of N documents of about 1 KiB: ``affidavit fingerprint`` with the
   exact and the logical profile (1 and 2 workers), as a ratio of throughput against
   ``sha256sum`` of the same file in the same run (goal for exact: >= 0.5). Peak memory of each
   run (goal: at most 100 MB + 48 bytes per record).
2. A Redis database of N keys of mixed types: fingerprint time as a ratio against
   ``redis-cli --rdb`` of the same database in the same run.

Run: ``.venv/bin/python benchmarks/bench_fingerprint.py [--records N] [--quick] [--rounds R]
[--profiles exact,logical] [--dir DIR] [--skip-redis] [--before SRC]``. The file contenders
run ``--rounds`` times, interleaved (median reported, with the 1-minute load average before
and after each command: the machine may be shared), and the report gives the scaling of 2
workers over 1 (issue 18's goal for exact: >= 1.6x), and the CPU time (user + system) of
each command beside its wall time. ``--before SRC`` also times another source tree (put first on
``PYTHONPATH``), alternated with this one in every round, for a before/after on the same
machine. The source trees are byte-compiled first (as an install is), so that no timed
command compiles a module that changed since its last run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from affidavit.scratch.redis_server import RedisScratch  # noqa: E402
from redis_sample import seed_redis  # noqa: E402

AFFIDAVIT = [sys.executable, "-m", "affidavit"]


def make_bson(path: Path, n: int) -> int:
    rng = random.Random(42)
    with path.open("wb") as fh:
        for i in range(n):
            doc = {
                "_id": bson.ObjectId(f"{i:024x}"),
                "n": i,
                "name": f"customer-{i}",
                "tags": ["a", "b", str(i % 7)],
                "nested": {"x": rng.random(), "y": i * 3, "when": bson.datetime_ms.DatetimeMS(i)},
                "blob": bson.Binary(rng.randbytes(850)),
            }
            fh.write(bson.encode(doc))
    return path.stat().st_size


_WRAPPER = (
    "import resource, subprocess, sys, time;"
    "t = time.perf_counter();"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
    "t = time.perf_counter() - t;"
    "sys.stderr.write(p.stderr);"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print(t, u.ru_maxrss * 1024, u.ru_utime, u.ru_stime);"
    "print(p.stdout, end='');"
    "sys.exit(p.returncode)"
)


CPU: dict[str, float] = {}  # user + system seconds of the last timed command


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Seconds, peak RSS of the command (bytes), its stdout; its CPU time in ``CPU["last"]``."""
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.strip()[:400]}")
    first, _, rest = proc.stdout.partition("\n")
    seconds, rss, user, system = first.split()
    CPU["last"] = float(user) + float(system)
    return float(seconds), int(rss), rest


def bench_file(
    n: int,
    work: Path,
    *,
    rounds: int = 1,
    profiles: tuple[str, ...] = ("exact", "logical"),
    trees: dict[str, Path | None] | None = None,
) -> list[dict[str, object]]:
    """``trees``: name -> a source tree put first on ``PYTHONPATH`` (None: this one), each
    contender run once per tree per round, alternated."""
    trees = trees or {"": None}
    path = work / "bench.coll.bson"
    size = make_bson(path, n)
    rows: list[dict[str, object]] = []
    shas: list[float] = []
    openssls: list[float] = []
    openssl_cpu: list[float] = []
    times: dict[tuple[str, str, int], list[float]] = {}
    cpus: dict[tuple[str, str, int], list[float]] = {}
    rss_of: dict[tuple[str, str, int], int] = {}
    loads: dict[tuple[str, str, int], list[list[float]]] = {}
    outputs: set[str] = set()
    for _ in range(max(1, rounds)):
        shas.append(timed(["sha256sum", str(path)])[0])
        if shutil.which("openssl"):
            openssls.append(timed(["openssl", "dgst", "-sha256", str(path)])[0])
            openssl_cpu.append(CPU["last"])
        for profile in profiles:
            for workers in (1, 2):
                for tree, src in trees.items():
                    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
                    before = os.getloadavg()[0]
                    secs, rss, out = timed(
                        [
                            *AFFIDAVIT,
                            "fingerprint",
                            str(path),
                            "--format",
                            "bson",
                            "--profile",
                            profile,
                            "--workers",
                            str(workers),
                            "--json",
                        ],
                        env,
                    )
                    records = json.loads(out)["datasets"][0]["records"]
                    assert records == n, records
                    outputs.add(json.dumps(json.loads(out)["datasets"][0]["fingerprint"]) + profile)
                    key = (tree, profile, workers)
                    times.setdefault(key, []).append(secs)
                    cpus.setdefault(key, []).append(CPU["last"])
                    rss_of[key] = max(rss_of.get(key, 0), rss)
                    loads.setdefault(key, []).append(
                        [round(before, 2), round(os.getloadavg()[0], 2)]
                    )
    if len(outputs) != len(profiles):
        raise SystemExit("the fingerprints differ between worker counts or trees")
    sha = min(shas)
    rows.append({"what": "sha256sum (reference, best)", "seconds": sha, "MB/s": size / sha / 1e6})
    openssl = min(openssls) if openssls else None
    if openssl is not None:
        rows.append(
            {
                "what": "openssl dgst -sha256 (reference, best; SHA-NI when the CPU has it)",
                "seconds": openssl,
                "seconds all": ", ".join(f"{t:.2f}" for t in openssls),
                "CPU s (median)": statistics.median(openssl_cpu),
                "MB/s": size / openssl / 1e6,
            }
        )
    for (tree, profile, workers), secs_all in times.items():
        secs = statistics.median(secs_all)
        row: dict[str, object] = {
            "what": f"{tree + ': ' if tree else ''}fingerprint {profile}, {workers} worker(s)",
            "seconds": secs,
            "seconds all": ", ".join(f"{t:.2f}" for t in secs_all),
            "CPU s (median)": statistics.median(cpus[(tree, profile, workers)]),
            "CPU s all": ", ".join(f"{t:.2f}" for t in cpus[(tree, profile, workers)]),
            "MB/s": size / secs / 1e6,
            "ratio vs sha256sum": sha / secs,
            "ratio vs openssl dgst (goal exact >= 0.5)": openssl / secs if openssl else "-",
            "peak RSS MB": rss_of[(tree, profile, workers)] / 1e6,
            "budget MB (100 + 48 B/record)": 100 + 48 * n / 1e6,
            "load 1 min before/after": loads[(tree, profile, workers)],
        }
        if workers == 2 and (tree, profile, 1) in times:
            row["scaling 2 vs 1 worker (goal exact >= 1.6)"] = (
                statistics.median(times[(tree, profile, 1)]) / secs
            )
        rows.append(row)
    return rows


def bench_redis(n: int, work: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with RedisScratch() as server:
        seed_redis(server.port, n)
        rdb = work / "dump.rdb"
        ref, _, _ = timed(["redis-cli", "-p", str(server.port), "--rdb", str(rdb)])
        home = work / "home"
        env = {**os.environ, "AFFIDAVIT_HOME": str(home)}
        subprocess.run([*AFFIDAVIT, "init"], env=env, check=True, capture_output=True)
        subprocess.run(
            [*AFFIDAVIT, "source", "add", "bench", "--engine", "redis", "--uri", server.uri,
             "--classification", "internal"], env=env, check=True, capture_output=True,
        )  # fmt: skip
        secs, _, out = timed([*AFFIDAVIT, "fingerprint", "bench/db0", "--json"], env=env)
        assert json.loads(out)["datasets"][0]["records"] == n
    rows.append({"what": "redis-cli --rdb (reference)", "seconds": ref})
    rows.append(
        {
            "what": "fingerprint live Redis db0",
            "seconds": secs,
            "time ratio vs redis-cli --rdb": secs / ref,
        }
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--redis-keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 records: a smoke run")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--profiles", default="exact,logical", help="e.g. exact")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also time this source tree (a folder holding the affidavit package, first on "
        "PYTHONPATH), alternated with this one: e.g. `git archive HEAD src | tar -x -C DIR`",
    )
    args = parser.parse_args()
    if args.quick:
        args.records = args.redis_keys = 20_000
    trees: dict[str, Path | None] = {"": None}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": None}
    for src in {REPO / "src", *(t for t in trees.values() if t is not None)}:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(src / "affidavit")],
            check=False,
            capture_output=True,
        )
    work = Path(tempfile.mkdtemp(prefix="affidavit-bench-fp-", dir=args.dir))
    try:
        rows = bench_file(
            args.records,
            work,
            rounds=args.rounds,
            profiles=tuple(args.profiles.split(",")),
            trees=trees,
        )
        if not args.skip_redis:
            rows += bench_redis(args.redis_keys, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"fingerprint benchmark: {args.records:,} documents of ~1 KiB; "
        f"{args.redis_keys:,} Redis keys; {os.cpu_count()} cores"
    )
    for row in rows:
        print(
            "  "
            + "; ".join(
                f"{k}: {v:,.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
