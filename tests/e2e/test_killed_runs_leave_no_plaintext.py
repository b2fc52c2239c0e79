"""A ``backup run`` or ``drill run`` killed with SIGKILL leaves no readable plaintext and no
running server behind (B10, B11).

- ``backup run``: the source's RDB streams into a spool that has no name while it is used
  (unlinked right after it is opened, read back through ``/proc/self/fd``), so no file under
  the temporary directory ever holds the source's data, before or after the kill; the empty
  private folder the run leaves is removed by the next command.
- ``drill run``: the scratch ``redis-server`` dies with the drill (``PR_SET_PDEATHSIG``), and
  the drill's private folder, which holds the decrypted RDB, is removed by the next command.

Both runs are held mid-way by the real server, not by the product: the source streams its RDB
slowly (``rdb-key-save-delay``), and the scratch server loads it slowly (``key-load-delay``,
added by a ``redis-server`` wrapper found first on PATH). Every process runs with a
temporary directory of the test's own (``TMPDIR``), so that all of it can be searched."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.scratch.redis_server import RedisScratch

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path("/proc/self/fd").is_dir() or not sys.platform.startswith("linux"),
        reason="the spool is read back through /proc/self/fd; PR_SET_PDEATHSIG is Linux",
    ),
]

MARKER = b"PLAINTEXT-MARKER-"


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory of every process of the test, this one included."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def slow_source() -> Iterator[RedisScratch]:
    """A redis-server holding 3,000 keys whose values all carry MARKER, which streams its RDB
    at 5 ms per key (about 15 s) and does not compress strings (so MARKER shows in the
    clear wherever the RDB's bytes are)."""
    with RedisScratch(replica_sync_delay=0) as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        with client.pipeline(transaction=False) as pipe:
            for i in range(3000):
                pipe.set(f"user:{i}", MARKER + os.urandom(16).hex().encode())
            pipe.execute()
        client.config_set("rdbcompression", "no")
        client.config_set("rdb-key-save-delay", 5000)  # microseconds per key
        client.close()
        yield server


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _env(tmpdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmpdir)
    env.update(extra)
    return env


def _affidavit(home: Path, *args: str, env: dict[str, str], err: Path) -> subprocess.Popen[bytes]:
    with err.open("wb") as fh:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "affidavit", "--home", str(home), *args],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env=env,
        )


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    """Every regular file under ``folder`` whose bytes contain ``needle``."""
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
    return found


