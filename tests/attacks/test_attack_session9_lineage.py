"""Attacks on ``POST /api/v1/lineage/emit`` of a real ``affidavit serve`` (session 9), whose
server POSTs the ledger's lineage to its ``openlineage_url`` (here a real HTTP endpoint on
this host, told how to misbehave):

- an endpoint that **redirects** (302 to a URL of its choosing, e.g. the server's own
  network): the server must not follow it (it did: urllib turned the POST into a GET of the
  new URL, whose 200 then counted as delivered, and every event was marked sent though
  none arrived);
- **emits racing** while the endpoint is slow: each emit waited on it on a worker thread,
  so a few concurrent emits took the server's sixteen threads and every other request
  waited (8 s for ``GET /backups`` with eighteen); now one emit runs per home, the others
  are refused at once (503, one line), and no event is sent twice;
- a **client-chosen URL** (``{"url": ...}``) is refused (422): the server only ever posts to
  its own setting.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import Served, World, make_world, serving

from affidavit.config import load_settings

pytestmark = pytest.mark.e2e

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "formats"
RDB = SHARED / "redis-rdb/redis-rdb-tools/tests/dumps/keys_with_expiry.rdb"


@dataclass
class Endpoint:
    """What the OpenLineage endpoint does (``mode``) and what reached it."""

    mode: str = "ok"  # ok | redirect | slow-first (5 s for the posts of the first 3 s)
    first: float = 0.0  # when the first post arrived
    posts: list[bytes] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _endpoint(state: Endpoint) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                if not state.posts:
                    state.first = time.monotonic()
                early = time.monotonic() - state.first < 3.0  # the first seconds are slow
                if state.mode != "redirect":
                    state.posts.append(body)
            if state.mode == "redirect":
                port = self.server.server_address[1]
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{port}/internal-metadata")
            else:
                if state.mode == "slow-first" and early:
                    time.sleep(5)
                self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            state.gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@dataclass
class Box:
    served: Served
    world: World
    http: httpx.Client
    endpoint: Endpoint
    url: str  # the endpoint's

    def emit(self, body: Any = None) -> httpx.Response:
        bearer = self.world.session(self.http, "security_officer").bearer  # ledger.export
        with self.served.client() as http:  # a connection of its own (the racers)
            return http.post("/lineage/emit", json=body, headers=bearer)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    if not RDB.is_file():
        pytest.skip("the RDB comes with the shared folder")
    from affidavit.cli.main import main
    from affidavit.services.setup import initialise

    state = Endpoint()
    server = _endpoint(state)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/lineage"
    try:
        with pytest.MonkeyPatch.context() as patch:
            for var in list(os.environ):
                if var.startswith("AFFIDAVIT_"):
                    patch.delenv(var)
            root = tmp_path_factory.mktemp("lineage9")
            home = root / "home"
            initialise(load_settings(home=home))
            world = make_world(home)
            vault = ["--home", str(home), "vault", "add", "v1", "--url", f"file://{root / 'v'}"]
            assert main(vault) == 0
            for _ in range(3):  # backups: lineage to send
                assert main(["--home", str(home), "backup", "ingest", str(RDB),
                             "--format", "rdb"]) == 0  # fmt: skip
            env = {"AFFIDAVIT_OPENLINEAGE_URL": url}
            with serving(home, env=env) as served, served.client() as http:
                yield Box(served=served, world=world, http=http, endpoint=state, url=url)
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirecting_endpoint_is_neither_followed_nor_counted_sent(box: Box) -> None:
    box.endpoint.mode = "redirect"
    answer = box.emit()
    assert answer.status_code == 503, answer.text
    problem = answer.json()
    assert "302" in problem["error"] and "\n" not in problem["error"] and problem["hint"]
    assert box.endpoint.gets == []  # the server fetched nothing the endpoint pointed to
    assert box.endpoint.posts == []
    # nothing was marked sent: a good endpoint then gets every event
    box.endpoint.mode = "ok"
    done = box.emit()
    assert done.status_code == 200, done.text
    assert done.json()["sent"] == len(box.endpoint.posts) > 0


def test_racing_emits_neither_starve_the_server_nor_send_twice(box: Box) -> None:
    box.endpoint.mode = "slow-first"
    box.endpoint.posts.clear()
    box.world.session(box.http, "security_officer")  # logged in before the race
    box.world.session(box.http, "operator")
    with ThreadPoolExecutor(max_workers=18) as pool:
        racing = [pool.submit(box.emit, {"since": -1}) for _ in range(18)]
        time.sleep(1.5)  # the first emit waits on the endpoint; the others have arrived
        started = time.monotonic()
        listed = box.http.get("/backups", headers=box.world.session(box.http, "operator").bearer)
        waited = time.monotonic() - started
        answers = [f.result() for f in racing]
    print(f"GET /backups while 18 emits race a slow endpoint: {waited:.3f} s")
    assert listed.status_code == 200
    assert waited < 2.0
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [503] * 17, [a.text[:200] for a in answers]
    refused = next(a for a in answers if a.status_code == 503).json()
    assert "another" in refused["error"] and refused["hint"]
    sent = next(a for a in answers if a.status_code == 200).json()["sent"]
    assert sent == len(box.endpoint.posts) > 0
    assert len({json.dumps(json.loads(p), sort_keys=True) for p in box.endpoint.posts}) == sent


def test_a_client_cannot_name_the_url_the_server_posts_to(box: Box) -> None:
    before = len(box.endpoint.posts)
    for body in ({"url": "http://169.254.169.254/latest/meta-data"},
                 {"since": -1, "openlineage_url": "http://127.0.0.1:1/"}):  # fmt: skip
        answer = box.emit(body)
        assert answer.status_code == 422, answer.text
    assert len(box.endpoint.posts) == before and box.endpoint.gets == []


def test_a_redirecting_reminder_webhook_is_a_failure(box: Box) -> None:
    """The same opener serves the audit reminders' webhook (and the alerts'): a 302 is a
    failed delivery, and the URL it points to is never fetched."""
    from pydantic import SecretStr

    from affidavit.errors import OperationError
    from affidavit.services.audit_notify import post_webhook

    box.endpoint.mode = "redirect"
    gets = len(box.endpoint.gets)
    settings = load_settings(home=box.world.home).model_copy(
        update={"audit_webhook_url": box.url, "audit_webhook_secret": SecretStr("s" * 32)}
    )
    with pytest.raises(OperationError, match="302"):
        post_webhook(settings, {"event": "audit.reminder"})
    assert len(box.endpoint.gets) == gets


def test_the_auditor_reaches_no_lineage_package_or_calendar(box: Box) -> None:
    """The auditor (``audit.read`` only) asks for the lineage of a backup, the lineage
    export, an evidence package someone built and the calendar: each refused (403)."""
    operator = box.world.session(box.http, "operator").bearer
    backups = box.http.get("/backups", headers=operator).json()["backups"]
    backup = backups[0]["backup_id"]
    today = datetime.now(UTC).date()
    built = box.http.post(
        "/evidence-packages",
        json={"from": str(today - timedelta(days=1)), "to": str(today)},
        headers=operator,
    )
    assert built.status_code == 201, built.text
    package = built.json()["package"]
    auditor = box.world.session(box.http, "auditor").bearer
    asks = [
        ("GET", f"/lineage?subject=backup:{backup}", None),
        ("GET", f"/lineage?subject={backup}", None),
        ("POST", "/lineage/verify", None),
        ("POST", "/lineage/exports", {}),
        ("POST", "/lineage/emit", {}),
        ("GET", f"/evidence-packages/{package}", None),
        ("POST", "/evidence-packages", {"from": "2000-01-01", "to": str(today)}),
        ("GET", "/calendar.ics", None),
        ("GET", "/calendar", None),
        ("GET", "/ledger/proof/1", None),
        ("GET", "/ledger/checkpoint", None),
    ]
    for method, path, body in asks:
        answer = box.http.request(method, path, json=body, headers=auditor)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
        assert backup not in answer.text


def test_download_ids_guessed_of_another_kind_or_expired_are_not_served(box: Box) -> None:
    officer = box.world.session(box.http, "security_officer").bearer
    operator = box.world.session(box.http, "operator").bearer
    written = box.http.post("/lineage/exports", json={}, headers=officer)
    assert written.status_code == 201, written.text
    export = written.json()["export"]
    assert box.http.get(f"/lineage/exports/{export}", headers=officer).status_code == 200
    today = datetime.now(UTC).date()
    built = box.http.post(
        "/evidence-packages", json={"from": str(today), "to": str(today)}, headers=operator
    ).json()["package"]
    for guess in ("ox-0000000000000000", export.replace("ox-", "lx-"), "ox-../../catalog",
                  "..%2F..%2Fcatalog.sqlite", export + ".jsonl"):  # fmt: skip
        answer = box.http.get(f"/lineage/exports/{guess}", headers=officer)
        assert answer.status_code == 404, (guess, answer.text)
    for guess in ("ev-0000000000000000", export, "ev-..%2F..%2Fcatalog"):
        answer = box.http.get(f"/evidence-packages/{guess}", headers=operator)
        assert answer.status_code == 404, (guess, answer.text)
    # older than 24 hours: gone, though still on disk until the next sweep
    day_ago = time.time() - 25 * 3600
    for path in (
        box.world.home / "exports" / f"{export}.jsonl",
        box.world.home / "evidence" / f"{built}.tar.gz",
    ):
        os.utime(path, (day_ago, day_ago))
    late = box.http.get(f"/lineage/exports/{export}", headers=officer)
    assert late.status_code == 404 and "24 hours" in late.json()["error"]
    late = box.http.get(f"/evidence-packages/{built}", headers=operator)
    assert late.status_code == 404 and "24 hours" in late.json()["error"]
