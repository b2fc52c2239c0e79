"""The fingerprint accumulator on the 1.09 M-record workload: add (pairs in batches of 1,060
with ~17-byte keys, as worker processes hand them in) and finish (fold and index file), in
seconds, against the algorithm before the fast paths (a verbatim copy below, the same one the
test tests/unit/fingerprint/test_accumulator_fast.py holds the results equal to). Checks that
both give the same fingerprint, duplicates and index file bytes.

Run: ``.venv/bin/python benchmarks/bench_accumulator.py [--records N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from affidavit.fingerprint import index  # noqa: E402
from affidavit.fingerprint.accumulator import Accumulator  # noqa: E402
from affidavit.fingerprint.model import (  # noqa: E402
    PAIR_SIZE,
)

_REF_NATIVE = index._load_native()

sys.path.insert(0, str(REPO / "tests" / "unit" / "fingerprint"))
from accumulator_v1 import RefAccumulator  # noqa: E402

# -- the benchmark ------------------------------------------------------------------------------


def workload(n: int, batch: int) -> list[tuple[bytes, list[bytes]]]:
    rng = np.random.default_rng(42)
    pairs = rng.bytes(n * PAIR_SIZE)
    blob = rng.bytes(n * 17)
    keys = [blob[i * 17 : (i + 1) * 17] for i in range(n)]
    return [
        (pairs[i * PAIR_SIZE : (i + batch) * PAIR_SIZE], keys[i : i + batch])
        for i in range(0, n, batch)
    ]


def one(
    make: type[Accumulator] | type[RefAccumulator],
    batches: list[tuple[bytes, list[bytes]]],
    work: Path,
) -> tuple[float, float, str, int, str]:
    acc = make("exact", spill_dir=work)
    t0 = time.perf_counter()
    for pairs, keys in batches:
        acc.add_pairs(pairs, keys)
    t1 = time.perf_counter()
    path = work / "x.idx"
    fp, duplicates = acc.finish(path, dataset="x", encoding="bson")
    t2 = time.perf_counter()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.unlink()
    return t1 - t0, t2 - t1, str(fp), duplicates, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_090_000)
    parser.add_argument("--batch", type=int, default=1060)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 records, one round")
    args = parser.parse_args()
    if args.quick:
        args.records, args.rounds = 100_000, 1
    batches = workload(args.records, args.batch)
    best: dict[str, tuple[float, float]] = {}
    results: dict[str, tuple[str, int, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as tmp:
        for _ in range(args.rounds):
            for name, make in (("reference", RefAccumulator), ("new", Accumulator)):
                add, finish, fp, dup, digest = one(make, batches, Path(tmp))
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], add), min(old[1], finish))
                results[name] = (fp, dup, digest)
    if results["new"] != results["reference"]:
        raise SystemExit(f"results differ: {results}")
    (ref_add, ref_finish), (new_add, new_finish) = best["reference"], best["new"]
    print(f"{args.records:,} records in batches of {args.batch}, best of {args.rounds}")
    print(f"  {'':10} {'add s':>8} {'finish s':>9} {'total s':>8}")
    for name, (add, finish) in (("reference", best["reference"]), ("new", best["new"])):
        print(f"  {name:10} {add:8.3f} {finish:9.3f} {add + finish:8.3f}")
    print(
        f"  speed-up   add {ref_add / new_add:.2f}x, finish {ref_finish / new_finish:.2f}x, "
        f"total {(ref_add + ref_finish) / (new_add + new_finish):.2f}x"
    )
    fp, dup, digest = results["new"]
    print(f"  identical: {fp}, duplicates {dup}, index sha256 {digest[:16]}...")


if __name__ == "__main__":
    main()
