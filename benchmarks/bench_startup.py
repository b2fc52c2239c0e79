"""Start-up of the CLI (issue 18, session 10): what a command costs before its work.

Times, in fresh interpreters, the commands whose fixed cost issue 18's speed goals pay:

- ``fingerprint FILE --format bson --json`` of a 10 KB ``.bson`` file (no home needed);
- ``fingerprint --help``;
- ``verify BACKUP --json`` of a backup of that file (a home with one folder vault);
- ``verify list --json`` on a home with nothing verified;
- ``python -c pass`` (the interpreter alone, for reference).

Each is run ``--rounds`` times, alternated command by command (and tree by tree with
``--before``), and reported as medians of wall time and of CPU time (user + system, from
``getrusage(RUSAGE_CHILDREN)``), with the 1-minute load average before and after each round:
the machine may be shared, and CPU time is the figure that load disturbs least.

``--before SRC`` times a second source tree (a folder holding the ``affidavit`` package, put
first on ``PYTHONPATH``) alternated with this one, e.g. the last commit's:
``git archive HEAD src | tar -x -C /tmp/before`` (copy the compiled ``*.so`` modules into it).
Both trees are byte-compiled first, as an install is (``PYTHONDONTWRITEBYTECODE`` may be set).

Run: ``.venv/bin/python benchmarks/bench_startup.py [--rounds 7] [--before SRC] [--dir DIR]``.
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


def load() -> float:
    return os.getloadavg()[0]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, int, str]:
    """Wall seconds, user and system CPU seconds, exit code and output of one command (its
    stdout, or its stderr when it failed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        wall,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        proc.returncode,
        proc.stdout if proc.returncode == 0 else proc.stderr,
    )


def must(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:6])} failed: {proc.stderr.strip()[:400]}")
    return proc.stdout


def compile_tree(src: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(src / "affidavit")],
        check=False,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds (median)")
    parser.add_argument("--before", type=Path, default=None, help="a second src tree to compare")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    trees = {"after": REPO / "src"} if args.before else {"current": REPO / "src"}
    if args.before:
        trees = {"before": args.before.resolve(), **trees}
    for src in trees.values():
        compile_tree(src)
    work = Path(tempfile.mkdtemp(prefix="bench-startup-", dir=args.dir))
    try:
        dump = work / "dump"
        (dump / "shop").mkdir(parents=True)
        tiny = dump / "shop" / "customers.bson"
        size = make_bson(tiny, 10)
        (dump / "shop" / "customers.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
        base["AFFIDAVIT_ACTOR"] = "bench@example.com"
        full = {**base, "AFFIDAVIT_HOME": str(work / "home")}
        empty = {**base, "AFFIDAVIT_HOME": str(work / "empty")}
        must([*AFFIDAVIT, "init"], full)
        must([*AFFIDAVIT, "init"], empty)
        must([*AFFIDAVIT, "vault", "add", "v1", "--url", f"file://{work / 'vault'}"], full)
        out = must(
            [*AFFIDAVIT, "backup", "ingest", str(dump), "--format", "mongodump", "--json"], full
        )
        backup_id = json.loads(out)["backup_id"]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], base),
            f"fingerprint FILE ({size:,} B) --json": (
                [*AFFIDAVIT, "fingerprint", str(tiny), "--format", "bson", "--json"],
                base,
            ),
            "fingerprint --help": ([*AFFIDAVIT, "fingerprint", "--help"], base),
            "verify BACKUP --json": ([*AFFIDAVIT, "verify", backup_id, "--json"], full),
            "verify list --json (empty home)": ([*AFFIDAVIT, "verify", "list", "--json"], empty),
        }
        rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        loads: list[float] = []
        outputs: dict[tuple[str, str], str] = {}
        for _ in range(args.rounds):
            loads.append(load())
            for name, (argv, env) in commands.items():
                for tree, src in trees.items():
                    tree_env = {**env, "PYTHONPATH": str(src)}
                    wall, user, system, code, stdout = timed(argv, tree_env)
                    if code != 0:
                        raise SystemExit(f"{tree}: {name} exited {code}: {stdout[-300:]}")
                    rows.setdefault((name, tree), []).append((wall, user, system))
                    if name.startswith("fingerprint FILE"):
                        outputs[(name, tree)] = stdout
            loads.append(load())
        if len(set(outputs.values())) > 1:
            raise SystemExit("the trees' fingerprint outputs differ")
        results = []
        print(f"load (1 min) over the rounds: {min(loads):.2f}-{max(loads):.2f}")
        print(f"{'command':38} {'tree':8} {'wall':>7} {'user':>7} {'sys':>7} {'CPU':>7}")
        for (name, tree), samples in rows.items():
            wall = statistics.median(s[0] for s in samples)
            user = statistics.median(s[1] for s in samples)
            system = statistics.median(s[2] for s in samples)
            cpu = statistics.median(s[1] + s[2] for s in samples)
            results.append(
                {
                    "command": name,
                    "tree": tree,
                    "wall_median": round(wall, 3),
                    "user_median": round(user, 3),
                    "system_median": round(system, 3),
                    "cpu_median": round(cpu, 3),
                    "cpu_runs": [round(s[1] + s[2], 3) for s in samples],
                }
            )
            print(f"{name:38} {tree:8} {wall:7.3f} {user:7.3f} {system:7.3f} {cpu:7.3f}")
        report = {"rounds": args.rounds, "load": [min(loads), max(loads)], "results": results}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
