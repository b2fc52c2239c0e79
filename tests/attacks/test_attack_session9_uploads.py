"""Attacks on uploads and on the access log of a real ``affidavit serve`` (session 9):

- eight requests **racing to claim one upload**: exactly one has it, the others are told
  there is no such upload (404), and nothing is left in ``HOME/uploads``;
- the **file name a command gives an upload** (``../../catalog.sqlite``, an absolute path,
  ``..``, a NUL, a name of 300 characters): never a path outside the claim's private folder,
  the answer names the base name only, never the server's home;
- a **flood of bytes that are not HTTP** (each refused by the parser, 400, and logged by
  :func:`affidavit.server.access.record_refusal` on a worker thread): every refusal is in the
  access log (none lost), and the server answers others meanwhile (the event loop is not
  blocked by the recording).
"""

from __future__ import annotations

import hashlib
import os
import socket
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
from affidavit.server.access import PARSER_REFUSAL_ROUTE
from affidavit.services import access_log
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e

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

    def upload(self, name: str, data: bytes) -> str:
        headers = {**self.world.session(self.http, name).bearer,
                   "Content-Type": "application/octet-stream",
                   "X-Content-SHA256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        made = self.http.post("/uploads", content=data, headers=headers)
        assert made.status_code == 201, made.text
        return str(made.json()["upload"])

    def fingerprint(self, name: str, upload: str, filename: str) -> httpx.Response:
        body = {"upload": upload, "name": filename, "format": "rdb"}
        with self.served.client() as http:  # a connection of its own (the racers)
            return http.post(
                "/fingerprints", json=body, headers=self.world.session(self.http, name).bearer
            )


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    if not RDB.is_file():
        pytest.skip("the RDB comes with the shared folder")
    from affidavit.services.setup import initialise

    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        home = tmp_path_factory.mktemp("uploads9") / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        with serving(home) as served, served.client() as http:
            yield Box(served=served, world=world, http=http)


def _left(home: Path) -> list[str]:
    folder = home / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_racing_claims_of_one_upload_only_one_wins(box: Box) -> None:
    data = RDB.read_bytes()
    box.world.session(box.http, "operator")  # logged in before the race
    for _ in range(3):
        upload = box.upload("operator", data)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(box.fingerprint, ["operator"] * 8, [upload] * 8,
                                    ["dump.rdb"] * 8))  # fmt: skip
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] + [404] * 7, [a.text[:200] for a in answers]
        assert _left(box.home) == []


def test_the_name_given_to_an_upload_never_leaves_its_folder(box: Box) -> None:
    data = RDB.read_bytes()
    home = str(box.home)
    for name in ("../../catalog.sqlite", "/etc/passwd", "..\\..\\x.rdb", "a/../../b.rdb"):
        answer = box.fingerprint("operator", box.upload("operator", data), name)
        assert answer.status_code == 200, answer.text
        assert home not in answer.text
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        assert base in answer.text
        assert _left(box.home) == []
    assert (box.home / "catalog.sqlite").stat().st_size > 0  # untouched
    for name in ("..", ".", "x\x00y", "n" * 300, "a/..", "\x1b[31m"):
        upload = box.upload("operator", data)
        answer = box.fingerprint("operator", upload, name)
        assert answer.status_code in (400, 422), (name, answer.text)
        assert home not in answer.text
        if answer.status_code == 400:
            assert answer.json()["hint"]
    # the refused names did not use the uploads up: they wait, and expire (swept later)
    assert all(n.endswith((".data", ".json")) for n in _left(box.home))


def test_a_flood_of_parser_refusals_loses_no_entry_and_blocks_nothing(box: Box) -> None:
    parts = urlsplit(box.served.url)
    assert parts.hostname is not None and parts.port is not None

    def refused_count() -> int:
        with open_app(load_settings(home=box.home)) as app:
            return sum(
                1 for e in access_log.show(app) if e.to_json().get("route") == PARSER_REFUSAL_ROUTE
            )

    before = refused_count()
    flood = 300
    slowest = 0.0

    def garbage(_: int) -> bytes:
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            sock.sendall(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
            try:
                return sock.recv(100)
            except (ConnectionResetError, TimeoutError):
                return b""

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = pool.map(garbage, range(flood))
        for _ in range(5):  # others are served meanwhile
            started = time.monotonic()
            assert box.http.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        got = list(answers)
    assert all(a.startswith(b"HTTP/1.1 400") for a in got), {a[:40] for a in got}
    deadline = time.monotonic() + 60
    while refused_count() < before + flood and time.monotonic() < deadline:
        time.sleep(0.5)
    recorded = refused_count() - before
    print(f"{flood} parser refusals: {recorded} recorded; health at worst {slowest:.3f} s")
    assert recorded == flood
    assert slowest < 3.0
