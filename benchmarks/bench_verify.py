"""Verification throughput (issue 6).

A mongodump folder of N documents of about 1 KiB (1,000,000: about 1 GiB) is ingested into a
folder vault; ``affidavit verify BACKUP --json`` (full: ciphertext SHA-256, age decryption,
plaintext SHA-256 and the exact re-fingerprint of every document) is timed against
``restic check --read-data`` over a restic repository holding the same dump (``restic init``
with a password file, ``restic backup`` of the same folder), in the same run. The figure is the
ratio of throughputs over the same plaintext bytes (goal >= 1.0). CPU seconds (user + system,
children included) and the 1-minute load average before the verification and at the end are
reported too: on a shared machine they say how much of the wall time was waiting for a core.

Run: ``.venv/bin/python benchmarks/bench_verify.py [--records N] [--quick] [--dir DIR]
[--pure-python]`` (``--pure-python``: affidavit without its compiled fast paths, to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_fingerprint import make_bson  # noqa: E402

AFFIDAVIT = [sys.executable, "-m", "affidavit"]


CPU: dict[str, float] = {}  # CPU seconds (user + system) of the last command and its children


def run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds and stdout of one command (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {proc.stderr.strip()[:400]}")
    return seconds, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 records: a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument(
        "--pure-python", action="store_true", help="AFFIDAVIT_PURE_PYTHON=1: no compiled paths"
    )
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed: apt-get install -y restic")
    n = 20_000 if args.quick else args.records
    work = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=args.dir))
    try:
        dump = work / "dump"
        (dump / "shop").mkdir(parents=True)
        size = make_bson(dump / "shop" / "customers.bson", n)
        (dump / "shop" / "customers.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
        env["AFFIDAVIT_HOME"] = str(work / "home")
        env["AFFIDAVIT_ACTOR"] = "bench@example.com"
        if args.pure_python:
            env["AFFIDAVIT_PURE_PYTHON"] = "1"
        run([*AFFIDAVIT, "init"], env)
        run([*AFFIDAVIT, "vault", "add", "v1", "--url", f"file://{work / 'vault'}"], env)
        ingest_s, out = run(
            [*AFFIDAVIT, "backup", "ingest", str(dump), "--format", "mongodump", "--json"], env
        )
        backup_id = json.loads(out)["backup_id"]
        load_before = os.getloadavg()[0]
        verify_s, out = run([*AFFIDAVIT, "verify", backup_id, "--json"], env)
        verify_cpu = CPU["last"]
        result = json.loads(out)
        assert result["ok"] is True, result["findings"]
        stored = result["coverage"]["data_bytes_total"]

        password = work / "restic.pass"
        password.write_text("bench-password\n")
        renv = {
            **os.environ,
            "RESTIC_REPOSITORY": str(work / "restic"),
            "RESTIC_PASSWORD_FILE": str(password),
            "RESTIC_CACHE_DIR": str(work / "rcache"),
        }
        run(["restic", "init"], renv)
        backup_restic_s, _ = run(["restic", "backup", "--quiet", str(dump)], renv)
        restic_s, _ = run(["restic", "check", "--read-data"], renv)
        restic_cpu = CPU["last"]
        restic_bytes = sum(p.stat().st_size for p in (work / "restic").rglob("*") if p.is_file())

        mb = size / 1e6
        report = {
            "records": n,
            "plaintext_bytes": size,
            "affidavit_stored_bytes": stored,
            "restic_repository_bytes": restic_bytes,
            "ingest_seconds": round(ingest_s, 2),
            "restic_backup_seconds": round(backup_restic_s, 2),
            "affidavit_verify_seconds": round(verify_s, 2),
            "affidavit_verify_mb_s": round(mb / verify_s, 1),
            "affidavit_verify_cpu_seconds": round(verify_cpu, 2),
            "restic_check_read_data_seconds": round(restic_s, 2),
            "restic_check_mb_s": round(mb / restic_s, 1),
            "restic_check_cpu_seconds": round(restic_cpu, 2),
            "ratio": round(restic_s / verify_s, 3),
            "goal": ">= 1.0",
            "compiled_fast_paths": not args.pure_python,
            "cpus": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
