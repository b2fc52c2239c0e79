"""The full BSON check of ``backup ingest`` and the mongodump range walk: compiled vs pymongo.

Builds ~256 MiB of ~1 KiB documents (``_id`` ObjectId, an int, a name, three tags, a nested
document, an 850-byte binary), then times, in one run:

- ``check_documents`` on 4 MiB batches with the compiled validator (``_native.validate``)
  against ``bson.decode_all`` (the check before it, pymongo's C decoder);
- ``bson_file_ranges`` over the same bytes in a file: the compiled walk against the Python
  one (``_NATIVE`` switched off).

Prints µs per document and the ratios. ``python benchmarks/bench_bson_check.py [MiB]``.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import bson
from bson.binary import Binary
from bson.objectid import ObjectId

from affidavit.formats import bson_codec
from affidavit.formats.bson_codec import _CHECK_OPTIONS, check_documents
from affidavit.formats.bson_codec.file_ranges import bson_file_ranges

BATCH = 4 << 20


def _batches(total: int) -> tuple[list[bytes], int]:
    """``total`` bytes of documents in 4 MiB batches (a few distinct batches, repeated)."""
    rng = random.Random(1)
    distinct: list[bytes] = []
    count_per: list[int] = []
    for _ in range(4):
        docs: list[bytes] = []
        size = 0
        while size < BATCH:
            doc = bson.encode(
                {
                    "_id": ObjectId(),
                    "n": rng.randrange(1 << 30),
                    "name": f"user-{rng.randrange(10**6)}",
                    "tags": [f"t{rng.randrange(100)}" for _ in range(3)],
                    "nested": {"x": rng.random(), "y": rng.randrange(1000)},
                    "blob": Binary(rng.randbytes(850)),
                }
            )
            docs.append(doc)
            size += len(doc)
        distinct.append(b"".join(docs))
        count_per.append(len(docs))
    reps = max(1, total // BATCH)
    batches = [distinct[i % 4] for i in range(reps)]
    return batches, sum(count_per[i % 4] for i in range(reps))


def _best(fn: object, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the documents to check")
    parser.add_argument("--quick", action="store_true", help="16 MiB: a smoke run")
    args = parser.parse_args()
    mib = 16 if args.quick else args.mib
    native = bson_codec._NATIVE
    if native is None:
        print("the compiled module is not built (pip install -e .) or is switched off")
        return
    batches, docs = _batches(mib << 20)
    total = sum(map(len, batches))
    print(f"{docs} documents, {total / (1 << 20):.0f} MiB, {total / docs:.0f} B/doc average")

    def validator() -> None:
        for batch in batches:
            check_documents(batch, None)

    def reference() -> None:
        for batch in batches:
            bson.decode_all(batch, _CHECK_OPTIONS)

    t_native = _best(validator)
    t_ref = _best(reference, rounds=1)
    print(
        f"check_documents (compiled validator): {t_native / docs * 1e6:7.3f} µs/doc"
        f"  ({total / t_native / (1 << 30):.2f} GiB/s)"
    )
    print(f"bson.decode_all (reference):          {t_ref / docs * 1e6:7.3f} µs/doc")
    print(f"  ratio: {t_ref / t_native:.1f}x faster")

    fd, name = tempfile.mkstemp(suffix=".bson")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            for batch in batches:
                fh.write(batch)

        def walk() -> None:
            for _ in bson_file_ranges(path, 1 << 20):
                pass

        t_walk_c = _best(walk)
        bson_codec._NATIVE = None  # the Python walk
        try:
            t_walk_py = _best(walk, rounds=1)
        finally:
            bson_codec._NATIVE = native
        ranges_c = list(bson_file_ranges(path, 1 << 20))
        bson_codec._NATIVE = None
        try:
            assert ranges_c == list(bson_file_ranges(path, 1 << 20))
        finally:
            bson_codec._NATIVE = native
    finally:
        path.unlink()
    print(f"range walk, C:      {t_walk_c / docs * 1e6:7.3f} µs/doc")
    print(f"range walk, Python: {t_walk_py / docs * 1e6:7.3f} µs/doc")
    print(f"  ratio: {t_walk_py / t_walk_c:.1f}x faster")


if __name__ == "__main__":
    main()
