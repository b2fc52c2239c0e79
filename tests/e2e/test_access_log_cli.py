"""`affidavit access-log show|verify|export|expire` end to end, an auditor's offline check of
an export, and bad input refused with one line and a hint (exit 2)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import Settings
from affidavit.models.access import Outcome
from affidavit.services import access_log as svc
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e

Cli = Callable[..., Any]
NOW = datetime.now(UTC)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def logged(settings: Settings, home: Path) -> Path:
    """A home whose access log holds two old entries and three recent ones (one denied,
    one failed login)."""

    def entry(n: int, at: datetime, **changes: Any) -> Any:
        values: dict[str, Any] = {
            "started": at + timedelta(seconds=n), "identity": "alice", "auth_method": "session",
            "method": "GET", "route": "/api/v1/backups/{backup_id}", "outcome": Outcome.ALLOWED,
            "client_ip": "192.0.2.10", "user_agent": IPHONE, "subject": f"backup:bk-{n}",
            "status": 200, "latency_us": 2500,
        }  # fmt: skip
        values.update(changes)
        return svc.request_entry(**values)

    old = NOW - timedelta(days=500)
    with open_app(settings) as app:
        svc.record(app, [entry(0, old), entry(1, old)])
        svc.record(app, [entry(2, NOW), entry(3, NOW, outcome=Outcome.DENIED, status=403,
                                                    identity="bob")])  # fmt: skip
        svc.record(app, [entry(4, NOW, identity="mallory", auth_method="none",
                               method="POST", route="/api/v1/login", subject=None,
                               outcome=Outcome.FAILED, status=401, user_agent="curl/8.5.0")])  # fmt: skip
    return home


def _json(cli: Cli, *args: str) -> tuple[int, Any]:
    result = cli(*args, "--json")
    return result.code, json.loads(result.out)


def test_show_verify_expire_export_and_an_offline_verification(
    cli: Cli, logged: Path, tmp_path: Path
) -> None:
    shown = cli("access-log", "show")
    assert shown.code == 0
    assert "mallory" in shown.out
    assert "failed 401" in shown.out
    assert "mobile" in shown.out
    code, data = _json(cli, "access-log", "show", "--identity", "bob")
    assert code == 0
    (bob,) = data["entries"]
    assert (bob["seq"], bob["outcome"], bob["status"]) == (3, "denied", 403)
    assert bob["device"] == {"browser": "Mobile Safari 17", "os": "iOS 17", "type": "mobile"}
    code, report = _json(cli, "access-log", "verify")
    assert (code, report["ok"], report["size"]) == (0, True, 5)
    assert report["checkpoint"]["origin"].endswith("/access-log")

    code, expired = _json(cli, "access-log", "expire")  # the default: 400 days
    assert (code, expired["count"], expired["first"], expired["last"]) == (0, 2, 0, 1)
    code, data = _json(cli, "access-log", "show", "--limit", "5")
    assert [e.get("expired_at") is not None for e in data["entries"]] == [True, True] + [False] * 3
    assert "expired" in cli("access-log", "show").out
    ok = cli("access-log", "verify")
    assert ok.code == 0
    assert "5 entries (2 expired)" in ok.out

    out = tmp_path / "access.jsonl"
    assert cli("access-log", "export", "--out", str(out)).code == 0
    vkey = cli("ledger", "key").out.strip()
    offline = cli("access-log", "verify", "--file", str(out), "--public-key", vkey, home_dir=None)
    assert offline.code == 0, offline.err
    code, events = _json(cli, "ledger", "show")
    actions = [e["action"] for e in events["entries"]]
    assert actions[-2:] == ["access_log.expired", "access_log.exported"]
    assert not any(a.startswith("access.") for a in actions)  # requests are not ledgered

    lines = out.read_text("utf-8").splitlines(keepends=True)
    lines[-1] = lines[-1].replace("mallory", "nobody")
    out.write_text("".join(lines), "utf-8")
    tampered = cli("access-log", "verify", "--file", str(out), "--public-key", vkey, "--json",
                   home_dir=None)  # fmt: skip
    assert tampered.code == 1
    assert "stored-leaf-mismatch" in {f["code"] for f in json.loads(tampered.out)["findings"]}


def test_an_edited_catalog_entry_fails_verify(cli: Cli, logged: Path) -> None:
    with sqlite3.connect(logged / "catalog.sqlite") as con:
        con.execute("UPDATE access_log_entries SET entry = replace(entry, 'bob', 'eve')")
    result = cli("access-log", "verify")
    assert result.code == 1
    assert "stored-leaf-mismatch" in result.out
    assert "does not verify" in result.err
    refused = cli("access-log", "expire", "--older-than-days", "1")
    assert refused.code == 1
    assert "refusing to expire" in refused.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("show", "--since", "last tuesday"), "--since 'last tuesday' is not an RFC 3339 time"),
        (("show", "--until", "2026-12-01T10:00:00"), "has no UTC offset"),
        (("expire", "--older-than-days", "0"), "--older-than-days 0 is not between"),
        (("verify", "--public-key", "not-a-key"), "malformed --public-key"),
        (
            ("verify", "--file", "/nonexistent/a.jsonl", "--public-key", "x+1+2"),
            "malformed --public-key",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_a_hint(
    cli: Cli, logged: Path, args: tuple[str, ...], says: str
) -> None:
    result = cli("access-log", *args)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 2, result.err
    assert lines[0].startswith("error: ")
    assert says in lines[0]
    assert lines[1].startswith("hint: ")


def test_a_missing_or_foreign_export_file_exits_2(cli: Cli, logged: Path, tmp_path: Path) -> None:
    vkey = cli("ledger", "key").out.strip()
    missing = cli("access-log", "verify", "--file", str(tmp_path / "none"), "--public-key", vkey)
    assert missing.code == 2
    ledger_export = tmp_path / "ledger.jsonl"
    assert cli("ledger", "export", "--out", str(ledger_export)).code == 0
    foreign = cli("access-log", "verify", "--file", str(ledger_export), "--public-key", vkey)
    assert foreign.code == 2
    assert "affidavit-access-log-export" in foreign.err
    exists = cli("access-log", "export", "--out", str(ledger_export))
    assert exists.code == 2
    assert "already exists" in exists.err
