"""What the system says about processes: a pid's state and start time, this boot's id and
this PID namespace, read from ``/proc`` (Linux). Where ``/proc`` does not say, each answer is
None, and callers must then not conclude that a process is dead.

Both the backup leases (is the process that holds a run alive?) and the private temporary
folders (is the process that made this folder gone?) judge processes with these answers; a
pid alone is not enough, because pids are reused: a process is the same one only with the
same start time, in the same boot and PID namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessState",
    "boot_id",
    "die_with_parent",
    "pid_namespace",
    "proc_stat",
    "process_state",
]

_PROC = Path("/proc")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def proc_stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time in clock ticks after boot) of ``pid`` from ``/proc/PID/stat``
    (fields 3 and 22), or None when there is no such process or it cannot be read."""
    if not 0 < pid < 1 << 31:  # 0 and negatives name process groups, not processes
        return None
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # "PID (COMM) STATE ... STARTTIME ...": COMM may hold spaces and parentheses
    fields = raw[raw.rfind(b")") + 2 :].split() if b")" in raw else []
    if len(fields) >= 20 and fields[19].isdigit():
        return fields[0], int(fields[19])
    return None


def boot_id() -> str | None:
    """This boot's id (``/proc/sys/kernel/random/boot_id``), or None."""
    with contextlib.suppress(OSError):
        return (_PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    return None


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[INODE]``), or None."""
    with contextlib.suppress(OSError):
        return os.readlink(_PROC / "self/ns/pid") or None
    return None


@dataclass(frozen=True, slots=True)
class ProcessState:
    """A process that has a pid: its start time (clock ticks after boot; None where the
    system does not say) and whether it has exited and waits to be reaped (a zombie)."""

    start: int | None
    exited: bool = False


def process_state(pid: int) -> ProcessState | None:
    """The process with this pid, or None when there is none. Reads ``/proc/PID/stat``
    (state, field 3; start time, field 22); where that cannot be read (no ``/proc``, or one
    that hides other users' processes), only whether the pid exists (``kill(pid, 0)``)."""
    if not 0 < pid < 1 << 31:  # 0 and negatives name process groups in kill(); none is a pid
        return None
    stat = proc_stat(pid)
    if stat is not None:
        return ProcessState(start=stat[1], exited=stat[0] in (b"Z", b"X"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    return ProcessState(start=None)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux), or None where there is no such call.

    The C function is looked up here, in the parent, so the child only calls it. Should the
    parent die between ``fork`` and the call, the child notices that it was reparented and
    kills itself. The kernel ties the signal to the parent *thread*: a server must be started
    by a thread that outlives it (a drill starts and stops its server in the same call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:  # runs in the child, between fork and exec
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return  # refused: the server is then stopped by PID only, as elsewhere
        if os.getppid() != parent:  # the parent died before the call took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec
