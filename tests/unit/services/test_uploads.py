"""``services/uploads.py``: an upload is kept only when whole and as declared, belongs to its
owner, is used once (two claimers racing: one wins), expires, and the sweep removes what is
expired or abandoned; an error while it is used never names the server's folders."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from affidavit.errors import InputError, NotFound
from affidavit.services import uploads

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _upload(home: Path, data: bytes, owner: str = "acc-1") -> uploads.Upload:
    receiver = uploads.Receiver(
        home, owner, size=len(data), sha256=hashlib.sha256(data).hexdigest(), now=NOW
    )
    receiver.write(data[:3])
    receiver.write(data[3:])
    return receiver.finish()


def _files(home: Path) -> list[str]:
    return sorted(os.listdir(home / "uploads"))


def test_a_whole_upload_is_kept_privately_with_its_owner_and_expiry(tmp_path: Path) -> None:
    done = _upload(tmp_path, b"hello world")
    assert done.size == 11 and done.expires_at == NOW + uploads.TTL
    assert _files(tmp_path) == [f"{done.id}.data", f"{done.id}.json"]
    assert (tmp_path / "uploads").stat().st_mode & 0o777 == 0o700
    for name in _files(tmp_path):
        assert (tmp_path / "uploads" / name).stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "uploads" / f"{done.id}.json").read_text())["owner"] == "acc-1"


@pytest.mark.parametrize(
    ("declared", "chunks", "words"),
    [
        (5, [b"123456"], "more than the 5 bytes"),
        (10, [b"12345"], "cut short"),
        (5, [b"12345"], "SHA-256"),  # (the digest below is of other bytes)
    ],
)
def test_a_body_not_as_declared_leaves_nothing(
    tmp_path: Path, declared: int, chunks: list[bytes], words: str
) -> None:
    receiver = uploads.Receiver(
        tmp_path, "acc-1", size=declared, sha256=hashlib.sha256(b"other").hexdigest(), now=NOW
    )
    with pytest.raises(InputError, match=words):
        for chunk in chunks:
            receiver.write(chunk)
        receiver.finish()
    assert _files(tmp_path) == []


def test_a_declared_digest_must_be_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="64 hex digits"):
        uploads.Receiver(tmp_path, "acc-1", size=1, sha256="abc")
    assert _files(tmp_path) == []


def test_only_the_owner_uses_it_once_before_it_expires(tmp_path: Path) -> None:
    done = _upload(tmp_path, b"data")
    with (
        pytest.raises(NotFound),
        uploads.claimed(tmp_path, done.id, "acc-2", name="x.rdb", now=NOW),
    ):  # another account: as if there were none
        pass
    with uploads.claimed(tmp_path, done.id, "acc-1", name="dump.rdb", now=NOW) as path:
        assert path.name == "dump.rdb" and path.read_bytes() == b"data"
        assert _files(tmp_path) == [path.parent.name]  # moved out of reach
    assert _files(tmp_path) == []
    with (
        pytest.raises(NotFound),
        uploads.claimed(tmp_path, done.id, "acc-1", name="dump.rdb", now=NOW),
    ):  # used once
        pass
    late = _upload(tmp_path, b"late")
    with (
        pytest.raises(NotFound),
        uploads.claimed(tmp_path, late.id, "acc-1", name="x", now=NOW + uploads.TTL),
    ):
        pass
    assert _files(tmp_path) == []  # the expired one is gone too


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b/c.rdb", "..", "", "x\ny"])
def test_a_name_is_only_ever_a_base_name(tmp_path: Path, name: str) -> None:
    done = _upload(tmp_path, b"data")
    try:
        with uploads.claimed(tmp_path, done.id, "acc-1", name=name, now=NOW) as path:
            assert path.parent.parent == tmp_path / "uploads" and "/" not in path.name
    except InputError:
        assert name in ("..", "", "x\ny")


def test_two_claimers_racing_one_wins(tmp_path: Path) -> None:
    done = _upload(tmp_path, b"data")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        try:
            with uploads.claimed(tmp_path, done.id, "acc-1", name="d", now=NOW):
                results.append("won")
        except NotFound:
            results.append("lost")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]


def test_an_error_names_the_file_not_the_servers_folders(tmp_path: Path) -> None:
    done = _upload(tmp_path, b"data")
    with (
        pytest.raises(InputError) as caught,
        uploads.claimed(tmp_path, done.id, "acc-1", name="dump.rdb", now=NOW) as path,
    ):
        raise InputError(f"{path}: not an RDB", hint=f"check {path}")
    assert caught.value.message == "dump.rdb: not an RDB"
    assert caught.value.hint == "check dump.rdb" and str(tmp_path) not in str(caught.value)


def test_the_sweep_removes_what_is_expired_or_abandoned(tmp_path: Path) -> None:
    kept = _upload(tmp_path, b"fresh")
    old = _upload(tmp_path, b"old")
    meta = tmp_path / "uploads" / f"{old.id}.json"
    record = json.loads(meta.read_text())
    record["expires_at"] = (NOW - timedelta(seconds=1)).isoformat()
    meta.write_text(json.dumps(record))
    idle = tmp_path / "uploads" / ".incoming-up-0123456789abcdef"
    idle.write_bytes(b"half")
    stale = (NOW - uploads.TTL - timedelta(minutes=1)).timestamp()
    os.utime(idle, (stale, stale))
    busy = tmp_path / "uploads" / ".incoming-up-fedcba9876543210"
    busy.write_bytes(b"arriving")
    orphan = tmp_path / "uploads" / "up-aaaaaaaaaaaaaaaa.data"
    orphan.write_bytes(b"no owner")
    removed = uploads.sweep(tmp_path, now=NOW)
    assert sorted(removed) == sorted([old.id, "up-0123456789abcdef"])
    assert _files(tmp_path) == sorted([f"{kept.id}.data", f"{kept.id}.json", busy.name])


def test_an_owner_may_keep_only_so_many_uploads_waiting(tmp_path: Path) -> None:
    """Uploads waiting to be used count against their owner (not another's); one used or
    expired makes room again. Refused before a byte is written."""
    from affidavit.errors import TooManyRequests

    made = [_upload(tmp_path, b"payload %d" % n) for n in range(uploads.MAX_WAITING)]
    before = _files(tmp_path)
    with pytest.raises(TooManyRequests, match="waiting"):
        _upload(tmp_path, b"one more")
    assert _files(tmp_path) == before  # no incoming file was even opened
    _upload(tmp_path, b"another owner's", owner="acc-2")  # others are not held back
    with uploads.claimed(tmp_path, made[0].id, "acc-1", name="x.bin", now=NOW) as path:
        assert path.read_bytes() == b"payload 0"
    _upload(tmp_path, b"room again")  # the one used made room


def test_an_upload_that_would_fill_the_disk_is_refused_before_a_byte(tmp_path: Path) -> None:
    import shutil

    from affidavit.errors import OperationError

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(OperationError, match="bytes free"):
        uploads.Receiver(
            tmp_path, "acc-1", size=free - uploads.FREE_RESERVE + (1 << 20),
            sha256="0" * 64, now=NOW,
        )  # fmt: skip
    assert not any(p.name.startswith(".incoming-") for p in (tmp_path / "uploads").iterdir())
