"""Attacks on the export's worker processes (``export run --workers N``,
services/exports/parallel.py): a worker that hangs (SIGSTOP), Ctrl-C to the process group,
the parent killed with SIGKILL. Real SecantusDB, real backups, real forked workers; the
Ctrl-C and SIGKILL attacks run the real ``affidavit`` command in a process of its own."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pyrage
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from pymongo import MongoClient
from pyrage import x25519
from tests.e2e.test_export_cli import Setup, events, prepare
from tests.e2e.test_export_parallel import _documents, _spec

from affidavit.config import load_settings
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.context import App, open_app
from affidavit.services.exports import parallel
from affidavit.services.exports.run import run_export as run_export_service
from affidavit.services.keys import keystore_for, unwrap_identity

pytestmark = pytest.mark.e2e

AFFIDAVIT = str(Path(sys.executable).with_name("affidavit"))


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_documents())
        client.close()
        yield server.uri


@pytest.fixture(scope="module")
def big_mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    """Enough records (30,000 of ~1 KiB) for a run on two workers to last a while."""
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        docs = _documents()
        for round_ in range(20):
            client["shop"]["big"].insert_many(
                [{**d, "_id": round_ * 10_000 + d["_id"]} for d in docs]
            )
        client.close()
        yield server.uri


def _forked_children(parent: psutil.Process | None = None) -> list[psutil.Process]:
    """The children of ``parent`` (default: this process) that are forks of it."""
    me = parent or psutil.Process()
    try:
        line = me.cmdline()
        return [c for c in me.children() if c.cmdline() == line]
    except psutil.Error:
        return []


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _no_partial(s: Setup) -> None:
    assert list(s.dest.iterdir()) == []


def test_a_stopped_worker_does_not_hang_the_run(
    cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stopped (SIGSTOP: a debugger, a cgroup freeze, a hang) must not block the
    run for ever: the parent sees it, stops the pool and fails the run (exit 3), delivering
    nothing, leaving no worker behind."""
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    monkeypatch.setattr(parallel, "BATCH_BYTES", 2048)  # ~800 batches: the pass lasts
    monkeypatch.setattr(parallel, "STALL_SECONDS", 2.0, raising=False)
    before = {p.pid for p in _forked_children()}
    stopped: set[int] = set()
    done = threading.Event()
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(cli("export", "run", "customers-to-acme", "--workers", "2"))
        finally:
            done.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    # both workers (a pool's idle worker takes no batch: one stopped alone may let the
    # other finish the run, which is right, and then dies with the pool)
    while len(stopped) < 2 and not done.is_set() and time.monotonic() < deadline:
        for child in _forked_children():
            if child.pid not in before and child.pid not in stopped:
                child.send_signal(signal.SIGSTOP)
                stopped.add(child.pid)
        time.sleep(0.002)
    assert len(stopped) == 2, "no worker processes were seen"
    finished = done.wait(60)
    if not finished:  # unblock the run (so the test ends) and report the hang
        _kill_all(stopped | {p.pid for p in _forked_children()} - before)
        runner.join(30)
    assert finished, "the run waited for ever on a stopped worker"
    (r,) = result
    assert r.code == 3, r.out + r.err
    first = r.err.strip().splitlines()[0]
    assert first.startswith("error: ") and "stopped" in first, r.err
    assert "Traceback" not in r.err
    _no_partial(s)
    assert not _alive(stopped), "the stopped worker was left behind"
    failed = events(home, "export.failed")
    assert len(failed) == 1
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("SELECT status FROM export_runs").fetchall() == [("failed",)]


# Ctrl-C as a terminal delivers it: the command starts with SIGINT at its default and not
# blocked. A disposition of SIG_IGN and a blocked mask are both inherited across exec (a test
# runner's process or thread may hold either, and then the signal would be lost, not the
# run's doing), so both are reset just before the exec.
_SIGINT_DEFAULT = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "os.execv(sys.argv[1], sys.argv[1:])",
)


