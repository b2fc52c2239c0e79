"""Attacks on the upload path (``POST /api/v1/uploads``, docs/server.md "Uploads") of a real
``affidavit serve`` (a cap of 4096 bytes here: ``AFFIDAVIT_MAX_UPLOAD_BYTES``): a body
without a length, over the cap, with a lying length (more and fewer bytes), a wrong SHA-256,
someone else's upload id, an upload used twice or after it expired, an auditor and a viewer
uploading or ingesting. After each: the refusal (status, one line), no file left in
``HOME/uploads``, nothing in the catalog or the ledger, and the request in the access log."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from server_harness import Served, World, make_world, serving

from affidavit.config import load_settings
from affidavit.services import access_log
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e

CAP = 4096
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "formats"
RDB = SHARED / "redis-rdb/redis-rdb-tools/tests/dumps/keys_with_expiry.rdb"


@dataclass
class Box:
    served: Served
    world: World
    http: httpx.Client

    @property
    def home(self) -> Path:
        return self.world.home

    def bearer(self, name: str) -> dict[str, str]:
        return self.world.session(self.http, name).bearer

    def upload(self, name: str, data: bytes, *, sha256: str | None = None) -> httpx.Response:
        headers = {**self.bearer(name), "Content-Type": "application/octet-stream",
                   "X-Content-SHA256": sha256 or hashlib.sha256(data).hexdigest()}  # fmt: skip
        return self.http.post("/uploads", content=data, headers=headers)

    def ingest(self, name: str, upload: str) -> httpx.Response:
        body = {"upload": upload, "name": "dump.rdb", "format": "rdb"}
        return self.http.post("/backups/ingests", json=body, headers=self.bearer(name))

    def raw(self, head: bytes, body: bytes = b"", *, shut: bool = False) -> bytes:
        """Send ``head`` and ``body`` on a socket of its own; what the server answered
        (b"" when it answered nothing before closing)."""
        parts = urlsplit(self.served.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            sock.sendall(head + body)
            if shut:
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
                    head, sep, rest = answer.partition(b"\r\n\r\n")
                    length = [int(line.split(b":")[1]) for line in head.lower().splitlines()
                              if line.startswith(b"content-length:")]  # fmt: skip
                    if sep and not shut and len(rest) >= (length or [0])[0]:
                        break
            except (TimeoutError, ConnectionResetError):
                pass
            return answer

    def head(self, name: str, length: int | None, sha256: str) -> bytes:
        lines = [b"POST /api/v1/uploads HTTP/1.1", b"Host: 127.0.0.1",
                 f"Authorization: Bearer {self.world.session(self.http, name).secret}".encode(),
                 b"Content-Type: application/octet-stream",
                 f"X-Content-SHA256: {sha256}".encode()]  # fmt: skip
        if length is not None:
            lines.append(f"Content-Length: {length}".encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    if not RDB.is_file():
        pytest.skip("the RDB comes with the shared folder")
    from affidavit.cli.main import main
    from affidavit.services.setup import initialise

    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        root = tmp_path_factory.mktemp("uploads")
        home = root / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        assert (
            main(["--home", str(home), "vault", "add", "v1", "--url", f"file://{root / 'v'}"]) == 0
        )
        with (
            serving(home, env={"AFFIDAVIT_MAX_UPLOAD_BYTES": str(CAP)}) as served,
            served.client() as http,
        ):
            yield Box(served=served, world=world, http=http)


def _left(home: Path) -> list[str]:
    folder = home / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _backups(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("select count(*) from backups").fetchone()[0])


def _nothing_recorded(home: Path) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("select count(*) from backups").fetchone()[0] == 0
        actions = [a for (a,) in db.execute("select action from ledger_entries")]
    assert not [a for a in actions if a.startswith(("backup.", "audit."))], actions


def _logged(home: Path, status: int) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        entries = [e.to_json() for e in access_log.show(app)]
    # (refused by the hardening layer, before routing: "(no route)")
    return [e for e in entries if e.get("method") == "POST" and e.get("status") == status
            and e.get("route") in ("/api/v1/uploads", "(no route)")]  # fmt: skip


def _clean(box: Box) -> None:
    """No upload, incoming file or claim folder left, nothing recorded."""
    deadline = time.monotonic() + 5
    while _left(box.home) and time.monotonic() < deadline:  # a disconnect is seen async
        time.sleep(0.1)
    assert _left(box.home) == []
    _nothing_recorded(box.home)


def test_no_length_chunked_and_over_the_cap_are_refused_before_the_body(box: Box) -> None:
    data = b"x" * 100
    digest = hashlib.sha256(data).hexdigest()
    answer = box.raw(box.head("operator", None, digest))
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert b"Content-Length" in answer
    # chunked: no length announced either
    headers = {**box.bearer("operator"), "Content-Type": "application/octet-stream",
               "X-Content-SHA256": digest}  # fmt: skip
    chunked = box.http.post("/uploads", content=iter([data]), headers=headers)
    assert chunked.status_code == 411, chunked.text
    # over the cap: refused from the header alone, while the body is still unsent
    answer = box.raw(box.head("operator", CAP + 1, digest))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    too_large = box.upload("operator", b"y" * (CAP + 1))
    assert too_large.status_code == 413 and too_large.json()["exit_code"] == 2
    # not application/octet-stream
    wrong = box.http.post(
        "/uploads", content=data, headers={**headers, "Content-Type": "text/plain"}
    )
    assert wrong.status_code == 415
    assert _logged(box.home, 411) and _logged(box.home, 413) and _logged(box.home, 415)
    _clean(box)


def test_a_lying_length_and_a_wrong_sha256_keep_nothing(box: Box) -> None:
    data = os.urandom(2000)
    digest = hashlib.sha256(data).hexdigest()
    # fewer bytes than announced, then the client closes: nothing kept
    box.raw(box.head("operator", len(data), digest), data[:1000], shut=True)
    _clean(box)
    # more bytes than announced: the body is the announced bytes, whose SHA-256 is not the
    # one declared, and the rest is no request at all (the HTTP parser's 400)
    answer = box.raw(box.head("operator", 1000, digest), data, shut=True)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    _clean(box)
    # the announced bytes alone, with the SHA-256 of more: refused, nothing kept
    answer = box.raw(box.head("operator", 1000, digest), data[:1000])
    assert answer.startswith(b"HTTP/1.1 400") and b"SHA-256" in answer, answer[:300]
    _clean(box)
    # a wrong SHA-256
    wrong = box.upload("operator", data, sha256="0" * 64)
    assert wrong.status_code == 400 and "SHA-256" in wrong.json()["error"]
    bad = box.upload("operator", data, sha256="not-a-digest")
    assert bad.status_code == 400
    assert _logged(box.home, 400)
    _clean(box)


def test_an_upload_is_its_owners_used_once_and_expires(box: Box) -> None:
    data = RDB.read_bytes()
    assert len(data) <= CAP
    made = box.upload("operator", data)
    assert made.status_code == 201, made.text
    answer = made.json()
    upload = answer["upload"]
    assert answer["size"] == len(data)
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    stored = box.home / "uploads" / f"{upload}.data"
    assert stored.is_file() and stored.stat().st_mode & 0o077 == 0
    # another identity (allowed to ingest, and to upload) cannot use it: 404 as for nothing
    other = box.ingest("security_officer", upload)
    assert other.status_code == 403  # security officers ingest nothing
    box.world.session(box.http, "admin")
    ci = box.http.post("/backups/ingests", json={"upload": upload, "name": "dump.rdb",
                                                 "format": "rdb"},
                       headers={"Authorization": f"Bearer {box.world.token}"})  # fmt: skip
    assert ci.status_code == 404, ci.text
    assert "no upload" in ci.json()["error"]
    assert stored.is_file()  # still the owner's
    # the viewer and the auditor may not upload at all
    for name in ("viewer", "auditor"):
        refused = box.upload(name, data)
        assert refused.status_code == 403, refused.text
        assert box.ingest(name, upload).status_code == 403
    assert stored.is_file()
    _nothing_recorded(box.home)
    # the owner uses it once: a backup; the second time there is no such upload
    done = box.ingest("operator", upload)
    assert done.status_code == 201, done.text
    again = box.ingest("operator", upload)
    assert again.status_code == 404
    assert _left(box.home) == []
    assert _backups(box.home) == 1
    # an upload whose hour is over: gone, and no backup
    late = box.upload("operator", data).json()["upload"]
    meta = box.home / "uploads" / f"{late}.json"
    record = json.loads(meta.read_text())
    record["expires_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    meta.write_text(json.dumps(record))
    expired = box.ingest("operator", late)
    assert expired.status_code == 404
    assert _left(box.home) == []
    assert _backups(box.home) == 1
    # an id that is no upload's, or a path
    for name in ("up-0000000000000000", "../catalog.sqlite", "up-../../x"):
        assert box.ingest("operator", name).status_code == 404
