"""RDB parse throughput (issue 5): keys/s of ``RdbReader.iter_all`` alone, with the record
encoding (``encode_redis_record``) and with the exact fingerprint accumulator, then of the
fingerprint pass that ``backup run`` makes (``RdbReader.iter_pairs``: parse, encode and hash,
through the compiled fast path when it is built, and with ``--pure`` the same pass forced
through the pure-Python path), on the shared Redis sample (``redis_sample.py``: N keys of six
kinds) saved by a scratch ``redis-server``.

Run: ``.venv/bin/python benchmarks/bench_rdb_parse.py [--quick] [--keys N] [--rdb PATH]
[--repeat R] [--profile] [--pure]``. ``--rdb PATH`` keeps the saved sample at PATH and reuses it in
later runs (it is built when missing).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from affidavit.fingerprint.accumulator import Accumulator  # noqa: E402
from affidavit.formats import rdb  # noqa: E402
from affidavit.formats.rdb import RdbReader  # noqa: E402
from affidavit.formats.redis_codec import encode_redis_record  # noqa: E402
from affidavit.scratch.redis_server import RedisScratch  # noqa: E402
from redis_sample import seed_redis  # noqa: E402


def build_sample(n: int, target: Path) -> None:
    """Seed a scratch server with the shared sample and save its RDB at ``target``."""
    with RedisScratch() as server:
        seed_redis(server.port, n)
        client = redis.Redis(port=server.port)
        client.save()
        client.close()
        shutil.copyfile(server.workdir / "dump.rdb", target)


def parse_only(path: Path) -> int:
    n = 0
    for _ in RdbReader(path, keep_expired=True).iter_all():
        n += 1
    return n


def parse_encode(path: Path) -> int:
    n = 0
    for _, rec in RdbReader(path, keep_expired=True).iter_all():
        encode_redis_record(rec)
        n += 1
    return n


def parse_encode_hash(path: Path) -> int:
    """What ``backup run`` does with the spooled RDB (batches of 4,096 into one accumulator)."""
    acc = Accumulator("exact")
    batch: list[tuple[bytes, bytes]] = []
    n = 0
    for _, rec in RdbReader(path, keep_expired=True).iter_all():
        batch.append(encode_redis_record(rec))
        if len(batch) >= 4096:
            acc.add_records(batch)
            n += len(batch)
            batch.clear()
    acc.add_records(batch)
    n += len(batch)
    acc.finish()
    acc.close()
    return n


def fingerprint_pass(path: Path) -> int:
    """``RdbReader.iter_pairs`` into one accumulator, finished: the pass ``backup run`` makes."""
    acc = Accumulator("exact")
    n = 0
    for _, pairs, keys in RdbReader(path, keep_expired=True).iter_pairs(
        acc.hasher, encode_redis_record
    ):
        acc.add_pairs(pairs, keys)
        n += len(keys)
    acc.finish()
    return n


def pairs_only(path: Path) -> int:
    """``RdbReader.iter_pairs`` alone: parse, encode and hash."""
    hasher = Accumulator("exact").hasher
    n = 0
    for _, _, keys in RdbReader(path, keep_expired=True).iter_pairs(hasher, encode_redis_record):
        n += len(keys)
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 keys: a smoke run")
    parser.add_argument("--rdb", type=Path, help="keep (or reuse) the sample RDB here")
    parser.add_argument("--repeat", type=int, default=2, help="best of R runs per measure")
    parser.add_argument("--profile", action="store_true", help="cProfile the fingerprint pass")
    parser.add_argument(
        "--pure", action="store_true", help="also time iter_pairs forced to pure Python"
    )
    args = parser.parse_args()
    if args.quick:
        args.keys, args.repeat = 20_000, 1
    work = Path(tempfile.mkdtemp(prefix="affidavit-bench-rdb-"))
    try:
        path = args.rdb or work / "sample.rdb"
        if not path.exists():
            build_sample(args.keys, path)
        size = path.stat().st_size
        print(f"RDB parse benchmark; {os.cpu_count()} cores; {path} ({size / 1e6:,.1f} MB)")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(fingerprint_pass, path)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        native = "compiled" if rdb._NATIVE is not None else "NOT BUILT: pure Python"
        measures: list[tuple[str, Callable[[Path], int], bool]] = [
            ("parse (RdbReader.iter_all)", parse_only, False),
            ("parse + encode_redis_record", parse_encode, False),
            ("parse + encode + exact accumulator", parse_encode_hash, False),
            (f"iter_pairs: parse + encode + hash ({native})", pairs_only, False),
            (f"fingerprint pass: iter_pairs + accumulator ({native})", fingerprint_pass, False),
        ]
        if args.pure:
            measures += [
                ("iter_pairs forced to pure Python", pairs_only, True),
                ("fingerprint pass forced to pure Python", fingerprint_pass, True),
            ]
        for name, fn, pure in measures:
            best = float("inf")
            keys = 0
            saved = rdb._NATIVE
            rdb._NATIVE = None if pure else saved
            try:
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    keys = fn(path)
                    best = min(best, time.perf_counter() - start)
            finally:
                rdb._NATIVE = saved
            print(
                f"  {name}: {keys:,} keys in {best:.3f} s, {keys / best:,.0f} keys/s, "
                f"{best / keys * 1e6:.2f} µs/key"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
