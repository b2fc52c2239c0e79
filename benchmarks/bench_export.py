"""Governed export throughput (issue 17).

A mongodump folder of N customer documents of about 1 KiB (default 1,000,000: about 1 GB) is
ingested into a folder vault; an approved export spec (allow-list of 5 of the 10 fields, one
pseudonymised field, one generalised date, a JSON Schema contract with a uniqueness rule)
is run with ``affidavit export run`` (local mode: minimise, transform, check, encode as JSON
lines, fingerprint, encrypt with age, sign the manifest). The reference, in the same run, is a
plain pymongo-style decode of the same ``.bson`` file to JSON lines: ``bson.decode_file_iter``
and ``json.dumps`` per document (``default=str`` for ObjectId and datetime), one line each.

The figure is the ratio of throughputs in documents per second (issue 17's goal: >= 0.5),
and the ratio of CPU seconds (user + system, of every process of the command; less
sensitive to a shared machine's load), with each command's peak RSS (of its largest
process) and the peak of its process tree's summed PSS (its worker processes too). Memory
must not grow with N, with or without the ``unique`` rule, whose digests spill to disk past
65,536 records: compare ``--docs`` runs, and ``--no-unique``. The 1-minute load average
around each command is reported (the machine may be shared).

``--workers N`` (repeatable) runs ``export run --workers N``, one contender each (default:
the command's default, the cores). ``--live`` exports the same documents from a live
SecantusDB server instead of a backup (time, CPU and memory of the export; no reference).

Run: ``.venv/bin/python benchmarks/bench_export.py [--docs N] [--rounds R] [--quick]
[--dir DIR] [--keep] [--no-unique] [--workers N ...] [--live]`` (``--quick``: 20,000
documents, a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bson
import psutil
import pyrage
from pyrage import x25519

AFFIDAVIT = [sys.executable, "-m", "affidavit"]

SPEC = """
name = "bench"
purpose = "benchmark"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{dest}"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "keep"
email = "pseudonymise"
birth = "generalise"
age = "keep"
country = "keep"

[contract]
min_records = 1
unique = ["_id"]
max_violations = 0

[contract.schema]
type = "object"
required = ["_id", "email", "country"]

[contract.schema.properties.country]
type = "string"
enum = ["FR", "DE", "NL", "BE", "IT"]

[contract.schema.properties.age]
type = "integer"
minimum = 0
maximum = 150
"""

REFERENCE = """
import json, sys
import bson
with open(sys.argv[1], "rb") as fin, open(sys.argv[2], "w", encoding="utf-8") as out:
    n = 0
    for doc in bson.decode_file_iter(fin):
        out.write(json.dumps(doc, default=str, ensure_ascii=False) + "\\n")
        n += 1
print(n)
"""


def make_customers(path: Path, n: int) -> int:
    """N documents of about 1 KiB (10 fields) in one ``.bson`` file; its size."""
    rng = random.Random(17)
    countries = ["FR", "DE", "NL", "BE", "IT"]
    base = datetime(1950, 1, 1, tzinfo=UTC)
    words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
    ]
    with path.open("wb") as fh:
        for i in range(n):
            doc = {
                "_id": bson.ObjectId(f"{i:024x}"),
                "email": f"person{i}@example.com",
                "name": f"Person Number {i}",
                "birth": base + timedelta(days=rng.randrange(25_000)),
                "age": rng.randrange(18, 99),
                "country": countries[i % 5],
                "phone": f"+33 6 {i % 100:02d} {i % 997:03d} {i % 89:02d}",
                "address": {"street": f"{i} rue de la Paix", "city": "Paris", "zip": "75002"},
                "tags": [rng.choice(words) for _ in range(5)],
                "notes": " ".join(rng.choice(words) for _ in range(120))[:700],
            }
            fh.write(bson.encode(doc))
    return path.stat().st_size


_WRAPPER = (
    "import resource, subprocess, sys, time;"
    "t = time.perf_counter();"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
    "t = time.perf_counter() - t;"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
    "sys.stderr.write(p.stderr);"
    "print(t, u.ru_maxrss * 1024, u.ru_utime + u.ru_stime);"
    "print(p.stdout, end='');"
    "sys.exit(p.returncode)"
)


PEAK_TREE: list[int] = []
"""The peak of the summed PSS of each timed command's process tree (its worker processes
too), sampled every 50 ms, in the order the commands ran."""


def _tree_rss(pid: int) -> int:
    """The summed PSS (proportional set size: a page shared by k processes, as the pages
    of forked workers are, counts 1/k in each) of the processes below ``pid`` (the
    wrapper's command and its workers): the memory the command holds."""
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in tree:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, float, str]:
    """Seconds, peak RSS (bytes, of its largest process) and CPU seconds (user + system, of
    all its processes) of the command, its stdout; the peak RSS of its whole process tree
    is appended to :data:`PEAK_TREE`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    PEAK_TREE.append(peak)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed: {stderr.strip()[-600:]}")
    first, _, rest = stdout.partition("\n")
    seconds, rss, cpu = first.split()
    return float(seconds), int(rss), float(cpu), rest


def run(argv: list[str], env: dict[str, str]) -> str:
    """Stdout of one command (which must succeed)."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:6])} failed: {proc.stderr.strip()[-600:]}")
    return proc.stdout


