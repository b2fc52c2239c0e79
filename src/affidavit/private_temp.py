"""Private temporary folders that do not outlive the process that made them.

Decrypted data, RDB spools, fingerprint runs and scratch servers live, while a command works
on them, in folders of the system's temporary directory (:func:`tempfile.gettempdir`, so
``TMPDIR``) that are:

- **private**: created mode 0700 whatever the umask; files made with :func:`open_private`
  are 0600 and never follow a symbolic link;
- **named after their owner**: ``affidavit-KIND.PID.START.BOOT.NS.RANDOM``: the process id
  of the process that made the folder, its start time (clock ticks after boot,
  ``/proc/PID/stat`` field 22), the first 8 hex digits of the boot id, the inode of its PID
  namespace, and random letters. The name is taken with the folder by one ``mkdir``, so no
  folder ever exists without its owner;
- **removed by their owner** when it is done, and otherwise by :func:`sweep`, which later
  commands call. A sweep removes a folder only when its owner is *provably* dead: the folder
  is a real folder (not a link) of this user, made in this boot and PID namespace, and its
  pid names no process, a zombie, or a process with another start time (the pid was reused).
  A folder of a live process, of another user, boot or PID namespace, or without an owner in
  its name is never touched.

A process that lives in a folder (a scratch server) is recorded in it
(:func:`record_process`) as an empty file ``.process.PID.START``; before a sweep removes a
dead owner's folder it kills each recorded process that still runs with that start time
(through a pidfd where the system has them, so a pid reused meanwhile is never signalled).

Where the system does not say who a process is (no ``/proc``), folders are named
``affidavit-KIND.x.RANDOM`` and no sweep touches them: the system's own cleaning of its
temporary directory does (tmpfs, or systemd-tmpfiles emptying ``/tmp`` at boot).

:func:`unlinked_spool` goes one step further for a file that is only read back through open
descriptors: it has no name at all while it is used, so nothing of it outlives the process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from affidavit.processes import boot_id, pid_namespace, proc_stat, process_state

__all__ = [
    "PREFIX",
    "Owner",
    "PrivateFolder",
    "make_private_folder",
    "open_private",
    "owner_of",
    "private_folder",
    "record_process",
    "remove_folder",
    "sweep",
    "unlinked_spool",
]

PREFIX = "affidavit-"
"""Every private folder's name starts with this."""

_PROC = Path("/proc")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
_NAME = re.compile(
    r"affidavit-(?P<kind>[a-z][a-z0-9-]{0,31})\.(?P<pid>[0-9]{1,10})\.(?P<start>[0-9]{1,20})"
    r"\.(?P<boot>[0-9a-f]{8})\.(?P<ns>[0-9]{1,20})\.[0-9a-z_]+"
)
_PROCESS_FILE = re.compile(r"\.process\.(?P<pid>[0-9]{1,10})\.(?P<start>[0-9]{1,20})")


@dataclass(frozen=True, slots=True)
class Owner:
    """Who made a folder: a process of one boot and PID namespace."""

    pid: int
    start: int  # clock ticks after boot
    boot: str  # the boot id's first 8 hex digits
    namespace: str  # the PID namespace's inode

    def tag(self) -> str:
        """The owner's part of a folder name."""
        return f"{self.pid}.{self.start}.{self.boot}.{self.namespace}"


def _this_process() -> Owner | None:
    """This process as a folder owner; None where the system does not say."""
    pid = os.getpid()
    stat = proc_stat(pid)
    boot, namespace = boot_id(), pid_namespace()
    if boot is None or namespace is None:
        return None
    digits = "".join(ch for ch in namespace if ch.isdigit())
    hexdigits = boot.replace("-", "").lower()[:8]
    if stat is None or not digits or not re.fullmatch(r"[0-9a-f]{8}", hexdigits):
        return None
    return Owner(pid=pid, start=stat[1], boot=hexdigits, namespace=digits)


def owner_of(name: str) -> Owner | None:
    """The owner a folder's name records, or None when it records none."""
    found = _NAME.fullmatch(name)
    if found is None:
        return None
    return Owner(
        pid=int(found["pid"]), start=int(found["start"]), boot=found["boot"], namespace=found["ns"]
    )


def _dead(owner: Owner, here: Owner) -> bool:
    """Whether ``owner`` is provably dead, judged from the process ``here``."""
    if (owner.boot, owner.namespace) != (here.boot, here.namespace):
        return False  # another boot or PID namespace: its pids mean nothing here
    if owner.pid == here.pid:
        return owner.start != here.start
    if not 0 < owner.pid < 1 << 31:
        return False
    state = process_state(owner.pid)
    if state is None:
        return True
    if state.start is None:
        return False  # it exists but its start time cannot be read: not provably dead
    return state.exited or state.start != owner.start


def _random() -> str:
    return os.urandom(6).hex()


