"""Restore-drill speed (issue 6).

A Redis source of N keys of mixed types is backed up (``affidavit backup run``), then drilled
(``affidavit drill run BACKUP --json``: fetch from the folder vault, age decryption straight
into the scratch server's dbfilename, ``redis-server`` start-up on it, re-fingerprint of every
key, teardown, signed record). In the same run the very same RDB (the backup's artifact,
decrypted with the stock ``age`` CLI and the exported identity) is loaded by a plain
``redis-server`` at start-up, timed until PING answers ``+PONG``.

Reported: the drill's ``restore_seconds`` (fetch + decrypt + load) as a ratio against that
start-up, and the whole drill (verify included, a fresh CLI process) for context.
Run: ``.venv/bin/python benchmarks/bench_drill.py [--quick] [--keys N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from affidavit.scratch.redis_server import RedisScratch  # noqa: E402
from redis_sample import seed_redis  # noqa: E402

AFFIDAVIT = [sys.executable, "-m", "affidavit"]


def run(argv: list[str], env: dict[str, str], *, ok_codes: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode not in ok_codes:
        raise SystemExit(f"{argv[:5]} failed ({proc.returncode}): {proc.stderr.strip()[:600]}")
    return proc.stdout


def baseline_start(rdb: Path) -> float:
    """Seconds for ``redis-server`` to start on ``rdb`` until PING answers +PONG."""
    scratch = RedisScratch(rdb=rdb)
    start = time.perf_counter()
    scratch.start()
    seconds = time.perf_counter() - start
    keys = redis.Redis(port=scratch.port).dbsize()
    scratch.stop()
    print(f"  baseline redis-server start-up on the RDB: {seconds:.3f}s ({keys:,} keys in db0)")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 keys (a smoke run)")
    parser.add_argument("--keys", type=int, default=None)
    args = parser.parse_args()
    n = args.keys or (20_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="affidavit-bench-drill-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "AFFIDAVIT_HOME": str(work / "home")}
        run([*AFFIDAVIT, "init"], env)
        run([*AFFIDAVIT, "vault", "add", "v", "--url", f"file://{work / 'vault'}"], env)
        with RedisScratch() as source:
            print(f"seeding {n:,} keys ...", flush=True)
            seed_redis(source.port, n)
            run([*AFFIDAVIT, "source", "add", "cache", "--engine", "redis", "--uri",
                 source.uri, "--classification", "internal"], env)  # fmt: skip
            backup = json.loads(run([*AFFIDAVIT, "backup", "run", "cache", "--json"], env))
        bid = backup["backup_id"]
        rdb_artifact = next(a for a in backup["artifacts"] if a["role"] == "data")
        print(f"backup {bid}: RDB {rdb_artifact['plain_size']:,} bytes", flush=True)
        # the drill: a fresh CLI process, as cron would run it
        start = time.perf_counter()
        drill: dict[str, Any] = json.loads(
            run([*AFFIDAVIT, "drill", "run", bid, "--json"], env, ok_codes=(0, 1))
        )
        wall = time.perf_counter() - start
        if not drill["fingerprint_match"]:
            raise SystemExit(f"the drill did not match: {drill['findings']}")
        # the same RDB, decrypted with stock age, loaded by redis-server at start-up
        identity = work / "identity.txt"
        identity.write_text(
            run([*AFFIDAVIT, "keys", "export-identity", bid, "--reason", "benchmark"], env)
        )
        rdb = work / "plain" / "dump.rdb"
        rdb.parent.mkdir()
        subprocess.run(
            ["age", "-d", "-i", str(identity), "-o", str(rdb),
             str(work / "vault" / rdb_artifact["path"])],
            check=True,
        )  # fmt: skip
        base = min(baseline_start(rdb) for _ in range(3))
        rdb_bytes = rdb.stat().st_size
    phases = drill["phases"]
    restore = drill["restore_seconds"]
    print(f"\nRedis drill of {n:,} keys ({rdb_bytes:,} bytes of RDB)")
    for name, seconds in phases.items():
        print(f"  {name:8s} {seconds:8.3f}s")
    total = drill["total_seconds"]
    print(f"  restore (fetch+decrypt+load) {restore:.3f}s; drill {total:.3f}s; CLI {wall:.3f}s")
    print(f"  redis-server start-up on the same RDB (best of 3): {base:.3f}s")
    print(f"  ratio restore / redis-server start-up: {restore / base:.2f}")
    print(f"  ratio load phase / redis-server start-up: {phases['load'] / base:.2f}")
    print(f"  ratio whole drill (verify included) / start-up: {drill['total_seconds'] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
