"""The hardening layer's streamed bodies (``server/hardening.py``), driven through its ASGI
interface: the upload route and the web pages' file form are not buffered, need a
``Content-Length`` within their cap before a byte is read, and reach their route through a
``receive`` that never hands over more than announced and turns a body that runs past its
length, stops short or stalls into a disconnect with the reason (``body_problem``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from affidavit.server.hardening import Hardening, body_problem
from affidavit.services.audit_files import MAX_FILE_BYTES

CAP = 100


class Route:
    """An app that reads the whole body as a route does and records what it got."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.problem: str | None = None
        self.called = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        self.problem = body_problem(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _run(
    path: str, headers: list[tuple[bytes, bytes]], pieces: list[Any], timeout: float = 5
) -> tuple[Route, int, dict[str, Any]]:
    route = Route()
    layer = Hardening(route, tls=False, max_upload=CAP, body_timeout=0.2)
    sent: list[dict[str, Any]] = []
    queue = list(pieces)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.sleep(timeout)  # the client says nothing more
            return {"type": "http.disconnect"}
        item = queue.pop(0)
        return item if "type" in item else {"type": "http.request", **item}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(layer(scope, receive, send))
    status = int(sent[0]["status"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return route, status, json.loads(body) if body else {}


OCTET = (b"content-type", b"application/octet-stream")
FORM = (b"content-type", b"multipart/form-data; boundary=x")


def _length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/v1/uploads", [OCTET], 411),  # no length
        ("/api/v1/uploads", [OCTET, (b"transfer-encoding", b"chunked")], 411),
        ("/api/v1/uploads", [OCTET, _length(CAP + 1)], 413),
        ("/api/v1/uploads", [OCTET, (b"content-length", b"1e3")], 400),
        ("/api/v1/uploads", [(b"content-type", b"application/json"), _length(10)], 415),
        ("/audit/requests/pbc-1/upload", [FORM], 411),
        ("/audit/requests/pbc-1/upload", [FORM, _length(MAX_FILE_BYTES + 64 * 1024 + 1)], 413),
        ("/audit/requests/pbc-1/upload", [OCTET, _length(10)], 415),
    ],
)
def test_refused_before_a_byte_is_read(
    path: str, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    route, got, answer = _run(path, headers, [{"body": b"x" * 10, "more_body": False}])
    assert got == status and not route.called
    assert answer["exit_code"] == 2 and answer["hint"]


def test_a_body_within_its_length_reaches_the_route_in_pieces_unbuffered() -> None:
    pieces = [{"body": b"a" * 40, "more_body": True}, {"body": b"b" * 60, "more_body": False}]
    route, status, _ = _run("/api/v1/uploads", [OCTET, _length(100)], pieces)
    assert status == 200 and route.problem is None
    assert [m["body"] for m in route.received] == [b"a" * 40, b"b" * 60]
    # the form of the web pages likewise, at most the largest answer file and 64 KiB
    route, status, _ = _run(
        "/audit/requests/pbc-1/upload", [FORM, _length(MAX_FILE_BYTES + 1)], pieces
    )
    assert status == 200 and len(route.received) == 2


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ([{"body": b"a" * 60, "more_body": True}, {"body": b"b" * 60, "more_body": False}],
         "more bytes than its Content-Length"),
        ([{"body": b"a" * 60, "more_body": False}], "cut short of its Content-Length"),
        ([{"body": b"a" * 60, "more_body": True}, {"type": "http.disconnect"}], "cut short"),
        ([{"body": b"a" * 60, "more_body": True}], "stalled"),
    ],
)  # fmt: skip
def test_a_lying_short_or_stalled_body_ends_as_a_disconnect_with_its_reason(
    pieces: list[Any], reason: str
) -> None:
    route, _, _ = _run("/api/v1/uploads", [OCTET, _length(100)], pieces)
    assert route.received[-1] == {"type": "http.disconnect"}
    assert sum(len(m.get("body", b"")) for m in route.received) <= 100
    assert route.problem is not None and reason in route.problem


def test_other_bodies_are_still_read_whole_and_capped() -> None:
    route, status, _ = _run("/api/v1/backups", [(b"content-type", b"application/json"),
                                                _length(100_000)], [])  # fmt: skip
    assert status == 413 and not route.called
