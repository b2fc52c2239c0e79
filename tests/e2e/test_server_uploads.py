"""The commands that carry a file through a real ``affidavit serve`` (issue 15, "Uploads"):
``backup ingest`` uploads the backup file and the server ingests it into its vault,
``fingerprint FILE`` uploads the file, ``fingerprint SOURCE`` and ``verify run`` run on the
server; each prints what the same command prints locally, with the same ``--json`` and exit
codes. ``diff`` runs on this host in client mode (it reads two index files); ``--out`` and a
mongodump folder are refused through the server with a hint. No upload is left behind."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from server_harness import Served, World, make_world, password_file, serving

from affidavit.scratch.redis_server import RedisScratch

pytestmark = pytest.mark.e2e

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "formats"
RDB = SHARED / "redis-rdb/redis-rdb-tools/tests/dumps/keys_with_expiry.rdb"
ARCHIVE = SHARED / "mongodump/mongo-tools/mongorestore/testdata/test.bar.archive"


@dataclass
class Setup:
    cli: Any
    served: Served
    world: World
    password: Path
    tmp: Path

    @property
    def home(self) -> Path:
        return self.world.home

    def login(self, name: str) -> None:
        done = self.cli("login", self.served.url, "--name", name, "--password-file",
                        str(self.password), "--code", self.world.code(name))  # fmt: skip
        assert done.code == 0, done.err

    def through(self, *args: str) -> Any:
        return self.cli("--server", self.served.url, *args)

    def local(self, *args: str) -> Any:
        return self.cli(*args)


@pytest.fixture
def setup(cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    if not RDB.is_file() or not ARCHIVE.is_file():
        pytest.skip("the backup files come with the shared folder")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    with serving(home) as served:
        yield Setup(cli=cli, served=served, world=world, password=password_file(tmp_path),
                    tmp=tmp_path)  # fmt: skip


def _json(result: Any) -> Any:
    assert result.code == 0, (result.out, result.err)
    return json.loads(result.out)


def _ingested(data: dict[str, Any]) -> dict[str, Any]:
    """What two ingests of the same file share (ids, times and paths differ)."""
    return {
        "status": data["status"],
        "format": data["format"],
        "vault": data["vault"],
        "datasets": data["datasets"],
        "artifacts": sorted((a["role"], a["size"] > 0) for a in data["artifacts"]),
    }


def _left_in_uploads(home: Path) -> list[str]:
    folder = home / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _backups(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("select count(*) from backups").fetchone()[0])


def test_ingest_fingerprint_verify_through_the_server_print_what_they_print_locally(
    setup: Setup, fresh_redis: RedisScratch
) -> None:
    setup.login("operator")
    # backup ingest: an RDB and a mongodump archive, uploaded and ingested by the server
    for path, fmt in ((RDB, "rdb"), (ARCHIVE, "mongodump-archive")):
        remote = _json(setup.through("backup", "ingest", str(path), "--format", fmt, "--json"))
        local = _json(setup.local("backup", "ingest", str(path), "--format", fmt, "--json"))
        assert _ingested(remote) == _ingested(local)
        assert remote["backup_id"] != local["backup_id"]
        # the human output too: the same lines but for the backup's id
        shown = setup.through("backup", "ingest", str(path), "--format", fmt)
        assert shown.code == 0, shown.err
        assert "complete" in shown.out and "vault v1" in shown.out
    assert _backups(setup.home) == 6
    assert _left_in_uploads(setup.home) == []
    # verify run (and `verify BACKUP`) through the server: the same result as locally
    backup = remote["backup_id"]
    remote_v = _json(setup.through("verify", backup, "--json"))
    # both fast, vouched by the same entry: the backup's completion (its tables proven)
    local_v = _json(setup.local("verify", "run", backup, "--json"))
    assert remote_v["vouched_by_action"] == local_v["vouched_by_action"] == "backup.completed"
    same = ("backup_id", "kind", "ok", "coverage", "findings_count", "findings")
    assert {k: remote_v[k] for k in same} == {k: local_v[k] for k in same}
    assert remote_v["ok"] is True
    shown = setup.through("verify", "run", backup)
    assert shown.code == 0 and "verified" in shown.out, shown.err
    refused = setup.through("verify", backup, "--workers", "2")
    assert refused.code == 2 and "--workers" in refused.err and "locally" in refused.err
    # an unknown backup: the same exit code and message as locally
    remote_missing = setup.through("verify", "bk-nothing")
    local_missing = setup.local("verify", "bk-nothing")
    assert remote_missing.code == local_missing.code == 2
    assert remote_missing.err == local_missing.err
    # fingerprint FILE: uploaded, fingerprinted by the server
    remote_f = _json(setup.through("fingerprint", str(ARCHIVE), "--json"))
    local_f = _json(setup.local("fingerprint", str(ARCHIVE), "--json"))
    assert remote_f == local_f
    assert (
        setup.through("fingerprint", str(ARCHIVE)).out
        == setup.local("fingerprint", str(ARCHIVE)).out
    )
    # fingerprint SOURCE: the server connects
    redis.Redis.from_url(fresh_redis.uri).set("k1", "v1")
    assert setup.local("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
                       "--classification", "internal").code == 0  # fmt: skip
    assert _json(setup.through("fingerprint", "cache", "--json")) == _json(
        setup.local("fingerprint", "cache", "--json")
    )
    # local only: --out, a folder; diff runs here (two index files of this host)
    index = setup.tmp / "a.idx"
    refused = setup.through("fingerprint", str(ARCHIVE), "--out", str(index))
    assert refused.code == 2 and "--out" in refused.err and "Traceback" not in refused.err
    refused = setup.through("fingerprint", str(SHARED / "mongodump"))
    assert refused.code == 2 and "folder" in refused.err
    refused = setup.through("backup", "ingest", str(SHARED / "mongodump"), "--format", "mongodump")
    assert refused.code == 2 and "--archive" in refused.err
    assert setup.local("fingerprint", str(ARCHIVE), "--out", str(index)).code == 0
    index_file = next(index.iterdir()) if index.is_dir() else index
    remote_d = setup.through("diff", str(index_file), str(index_file), "--json")
    local_d = setup.local("diff", str(index_file), str(index_file), "--json")
    assert remote_d.code == local_d.code == 0 and remote_d.out == local_d.out
    assert _left_in_uploads(setup.home) == []


def test_a_bad_backup_file_is_refused_as_locally_and_leaves_nothing(setup: Setup) -> None:
    setup.login("operator")
    bad = setup.tmp / "bad.rdb"
    bad.write_bytes(b"NOT-AN-RDB" * 100)
    remote = setup.through("backup", "ingest", str(bad), "--format", "rdb")
    local = setup.local("backup", "ingest", str(bad), "--format", "rdb")
    assert remote.code == local.code == 2, (remote.err, local.err)
    assert "Traceback" not in remote.err
    remote_error = [line for line in remote.err.splitlines() if line.startswith("error:")]
    local_error = [line for line in local.err.splitlines() if line.startswith("error:")]
    assert len(remote_error) == len(local_error) == 1, (remote.err, local.err)
    # the same message, the file named by its name (the server's folders are not shown)
    assert remote_error[0] == local_error[0].replace(str(bad), bad.name)
    assert str(setup.home) not in remote.err
    assert _backups(setup.home) == 0
    assert _left_in_uploads(setup.home) == []
    missing = setup.through("backup", "ingest", str(setup.tmp / "nothing.rdb"), "--format", "rdb")
    assert missing.code == 2 and "no file" in missing.err


class _Recorder:
    """A progress reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None]] = []
        self.advanced = 0
        self.finished = 0

    def stage(self, description: str) -> None:
        self.tasks.append((description, None))

    def task(self, description: str, total: int | None) -> None:
        self.tasks.append((description, total))

    def advance(self, units: int = 1) -> None:
        self.advanced += units

    def finish(self) -> None:
        self.finished += 1


