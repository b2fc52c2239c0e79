"""Decrypting one age file: pyrage (the reference), the `age` CLI when installed, and the
parallel reader (``affidavit.crypto.age_reader``) alone, with N threads and with N worker
processes; each also with the plaintext hashed (the whole-file SHA-256 in the caller, or one
SHA-256 per range in the workers) and with a consumer busy in Python; and whether
``cryptography``'s ChaCha20-Poly1305 runs in 2 threads at once (chunks in memory, nothing
else).

A random file of ``--mib`` MiB (256) is encrypted with pyrage to a fresh X25519 recipient;
the page cache is warmed, then every contender runs once per round, interleaved, and the
median of ``--rounds`` (5) is reported with its throughput over the plaintext bytes and its
ratio to pyrage (for the Python consumer: to the reader alone). Every contender's plaintext
SHA-256 is checked; the run fails on a mismatch.

Run: ``.venv/bin/python benchmarks/bench_age_reader.py [--mib 256] [--workers N] [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import pyrage  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402
from pyrage import x25519  # noqa: E402

from affidavit.crypto.age import new_identity  # noqa: E402
from affidavit.crypto.age_process import encrypt_file  # noqa: E402
from affidavit.crypto.age_reader import CHUNK_SIZE, AgeFile, Pool  # noqa: E402

MIB = 1024 * 1024
RANGE_CHUNKS = 64  # 4 MiB ranges


class _Sink:
    """pyrage's output: counted, optionally hashed, then dropped."""

    def __init__(self, hasher: hashlib._Hash | None) -> None:
        self.hasher = hasher
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.hasher is not None:
            self.hasher.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing buffered."""


def pyrage_decrypt(path: Path, identity: str, *, hashed: bool) -> str | None:
    sink = _Sink(hashlib.sha256() if hashed else None)
    with path.open("rb") as src:
        pyrage.decrypt_io(src, sink, [x25519.Identity.from_str(identity)])
    return sink.hasher.hexdigest() if sink.hasher is not None else None


def python_work(piece: bytes) -> None:
    """A consumer busy in Python (holding the GIL) for 0.5 ns per byte, as a fingerprint
    pass over the plaintext would be: about 0.13 s per 256 MiB."""
    end = time.perf_counter() + len(piece) * 0.5e-9
    while time.perf_counter() < end:
        pass


def reader_decrypt(
    path: Path,
    identity: str,
    *,
    workers: int,
    pool: Pool = "threads",
    hashed: bool,
    busy: bool = False,
) -> str | None:
    hasher = hashlib.sha256() if hashed else None
    with AgeFile.open(path, identity) as age:
        for piece in age.plaintext(workers=workers, range_chunks=RANGE_CHUNKS, pool=pool):
            if hasher is not None:
                hasher.update(piece)
            if busy:
                python_work(piece)
    return hasher.hexdigest() if hasher is not None else None


def reader_range_hashes(
    path: Path, identity: str, *, workers: int, pool: Pool = "threads"
) -> list[str | None]:
    with AgeFile.open(path, identity) as age:
        ranges = age.ranges(
            workers=workers, range_chunks=RANGE_CHUNKS, plaintext=False, sha256=True, pool=pool
        )
        return [r.sha256 for r in ranges]


def cli_decrypt(age: str, path: Path, key_file: Path) -> None:
    subprocess.run([age, "-d", "-i", str(key_file), "-o", os.devnull, str(path)], check=True)


def aead_threads(sealed: list[bytes], key: bytes, threads: int) -> None:
    """ChaCha20-Poly1305 alone over chunks in memory, split over ``threads`` threads: the GIL
    question without any reading or hashing around it."""
    aead = ChaCha20Poly1305(key)
    nonce = bytes(12)
    bounds = [len(sealed) * i // threads for i in range(threads + 1)]

    def run(lo: int, hi: int) -> None:
        out = memoryview(bytearray(CHUNK_SIZE))
        for index in range(lo, hi):
            aead.decrypt_into(nonce, sealed[index], None, out)

    pool = [threading.Thread(target=run, args=(bounds[i], bounds[i + 1])) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="plaintext size in MiB")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="32 MiB, 2 rounds: a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.rounds = 32, 2
    size = args.mib * MIB
    workers = max(2, args.workers)
    age_cli = shutil.which("age")
    with tempfile.TemporaryDirectory(prefix="bench-age-reader-", dir=args.dir) as tmp:
        work = Path(tmp)
        plain, cipher, key_file = work / "plain.bin", work / "plain.bin.age", work / "key.txt"
        whole = hashlib.sha256()
        with plain.open("wb") as out:
            for _ in range(args.mib):
                block = os.urandom(MIB)
                whole.update(block)
                out.write(block)
        expected = whole.hexdigest()
        identity, recipient = new_identity()
        key_file.write_text(identity + "\n")
        key_file.chmod(0o600)
        encrypt_file(recipient, plain, cipher)
        plain.unlink()
        with cipher.open("rb") as warm:  # into the page cache
            while warm.read(8 * MIB):
                pass
        with AgeFile.open(cipher, identity) as age:
            expected_ranges: list[str | None] = [
                r.sha256
                for r in age.ranges(range_chunks=RANGE_CHUNKS, plaintext=False, sha256=True)
            ]

        def check(digest: object) -> None:
            if digest is not None and digest not in (expected, expected_ranges):
                raise SystemExit("a contender's plaintext differs from the original")

        n = workers
        key, plain_chunk = os.urandom(32), os.urandom(CHUNK_SIZE)
        one_sealed = ChaCha20Poly1305(key).encrypt(bytes(12), plain_chunk, None)
        sealed = [one_sealed] * (size // CHUNK_SIZE)
        contenders: list[tuple[str, Callable[[], object]]] = [
            ("pyrage", lambda: pyrage_decrypt(cipher, identity, hashed=False)),
            ("reader, 1", lambda: reader_decrypt(cipher, identity, workers=1, hashed=False)),
            (
                f"reader, {n} threads",
                lambda: reader_decrypt(cipher, identity, workers=n, hashed=False),
            ),
            (
                f"reader, {n} processes",
                lambda: reader_decrypt(cipher, identity, workers=n, pool="processes", hashed=False),
            ),
            ("pyrage + SHA-256", lambda: pyrage_decrypt(cipher, identity, hashed=True)),
            (
                "reader 1 + SHA-256",
                lambda: reader_decrypt(cipher, identity, workers=1, hashed=True),
            ),
            (
                f"reader {n} thr + SHA-256",
                lambda: reader_decrypt(cipher, identity, workers=n, hashed=True),
            ),
            (
                f"reader {n} proc + SHA-256",
                lambda: reader_decrypt(cipher, identity, workers=n, pool="processes", hashed=True),
            ),
            ("reader 1, range SHA-256s", lambda: reader_range_hashes(cipher, identity, workers=1)),
            (
                f"reader {n} thr, range SHA-256s",
                lambda: reader_range_hashes(cipher, identity, workers=n),
            ),
            (
                f"reader {n} proc, range SHA-256s",
                lambda: reader_range_hashes(cipher, identity, workers=n, pool="processes"),
            ),
            (
                "reader 1 + Python consumer",
                lambda: reader_decrypt(cipher, identity, workers=1, hashed=False, busy=True),
            ),
            (
                f"reader {n} thr + Python consumer",
                lambda: reader_decrypt(cipher, identity, workers=n, hashed=False, busy=True),
            ),
            (
                f"reader {n} proc + Python consumer",
                lambda: reader_decrypt(
                    cipher, identity, workers=n, pool="processes", hashed=False, busy=True
                ),
            ),
            ("AEAD alone, 1 thread", lambda: aead_threads(sealed, key, 1)),
            ("AEAD alone, 2 threads", lambda: aead_threads(sealed, key, 2)),
        ]
        if age_cli is not None:
            contenders.insert(1, ("age CLI", lambda: cli_decrypt(age_cli, cipher, key_file)))
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(args.rounds):
            for name, run in contenders:
                started = time.perf_counter()
                result = run()
                times[name].append(time.perf_counter() - started)
                check(result)
    load = os.getloadavg()[0]
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.mib} MiB plaintext, median of {args.rounds} interleaved rounds, "
        f"{os.cpu_count()} CPUs, load {load:.2f} at the end"
    )
    print(f"  {'contender':34} {'s':>7} {'MB/s':>8} {'ratio':>10}")
    for name, seconds in median.items():
        base = median["pyrage + SHA-256" if "SHA-256" in name else "pyrage"]
        if "consumer" in name:
            base = median["reader 1 + Python consumer"]
        print(f"  {name:34} {seconds:7.3f} {size / seconds / 1e6:8.1f} {base / seconds:9.2f}x")
    gil = median["AEAD alone, 1 thread"] / median["AEAD alone, 2 threads"]
    print(f"  GIL: AEAD in 2 threads / 1 thread = {gil:.2f}x (1.0: it holds the GIL)")
    if age_cli is not None:
        best = min(v for k, v in median.items() if k.startswith("reader, "))
        print(f"  fastest reader / age CLI = {median['age CLI'] / best:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