def setup_home(work: Path, env: dict[str, str], spec: str, *, source: list[str]) -> None:
    """A home with a folder vault, the source ``shop`` (``source``: ``--uri URI``), the
    recipient (key proven) and the approved spec."""
    run([*AFFIDAVIT, "init"], env)
    run([*AFFIDAVIT, "vault", "add", "v1", "--url", f"file://{work / 'vault'}"], env)
    add = [*AFFIDAVIT, "source", "add", "shop", "--engine", "mongodb", *source]
    run([*add, "--classification", "confidential"], env)
    identity = x25519.Identity.generate()
    challenge = work / "challenge.age"
    recipient = [*AFFIDAVIT, "recipient", "add", "acme", "--org", "Acme"]
    recipient += ["--contact", "dpo@acme.test", "--public-key", str(identity.to_public())]
    run([*recipient, "--challenge-out", str(challenge), "--dpa", "DPA-1"], env)
    response = work / "response.txt"
    response.write_bytes(pyrage.decrypt(challenge.read_bytes(), [identity]))
    run([*AFFIDAVIT, "recipient", "verify", "acme", "--response", str(response)], env)
    spec_file = work / "spec.toml"
    spec_file.write_text(spec)
    run([*AFFIDAVIT, "--actor", "olga", "export", "spec", "add", str(spec_file)], env)
    run([*AFFIDAVIT, "--actor", "paul", "export", "spec", "approve", "bench", "1"], env)


def live(args: argparse.Namespace, n: int, work: Path) -> int:
    """``--live``: the same documents in a SecantusDB server, exported from the live source
    (its cursor feeds the same workers); time, CPU and peak RSS of the export only."""
    from pymongo import MongoClient

    from affidavit.scratch.secantus_server import SecantusScratch

    bson_file = work / "customers.bson"
    make_customers(bson_file, n)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env["AFFIDAVIT_HOME"] = str(work / "home")
    env["AFFIDAVIT_ACTOR"] = "bench@example.com"
    with SecantusScratch() as server:
        client: MongoClient[dict[str, object]] = MongoClient(server.uri)
        collection = client["shop"]["customers"]
        started = time.perf_counter()
        with bson_file.open("rb") as fh:
            batch: list[dict[str, object]] = []
            for doc in bson.decode_file_iter(fh):
                batch.append(doc)
                if len(batch) >= 5000:
                    collection.insert_many(batch, ordered=False)
                    batch.clear()
            if batch:
                collection.insert_many(batch, ordered=False)
        loaded = time.perf_counter() - started
        client.close()
        bson_file.unlink()
        dest = work / "outbox"
        dest.mkdir()
        spec = SPEC.format(dest=dest).replace(
            'dataset = "shop.customers"\n', 'dataset = "shop.customers"\nfrom = "live"\n'
        )
        if args.no_unique:
            spec = spec.replace('unique = ["_id"]\n', "")
        uri = server.uri
        setup_home(work, env, spec, source=["--uri", uri])
        contenders = {}
        for w in args.workers or [None]:
            name = "live_export_run" + (f"_workers_{w}" if w is not None else "")
            before = os.getloadavg()[0]
            cmd = [*AFFIDAVIT, "export", "run", "bench", "--output", f"{name}.jsonl.age"]
            cmd += ["--json", *(["--workers", str(w)] if w is not None else [])]
            seconds, peak, used, out = timed(cmd, env)
            result = json.loads(out)
            assert result["ok"] is True, result
            assert result["export"]["records_out"] == n, result["export"]
            Path(result["output"]).unlink()
            contenders[name] = {
                "seconds": round(seconds, 2),
                "docs_per_s": round(n / seconds),
                "cpu_seconds": round(used, 2),
                "peak_rss_mb": round(peak / 1e6, 1),
                "peak_pss_process_tree_mb": round(PEAK_TREE[-1] / 1e6, 1),
                "load_average_1min_before_after": [
                    round(before, 2),
                    round(os.getloadavg()[0], 2),
                ],
            }
    print(
        json.dumps(
            {
                "documents": n,
                "input": "live SecantusDB",
                "load_seconds": round(loaded, 1),
                "contenders": contenders,
                "unique_rule": not args.no_unique,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="20,000 documents: a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (to profile)")
    parser.add_argument(
        "--no-unique", action="store_true", help="a contract without the unique rule (memory)"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="export from a live SecantusDB instead of a backup (memory; no reference)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        default=None,
        help="`export run --workers N` (repeatable: one contender each; default: the cores)",
    )
    args = parser.parse_args()
    n = 20_000 if args.quick else args.docs
    work = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.dir))
    if args.live:
        try:
            return live(args, n, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    try:
        dump = work / "dump"
        (dump / "shop").mkdir(parents=True)
        bson_file = dump / "shop" / "customers.bson"
        size = make_customers(bson_file, n)
        (dump / "shop" / "customers.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
        env["AFFIDAVIT_HOME"] = str(work / "home")
        env["AFFIDAVIT_ACTOR"] = "bench@example.com"
        run([*AFFIDAVIT, "init"], env)
        run([*AFFIDAVIT, "vault", "add", "v1", "--url", f"file://{work / 'vault'}"], env)
        uri = "mongodb://127.0.0.1:1/"  # never contacted: the backup is ingested
        source = [*AFFIDAVIT, "source", "add", "shop", "--engine", "mongodb", "--uri", uri]
        run([*source, "--classification", "confidential"], env)
        ingest = [*AFFIDAVIT, "backup", "ingest", str(dump), "--format", "mongodump"]
        backup_id = json.loads(run([*ingest, "--source", "shop", "--json"], env))["backup_id"]
        identity = x25519.Identity.generate()
        challenge = work / "challenge.age"
        recipient = [*AFFIDAVIT, "recipient", "add", "acme", "--org", "Acme"]
        recipient += ["--contact", "dpo@acme.test", "--public-key", str(identity.to_public())]
        run([*recipient, "--challenge-out", str(challenge), "--dpa", "DPA-1"], env)
        response = work / "response.txt"
        response.write_bytes(pyrage.decrypt(challenge.read_bytes(), [identity]))
        run([*AFFIDAVIT, "recipient", "verify", "acme", "--response", str(response)], env)
        dest = work / "outbox"
        dest.mkdir()
        spec_file = work / "spec.toml"
        spec = SPEC.format(dest=dest)
        if args.no_unique:
            spec = spec.replace('unique = ["_id"]\n', "")
        spec_file.write_text(spec)
        run([*AFFIDAVIT, "--actor", "olga", "export", "spec", "add", str(spec_file)], env)
        run([*AFFIDAVIT, "--actor", "paul", "export", "spec", "approve", "bench", "1"], env)

        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        rss: dict[str, list[int]] = {}
        tree: dict[str, list[int]] = {}
        loads: dict[str, list[list[float]]] = {}
        out_records = 0
        for r in range(max(1, args.rounds)):
            before = os.getloadavg()[0]
            ref_out = work / f"reference-{r}.jsonl"
            seconds, peak, used, out = timed(
                [sys.executable, "-c", REFERENCE, str(bson_file), str(ref_out)], env
            )
            assert int(out.strip()) == n, out
            ref_out.unlink()
            times.setdefault("reference_decode_json", []).append(seconds)
            cpu.setdefault("reference_decode_json", []).append(used)
            rss.setdefault("reference_decode_json", []).append(peak)
            tree.setdefault("reference_decode_json", []).append(PEAK_TREE[-1])
            loads.setdefault("reference_decode_json", []).append(
                [round(before, 2), round(os.getloadavg()[0], 2)]
            )
            for w in args.workers or [None]:
                name = "affidavit_export_run" + (f"_workers_{w}" if w is not None else "")
                before = os.getloadavg()[0]
                cmd = [*AFFIDAVIT, "export", "run", "bench", "--backup", backup_id]
                cmd += ["--output", f"bench-{r}-{w}.jsonl.age", "--json"]
                cmd += ["--workers", str(w)] if w is not None else []
                seconds, peak, used, out = timed(cmd, env)
                result = json.loads(out)
                assert result["ok"] is True, result
                out_records = result["export"]["records_out"]
                times.setdefault(name, []).append(seconds)
                cpu.setdefault(name, []).append(used)
                rss.setdefault(name, []).append(peak)
                tree.setdefault(name, []).append(PEAK_TREE[-1])
                loads.setdefault(name, []).append([round(before, 2), round(os.getloadavg()[0], 2)])
                Path(result["output"]).unlink()
        median = {name: statistics.median(ts) for name, ts in times.items()}
        cpu_median = {name: statistics.median(cs) for name, cs in cpu.items()}
        ref, ref_cpu = median["reference_decode_json"], cpu_median["reference_decode_json"]
        exports = [name for name in times if name != "reference_decode_json"]
        report = {
            "documents": n,
            "bson_bytes": size,
            "records_out": out_records,
            "contenders": {
                name: {
                    "seconds_median": round(median[name], 2),
                    "seconds_all": [round(t, 2) for t in times[name]],
                    "docs_per_s": round(n / median[name]),
                    "cpu_seconds_median": round(cpu_median[name], 2),
                    "peak_rss_mb": round(max(rss[name]) / 1e6, 1),
                    "peak_pss_process_tree_mb": round(max(tree[name]) / 1e6, 1),
                    "load_average_1min_before_after": loads[name],
                }
                for name in times
            },
            "ratio_vs_reference": {name: round(ref / median[name], 3) for name in exports},
            "ratio_cpu_seconds": {name: round(ref_cpu / cpu_median[name], 3) for name in exports},
            "unique_rule": not args.no_unique,
            "goal": ">= 0.5 (issue 17)",
            "cpus": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"kept {work} (AFFIDAVIT_HOME={work / 'home'})", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