def _state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def _gone(pid: int) -> bool:
    return _state(pid) in (None, "Z", "X")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _spool_size(pid: int) -> int | None:
    """The size of the backup's RDB spool, found among the process's open files: a file
    named ``dump.rdb`` that has been unlinked. None while there is none."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith("/dump.rdb (deleted)"):
            return os.stat(fd).st_size
        assert not target.endswith("/dump.rdb"), f"the spool has a name: {target}"
    return None


def test_a_killed_backup_run_leaves_no_plaintext(
    slow_source: RedisScratch, cli: Any, home: Path, tmp_path: Path, tmpdir_env: Path
) -> None:  # the source server first: its own folder is not in the test's TMPDIR
    vault = tmp_path / "vault"
    _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", slow_source.uri,
            "--classification", "internal"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", f"file://{vault}"))
    err = tmp_path / "backup.err"
    proc = _affidavit(home, "backup", "run", "cache", env=_env(tmpdir_env), err=err)
    try:
        # hold on until the source's data is in the spool: mid-transfer
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the backup ended early: {err.read_text()}"
            assert time.monotonic() < deadline, "the transfer never started"
            size = _spool_size(proc.pid)
            if size:
                break
            time.sleep(0.02)
        # the plaintext is in the process's spool, yet no file anywhere under the temporary
        # directory holds it: the spool was never visible by name
        assert _files_holding(tmpdir_env, MARKER) == []
        (folder,) = tmpdir_env.iterdir()
        assert folder.name.startswith("affidavit-rdb.")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert _files_holding(vault, MARKER) == []  # the vault holds ciphertext only
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # after the kill: still no plaintext, at most the run's empty private folder
    assert _files_holding(tmpdir_env, MARKER) == []
    assert [p.name.split(".")[0] for p in tmpdir_env.iterdir()] == ["affidavit-rdb"]
    # the next command records the run abandoned and removes the folder of the dead process
    listed = json.loads(_ok(cli("backup", "list", "--json")).out)["backups"]
    assert [b["status"] for b in listed] == ["failed"]
    assert list(tmpdir_env.iterdir()) == []


def _redis_wrapper(folder: Path) -> Path:
    """A folder holding ``redis-server``: the real one, loading at 0.1 s per key and
    answering ``-LOADING`` meanwhile (it serves clients every 1 KiB loaded)."""
    real = shutil.which("redis-server")
    assert real is not None
    folder.mkdir()
    wrapper = folder / "redis-server"
    wrapper.write_text(
        f'#!/bin/sh\nexec {real} "$@" --key-load-delay 100000 '
        "--loading-process-events-interval-bytes 1024\n"
    )
    wrapper.chmod(0o755)
    return folder


def _ping(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64)
    except OSError:
        return b""


def _scratch_of(tmpdir: Path) -> tuple[Path, int, int] | None:
    """(the drill's folder, the scratch server's pid, its port) once the server runs."""
    for folder in tmpdir.glob("affidavit-drill.*"):
        for record in folder.glob("redis/.process.*"):
            pid = int(record.name.split(".")[2])
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            # redis-server sets its title to "redis-server 127.0.0.1:PORT" as it starts
            port = re.search(rb" 127\.0\.0\.1:([0-9]+)", argv) or re.search(
                rb"--port\0([0-9]+)", argv
            )
            if port is not None:
                return folder, pid, int(port[1])
    return None


def test_a_killed_drill_leaves_no_scratch_server_and_no_plaintext(
    cli: Any, home: Path, tmp_path: Path, tmpdir_env: Path
) -> None:
    with RedisScratch(replica_sync_delay=0) as source:
        client = redis.Redis(host="127.0.0.1", port=source.port)
        with client.pipeline(transaction=False) as pipe:
            for i in range(300):  # 1 KiB each: the scratch serves clients after each key
                pipe.set(f"user:{i}", MARKER + os.urandom(512).hex().encode())
            pipe.execute()
        client.close()
        _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", source.uri,
                "--classification", "internal"))  # fmt: skip
        _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}"))
        backup_id = json.loads(_ok(cli("backup", "run", "cache", "--json")).out)["backup_id"]
    assert list(tmpdir_env.iterdir()) == []  # the backup cleaned up after itself

    path = f"{_redis_wrapper(tmp_path / 'bin')}{os.pathsep}{os.environ.get('PATH', '')}"
    err = tmp_path / "drill.err"
    proc = _affidavit(home, "drill", "run", backup_id, env=_env(tmpdir_env, PATH=path), err=err)
    scratch_pid = 0
    try:
        # hold on until the scratch server is loading the decrypted RDB: mid-restore
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the drill ended early: {err.read_text()}"
            assert time.monotonic() < deadline, "the drill never got to its load phase"
            found = _scratch_of(tmpdir_env)
            if found is not None and _ping(found[2]).startswith(b"-LOADING"):
                break
            time.sleep(0.05)
        folder, scratch_pid, _port = found
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        rdb = folder / "redis" / "dump.rdb"
        assert stat.S_IMODE(rdb.stat().st_mode) == 0o600
        assert MARKER in rdb.read_bytes()  # the decrypted backup
        _kill(proc)
        # the scratch server dies with the drill, before any other command runs
        deadline = time.monotonic() + 10
        while not _gone(scratch_pid):
            assert time.monotonic() < deadline, "the scratch redis-server outlived the drill"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if scratch_pid and not _gone(scratch_pid):
            os.kill(scratch_pid, signal.SIGKILL)
    assert rdb.exists()  # the plaintext is still there: the process could not clean up
    # the next command removes the folder of the dead drill, plaintext and all
    _ok(cli("drill", "list", "--json"))
    assert not folder.exists()
    assert list(tmpdir_env.iterdir()) == []
