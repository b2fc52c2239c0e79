"""`affidavit demo --serve` as a newcomer runs it: the demo story, then the server on the
demo's home with four demo-only accounts; log in with what it printed, look at the dashboard,
stop it by PID, nothing left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import free_port

from affidavit.crypto import totp

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AFFIDAVIT = [sys.executable, "-m", "affidavit"]
ROLES = {"admin": "admin", "operator": "operator", "approver": "approver", "auditor": "auditor"}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(c) for c in text.split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_health(url: str, process: subprocess.Popen[bytes], err: Path) -> None:
    deadline = time.monotonic() + 400
    while True:
        if process.poll() is not None:
            raise AssertionError(f"demo --serve exited {process.returncode}: {err.read_text()}")
        try:
            if httpx.get(url + "api/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the demo's server did not start: {err.read_text()}")
        time.sleep(0.5)


def _login(http: httpx.Client, person: dict[str, Any], code: str) -> httpx.Response:
    return http.post(
        "/api/v1/auth/login",
        json={"name": person["name"], "password": person["password"], "totp": code},
    )


def test_demo_serve_logs_in_with_the_printed_credentials(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    port = free_port()
    out, err = tmp_path / "stdout.json", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*AFFIDAVIT, "--home", str(home), "demo", "--scale", "10", "--json",
             "--serve", "--port", str(port)],
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_health(url, process, err)
        printed = json.loads(out.read_text())  # the whole story, then the server's part
        assert printed["ledger"]["ok"] is True and printed["home"] == str(home)
        served = printed["serve"]
        assert served["url"] == url
        assert served["pid"] == process.pid and str(process.pid) in served["stop"]
        people = {p["name"]: p for p in served["people"]}
        assert {name: p["role"] for name, p in people.items()} == ROLES
        for p in people.values():
            assert f"secret={p['totp_secret']}" in p["otpauth_uri"]
            assert p["otpauth_uri"].startswith(f"otpauth://totp/affidavit:{p['name']}?")
            assert len(p["totp_code_now"]) == 6 and p["totp_code_now"].isdigit()
        assert len({p["password"] for p in people.values()}) == 4  # random, one each
        # the demo's sources stopped with the story: nothing but the server runs
        assert _children(process.pid) == []

        with httpx.Client(base_url=url, timeout=60) as http:
            operator = people["operator"]
            wrong = _login(http, {**operator, "password": operator["password"] + "x"}, "000000")
            assert wrong.status_code == 401
            now = datetime.now(UTC)
            answer = _login(http, operator, totp.code_at(operator["totp_secret"], now))
            assert answer.status_code == 200, answer.text
            bearer = {"Authorization": f"Bearer {answer.json()['secret']}"}
            me = http.get("/api/v1/whoami", headers=bearer)
            assert me.status_code == 200, me.text
            assert "operator" in json.dumps(me.json())
            page = http.get("/", headers=bearer)
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert "<h1>Dashboard</h1>" in page.text
            assert "orders-db" in page.text and "session-cache" in page.text
            # the administrator's printed secret works too; a replayed code does not
            admin = people["admin"]
            code = totp.code_at(admin["totp_secret"], datetime.now(UTC))
            assert _login(http, admin, code).status_code == 200
            assert _login(http, admin, code).status_code == 401
            # the auditor's printed secret opens its engagement: the demo's backups in it
            auditor = people["auditor"]
            answer = _login(http, auditor, totp.code_at(auditor["totp_secret"], datetime.now(UTC)))
            assert answer.status_code == 200, answer.text
            seen = {"Authorization": f"Bearer {answer.json()['secret']}"}
            engagements = http.get("/api/v1/audit/engagements", headers=seen)
            assert engagements.status_code == 200, engagements.text
            (engagement,) = engagements.json()["engagements"]
            found = http.get(
                f"/api/v1/audit/engagements/{engagement['id']}/verifications", headers=seen
            )
            assert found.status_code == 200, found.text
            assert found.json()["verifications"], found.text
            assert http.get("/api/v1/backups", headers=seen).status_code == 403
            # without a session the dashboard sends a browser to the login form
            anonymous = http.get("/", headers={"Accept": "text/html"})
            assert anonymous.status_code in (303, 307) and "/login" in anonymous.headers["location"]
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            code_ = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            raise
    assert code_ == 0, err.read_text()
    assert not _alive(process.pid)
    assert not _listening(port)
    assert "Application shutdown complete" in err.read_text()


def test_demo_serve_refuses_a_port_in_use_before_the_story(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run(
            [*AFFIDAVIT, "--home", str(tmp_path / "h"), "demo", "--serve", "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and f"port {port}" in lines[0]
    assert lines[1].startswith("hint:") and "--port" in lines[1]
    assert not (tmp_path / "h").exists()  # nothing made
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_demo_serve_refuses_a_bad_port(tmp_path: Path, port: str) -> None:
    proc = subprocess.run(
        [*AFFIDAVIT, "--home", str(tmp_path / "h"), "demo", "--serve", "--port", port],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not (tmp_path / "h").exists()
