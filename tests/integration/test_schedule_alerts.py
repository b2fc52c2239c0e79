"""Cadence and alerts (issue 6): what is due for a fresh backup, run-due clears it, a moved
clock makes it due again; failures and overdue checks that cannot run are alerted to a local
webhook (a stdlib HTTP server), a webhook that is down breaks nothing, alerts are in the
ledger."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.errors import ConfigError, OperationError
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.base import free_port
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import alerts as alert_service
from affidavit.services import schedule
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import App, open_app
from affidavit.services.ledger import verify_catalog

pytestmark = pytest.mark.integration

HAS_VERIFY = importlib.util.find_spec("affidavit.services.verify") is not None
PAYLOAD_KEYS = {"kind", "subject", "summary", "details", "time", "affidavit_version"}


class Hook:
    """A local webhook receiver: every JSON POST lands in ``received``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                hook.received.append(
                    {"path": self.path, "type": self.headers["Content-Type"], "body": body}
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/affidavit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def redis_source() -> Iterator[str]:
    with RedisScratch(replica_sync_delay=0) as server:
        parsed = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with engine_for_uri(EngineName.REDIS, parsed, password=None, timeout=5) as e:
            e.seed_sample(seed=3, scale=5)
        yield server.uri


def configure(home: Path, **settings: Any) -> None:
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    with (home / "affidavit.toml").open("a") as fh:
        fh.write("\n" + "\n".join(lines) + "\n")


def prepare(cli: Any, home: Path, uri: str, tmp_path: Path) -> str:
    add = ("source", "add", "cache", "--engine", "redis", "--uri", uri)
    assert cli(*add, "--classification", "internal").code == 0
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    r = cli("backup", "run", "cache", "--json")
    assert r.code == 0, r.err
    backup_id: str = json.loads(r.out)["backup_id"]
    return backup_id


def actions(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


def test_cadence_settings_are_validated(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path, environ={})
    assert (s.verify_sample_every_hours, s.verify_sample_percent) == (24, 10)
    assert (s.verify_full_every_days, s.drill_every_days, s.rto_seconds) == (7, 30, 3600)
    assert s.webhooks == ()
    env = {"AFFIDAVIT_WEBHOOKS": "https://a.example/x, http://b.example/y"}
    assert load_settings(home=tmp_path, environ=env).webhooks == (
        "https://a.example/x",
        "http://b.example/y",
    )
    for bad in (
        {"AFFIDAVIT_WEBHOOKS": "ftp://a.example/x"},
        {"AFFIDAVIT_VERIFY_SAMPLE_PERCENT": "150"},
        {"AFFIDAVIT_DRILL_EVERY_DAYS": "0"},
        {"AFFIDAVIT_RTO_SECONDS": "-1"},
    ):
        with pytest.raises(ConfigError):
            load_settings(home=tmp_path, environ=bad)


def test_due_lists_a_fresh_backup_and_the_clock_makes_it_due_again(
    cli: Any,
    home: Path,
    redis_source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backup_id = prepare(cli, home, redis_source, tmp_path)
    with open_app(load_settings(home=home)) as app:
        items = schedule.due(app)
        assert [(i.kind.value, i.backup_id) for i in items] == [
            ("verify-full", backup_id),
            ("drill", backup_id),
        ]
        assert all(i.overdue and i.last_done_at is None for i in items)
    out = json.loads(cli("due", "--json").out)
    assert out["due"] == 2 and out["overdue"] == 2
    assert {i["kind"] for i in out["items"]} == {"verify-full", "drill"}
    # run what is due; the verification half is stubbed when issue 6's verify is not built yet
    if not HAS_VERIFY:
        pytest.skip("affidavit.services.verify is not there yet: the verify path is untested")
    r = cli("run-due", "--json")
    assert r.code == 0, r.err + r.out
    ran = json.loads(r.out)
    assert ran["ok"] and ran["ran"] == 2 and ran["alerts"] == 0
    assert {x["outcome"] for x in ran["results"]} == {"passed"}
    assert json.loads(cli("due", "--json").out)["items"] == []
    assert "Nothing is due" in cli("due").out
    with open_app(load_settings(home=home)) as app:
        assert schedule.due(app) == []
        upcoming = schedule.due(app, include_upcoming=True)
        assert {i.kind.value for i in upcoming} == {"verify-full", "verify-sample", "drill"}
        real_now = schedule._now()
        for days, kinds in ((2, {"verify-sample"}), (8, {"verify-full"}), (31, {"verify-full", "drill"})):  # fmt: skip
            monkeypatch.setattr(schedule, "_now", lambda d=days: real_now + timedelta(days=d))
            assert {i.kind.value for i in schedule.due(app)} == kinds, days
        # a backup past its retention is no longer verified
        monkeypatch.setattr(schedule, "_now", lambda: real_now + timedelta(days=400))
        assert [i.kind.value for i in schedule.due(app)] == []


def test_alerts_for_a_failed_drill_and_an_overdue_check_reach_the_webhook(
    cli: Any,
    home: Path,
    redis_source: str,
    tmp_path: Path,
    hook: Hook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/nobody-listens"
    configure(home, webhooks=[hook.url, down], rto_seconds=0.000001)
    backup_id = prepare(cli, home, redis_source, tmp_path)

    def verify_cannot_run() -> Any:
        raise OperationError("the vault is unreachable")

    monkeypatch.setattr(schedule, "_verify_function", verify_cannot_run)
    monkeypatch.setattr(alert_service, "WEBHOOK_BACKOFF", 0.01)
    with open_app(load_settings(home=home)) as app:
        result = schedule.run_due(app)
        assert not result.ok
        outcomes = {r.item.kind.value: r for r in result.results}
        assert outcomes["verify-full"].outcome is schedule.Outcome.ERROR
        assert outcomes["drill"].outcome is schedule.Outcome.FAILED
        assert outcomes["drill"].findings == ("rto-exceeded",)
        assert result.alerts == 2
        stored = alert_service.list_alerts(app)
        assert {a.kind for a in stored} == {"check.overdue", "drill.failed"}
        up = f"http://127.0.0.1:{hook.server.server_address[1]}/…"
        for alert in stored:
            to_up = [d for d in alert.deliveries if d["webhook"] == up]
            to_down = [d for d in alert.deliveries if d["webhook"] != up]
            assert [(d["ok"], d["status"]) for d in to_up] == [(True, 204)]
            assert [d["ok"] for d in to_down] == [False, False, False]
            assert all(d["error"] and d["attempt"] == n for n, d in enumerate(to_down, 1))
            assert all("nobody-listens" not in d["webhook"] for d in alert.deliveries)
        assert verify_catalog(app).ok
    kinds = sorted(p["body"]["kind"] for p in hook.received)
    assert kinds == ["check.overdue", "drill.failed"]
    for post in hook.received:
        assert post["path"] == "/hooks/affidavit"
        assert post["type"] == "application/json"
        assert set(post["body"]) == PAYLOAD_KEYS
        assert post["body"]["subject"] == f"backup:{backup_id}"
    overdue = next(p["body"] for p in hook.received if p["body"]["kind"] == "check.overdue")
    assert "the vault is unreachable" in overdue["summary"]
    assert overdue["details"]["kind"] == "verify-full"
    failed_drill = next(p["body"] for p in hook.received if p["body"]["kind"] == "drill.failed")
    assert failed_drill["details"]["findings"] == ["rto-exceeded"]
    raised = actions(home, "alert.raised")
    assert sorted(e["details"]["kind"] for e in raised) == ["check.overdue", "drill.failed"]
    delivered = actions(home, "alert.delivery")
    assert sorted(e["details"]["delivered"] for e in delivered) == [False, False, True, True]
    # the drill was recorded (and counts as done); the verification could not run: still due
    with open_app(load_settings(home=home)) as app:
        assert [i.kind.value for i in schedule.due(app)] == ["verify-full"]
    # through the CLI: the overdue verification cannot run again -> exit 1, a third alert
    r = cli("run-due", "--json")
    assert r.code == 1
    assert json.loads(r.out)["errors"] == 1
    assert len(hook.received) == 3


def test_a_webhook_that_is_down_is_recorded_not_raised(
    app: App, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    def flaky(url: str, body: bytes, timeout: float) -> int:
        calls.append(timeout)
        if len(calls) < 3:
            raise OSError("connection refused")
        return 200

    deliveries = alert_service.deliver(
        "https://h.example/secret-token", {"k": 1}, post=flaky, backoff=0
    )
    assert [d.ok for d in deliveries] == [False, False, True]
    assert calls == [alert_service.WEBHOOK_TIMEOUT] * 3
    assert deliveries[0].webhook == "https://h.example/…"
    rejected = alert_service.deliver("https://h.example/x", {}, post=lambda *_: 404, backoff=0)
    assert [d.status for d in rejected] == [404]  # a 4xx is not retried


def test_only_one_run_due_per_home(app: Any) -> None:
    import fcntl

    from affidavit.errors import OperationError
    from affidavit.services.schedule import run_due

    lock = app.settings.home / "run-due.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run-due holds the home
        with pytest.raises(OperationError, match="another"):
            run_due(app)
    assert run_due(app).ok  # once released, a run goes ahead (nothing is due here)


def test_a_policy_check_that_opens_findings_alerts_once(
    cli: Any, home: Path, hook: Hook, redis_source: str, tmp_path: Path
) -> None:
    configure(home, webhooks=[hook.url])
    prepare(cli, home, redis_source, tmp_path)
    r = cli("policy", "check", "--offline", "--json")
    assert r.code == 1
    opened = json.loads(r.out)["opened"]
    assert opened
    (alert,) = [h["body"] for h in hook.received if h["body"]["kind"] == "policy.findings"]
    assert {f["id"] for f in alert["details"]["findings"]} == set(opened)
    # the same failures again: refreshed findings, no second alert
    assert cli("policy", "check", "--offline", "--json").code == 1
    assert len([h for h in hook.received if h["body"]["kind"] == "policy.findings"]) == 1
    assert len(actions(home, "alert.raised")) == 1