def _spawn(home: Path, err: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env["AFFIDAVIT_ACTOR"] = "tester@example.com"
    with err.open("w") as fh:  # a file, not a pipe: a worker left behind cannot hold it
        return subprocess.Popen(
            [*_SIGINT_DEFAULT, AFFIDAVIT, "--home", str(home), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: Ctrl-C reaches its workers
        )


def _workers_of(proc: subprocess.Popen[str], timeout: float = 60) -> set[int]:
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {c.pid for c in _forked_children(parent)}
        if len(found) >= 2:
            return found
        assert proc.poll() is None, "the run ended before its workers were seen"
        time.sleep(0.01)
    raise AssertionError("no worker processes were seen")


BIG_SPEC = (
    _spec()
    .replace('dataset = "shop.customers"', 'dataset = "shop.big"')
    .replace('unique = ["email"]', "unique = []")
)


def _run_and_signal(
    cli: Any, home: Path, tmp_path: Path, mongo: str, sig: signal.Signals, *, group: bool
) -> tuple[Setup, subprocess.Popen[str], set[int], str]:
    s = prepare(cli, home, tmp_path, mongo, spec=BIG_SPEC)
    err = tmp_path / "stderr.txt"
    proc = _spawn(home, err, "export", "run", "customers-to-acme", "--workers", "2")
    workers: set[int] = set()
    try:
        workers = _workers_of(proc)
        # nothing reaches a worker but through the fork: its command line and environment
        # are its parent's (no key, no path to a key file, no passphrase added)
        for pid in workers:
            for name in ("cmdline", "environ"):
                mine = Path(f"/proc/{pid}/{name}").read_bytes()
                assert mine == Path(f"/proc/{proc.pid}/{name}").read_bytes(), name
        time.sleep(0.05)  # mid-run: the workers are forked with the first batch
        assert proc.poll() is None, "the run ended before the signal"
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        proc.wait(timeout=60)
    except BaseException:
        proc.kill()
        _kill_all(workers)
        raise
    return s, proc, workers, err.read_text()


def test_ctrl_c_to_the_process_group_ends_the_run_cleanly(
    cli: Any, home: Path, tmp_path: Path, big_mongo: str
) -> None:
    """Ctrl-C reaches the parent and its workers (one process group): one clean message,
    no traceback from any process, nothing delivered, no worker left, the run failed."""
    s, proc, workers, err = _run_and_signal(
        cli, home, tmp_path, big_mongo, signal.SIGINT, group=True
    )
    try:
        assert proc.returncode == 130, err
        assert "Traceback" not in err, err
        assert "KeyboardInterrupt" not in err, err
        deadline = time.monotonic() + 10
        while _alive(workers):
            assert time.monotonic() < deadline, "a worker outlived the interrupted run"
            time.sleep(0.05)
        _no_partial(s)
    finally:
        _kill_all(workers)
    # recorded as any failed run (docs/exports.md: "any other failure records
    # export.failed"), not left `running` for a later command to reclaim
    failed = events(home, "export.failed")
    assert len(failed) == 1, failed
    assert "interrupted" in failed[0]["details"]["error"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("SELECT status FROM export_runs").fetchall() == [("failed",)]


def test_workers_do_not_outlive_a_killed_parent(
    cli: Any, home: Path, tmp_path: Path, big_mongo: str
) -> None:
    """The parent killed with SIGKILL (no clean-up runs): its workers must not run on
    (orphans holding the pseudonymisation key in memory); the partial output is the
    encrypted one only, and a later command reclaims the run."""
    s, proc, workers, _ = _run_and_signal(
        cli, home, tmp_path, big_mongo, signal.SIGKILL, group=False
    )
    try:
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while _alive(workers):
            assert time.monotonic() < deadline, "workers outlived their killed parent"
            time.sleep(0.05)
    finally:
        _kill_all(workers)
    # what is left on disk is the hidden partial output (ciphertext), reclaimed later
    left = list(s.dest.iterdir())
    assert all(p.name.startswith(".") and ".partial-" in p.name for p in left), left
    for p in left:  # empty (killed before its first chunk) or age ciphertext
        data = p.read_bytes()
        assert data == b"" or data.startswith(b"age-encryption.org/v1"), p


def test_workers_do_not_write_the_parents_pending_output_again(
    cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker is a fork: it inherits the parent's stdout buffer as it was (in the server:
    the access log's lines not yet flushed to a file or pipe), and at its exit
    multiprocessing flushes the standard streams. Held: the fork flushes the parent's
    streams first, and the workers now write to fresh streams of their own."""
    prepare(cli, home, tmp_path, mongo, spec=_spec())
    log = tmp_path / "stdout.log"
    raw = log.open("wb")
    stream = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=1 << 20), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stream)
    stream.write("one line of the parent's, not flushed yet\n")
    with open_app(load_settings(home=home)) as app:
        result = run_export_service(app, "customers-to-acme", workers=2)
    assert result.delivered
    stream.flush()
    monkeypatch.undo()
    stream.close()
    assert log.read_text().count("one line of the parent's") == 1, log.read_text()


def test_concurrent_runs_fork_workers_from_a_threaded_process(
    cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server runs each export in a request thread: the workers are forked from a
    process whose other threads are running other exports (their pools, queues, OpenSSL
    hashing and age encryption), logging and writing to stderr. Three runs at once, on two
    workers each, under that load: none hangs, each writes the serial pass's bytes."""
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    monkeypatch.setattr(parallel, "BATCH_BYTES", 16 * 1024)  # ~100 batches: many forks
    settings = load_settings(home=home)
    with open_app(settings) as app:
        serial = run_export_service(app, "customers-to-acme", workers=1, output="serial.age")
    stop = threading.Event()
    log = logging.getLogger("affidavit.attack.load")

    def load() -> None:  # what a server's other threads do while a request forks
        n = 0
        while not stop.is_set():
            n += 1
            hashlib.sha256(b"x" * 4096).digest()
            hmac.new(b"k" * 32, str(n).encode(), "sha256").digest()
            log.warning("load %d", n)
            sys.stderr.write(f"load {n}\n")

    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with open_app(settings) as mine:
                results[i] = run_export_service(
                    mine, "customers-to-acme", workers=2, output=f"run{i}.age"
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    loaders = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    runners = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for t in loaders + runners:
        t.start()
    deadline = time.monotonic() + 240
    for t in runners:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    hung = [t for t in runners if t.is_alive()]
    if hung:  # free the test: kill this process's forked children
        _kill_all({p.pid for p in _forked_children()})
    assert not hung, "a run forked from a threaded process hung"
    assert not errors, errors
    assert serial.output is not None
    want = pyrage.decrypt(serial.output.read_bytes(), [x25519.Identity.from_str(s.identity)])
    for i, result in results.items():
        assert result.delivered, i
        got = pyrage.decrypt(result.output.read_bytes(), [x25519.Identity.from_str(s.identity)])
        assert got == want, i
        assert (
            result.predicate["output"]["fingerprint"] == serial.predicate["output"]["fingerprint"]
        )
    assert len(results) == 3


def _artifact(tmp_path: Path) -> Path:
    (found,) = list((tmp_path / "vault").rglob("customers.bson.age"))
    found.chmod(0o600)  # the folder vault stores read-only files
    return found


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda plain: plain[: len(plain) // 2] + b"\xff" * 64, id="bad-framing"),
        pytest.param(lambda plain: b"\x1f\x8b" + plain[2:], id="gzip-magic"),
        # frames as BSON, but the first document does not decode: met in a worker while
        # most of the ciphertext is still to be read
        pytest.param(
            lambda plain: plain.replace(b"\x02email\x00", b"\x20email\x00", 1),
            id="bad-element-type",
        ),
    ],
)
def test_a_forged_artifact_that_decrypts_to_bad_bson_is_the_digest_s_failure(
    app: App,
    cli: Any,
    home: Path,
    tmp_path: Path,
    mongo: str,
    forge: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ciphertext re-encrypted with the backup's own key, whose plaintext is not BSON:
    the streamed read meets the bad framing before the end of the ciphertext. The serial
    pass checks the digest first and names the forgery; the workers' pass must too (not a
    format error, which reads as a damaged backup, with another exit code)."""
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    monkeypatch.setattr(parallel, "BATCH_BYTES", 16 * 1024)  # the stream lasts
    with app.read() as uow:
        backup = uow.backups.get(s.backup_id)
    identity = x25519.Identity.from_str(unwrap_identity(keystore_for(app.settings), backup))
    artifact = _artifact(tmp_path)
    plain = pyrage.decrypt(artifact.read_bytes(), [identity])
    artifact.write_bytes(pyrage.encrypt(forge(plain), [identity.to_public()]))
    answers = {}
    for workers in ("1", "2"):
        r = cli("export", "run", "customers-to-acme", "--workers", workers)
        assert "Traceback" not in r.err
        assert list(s.dest.iterdir()) == []
        answers[workers] = (r.code, r.err.splitlines()[0])
    assert "does not match its signed digest" in answers["1"][1], answers
    assert answers["2"] == answers["1"], answers


def _odd_documents() -> list[dict[str, Any]]:
    """Every odd BSON type in the kept field, duplicates of the ``unique`` field across
    batch borders, a document larger than a whole batch, documents of exactly a batch."""
    odd: list[Any] = [
        Decimal128("1.000000000000000000000000000000001"),
        Decimal128("-0"),
        Decimal128("NaN"),
        Int64(2**63 - 1),
        -0.0,
        float("nan"),
        float("inf"),
        1e308,
        Binary(b"\x00\xff" * 8, 4),
        Binary(b"raw", 0x80),
        Regex("^a.*b$", "imx"),
        Timestamp(2**31, 7),
        MinKey(),
        MaxKey(),
        Code("function () {}"),
        ObjectId(b"abcdefghijkl"),
        datetime(1, 1, 1, tzinfo=UTC),
        None,
        "é\u0000\ud7ff\U0010ffff",
        {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}},
        [],
        {},
        True,
    ]
    out: list[dict[str, Any]] = []
    for n in range(400):
        doc: dict[str, Any] = {
            "_id": n + 1,
            "email": f"p{n % 150}@example.com",  # duplicates in later batches
            "age": 30,
            "birth": datetime(1980, 1, 2, tzinfo=UTC),
            "country": "FR",
            "notes": odd[n % len(odd)],
        }
        if n == 200:
            doc["notes"] = "x" * (64 * 1024)  # larger than a whole batch (16 KiB)
        out.append(doc)
    return out


@pytest.fixture(scope="module")
def odd_mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_odd_documents())
        client.close()
        yield server.uri


@pytest.mark.parametrize("fmt", ["extjson", "csv", "parquet"])
@pytest.mark.parametrize("batch", [16 * 1024, 1139, 1])
def test_odd_bson_types_and_batch_borders_are_the_serial_bytes(
    cli: Any,
    home: Path,
    tmp_path: Path,
    odd_mongo: str,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    batch: int,
) -> None:
    """The workers' output is the serial pass's, byte for byte, whatever the batch borders
    (one document a batch, a document larger than a batch), on odd BSON values."""
    s = prepare(cli, home, tmp_path, odd_mongo, spec=_spec(fmt, max_violations=100_000))
    monkeypatch.setattr(parallel, "BATCH_BYTES", batch)
    runs = {}
    for workers in ("1", "2", "3"):
        r = cli(
            "export", "run", "customers-to-acme", "--workers", workers, "--output",
            f"w{workers}.{fmt}.age", "--json",
        )  # fmt: skip
        assert "Traceback" not in r.err
        runs[workers] = (r.code, r.out, r.err)
    assert {w: r[0] for w, r in runs.items()} == {"1": 0, "2": 0, "3": 0}, runs
    outs = {w: json.loads(runs[w][1]) for w in runs}
    identity = [x25519.Identity.from_str(s.identity)]
    plain = {w: pyrage.decrypt(Path(o["output"]).read_bytes(), identity) for w, o in outs.items()}
    assert plain["2"] == plain["1"] and plain["3"] == plain["1"]
    for w in ("2", "3"):
        assert outs[w]["contract"] == outs["1"]["contract"]
        assert outs[w]["predicate"]["records"] == outs["1"]["predicate"]["records"]
        assert (
            outs[w]["predicate"]["output"]["fingerprint"]
            == (outs["1"]["predicate"]["output"]["fingerprint"])
        )


def test_a_worker_stopped_after_the_last_batch_does_not_hang_the_end(
    cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch is back, then a worker is stopped: the pass has nothing left for it, and
    its end (the pool's shutdown, which waits for each worker to exit) must not wait for
    ever on it; the run delivers."""
    s = prepare(cli, home, tmp_path, mongo, spec=_spec())
    monkeypatch.setattr(parallel, "BATCH_BYTES", 64 * 1024 * 1024)  # one batch
    before = {p.pid for p in _forked_children()}
    stopped: set[int] = set()
    settle = parallel._settle

    def settle_then_stop(*args: Any) -> Any:  # the one batch is back: stop the workers
        for child in _forked_children():
            if child.pid not in before:
                child.send_signal(signal.SIGSTOP)
                stopped.add(child.pid)
        return settle(*args)

    monkeypatch.setattr(parallel, "_settle", settle_then_stop)
    done = threading.Event()
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(cli("export", "run", "customers-to-acme", "--workers", "2"))
        finally:
            done.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    finished = done.wait(60)
    if not finished:
        _kill_all(stopped | {p.pid for p in _forked_children()} - before)
        runner.join(30)
    assert stopped, "no worker process was seen"
    assert finished, "the run's end waited for ever on a stopped worker"
    (r,) = result
    assert r.code == 0, r.out + r.err
    assert len([p for p in s.dest.iterdir() if not p.name.startswith(".")]) == 2
    assert not _alive(stopped)