def make_private_folder(kind: str, *, parent: Path | None = None) -> Path:
    """Make a new private folder (0700) named after this process in ``parent`` (default: the
    system's temporary directory) and return it; the caller removes it
    (:func:`remove_folder`). ``kind`` (lower-case letters, digits, ``-``) says what it holds."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"not a folder kind: {kind!r}")
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    owner = _this_process()
    tag = owner.tag() if owner is not None else "x"
    for _ in range(100):
        path = base / f"{PREFIX}{kind}.{tag}.{_random()}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # whatever the umask
        return path
    raise FileExistsError(f"no free folder name in {base}")  # pragma: no cover


def remove_folder(path: Path) -> None:
    """Remove a private folder and everything in it (quietly: it may be gone already)."""
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def private_folder(kind: str, *, parent: Path | None = None) -> Iterator[Path]:
    """A new private folder (:func:`make_private_folder`) for the block; removed after it."""
    path = make_private_folder(kind, parent=parent)
    try:
        yield path
    finally:
        remove_folder(path)


class PrivateFolder:
    """A private folder (:func:`make_private_folder`) held by an object, like
    :class:`tempfile.TemporaryDirectory`: :meth:`cleanup` removes it, and so does the garbage
    collector (or the interpreter's exit) when it was not called."""

    def __init__(self, kind: str, *, parent: Path | None = None) -> None:
        self.path = make_private_folder(kind, parent=parent)
        self._finalizer = weakref.finalize(self, remove_folder, self.path)

    @property
    def name(self) -> str:
        """The folder's path, as a string."""
        return str(self.path)

    def cleanup(self) -> None:
        """Remove the folder and everything in it."""
        self._finalizer()


def open_private(path: Path, mode: str = "wb") -> BinaryIO:
    """Open ``path`` for writing (``"wb"``, truncating, or ``"ab"``), created 0600 whatever
    the umask; a symbolic link standing there is refused (``OSError``)."""
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    if mode == "wb":
        flags |= os.O_TRUNC
    elif mode == "ab":
        flags |= os.O_APPEND
    else:
        raise ValueError(f"open_private writes ('wb' or 'ab'), not {mode!r}")
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return cast(BinaryIO, os.fdopen(fd, mode))
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def unlinked_spool(folder: Path, name: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A spool file that has no name while it is used: yields ``(writer, path)``. Readers
    open ``path`` (any number of times, while the block runs); it is ``/proc/self/fd/N`` of
    a read descriptor the block holds, the file itself being unlinked before the block
    starts, so nothing of it outlives the process (SIGKILL included). Where the system has
    no ``/proc/self/fd``, the file keeps its name ``folder/name`` (a private folder, swept
    when its owner is dead) until the block ends."""
    path = folder / name
    writer = open_private(path)
    reader = -1
    try:
        reader = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        by_fd = _PROC / "self/fd" / str(reader)
        if by_fd.exists():
            path.unlink()
            path = by_fd
        yield writer, path
    finally:
        writer.close()
        if reader >= 0:
            os.close(reader)
        (folder / name).unlink(missing_ok=True)


def record_process(folder: Path, pid: int) -> None:
    """Record that process ``pid`` (a child of this one) lives in ``folder``: a sweep that
    removes the folder of a dead owner kills it first. Quietly nothing where the process's
    start time cannot be read."""
    stat = proc_stat(pid)
    if stat is None:
        return
    open_private(folder / f".process.{pid}.{stat[1]}").close()


def _kill_recorded(folder: Path) -> None:
    """Kill every process recorded in ``folder`` (at any depth) that still runs with the
    recorded start time."""
    for _root, _dirs, files in os.walk(folder):
        for name in files:
            found = _PROCESS_FILE.fullmatch(name)
            if found is not None:
                _kill_if_same(int(found["pid"]), int(found["start"]))


def _kill_if_same(pid: int, start: int) -> None:
    """SIGKILL ``pid`` when it is the process that started at ``start`` (checked through a
    pidfd where there is one, so that a pid reused meanwhile is never signalled)."""
    if not 0 < pid < 1 << 31 or pid == os.getpid():
        return
    pidfd = -1
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(pid)
    try:
        stat = proc_stat(pid)
        if stat is None or stat[0] in (b"Z", b"X") or stat[1] != start:
            return
        with contextlib.suppress(OSError):
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def sweep(parent: Path | None = None) -> list[Path]:
    """Remove the private folders in ``parent`` (default: the system's temporary directory)
    whose owner is provably dead (see the module docstring), killing the processes recorded
    in them first; return the folders removed. Never raises for what it finds: a folder it
    cannot judge or remove is left as it is."""
    here = _this_process()
    if here is None:
        return []
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    uid = os.geteuid()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        owner = owner_of(entry.name)
        if owner is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or info.st_uid != uid:
            continue
        if not _dead(owner, here):
            continue
        path = Path(entry.path)
        _kill_recorded(path)
        remove_folder(path)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
