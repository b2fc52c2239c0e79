"""``affidavit audit ...`` and ``affidavit audit request ...`` through a real ``affidavit
serve`` in client mode (issue 15): each prints what the same command prints on the server's
host with ``--as``, with the same ``--json`` and exit codes; ``audit request answer --file``
uploads the file (``POST /api/v1/uploads``) and the server stores it as it stores a local
one; refusals (a missing permission, an illegal step, a file of a type not allowed) are the
same one line, and nothing is left in the uploads folder. Also: ``source test`` of a port that
answers garbage reports the source unreachable (exit 3), through the server and locally."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from server_harness import Served, World, make_world, password_file, serving

pytestmark = pytest.mark.e2e

TODAY = datetime.now(UTC).date()
ENGAGEMENT_VOLATILE = ("id", "opened_at", "seq", "requests")
REQUEST_VOLATILE = ("id", "opened_at", "seq", "thread")


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

    def local(self, name: str, *args: str) -> Any:
        return self.cli(*args, "--as", name, "--as-password-file", str(self.password),
                        "--as-code", self.world.code(name))  # fmt: skip


@pytest.fixture
def setup(cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    with serving(home) as served:
        yield Setup(cli=cli, served=served, world=world, password=password_file(tmp_path),
                    tmp=tmp_path)  # fmt: skip


def _json(result: Any) -> Any:
    assert result.code == 0, (result.out, result.err)
    return json.loads(result.out)


def _without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _left_in_uploads(home: Path) -> list[str]:
    folder = home / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _one_line(result: Any, code: int, text: str) -> None:
    assert result.code == code, (result.out, result.err)
    assert text in result.err, result.err
    assert "Traceback" not in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) <= 2, result.err


def test_audit_commands_through_the_server_print_what_they_print_locally(setup: Setup) -> None:
    window = ("--from", str(TODAY - timedelta(days=30)), "--to", str(TODAY + timedelta(days=30)),
              "--framework", "soc2", "--auditor", "auditor",
              "--expires", str(TODAY + timedelta(days=30)), "--reason", "annual")  # fmt: skip
    # the viewer may not open an engagement: the same refusal as on the host
    setup.login("viewer")
    _one_line(setup.through("audit", "open", *window), 2, "audit.manage")
    # engagements: opened, listed, shown
    setup.login("admin")
    a = _json(setup.through("audit", "open", *window, "--json"))
    b = _json(setup.local("admin", "audit", "open", *window, "--json"))
    assert _without(a, *ENGAGEMENT_VOLATILE) == _without(b, *ENGAGEMENT_VOLATILE)
    assert _json(setup.through("audit", "list", "--json")) == _json(
        setup.local("admin", "audit", "list", "--json")
    )
    remote_show = setup.through("audit", "show", a["id"])
    assert remote_show.code == 0 and a["id"] in remote_show.out
    assert _json(setup.through("audit", "show", a["id"], "--json")) == _json(
        setup.local("admin", "audit", "show", a["id"], "--json")
    )
    missing = setup.through("audit", "show", "ae-nothing")
    _one_line(missing, 2, "ae-nothing")
    # evidence requests: raised by the auditor
    setup.login("auditor")
    raise_ = ("--title", "Backup evidence", "--due", str(TODAY + timedelta(days=7)),
              "--item", "the last verification")  # fmt: skip
    r1 = _json(setup.through("audit", "request", "open", a["id"], *raise_, "--json"))
    r2 = _json(setup.local("auditor", "audit", "request", "open", b["id"], *raise_, "--json"))
    assert _without(r1, *REQUEST_VOLATILE, "engagement") == _without(
        r2, *REQUEST_VOLATILE, "engagement"
    )
    assert r1["state"] == "open"
    # answered by an operator with a file: uploaded through the server, stored as locally
    setup.login("operator")
    evidence = setup.tmp / "evidence.csv"
    evidence.write_text("backup,verified\nbk-1,yes\n")
    answered = _json(setup.through("audit", "request", "answer", r1["id"], "--file",
                                   str(evidence), "--note", "here", "--json"))  # fmt: skip
    local_answer = _json(setup.local("operator", "audit", "request", "answer", r2["id"],
                                     "--file", str(evidence), "--note", "here", "--json"))  # fmt: skip
    handed = [a for e in answered["thread"] for a in e["artifacts"]]
    handed_locally = [a for e in local_answer["thread"] for a in e["artifacts"]]
    same = ("kind", "name", "size", "sha256", "media_type", "vault")
    assert [{k: h[k] for k in same} for h in handed] == [
        {k: h[k] for k in same} for h in handed_locally
    ]
    assert handed[0]["name"] == "evidence.csv" and answered["state"] == local_answer["state"]
    assert _left_in_uploads(setup.home) == []
    # a file of a type not allowed is refused here, before anything is uploaded
    page = setup.tmp / "page.txt"
    page.write_text("<html><script>alert(1)</script></html>")
    _one_line(setup.through("audit", "request", "answer", r1["id"], "--file", str(page)),
              2, "not an allowed type")  # fmt: skip
    assert _left_in_uploads(setup.home) == []
    # lists and views: the same JSON and the same table
    assert _json(setup.through("audit", "request", "list", "--json")) == _json(
        setup.local("operator", "audit", "request", "list", "--json")
    )
    assert _json(setup.through("audit", "request", "show", r1["id"], "--json")) == _json(
        setup.local("operator", "audit", "request", "show", r1["id"], "--json")
    )
    assert (
        setup.through("audit", "request", "list", "--state", "submitted").out
        == setup.local("operator", "audit", "request", "list", "--state", "submitted").out
    )
    # reminders without a channel configured: the same refusal
    remote_remind = setup.through("audit", "remind", "--json")
    local_remind = setup.local("operator", "audit", "remind", "--json")
    _one_line(remote_remind, 2, "no reminder channel")
    assert (remote_remind.code, remote_remind.err) == (local_remind.code, local_remind.err)
    # the auditor's steps
    setup.login("auditor")
    _one_line(setup.through("audit", "request", "close", r1["id"]), 2, r1["id"])  # not yet
    for verb, extra in (
        ("message", ("--text", "thanks")),
        ("return", ("--reason", "more")),
    ):
        remote = _json(setup.through("audit", "request", verb, r1["id"], *extra, "--json"))
        local = _json(setup.local("auditor", "audit", "request", verb, r2["id"], *extra, "--json"))
        assert remote["state"] == local["state"]
        assert [e["kind"] for e in remote["thread"]] == [e["kind"] for e in local["thread"]]
    setup.login("operator")
    assert setup.through("audit", "request", "answer", r1["id"], "--note", "again").code == 0
    setup.login("auditor")
    accepted = setup.through("audit", "request", "accept", r1["id"], "--note", "ok")
    assert accepted.code == 0 and "accepted" in accepted.out, accepted.err
    closed = _json(setup.through("audit", "request", "close", r1["id"], "--json"))
    assert closed["state"] == "closed"
    # the engagement closed by the administrator
    setup.login("admin")
    ca = _json(setup.through("audit", "close", a["id"], "--reason", "done", "--json"))
    cb = _json(setup.local("admin", "audit", "close", b["id"], "--reason", "done", "--json"))
    assert ca["state"] == cb["state"] == "closed"
    assert _left_in_uploads(setup.home) == []


class _Garbage:
    """A port that answers every read with a Redis reply of the wrong shape (``+OK``)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    conn.sendall(b"+OK\r\n")
            except OSError:
                return


def test_source_test_of_a_port_that_answers_garbage_is_unreachable(setup: Setup) -> None:
    garbage = _Garbage()
    try:
        uri = f"redis://127.0.0.1:{garbage.port}/0"
        assert setup.cli("source", "add", "junk", "--engine", "redis", "--uri", uri,
                         "--classification", "internal").code == 0  # fmt: skip
        setup.login("operator")
        remote = setup.through("source", "test", "junk")
        local = setup.cli("source", "test", "junk")
        for result in (remote, local):
            _one_line(result, 3, "does not answer as a redis server")
        assert remote.err == local.err
        data = _json_any(setup.through("source", "test", "junk", "--json"))
        assert data["reachable"] is False and data["exit_code"] == 3
    finally:
        garbage.sock.close()


def _json_any(result: Any) -> Any:
    return json.loads(result.out)
