"""An ingest killed with SIGKILL while a child encrypts a large file into the vault's staging
area: the child dies with it (``PR_SET_PDEATHSIG``), so no encryption keeps running and
writing after its parent is gone (session 11's attack pass found it running to the end)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bson
import psutil
import pytest

pytestmark = pytest.mark.e2e

AFFIDAVIT = str(Path(sys.executable).with_name("affidavit"))
_PR_SET_CHILD_SUBREAPER = 36


def _subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def _writing(child: psutil.Process) -> bool:
    """Whether ``child`` has written a MiB of ciphertext into a file it holds open."""
    with contextlib.suppress(psutil.Error, OSError):
        for held in child.open_files():
            if held.mode in ("w", "a", "r+") and os.path.getsize(held.path) >= 1 << 20:
                return True
    return False


def _encrypting(parent: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in parent.children(recursive=True):
        try:
            if "encrypt-file" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_ingest_leaves_no_encryption_running(cli: Any, home: Path, tmp_path: Path) -> None:
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    doc = {"s": "x" * 1000}
    with (folder / "big.bson").open("wb") as fh:  # > 32 MiB: encrypted by a child, staged
        for i in range(120_000):
            fh.write(bson.encode({"_id": i, **doc}))
    (folder / "big.metadata.json").write_text(json.dumps({"options": {}, "indexes": []}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env["AFFIDAVIT_ACTOR"] = "tester@example.com"
    proc = subprocess.Popen(
        [AFFIDAVIT, "--home", str(home), "backup", "ingest", str(tmp_path / "dump"),
         "--format", "mongodump", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    children: list[psutil.Process] = []
    _subreaper(True)  # orphans come here, so the child's end can be read (killed or not)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while not children:
            assert proc.poll() is None, "the ingest ended before its encryption child was seen"
            assert time.monotonic() < deadline, "no encryption child was seen"
            children = _encrypting(parent)
            time.sleep(0.01)
        while not _writing(children[0]):  # past its start: encrypting into the staging file
            assert proc.poll() is None, "the ingest ended before the child wrote"
            assert time.monotonic() < deadline, "the encryption child wrote nothing"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for child in children:
            _, status = os.waitpid(child.pid, 0)  # ours now: the kernel reparented it
            # killed with its parent, not run to its end (which would be exit status 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    finally:
        _subreaper(False)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if proc.poll() is None:
            proc.kill()
