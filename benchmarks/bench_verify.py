"""Verification throughput (issues 6 and 18).

A mongodump folder of N documents of about 1 KiB (1,000,000: about 1 GB; ``--size MB`` picks
N for a size) is ingested into a folder vault, which signs a segment table for every artifact
(issue 18); ``affidavit verify BACKUP --workers W --json`` (full: every segment's ciphertext
SHA-256, age decryption, plaintext SHA-256 and the exact re-fingerprint of every document) is
timed for each W of ``--workers`` (default ``1,2``) against ``restic check --read-data`` over
a restic repository holding the same dump (``restic init`` with a password file, ``restic
backup`` of the same folder), in the same run, the contenders interleaved over ``--rounds``
rounds (median reported). The figure is the ratio of throughputs over the same plaintext bytes
(issue 18's goal for 2 workers: >= 1.2). CPU seconds (user + system, children included) and
the 1-minute load average before and after each command are reported too: on a shared
machine they say how much of the wall time was waiting for a core.

Modes (issue 18, sessions 10-11): a verification of an artifact with a segment table runs
**fast** when the ledger vouches the manifest's tables (the writer proved them when it wrote
the backup, or a passed deep verification did), else **deep** (whole-file and plaintext
SHA-256s too). The backup's first verification is timed once (``first_verification``: its
mode and what vouched it); then each round times ``verify --deep`` and a plain ``verify``
for each W, and restic, interleaved; both ratios against restic are printed.
``--modes deep,fast`` (default) picks them. The same two are also timed **in process**
(``verify_backup`` called in a process that has already imported and opened everything: the
command's start-up left out), with that call's own CPU time.

Run: ``.venv/bin/python benchmarks/bench_verify.py [--records N | --size MB] [--workers 1,2]
[--modes deep,fast] [--rounds R] [--quick] [--dir DIR] [--pure-python] [--no-in-process]
[--before SRC]`` (``--pure-python``: affidavit without its compiled fast paths, to compare;
``--before SRC``: also time another tree's ``src`` folder, e.g. ``git archive HEAD src``
unpacked with the built ``.so`` files copied in, in the same rounds as ``before_...``).

The source tree is byte-compiled first (``compileall``, what an install does): with
``PYTHONDONTWRITEBYTECODE`` set, as on the shared development machine, every module edited
since its last compile would otherwise be compiled again by every timed command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
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


_IN_PROCESS = """
import json, resource, sys, time
from affidavit.config import load_settings
from affidavit.services.context import open_app
from affidavit.services.verify import verify_backup
backup_id, workers, deep = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "deep"
with open_app(load_settings()) as app:
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = verify_backup(app, backup_id, workers=workers, deep=deep)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"ok": result.ok, "mode": result.mode, "seconds": seconds, "cpu": cpu}))
"""


def in_process(backup_id: str, workers: int, mode: str, env: dict[str, str]) -> dict[str, float]:
    """One ``verify_backup`` timed inside a process that has imported and opened everything."""
    proc = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS, backup_id, str(workers), mode],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"in-process verify failed: {proc.stderr.strip()[-400:]}")
    found: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not found["ok"] or found["mode"] != mode:
        raise SystemExit(f"in-process verify: {found}")
    return found


def compile_tree() -> None:
    """Byte-compile affidavit's sources (as ``pip install`` does), so that no timed command
    compiles a module that changed since its last run."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "affidavit")],
        check=False,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=None, help="MB of documents (sets N)")
    parser.add_argument("--workers", default="1,2", help="verify --workers values, e.g. 1,2")
    parser.add_argument("--modes", default="deep,fast", help="deep, fast or both (deep,fast)")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process timings")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="20,000 records: a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument(
        "--pure-python", action="store_true", help="AFFIDAVIT_PURE_PYTHON=1: no compiled paths"
    )
    parser.add_argument(
        "--before", type=Path, default=None, help="another tree's src folder, timed too"
    )
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed: apt-get install -y restic")
    n = 20_000 if args.quick else args.records
    if args.size is not None and not args.quick:
        n = max(1, args.size * 1_000_000 // 999)  # make_bson's documents: ~999 bytes each
    workers = [int(w) for w in args.workers.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"deep", "fast"} or not modes:
        raise SystemExit("--modes is deep, fast or deep,fast")
    compile_tree()
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
        ingest_cpu = CPU["last"]
        backup_id = json.loads(out)["backup_id"]
        password = work / "restic.pass"
        password.write_text("bench-password\n")
        renv = {
            **os.environ,
            "RESTIC_REPOSITORY": str(work / "restic"),
            "RESTIC_PASSWORD_FILE": str(password),
            "RESTIC_CACHE_DIR": str(work / "rcache"),
        }
        trees = [("", env)]
        if args.before is not None:
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(args.before)],
                check=False,
                capture_output=True,
            )
            trees.append(("before_", {**env, "PYTHONPATH": str(args.before.resolve())}))
        run(["restic", "init"], renv)
        backup_restic_s, _ = run(["restic", "backup", "--quiet", str(dump)], renv)
        restic_bytes = sum(p.stat().st_size for p in (work / "restic").rglob("*") if p.is_file())

        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        loads: dict[str, list[list[float]]] = {}
        stored = 0

        def timed(name: str, argv: list[str], env: dict[str, str]) -> str:
            before = os.getloadavg()[0]
            seconds, out = run(argv, env)
            times.setdefault(name, []).append(seconds)
            cpu.setdefault(name, []).append(CPU["last"])
            loads.setdefault(name, []).append([round(before, 2), round(os.getloadavg()[0], 2)])
            return out

        # the backup's first verification, timed once: fast on the writer's proof of its
        # segment tables (session 11; deep where the writer proved none)
        first_w = max(workers)
        first_load = round(os.getloadavg()[0], 2)
        first_s, first_out = run(
            [*AFFIDAVIT, "verify", backup_id, "--workers", str(first_w), "--json"], env
        )
        first = json.loads(first_out)
        assert first["ok"] is True, first["findings"]
        first_report = {
            "workers": first_w,
            "seconds": round(first_s, 2),
            "cpu_seconds": round(CPU["last"], 2),
            "mode": first["mode"],
            "vouched_by_action": first.get("vouched_by_action"),
            "load_average_1min_before": first_load,
        }
        in_proc: dict[str, list[dict[str, float]]] = {}
        for _ in range(max(1, args.rounds)):
            for w in workers:
                for tree, tenv in trees:
                    for mode in modes:
                        cmd = [*AFFIDAVIT, "verify", backup_id, "--workers", str(w), "--json"]
                        if mode == "deep":
                            cmd.append("--deep")
                        result = json.loads(timed(f"{tree}verify_{mode}_workers_{w}", cmd, tenv))
                        assert result["ok"] is True, result["findings"]
                        assert result["mode"] == mode, result["mode"]
                        stored = result["coverage"]["data_bytes_total"]
            timed("restic_check_read_data", ["restic", "check", "--read-data"], renv)
            if not args.no_in_process:
                for w in workers:
                    for tree, tenv in trees:
                        for mode in modes:
                            load = round(os.getloadavg()[0], 2)
                            got = in_process(backup_id, w, mode, tenv)
                            got["load"] = load
                            key = f"{tree}in_process_{mode}_workers_{w}"
                            in_proc.setdefault(key, []).append(got)

        mb = size / 1e6
        median = {name: statistics.median(ts) for name, ts in times.items()}
        restic_s = median["restic_check_read_data"]
        contenders = {
            name: {
                "seconds_median": round(median[name], 2),
                "seconds_all": [round(t, 2) for t in times[name]],
                "mb_s": round(mb / median[name], 1),
                "cpu_seconds_median": round(statistics.median(cpu[name]), 2),
                "load_average_1min_before_after": loads[name],
                "ratio_vs_restic": round(restic_s / median[name], 3),
            }
            for name in times
        }
        report = {
            "records": n,
            "plaintext_bytes": size,
            "affidavit_stored_bytes": stored,
            "restic_repository_bytes": restic_bytes,
            "ingest_seconds": round(ingest_s, 2),
            "ingest_cpu_seconds": round(ingest_cpu, 2),
            "first_verification": {
                **first_report,
                "ratio_vs_restic": round(restic_s / first_report["seconds"], 3),
            },
            "restic_backup_seconds": round(backup_restic_s, 2),
            "rounds": max(1, args.rounds),
            "contenders": contenders,
            "ratio_workers_2": {
                mode: contenders.get(f"verify_{mode}_workers_2", {}).get("ratio_vs_restic")
                for mode in modes
            },
            "in_process": {
                name: {
                    "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
                    "seconds_all": [round(r["seconds"], 3) for r in runs],
                    "cpu_seconds_median": round(statistics.median(r["cpu"] for r in runs), 3),
                    "load_average_1min_before": [r["load"] for r in runs],
                    "mb_s": round(mb / statistics.median(r["seconds"] for r in runs), 1),
                }
                for name, runs in in_proc.items()
            },
            "goal": ">= 1.2 with --workers 2 (issue 18)",
            "compiled_fast_paths": not args.pure_python,
            "cpus": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
