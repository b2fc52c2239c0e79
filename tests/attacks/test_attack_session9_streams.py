"""Attacks on the streamed bodies of a real ``affidavit serve`` (session 9): the web pages'
file form (``POST /audit/requests/ID/upload``, ``multipart/form-data``) and the API's
uploads (``POST /api/v1/uploads``).

- A client **without a session** posting 10 MiB file forms: the server must not hold their
  bytes in memory before its gate has refused them (it did: the form-token layer read the
  whole body, up to 10 MiB + 64 KiB a connection, before any check of who sent it; twenty
  such connections held ~200 MB). Now it reads a file form's head only, up to its token.
- **Slow bodies** (uploads, file forms, JSON bodies announcing more than they send, held
  open) must not take the worker threads (16): the health check and a route that runs on a
  thread answer at once while forty of them hang.
- The file form's **anti-CSRF token** counts only as the plain field before the file: not
  in the header (replaced), the query string, a file part, a second field after a bogus
  first, nor another session's; a valid token split across the network's pieces counts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from server_harness import Served, World, make_world, serving

from affidavit.config import load_settings

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
BOUNDARY = "AttackBoundary9"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class Box:
    served: Served
    world: World
    http: httpx.Client

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.served.url)
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=20)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    from affidavit.services.setup import initialise

    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        home = tmp_path_factory.mktemp("streams") / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        with serving(home) as served, served.client() as http:
            yield Box(served=served, world=world, http=http)


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


def _head(path: str, length: int, content_type: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}",
             f"Content-Length: {length}", *extra]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(sock: socket.socket, timeout: float = 20) -> int:
    """The status of the answer read from ``sock`` (0: none before it closed or timed out)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while b"\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    parts = got.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _part(name: str, value: bytes, *, filename: str | None = None) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"\r\nContent-Type: text/plain'
    return f"--{BOUNDARY}\r\n{disposition}\r\n\r\n".encode() + value + b"\r\n"


def _form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def test_a_file_form_without_a_session_is_not_held_in_memory(box: Box) -> None:
    """Sixteen clients without a session each send (almost all of) a 10 MiB file form and
    hold the connection: the server sends each to the login page (303) without keeping
    their bytes."""
    pid = box.served.process.pid
    before = _rss_mib(pid)
    size = 10 * MIB
    head = _head("/audit/requests/ar-0000000000000000/upload", size, MULTIPART)
    body = _part("note", b"x") + _part("file", b"A" * (size - 2000), filename="a.txt")
    held: list[socket.socket] = []
    try:
        for _ in range(16):
            sock = box.connect()
            held.append(sock)
            # (the server may answer and close before it took it all: fine)
            with contextlib.suppress(OSError):
                sock.sendall(head + body[: size - 500])
        time.sleep(2)
        grown = _rss_mib(pid) - before
        statuses = [_status(sock) for sock in held]
    finally:
        for sock in held:
            sock.close()
    print(f"server RSS grew by {grown} MiB holding 16 unauthenticated 10 MiB file forms")
    assert grown < 48, f"the server holds {grown} MiB of bodies nobody authenticated"
    assert statuses == [303] * 16, statuses  # a page: to the login form
    assert box.http.get("/health").status_code == 200


