"""``affidavit serve --workers N``: N forked worker processes under a supervisor.

Real processes, watched through ``/proc``: the supervisor's children are the workers; a
worker killed with SIGKILL is replaced and the server keeps answering; SIGTERM to the
supervisor stops every worker and ends it with status 0; a supervisor killed with SIGKILL
takes its workers along (``PR_SET_PDEATHSIG``), so none is left orphaned holding the port.
Bad values of ``--workers`` are refused before anything starts. (Concurrent writes through
two workers: test_server_concurrency.py; single sign-on across them: test_oidc_login.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_harness import serving

from affidavit.config import load_settings
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
    home = tmp_path / "home"
    initialise(load_settings(home=home))
    return home


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(what: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


def answering(url: str) -> bool:
    with httpx.Client(base_url=url, timeout=10) as http:
        return http.get("/api/v1/health").status_code == 200


def test_two_workers_serve_and_a_killed_worker_is_replaced(home: Path) -> None:
    with serving(home, "--workers", "2") as served:
        supervisor = served.process.pid
        assert wait_for(lambda: len(children(supervisor)) == 2), served.output()
        first = children(supervisor)
        # every request on a new connection: the kernel hands them to either worker
        for _ in range(20):
            assert answering(served.url)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(
            lambda: victim not in children(supervisor) and len(children(supervisor)) == 2
        )
        assert children(supervisor) != first  # a new worker took the dead one's place
        for _ in range(10):
            assert answering(served.url)
        assert f"worker {victim} ended (killed by SIGKILL); starting another" in served.output()
        workers = children(supervisor)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=60) == 0, served.output()
    assert not any(alive(pid) for pid in workers)


def test_a_supervisor_killed_outright_takes_its_workers_along(home: Path) -> None:
    with serving(home, "--workers", "2") as served:
        supervisor = served.process.pid
        assert wait_for(lambda: len(children(supervisor)) == 2), served.output()
        workers = children(supervisor)
        os.kill(supervisor, signal.SIGKILL)
        served.process.wait(timeout=30)
        assert wait_for(lambda: not any(alive(pid) for pid in workers)), workers


@pytest.mark.parametrize("value", ["0", "65", "-1", "two"])
def test_bad_worker_counts_are_refused_before_anything_starts(home: Path, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), "serve", "--workers", value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "--workers" in done.stderr
