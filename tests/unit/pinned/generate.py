"""Compute the pinned outputs (fingerprints and index-file digests) of a fixed set of inputs.

``python tests/unit/pinned/generate.py > tests/unit/pinned/outputs.json`` rewrites the pins;
do that only for an intended change of output, and say so in the commit. The test
``test_pinned_outputs.py`` recomputes every pin with the code of the day.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson

from affidavit.errors import Error
from affidavit.models.records import PROFILES
from affidavit.services.fingerprint import fingerprint_path

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "formats"
KINDS = {"bson": "bson", "mongodump-archive": "mongodump-archive", "redis-rdb": "rdb"}


def synthetic(folder: Path) -> dict[str, tuple[Path, str]]:
    """Inputs made here from fixed values, so that some pins hold without ../shared."""
    docs = [
        {"_id": i, "name": f"n{i}", "tags": ["a", "b"][: i % 3], "n": i * 1.5, "sub": {"k": i}}
        for i in range(300)
    ]
    docs.append({"_id": bson.ObjectId("0123456789abcdef01234567"), "x": None})
    dump = folder / "dump" / "shop"
    dump.mkdir(parents=True)
    (dump / "orders.bson").write_bytes(b"".join(bson.encode(d) for d in docs))
    (dump / "users.bson").write_bytes(b"".join(bson.encode({"_id": f"u{i}"}) for i in range(50)))
    lines = folder / "orders.jsonl"
    lines.write_text(
        "".join(json.dumps({"_id": i, "v": {"$numberLong": str(i * 7)}}) + "\n" for i in range(100))
    )
    return {
        "synthetic/dump": (folder / "dump", "mongodump"),
        "synthetic/orders.bson": (dump / "orders.bson", "bson"),
        "synthetic/orders.jsonl": (lines, "extjson"),
    }


def shared_inputs() -> dict[str, tuple[Path, str]]:
    truth_file = SHARED / "GROUND_TRUTH.json"
    if not truth_file.is_file():
        return {}
    truth: dict[str, dict[str, Any]] = json.loads(truth_file.read_text())
    return {
        f"shared/{name}": (SHARED / name, KINDS[entry["kind"]])
        for name, entry in sorted(truth.items())
        if entry.get("kind") in KINDS
    }


def outputs(path: Path, fmt: str, scratch: Path) -> Iterator[tuple[str, Any]]:
    for profile in PROFILES:
        out = scratch / f"idx-{profile}"
        try:
            results = fingerprint_path(
                path, fmt=fmt, dataset=None, profile=profile, out=out, workers=1
            )
        except Error as exc:
            yield str(profile), {"error": type(exc).__name__}
            continue
        many = len(results) > 1
        for r in results:
            index = r.index.read_bytes() if r.index is not None else b""
            yield (
                f"{profile}:{r.name}",
                {
                    "fingerprint": r.fingerprint.text,
                    "duplicates": r.duplicates,
                    "index_sha256": hashlib.sha256(index).hexdigest(),
                },
            )
            if r.index is not None and many:
                r.index.unlink()
        if out.is_file():
            out.unlink()


def compute(names: dict[str, tuple[Path, str]]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, (path, fmt) in sorted(names.items()):
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = dict(outputs(path, fmt, Path(tmp)))
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pins = compute(synthetic(Path(tmp)))
    pins.update(compute(shared_inputs()))
    json.dump(pins, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