def test_slow_bodies_do_not_starve_the_worker_threads(box: Box) -> None:
    """Forty-eight requests whose bodies hang (16 uploads, 16 file forms past their token,
    16 JSON bodies) while the health check and another person's route on a worker thread
    answer."""
    operator = box.world.session(box.http, "operator")
    bearer = f"Authorization: Bearer {operator.secret}"
    cookie = f"Cookie: __Host-affidavit-session={operator.secret}"
    token = _part("csrf_token", operator.csrf.encode())
    file_head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"'
    heads = (
        [_head("/api/v1/uploads", MIB, "application/octet-stream", bearer,
               "X-Content-SHA256: " + "0" * 64) + b"x"] * 16
        + [_head("/audit/requests/ar-0000000000000000/upload", MIB, MULTIPART, cookie)
           + token + file_head.encode() + b"\r\n\r\nhello"] * 16
        + [_head("/api/v1/backups/ingests", 1000, "application/json", bearer) + b"{"] * 16
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        for head in heads:
            sock = box.connect()
            sock.sendall(head)
            held.append(sock)
        time.sleep(1.5)
        started = time.monotonic()
        health = box.http.get("/health")
        health_s = time.monotonic() - started
        started = time.monotonic()
        # another person's read, on a worker thread (the operator's own requests wait for
        # its share of the threads, gates.IDENTITY_SHARE, which its hanging bodies hold)
        officer = box.world.session(box.http, "security_officer").bearer
        listed = box.http.get("/backups", headers=officer)
        listed_s = time.monotonic() - started
        started = time.monotonic()
        page = httpx.get(box.served.url + "/login", timeout=30)
        page_s = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    print(f"with 48 hanging bodies: health {health_s:.3f} s, GET /backups {listed_s:.3f} s, "
          f"GET /login {page_s:.3f} s")  # fmt: skip
    assert health.status_code == 200 and listed.status_code == 200, listed.text
    assert page.status_code == 200
    assert max(health_s, listed_s, page_s) < 3.0
    # the uploads the clients abandoned left nothing behind
    uploads = box.world.home / "uploads"
    deadline = time.monotonic() + 10
    while uploads.is_dir() and os.listdir(uploads) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not uploads.is_dir() or os.listdir(uploads) == []


def _post_form(box: Box, body: bytes, *extra: str, path: str = "", pause: int = 0) -> int:
    """A file form posted with the operator's session cookie; ``pause``: send the body in
    two writes, split at that offset, a moment apart."""
    operator = box.world.session(box.http, "operator")
    target = "/audit/requests/ar-0000000000000000/upload" + path
    head = _head(target, len(body), MULTIPART,
                 f"Cookie: __Host-affidavit-session={operator.secret}", *extra)  # fmt: skip
    with box.connect() as sock:
        if pause:
            sock.sendall(head + body[:pause])
            time.sleep(0.5)
            sock.sendall(body[pause:])
        else:
            sock.sendall(head + body)
        return _status(sock)


def test_the_file_forms_token_counts_only_as_its_plain_field(box: Box) -> None:
    """A valid token as the plain field before the file passes the gate (the request then
    names no evidence request: 404); anywhere else, the form is refused (403)."""
    csrf = box.world.session(box.http, "operator").csrf.encode()
    admin_csrf = box.world.session(box.http, "admin").csrf.encode()
    sent = _part("file", b"hello\n", filename="a.txt")
    good = _form(_part("csrf_token", csrf), sent)
    assert _post_form(box, good) == 404
    # a valid token arriving in two pieces, cut inside its value, still counts
    cut = good.index(csrf) + 10
    assert _post_form(box, good, pause=cut) == 404
    refused = {
        "no token": _post_form(box, _form(sent)),
        "header only": _post_form(box, _form(sent), f"X-Affidavit-CSRF: {csrf.decode()}"),
        "query string": _post_form(box, _form(sent), path=f"?csrf_token={csrf.decode()}"),
        "in a file part": _post_form(
            box, _form(_part("csrf_token", csrf, filename="csrf_token"), sent)
        ),
        "second of two": _post_form(
            box, _form(_part("csrf_token", b"bogus"), _part("csrf_token", csrf), sent)
        ),
        "another's token": _post_form(box, _form(_part("csrf_token", admin_csrf), sent)),
    }
    assert refused == dict.fromkeys(refused, 403), refused


def test_a_form_cut_short_before_its_token_keeps_nothing(box: Box) -> None:
    """A file form announcing more than it sends, stopping before its token arrived, is
    answered (400: cut short) once the client goes away; nothing kept."""
    body = _form(_part("csrf_token", b"t" * 20), _part("file", b"x" * 100, filename="a.txt"))
    head = _head("/audit/requests/ar-0000000000000000/upload", len(body) + 1000, MULTIPART)
    with box.connect() as sock:
        sock.sendall(head + body[:30])
        sock.shutdown(socket.SHUT_WR)
        assert _status(sock) in (0, 400)
    assert box.http.get("/health").status_code == 200
    assert not (Path(box.world.home) / "uploads").is_dir() or not os.listdir(
        Path(box.world.home) / "uploads"
    )


def test_a_head_that_never_completes_is_cut_off(box: Box) -> None:
    """A slowloris: connections that send a head a few bytes at a time (never its blank
    line), and connections that send nothing. Each held a connection and a file descriptor
    of the server for ever; now each is closed once :data:`MAX_HEAD_SECONDS` have passed
    (408 and an access-log entry for a partial head), while a real request is served."""
    from affidavit.config import load_settings as settings_of
    from affidavit.server.access import PARSER_REFUSAL_ROUTE
    from affidavit.server.http_limits import MAX_HEAD_SECONDS
    from affidavit.services import access_log
    from affidavit.services.context import open_app

    def logged_408() -> int:
        with open_app(settings_of(home=box.world.home)) as app:
            return sum(
                1
                for e in access_log.show(app)
                if e.to_json().get("route") == PARSER_REFUSAL_ROUTE
                and e.to_json().get("status") == 408
            )

    before = logged_408()
    trickling = [box.connect() for _ in range(20)]
    silent = [box.connect() for _ in range(20)]
    started = time.monotonic()
    for sock in trickling:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    while time.monotonic() - started < MAX_HEAD_SECONDS - 3:  # a byte now and then
        time.sleep(2)
        for sock in trickling:
            sock.sendall(b"X-Slow: a\r\n")
        assert box.http.get("/health").status_code == 200
    answers = [_status(sock, timeout=10) for sock in trickling]
    closed: list[bool] = []
    for sock in silent:
        sock.settimeout(10)
        try:
            closed.append(sock.recv(10) == b"")
        except (TimeoutError, ConnectionResetError):
            closed.append(False)
    waited = time.monotonic() - started
    for sock in trickling + silent:
        sock.close()
    assert answers == [408] * 20, answers
    assert all(closed), closed
    assert waited < MAX_HEAD_SECONDS + 10
    deadline = time.monotonic() + 10
    while logged_408() < before + 20 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert logged_408() == before + 20


def test_requests_waiting_on_a_silent_source_do_not_starve_others(box: Box) -> None:
    """An operator's twenty ``POST /sources/NAME/test`` against a source that accepts the
    connection and never answers (connect timeout 5 s) hold at most half the worker threads
    (``gates.IDENTITY_SHARE``): another person's ``GET /backups`` is answered at once (it
    waited 4.2 s for a thread before the share), while the operator's own further requests
    wait their turn."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    port = hole.getsockname()[1]
    admin = box.world.session(box.http, "admin").bearer
    operator = box.world.session(box.http, "operator").bearer
    officer = box.world.session(box.http, "security_officer").bearer
    added = box.http.post(
        "/sources",
        json={"name": "silent", "engine": "redis", "uri": f"redis://127.0.0.1:{port}",
              "classification": "internal"},
        headers=admin,
    )  # fmt: skip
    assert added.status_code == 201, added.text

    def probe(_: int) -> int:
        with box.served.client() as http:
            return http.post("/sources/silent/test", headers=operator).status_code

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            probes = pool.map(probe, range(20))
            time.sleep(1)
            started = time.monotonic()
            listed = box.http.get("/backups", headers=officer)
            waited = time.monotonic() - started
            assert list(probes) == [200] * 20
    finally:
        hole.close()
    print(f"GET /backups while 20 source tests wait on a silent source: {waited:.3f} s")
    assert listed.status_code == 200
    assert waited < 1.0


def test_a_file_forms_name_never_leaves_its_private_folder(box: Box) -> None:
    """The file part's ``filename`` climbing out (``../``, ``..\\``, absolute), or naming
    nothing usable: the name kept is the base name, in a private folder (the request named
    is unknown: 404 after the file was written and removed); nothing lands elsewhere."""
    csrf = box.world.session(box.http, "operator").csrf.encode()
    token = _part("csrf_token", csrf)
    tmp = Path(tempfile.gettempdir())
    for name in ("../../session9-x.txt", "..\\..\\session9-x.txt", "/tmp/session9-x.txt",
                 "../" * 12 + "tmp/session9-x.txt"):  # fmt: skip
        sent = _form(token, _part("file", b"hello\n", filename=name))
        assert _post_form(box, sent) == 404, name
        assert not (tmp / "session9-x.txt").exists()
        assert not (box.world.home / "session9-x.txt").exists()
        assert not (box.world.home.parent / "session9-x.txt").exists()
    for name in ("..", ".", "a/..", "x\x00y.txt"):
        sent = _form(token, _part("file", b"hello\n", filename=name))
        assert _post_form(box, sent) == 400, name
