"""``affidavit.private_temp``: private folders named after their owner, removed by a later
sweep only when the owner is provably dead; spool files without a name; scratch children
that die with their parent (``processes.die_with_parent``)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from affidavit import private_temp
from affidavit.private_temp import (
    PrivateFolder,
    make_private_folder,
    open_private,
    owner_of,
    private_folder,
    record_process,
    sweep,
    unlinked_spool,
)
from affidavit.processes import die_with_parent

LINUX = Path("/proc/self/stat").exists() and Path("/proc/sys/kernel/random/boot_id").exists()
needs_proc = pytest.mark.skipif(not LINUX, reason="owners are judged through /proc")


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _gone(pid: int) -> bool:
    """The process no longer runs (gone, or a zombie waiting for its parent)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return False


def _folder_of_dead_process(parent: Path, *, keep: str = "") -> Path:
    """A private folder made by another process that has exited since (``keep``: Python run
    there after the folder is made, with ``folder`` bound)."""
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from affidavit.private_temp import make_private_folder\n"
        "folder = make_private_folder('drill', parent=Path(sys.argv[1]))\n"
        "(folder / 'dump.rdb').write_bytes(b'plaintext')\n"
        f"{keep}\n"
        "print(folder, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(parent)], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def test_a_folder_is_private_and_named_after_its_owner(tmp_path: Path, umask_zero: None) -> None:
    folder = make_private_folder("rdb", parent=tmp_path)
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.name.startswith("affidavit-rdb.")
        if LINUX:
            owner = owner_of(folder.name)
            assert owner is not None
            assert owner.pid == os.getpid()
        with open_private(folder / "dump.rdb") as fh:
            fh.write(b"x")
        assert stat.S_IMODE((folder / "dump.rdb").stat().st_mode) == 0o600
    finally:
        private_temp.remove_folder(folder)
    assert not folder.exists()


def test_private_folder_is_removed_after_the_block(tmp_path: Path) -> None:
    with private_folder("verify", parent=tmp_path) as folder:
        (folder / "plain").write_bytes(b"x")
    assert not folder.exists()
    held = PrivateFolder("fp", parent=tmp_path)
    path = held.path
    assert path.is_dir()
    held.cleanup()
    assert not path.exists()


def test_a_folder_kind_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        make_private_folder("../escape", parent=tmp_path)


def test_open_private_refuses_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (tmp_path / "spool").symlink_to(target)
    with pytest.raises(OSError, match="symbolic links"):  # ELOOP: O_NOFOLLOW
        open_private(tmp_path / "spool")
    assert target.read_bytes() == b"keep"


def test_an_unlinked_spool_has_no_name_while_it_is_read(tmp_path: Path) -> None:
    with unlinked_spool(tmp_path, "dump.rdb") as (writer, path):
        writer.write(b"first ")
        writer.flush()
        if LINUX:
            assert not (tmp_path / "dump.rdb").exists()  # never visible by name
            assert list(tmp_path.iterdir()) == []
        writer.write(b"second")
        writer.flush()
        with path.open("rb") as one, path.open("rb") as two:
            assert one.read() == b"first second"
            assert two.read(5) == b"first"
    assert list(tmp_path.iterdir()) == []


@needs_proc
def test_sweep_removes_the_folder_of_a_dead_owner_only(tmp_path: Path) -> None:
    dead = _folder_of_dead_process(tmp_path)
    assert (dead / "dump.rdb").exists()
    mine = make_private_folder("rdb", parent=tmp_path)
    # a live owner: a child that made its folder and waits
    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from affidavit.private_temp import make_private_folder\n"
        "print(make_private_folder('fp', parent=Path(sys.argv[1])), flush=True)\n"
        "time.sleep(60)\n"
    )
    live = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout is not None
        living = Path(live.stdout.readline().strip())
        # look-alikes a sweep must leave alone
        no_owner = tmp_path / "affidavit-rdb.x.abc123"
        no_owner.mkdir()
        owner = owner_of(dead.name)
        assert owner is not None
        other_boot = tmp_path / (
            f"affidavit-rdb.{owner.pid}.{owner.start}."
            f"{'0' * 8 if owner.boot != '0' * 8 else '1' * 8}.{owner.namespace}.zz"
        )
        other_boot.mkdir()
        link = tmp_path / f"affidavit-rdb.{owner.tag()}.link"
        link.symlink_to(mine)
        unrelated = tmp_path / "something-else"
        unrelated.mkdir()

        removed = sweep(tmp_path)

        assert removed == [dead]
        assert not dead.exists()
        for kept in (mine, living, no_owner, other_boot, unrelated):
            assert kept.is_dir(), kept
        assert link.is_symlink()
    finally:
        live.kill()
        live.wait()
    # once the live owner is dead its folder goes too
    assert living in sweep(tmp_path)
    private_temp.remove_folder(mine)


