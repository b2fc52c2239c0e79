"""Run the tests and the sample files through a sanitized build of the compiled modules.

The helper of ``scripts/test-sanitizers.sh``, which builds the modules with AddressSanitizer
and UndefinedBehaviorSanitizer into a copy of the package (``--tree``), puts that copy first
on ``PYTHONPATH``, preloads the sanitizer runtimes and runs this. A sanitizer report aborts
the process.

Either command first proves that the modules in use are the sanitized build (each compiled
module imported from ``--tree``, and the very one ``affidavit.native.load_native`` hands
the Python code), printing where each came from:

``pytest ARGS...``
    runs pytest with ARGS in this same process, so the tests use the modules just checked.

``corpus [--corpus DIR]``
    feeds every file under DIR (default ``../shared/formats``; gzip files also gunzipped)
    through the compiled modules, in two passes:

    1. each entry point that parses bytes (``rdb._native.scan``,
       ``bson_codec._native.frame``, ``validate``, ``ranges``;
       ``fingerprint._native.packed_entries`` and ``take_keys`` with offsets and indexes
       made from the file's bytes) from many start offsets (``scan``: every offset of an
       RDB file), on the whole file and on truncated copies. Each buffer is exactly as long
       as its data (a ctypes array: one ``malloc`` of that size under
       ``PYTHONMALLOC=malloc``), so a read even one byte past the end is seen, which a
       ``bytes`` object would hide behind its trailing NUL. Results must stay inside the
       buffer.
    2. ``affidavit fingerprint PATH --check-bson --json --out ...``, in this process, for
       every file and folder: the readers' own use of the compiled modules. Exit 0 (read)
       or 2 (refused as bad input) is expected; anything else fails.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import gzip
import importlib
import io
import sys
import tempfile
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

RDB = "affidavit.formats.rdb._native"
BSON = "affidavit.formats.bson_codec._native"
INDEX = "affidavit.fingerprint._native"
TAG = b"sanitize-corpus\x00"
HEAD = 256  # every start offset below this one is tried; beyond it, every STRIDE-th
STRIDE = 251


def exact(data: bytes) -> Any:
    """``data`` in a buffer of exactly its length (no trailing NUL, unlike ``bytes``): a
    ctypes array, its own ``malloc`` when longer than 16 bytes (shorter ones are stored
    inside the ctypes object)."""
    return (ctypes.c_char * len(data)).from_buffer_copy(data) if data else b""


def starts(n: int) -> list[int]:
    return [*range(min(n, HEAD)), *range(HEAD, n, STRIDE)]


def loaded_from_tree(tree: Path) -> dict[str, ModuleType]:
    """The three compiled modules, each checked to come from ``tree`` and to be the one the
    Python code uses."""
    import affidavit
    from affidavit.native import load_native

    package = Path(affidavit.__file__).resolve()
    print(f"affidavit: {package}")
    if not package.is_relative_to(tree):
        raise SystemExit(f"error: affidavit is imported from {package}, not from {tree}")
    modules = {}
    for name in (RDB, BSON, INDEX):
        module = importlib.import_module(name)
        where = Path(module.__file__ or "").resolve()
        print(f"{name}: {where}")
        if not where.is_relative_to(tree) or where.suffix != ".so":
            raise SystemExit(f"error: {name} is not the sanitized build under {tree}")
        if load_native(name) is not module:
            raise SystemExit(f"error: load_native({name!r}) does not give the sanitized module")
        modules[name] = module
    return modules


def variants(path: Path) -> list[bytes]:
    """The file's bytes and, for a gzip file, its content (as far as it decompresses)."""
    data = path.read_bytes()
    out = [data]
    if data[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            out.append(gzip.decompress(data))
    return out


def feed_entry_points(mods: dict[str, ModuleType], data: bytes) -> int:
    """Every byte-parsing entry point on ``data`` and truncated copies; returns the calls."""
    rdb, bson, index = mods[RDB], mods[BSON], mods[INDEX]
    calls = 0
    n = len(data)
    for cut in sorted(c for c in {n, n - 1, n // 2, 9, 5, 1} if 0 <= c <= n):
        part = data[:cut]
        buf = exact(part)
        positions = starts(cut) if cut == n else [p for p in (0, 1, 4, 9) if p <= cut]
        for pos in positions:
            got = rdb.scan(buf, pos, cut, None, None, TAG, 1 << 20)
            assert pos <= got[0] <= cut, ("scan", pos, got[0])
            assert len(got[4]) == 64 * len(got[3])
            got = rdb.scan(buf, pos, cut, 1_700_000_000_000, 1_700_000_000_000, TAG, 3)
            assert pos <= got[0] <= cut
            for want_keys in (True, False):
                stop, pairs, keys, _ = bson.frame(buf, pos, TAG, want_keys)
                assert pos <= stop <= cut, ("frame", pos, stop)
                assert len(pairs) % 64 == 0
                assert (keys is None) != want_keys
            stop = bson.validate(buf, pos)
            assert pos <= stop <= cut, ("validate", pos, stop)
            assert pos <= bson.validate(buf, pos, 3) <= cut
            calls += 6
        for target in (1, 4096, 1 << 30):
            found, status, bad = bson.ranges(buf, target, 5, bson.MAX_DOCUMENT)
            assert all(a >= 0 and a + b <= cut for a, b in found), "ranges"
            assert status == bson.RANGES_OK or 0 <= bad <= cut
            calls += 1
        if cut == n and data.startswith(b"REDIS"):  # records begin anywhere past the AUX fields
            for pos in range(HEAD, n):
                assert pos <= rdb.scan(buf, pos, cut, None, None, TAG, 1 << 20)[0] <= cut
            calls += max(0, n - HEAD)
        calls += feed_index(index, part)
    return calls


def feed_index(index: ModuleType, data: bytes) -> int:
    """``packed_entries`` and ``take_keys`` with offsets, lengths and indexes read from
    ``data``: once all inside the buffers, once as they come (those outside must raise)."""
    if len(data) < 16:
        return 0
    words = array.array("q", data[: len(data) // 8 * 8])[:512]
    count, size = len(words), len(data)
    blob = exact(data)
    pairs = exact((data * (64 * count // size + 1))[: 64 * count])
    inside = [w % (size + 1) for w in words]
    offsets = {
        "inside": array.array("q", inside),
        "raw": array.array("q", (w % (size + 3) - 1 for w in words)),
    }
    lengths = {
        "inside": array.array(
            "i", (min((w >> 20) % 300, size - o) for w, o in zip(words, inside, strict=True))
        ),
        "raw": array.array("i", ((w >> 20) % 300 - 2 for w in words)),
    }
    for kind in ("inside", "raw"):
        for prefix_max in (0, 7, 0x7FFF):
            try:
                out = index.packed_entries(pairs, blob, offsets[kind], lengths[kind], prefix_max)
            except ValueError:
                assert kind == "raw", "packed_entries refused keys inside the blob"
            else:
                assert len(out) >= 66 * count
    keys = [data[i : i + (w >> 40) % 40] for i, w in enumerate(words)]
    orders = {
        "inside": array.array("q", (w % count for w in reversed(words))),
        "raw": array.array("q", (w % (count + 2) - 1 for w in reversed(words))),
    }
    for kind, order in orders.items():
        try:
            blob_out, lens = index.take_keys(keys, order)
        except IndexError:
            assert kind == "raw", "take_keys refused indexes inside the list"
        else:
            assert len(lens) == 4 * len(order)
            assert len(blob_out) == sum(len(keys[i]) for i in order)
    return 8


def run_cli(target: Path, home: Path, out: Path) -> int:
    from affidavit.cli.main import main

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        args = ["--home", str(home), "fingerprint", str(target), "--check-bson", "--json"]
        return main([*args, "--out", str(out)])


def feed_corpus(mods: dict[str, ModuleType], corpus: Path) -> int:
    if not corpus.is_dir():
        print(f"{corpus} is absent: no corpus to feed")
        return 0
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    folders = sorted(p for p in corpus.rglob("*") if p.is_dir())

    calls = buffers = 0
    for path in files:
        for data in variants(path):
            calls += feed_entry_points(mods, data)
            buffers += 1
    print(f"entry points: {calls} calls on {buffers} buffers from {len(files)} files")

    codes: dict[int, int] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="affidavit-sanitize-") as tmp:
        for i, target in enumerate(files + folders):
            code = run_cli(target, Path(tmp) / "home", Path(tmp) / f"out{i}")
            codes[code] = codes.get(code, 0) + 1
            if code not in (0, 2):
                failed.append(f"{target}: exit {code}")
    print(f"affidavit fingerprint on {len(files)} files and {len(folders)} folders: exit codes")
    print("  " + ", ".join(f"{code}: {n}" for code, n in sorted(codes.items())))
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True, help="the sanitized package copy")
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="feed the genuine sample files")
    default = Path(__file__).resolve().parents[2] / "shared" / "formats"
    corpus.add_argument("--corpus", type=Path, default=default)
    commands.add_parser("pytest", add_help=False, help="run pytest with the other arguments")
    args, rest = parser.parse_known_args()
    mods = loaded_from_tree(args.tree.resolve())
    if args.command == "pytest":
        import pytest

        return int(pytest.main(rest))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return feed_corpus(mods, args.corpus)


if __name__ == "__main__":
    sys.exit(main())
