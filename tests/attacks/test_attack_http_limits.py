"""Attacks on the bound on a request's head (``server/http_limits.py``: 431 above 64 KiB, on
uvicorn's httptools protocol), over raw sockets against a real ``affidavit serve``.

What must hold: a head over the bound is refused however it arrives (one write, many small
writes, the second request of a keep-alive connection, glued to the end of the first one's
body); a legitimate request is never refused for bytes that are not its head (a body that
arrives in the same read as its head, many small requests pipelined in one write)."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import Served, serving

from affidavit.config import load_settings
from affidavit.server.http_limits import MAX_HEAD_BYTES
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

HEALTH = b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits") / "home"


@pytest.fixture(scope="module")
def served(home: Path) -> Iterator[Served]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("AFFIDAVIT_")}
    for var in saved:
        del os.environ[var]
    try:
        initialise(load_settings(home=home))
        with serving(home) as server:
            yield server
    finally:
        os.environ.update(saved)


def connect(served: Served) -> socket.socket:
    host, port = served.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        got += chunk
    return got


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def padded_get(head_size: int, *, close: bool = True) -> bytes:
    """A GET /health whose head is exactly ``head_size`` bytes (an X-Pad header)."""
    base = HEALTH + (b"connection: close\r\n" if close else b"") + b"x-pad: \r\n\r\n"
    pad = head_size - len(base)
    assert pad > 0
    return base.replace(b"x-pad: ", b"x-pad: " + b"a" * pad)


def test_a_head_just_under_the_bound_is_served(served: Served) -> None:
    with connect(served) as sock:
        sock.sendall(padded_get(MAX_HEAD_BYTES - 1024))
        assert statuses(read_all(sock)) == [200]


def test_a_head_over_the_bound_in_one_write_is_refused(served: Served) -> None:
    with connect(served) as sock:
        sock.sendall(padded_get(MAX_HEAD_BYTES + 1024))
        assert statuses(read_all(sock)) == [431]


def test_a_slow_head_in_many_small_writes_is_refused(served: Served) -> None:
    head = padded_get(MAX_HEAD_BYTES + 4096)
    with connect(served) as sock:
        refused = False
        for start in range(0, len(head), 512):
            try:
                sock.sendall(head[start : start + 512])
            except (BrokenPipeError, ConnectionResetError):
                refused = True
                break
            time.sleep(0.001)
        answer = read_all(sock)
    assert statuses(answer) == [431] or (refused and b"431" in answer)


def test_the_second_heads_count_starts_again_on_a_keep_alive_connection(served: Served) -> None:
    """Two heads of 40 KiB each on one connection: each is under the bound, both served."""
    with connect(served) as sock:
        sock.sendall(padded_get(40 * 1024, close=False))
        time.sleep(0.3)
        sock.sendall(padded_get(40 * 1024, close=True))
        assert statuses(read_all(sock)) == [200, 200]


def test_a_second_head_over_the_bound_is_refused_on_a_keep_alive_connection(
    served: Served,
) -> None:
    with connect(served) as sock:
        sock.sendall(padded_get(200, close=False))
        time.sleep(0.3)
        sock.sendall(padded_get(MAX_HEAD_BYTES + 1024))
        assert statuses(read_all(sock)) == [200, 431]


def test_a_second_head_glued_to_the_first_ones_body_is_counted(served: Served) -> None:
    """The first request's body is still owed when the next write begins: the rest of that
    write (its body's last bytes, then a 60 KiB piece of the next head) must count for the
    next head, else two writes of 60 KiB carry a 120 KiB head past the bound."""
    body = b'{"name": "x", "password": "y", "totp": "1"}'
    first = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    second = padded_get(120 * 1024)
    with connect(served) as sock:
        sock.sendall(first + body[:5])  # the head, and the body begun
        time.sleep(0.3)
        try:
            sock.sendall(body[5:] + second[: 60 * 1024])  # uncounted before the fix
            time.sleep(0.3)
            sock.sendall(second[60 * 1024 :])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    # the first request's answer may be lost with the connection: the refusal closes it
    assert statuses(answer) in ([401, 431], [431]), answer[:300]


def test_a_body_in_the_same_read_as_its_head_is_not_counted_as_head(served: Served) -> None:
    """A login whose JSON body (60 KiB, under the 64 KiB body bound) arrives with its 5 KiB
    head in one write: answered by the app, never 431."""
    pad = "p" * (60 * 1024)
    body = ('{"name": "x", "password": "' + pad + '", "totp": "1"}').encode()
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"connection: close\r\nx-pad: " + b"h" * (5 * 1024) + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    assert len(body) < 64 * 1024 < len(head) + len(body)
    with connect(served) as sock:
        sock.sendall(head + body)
        answer = read_all(sock)
    assert statuses(answer) == [422], answer[:300]  # the app's answer: the password is too long


def test_many_small_requests_pipelined_in_one_write_are_all_served(served: Served) -> None:
    """2000 GETs of about 40 bytes each in one write (80 KiB): no head is over the bound."""
    count = 2000
    one = HEALTH + b"\r\n"
    batch = one * (count - 1) + HEALTH + b"connection: close\r\n\r\n"
    assert len(batch) > MAX_HEAD_BYTES
    with connect(served) as sock:
        sock.sendall(batch)
        answer = read_all(sock)
    got = statuses(answer)
    assert 431 not in got
    assert got == [200] * count


def test_a_chunked_body_is_bounded_by_the_body_limit_not_the_head(served: Served) -> None:
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    with connect(served) as sock:
        sock.sendall(head)
        time.sleep(0.2)
        try:
            for _ in range(40):  # 160 KiB of body in 4 KiB chunks: over the 64 KiB body bound
                sock.sendall(b"1000\r\n" + b"a" * 4096 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    assert statuses(answer) == [413], answer[:300]


def _refusals(home: Path) -> list[dict[str, object]]:
    from affidavit.server.access import PARSER_REFUSAL_ROUTE
    from affidavit.services import access_log
    from affidavit.services.context import open_app

    with open_app(load_settings(home=home)) as app:
        entries = [e.to_json() for e in access_log.show(app)]
        return [e for e in entries if e.get("route") == PARSER_REFUSAL_ROUTE]


def _wait_for_refusals(home: Path, count: int) -> list[dict[str, object]]:
    """The refusals in the access log, once ``count`` are there (they are recorded after the
    connection closes, on a worker thread), or what is there after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        got = _refusals(home)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_parser_refusals_are_in_the_access_log(served: Served, home: Path) -> None:
    """A head over the bound (431) and bytes that are not HTTP (400) never reach the app, but
    both are logged: denied, anonymous, with the client's address and its user agent."""
    before = len(_refusals(home))
    with connect(served) as sock:
        sock.sendall(padded_get(MAX_HEAD_BYTES + 1024).replace(b"host: x", b"user-agent: big"))
        assert statuses(read_all(sock)) == [431]
    with connect(served) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert statuses(read_all(sock)) == [400]
    got = _wait_for_refusals(home, before + 2)[before:]
    assert sorted(e["status"] for e in got) == [400, 431]
    for entry in got:
        assert entry["outcome"] == "denied"
        assert entry["identity"] == "anonymous"
        assert entry["client_ip"] == "127.0.0.1"
    assert {e["status"]: e["user_agent"] for e in got}[431] == "big"
    from affidavit.services import access_log
    from affidavit.services.context import open_app

    with open_app(load_settings(home=home)) as app:
        assert access_log.verify(app).ok