@needs_proc
def test_a_reused_pid_does_not_keep_a_folder(tmp_path: Path) -> None:
    """The owner's start time is part of the name: another process under the same pid (here:
    this very process, with a start time that is not its own) is not the owner."""
    mine = make_private_folder("drill", parent=tmp_path)
    owner = owner_of(mine.name)
    assert owner is not None
    forged = tmp_path / (
        f"affidavit-drill.{owner.pid}.{owner.start + 1}.{owner.boot}.{owner.namespace}.abc"
    )
    forged.mkdir(mode=0o700)
    assert sweep(tmp_path) == [forged]
    assert mine.is_dir()
    private_temp.remove_folder(mine)


@needs_proc
def test_sweep_kills_a_process_recorded_in_a_dead_owners_folder(tmp_path: Path) -> None:
    """A server the dead owner left running (no parent-death signal: another system, or a
    race) is killed by the sweep before its folder goes; it is identified by pid and start
    time, so an unrelated process that reuses the pid would not be."""
    keep = (
        "import subprocess\n"
        "from affidavit.private_temp import record_process\n"
        "child = subprocess.Popen(['sleep', '120'], start_new_session=True,\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "record_process(folder, child.pid)\n"
        "print(child.pid, flush=True)\n"
    )
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from affidavit.private_temp import make_private_folder\n"
        "folder = make_private_folder('drill', parent=Path(sys.argv[1]))\n"
        f"{keep}"
        "print(folder, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    pid_line, folder_line = done.stdout.strip().splitlines()[-2:]
    orphan, folder = int(pid_line), Path(folder_line)
    try:
        assert not _gone(orphan), "the orphan should still run before the sweep"
        assert sweep(tmp_path) == [folder]
        assert _wait_gone(orphan), "the sweep did not kill the orphaned server"
        assert not folder.exists()
    finally:
        if not _gone(orphan):
            os.kill(orphan, signal.SIGKILL)


@needs_proc
def test_record_process_ignores_a_pid_that_is_gone(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    record_process(tmp_path, child.pid)  # reaped: its start time cannot be read
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_a_scratch_child_dies_with_its_parent(tmp_path: Path) -> None:
    assert die_with_parent() is not None
    code = (
        "import subprocess, time\n"
        "from affidavit.processes import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '120'], start_new_session=True,\n"
        "                         stdout=subprocess.DEVNULL, preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_gone(child), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_fingerprint_runs_spill_into_a_private_owner_named_folder(
    tmp_path: Path, umask_zero: None
) -> None:
    """The accumulator's sorted runs hold the keys in the clear (``affidavit-fp`` spools)."""
    from affidavit.fingerprint.accumulator import Accumulator

    acc = Accumulator("exact", buffer_records=2, spill_dir=tmp_path)
    for i in range(5):
        acc.add(b"key-%d" % i, b"value")
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("affidavit-fp.")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    runs = list(folder.iterdir())
    assert runs and all(stat.S_IMODE(r.stat().st_mode) == 0o600 for r in runs)
    if LINUX:
        owner = owner_of(folder.name)
        assert owner is not None and owner.pid == os.getpid()
    fingerprint, _ = acc.finish()
    assert fingerprint.count == 5
    assert list(tmp_path.iterdir()) == []