def test_a_large_upload_streams_with_a_progress_bar_and_is_kept_privately(setup: Setup) -> None:
    from affidavit.cli.client import load_session, session_client

    setup.login("operator")
    assert load_session() is not None
    remote, _ = session_client(setup.served.url)
    big = setup.tmp / "big.bin"
    size = 9 * 1024 * 1024 + 7
    with big.open("wb") as fh:
        fh.write(os.urandom(size))
    recorder = _Recorder()
    upload = remote.upload(big, reporter=recorder)
    assert recorder.tasks == [("reading big.bin", size), ("uploading big.bin", size)]
    assert recorder.advanced == 2 * size and recorder.finished == 1
    kept = setup.home / "uploads" / f"{upload}.data"
    assert kept.read_bytes() == big.read_bytes()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert (setup.home / "uploads").stat().st_mode & 0o777 == 0o700
    # a small file: no bar
    small = setup.tmp / "small.bin"
    small.write_bytes(b"x" * 100)
    quiet = _Recorder()
    remote.upload(small, reporter=quiet)
    assert quiet.tasks == [] and quiet.advanced == 0
    # not a regular file: refused here, nothing sent
    fifo = setup.tmp / "fifo"
    os.mkfifo(fifo)
    refused = setup.through("backup", "ingest", str(fifo), "--format", "rdb")
    assert refused.code == 2 and "named pipe" in refused.err
