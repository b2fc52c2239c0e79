"""Attacks on the per-identity share of a real ``affidavit serve`` (``server/gates.py``:
IDENTITY_SHARE places per account, given back by the access-log layer) and on the upload
folder's bounds (``services/uploads.py``: ``_room_for``).

- Twenty failing requests of one identity of each kind (a route's error, a 403 of the gate
  after authentication, a CSRF refusal, a 413 of the hardening layer, an upload cut short,
  a client gone before the answer): a normal request of that identity still answers at once.
  A leaked share per request would lock the identity out after eight.
- An unauthenticated caller cannot take anyone's share.
- A corrupt or foreign ``up-*.json`` in ``HOME/uploads`` (a naive timestamp, a folder) is not
  counted and does not crash an upload (no 500).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from server_harness import API, Served, World, make_world, serving

from affidavit.config import load_settings
from affidavit.services import uploads

pytestmark = pytest.mark.e2e

ROUNDS = 20


@dataclass
class Box:
    served: Served
    world: World
    http: httpx.Client

    def bearer(self, name: str) -> dict[str, str]:
        return self.world.session(self.http, name).bearer

    def raw(self, data: bytes, *, wait: bool) -> None:
        parts = urlsplit(self.served.url)
        assert parts.hostname is not None and parts.port is not None
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(data)
            if wait:
                with contextlib.suppress(TimeoutError, ConnectionResetError):
                    sock.recv(65536)

    def prompt(self, name: str) -> None:
        """Nine of ``name``'s requests at once (more than a share) all answer in seconds."""
        headers = self.bearer(name)

        def one(_: int) -> int:
            return self.http.get("/whoami", headers=headers, timeout=10).status_code

        with ThreadPoolExecutor(9) as pool:
            assert list(pool.map(one, range(9))) == [200] * 9


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    from affidavit.services.setup import initialise

    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_MAX_UPLOAD_BYTES", "4096")
        home = tmp_path_factory.mktemp("share") / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        with serving(home) as served, served.client() as http:
            if urlsplit(served.url).scheme != "http":  # pragma: no cover - raw sockets
                pytest.skip("the raw-socket attacks need a plain-HTTP server")
            yield Box(served=served, world=world, http=http)


def test_route_errors_give_back_the_share(box: Box) -> None:
    headers = box.bearer("viewer")
    for _ in range(ROUNDS):
        assert box.http.get("/backups/bk-nope", headers=headers).status_code == 404
    box.prompt("viewer")


def test_gate_refusals_give_back_the_share(box: Box) -> None:
    headers = box.bearer("viewer")
    for _ in range(ROUNDS):
        assert box.http.get("/access-log", headers=headers).status_code == 403
    login = box.world.session(box.http, "viewer")
    cookie = {"Cookie": f"__Host-affidavit-session={login.secret}"}
    for _ in range(ROUNDS):
        assert box.http.post("/auth/logout", headers=cookie).status_code == 403
    box.prompt("viewer")


def test_hardening_refusals_give_back_the_share(box: Box) -> None:
    headers = {**box.bearer("operator"), "X-Content-SHA256": "0" * 64}
    for _ in range(ROUNDS):
        big = box.http.post("/uploads", content=b"x" * 5000, headers=headers)
        assert big.status_code == 413
        kind = box.http.post("/backups/ingests", content=b"<x/>",
                             headers={**headers, "Content-Type": "text/xml"})  # fmt: skip
        assert kind.status_code == 415
    box.prompt("operator")


def test_cut_uploads_and_gone_clients_give_back_the_share(box: Box) -> None:
    secret = box.bearer("auditor")["Authorization"]
    host = urlsplit(box.served.url).netloc
    for _ in range(ROUNDS):
        head = (f"POST {API}/uploads HTTP/1.1\r\nHost: {host}\r\nAuthorization: {secret}\r\n"
                f"Content-Type: application/octet-stream\r\nX-Content-SHA256: {'0' * 64}\r\n"
                "Content-Length: 4000\r\n\r\n").encode()  # fmt: skip
        box.raw(head + b"x" * 100, wait=False)  # cut short: the connection closes
        gone = f"GET {API}/whoami HTTP/1.1\r\nHost: {host}\r\nAuthorization: {secret}\r\n\r\n"
        box.raw(gone.encode(), wait=False)  # gone before the answer
    box.prompt("auditor")


def test_unauthenticated_callers_take_no_share(box: Box) -> None:
    login = box.world.session(box.http, "approver")
    for _ in range(ROUNDS):
        assert box.http.get("/whoami", headers={"Authorization": "Bearer afs_bogus"}
                            ).status_code == 401  # fmt: skip
        cookie = {"Cookie": f"__Host-affidavit-session={login.secret}x"}
        assert box.http.post("/auth/logout", headers=cookie).status_code == 401
    box.prompt("approver")


def _meta(base: Path, upload_id: str, **changes: object) -> None:
    now = datetime.now(UTC)
    data: dict[str, object] = {
        "upload": upload_id, "owner": "x", "size": 1, "sha256": "0" * 64,
        "created_at": now.isoformat(), "expires_at": (now + timedelta(hours=1)).isoformat(),
    }  # fmt: skip
    data.update(changes)
    (base / f"{upload_id}.json").write_text(json.dumps(data))


def test_corrupt_metas_neither_count_nor_crash(box: Box) -> None:
    base = uploads.folder(box.world.home)
    naive = (datetime.now() + timedelta(hours=1)).isoformat()  # naive: the point
    _meta(base, "up-naive", expires_at=naive)
    (base / "up-folder.json").mkdir()
    (base / "up-list.json").write_text("[1, 2]")
    (base / "up-bytes.json").write_bytes(b"\xff\xfe{")
    try:
        data = b"abc"
        headers = {**box.bearer("operator"), "Content-Type": "application/octet-stream",
                   "X-Content-SHA256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        answer = box.http.post("/uploads", content=data, headers=headers)
        assert answer.status_code == 201, answer.text
    finally:
        (base / "up-folder.json").rmdir()
        for name in ("up-naive", "up-list", "up-bytes"):
            (base / f"{name}.json").unlink()


def test_waiting_uploads_count_per_owner_until_claimed_or_expired(tmp_path: Path) -> None:
    home = tmp_path
    base = uploads.folder(home)
    base.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    for n in range(uploads.MAX_WAITING):
        _meta(base, f"up-old{n}", owner="acct-1",
              expires_at=(now - timedelta(seconds=1)).isoformat())  # fmt: skip
        _meta(base, f"up-other{n}", owner="acct-2")
    uploads._room_for(base, "acct-1", 1, now)  # expired and foreign ones do not count
    for n in range(uploads.MAX_WAITING):
        _meta(base, f"up-live{n}", owner="acct-1")
    with pytest.raises(uploads.TooManyRequests):
        uploads._room_for(base, "acct-1", 1, now)
    (base / "up-live0.json").unlink()  # claimed: its meta is gone
    uploads._room_for(base, "acct-1", 1, now)
