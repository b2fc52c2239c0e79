"""The governance calendar through a real ``affidavit serve`` and through the CLI: who may
add and remove regulatory deadlines (an administrator; a viewer, an operator or an auditor
trying gets 403 or exit 2 and nothing is recorded), the JSON and the ``text/calendar`` feed
every role that reads gets, and ``affidavit calendar`` on the server's home."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import icalendar
import pytest
from server_harness import PASSWORD, PEOPLE, Served, World, make_world, serving

from affidavit.cli.main import main
from affidavit.config import load_settings
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, World]]:
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        home = tmp_path_factory.mktemp("calendar") / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        with serving(home) as server:
            yield server, world


def _events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("SELECT entry FROM ledger_entries WHERE action = ? ORDER BY seq",
                          (action,))  # fmt: skip
        return [json.loads(e) for (e,) in rows]


def _size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


DEADLINE = {"title": "DORA register of information", "due": "2027-01-31", "every": "P1Y",
            "detail": "Art. 28(3)", "owner": "compliance@example.com"}  # fmt: skip


def test_only_an_administrator_manages_deadlines(served: tuple[Served, World]) -> None:
    server, world = served
    with server.client() as http:
        names = ("viewer", "operator", "auditor", "approver", "security_officer")
        for name in (*names, "admin"):  # their logins are events: open the sessions first
            world.session(http, name)
        size = _size(world.home)
        for name in names:
            login = world.session(http, name)
            answer = http.post("/calendar/deadlines", json=DEADLINE, headers=login.bearer)
            assert answer.status_code == 403, (name, answer.text)
            assert "calendar.manage" in answer.json()["error"]
        bot = {"Authorization": f"Bearer {world.token}"}  # the operator service account
        assert http.post("/calendar/deadlines", json=DEADLINE, headers=bot).status_code == 403
        assert _size(world.home) == size  # nothing recorded, not even a refusal
        admin = world.session(http, "admin")
        bad = http.post("/calendar/deadlines", json={**DEADLINE, "every": "every year"},
                        headers=admin.bearer)  # fmt: skip
        assert bad.status_code == 400 and bad.json()["exit_code"] == 2
        assert "ISO 8601" in bad.json()["error"]
        assert _size(world.home) == size
        added = http.post("/calendar/deadlines", json=DEADLINE, headers=admin.bearer)
        assert added.status_code == 201, added.text
        deadline = added.json()
        [event] = _events(world.home, "calendar.deadline_added")
        assert event["actor"] == "admin" and event["details"]["auth"] != "local-os-user"
        assert event["subject"] == f"deadline:{deadline['id']}"
        assert event["details"]["every"] == "P1Y"
        # every role but the auditor's reads it, as JSON and as a feed (an auditor reads
        # through its audit engagements only: the calendar names every engagement)
        for name in PEOPLE:
            login = world.session(http, name)
            if name == "auditor":
                for path in ("/calendar", "/calendar.ics"):
                    refused = http.get(path, headers=login.bearer)
                    assert refused.status_code == 403, refused.text
                    assert "calendar.read" in refused.json()["error"]
                continue
            seen = http.get("/calendar", params={"from": "2027-01-01", "to": "2027-01-31"},
                            headers=login.bearer)  # fmt: skip
            assert seen.status_code == 200, seen.text
            [item] = [i for i in seen.json()["items"] if i["kind"] == "deadline"]
            assert item["title"] == DEADLINE["title"] and item["recurrence"] == "P1Y"
            assert item["link"] == f"ledger:{event['seq']}"
        feed = http.get("/calendar.ics", headers=world.session(http, "viewer").bearer)
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/calendar")
        parsed = icalendar.Calendar.from_ical(feed.content)
        [vevent] = [e for e in parsed.walk("VEVENT") if str(e["SUMMARY"]) == DEADLINE["title"]]
        assert vevent["RRULE"]["FREQ"] == ["YEARLY"]
        assert str(vevent["UID"]).startswith(f"deadline:{deadline['id']}@")
        assert http.get("/calendar", params={"from": "2027-02-30"},
                        headers=admin.bearer).status_code == 400  # fmt: skip
        # removing: the viewer may not, the administrator may, once
        size = _size(world.home)
        path = f"/calendar/deadlines/{deadline['id']}"
        assert http.delete(path, headers=world.session(http, "viewer").bearer).status_code == 403
        assert _size(world.home) == size
        assert http.delete(path, headers=admin.bearer).status_code == 200
        again = http.delete(path, headers=admin.bearer)
        assert again.status_code == 404 and again.json()["exit_code"] == 2
        assert len(_events(world.home, "calendar.deadline_removed")) == 1
        items = http.get("/calendar", headers=admin.bearer).json()["items"]
        assert not [i for i in items if i["kind"] == "deadline"]


def test_the_cli_acts_as_the_account_it_logs_in_as(
    served: tuple[Served, World], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``calendar add --as viewer``: exit 2, nothing recorded; ``--as admin``: recorded with
    the account; locally without ``--as`` the home's owner adds one (not authenticated)."""
    _, world = served
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, 0o600)

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(world.home), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    size = _size(world.home)
    code, _, err = cli("calendar", "add", "SOX 404 sign-off", "--due", "2027-03-31",
                       "--as", "viewer", "--as-password-file", str(pw),
                       "--as-code", world.code("viewer"))  # fmt: skip
    assert code == 2, err
    assert "may not calendar.manage" in err and "Traceback" not in err
    added = _events(world.home, "calendar.deadline_added")
    assert all(e["details"]["title"] != "SOX 404 sign-off" for e in added)
    # the login and logout of the --as account are its only events
    assert {e["action"] for e in _tail(world.home, size)} <= {"identity.login", "identity.logout"}
    code, out, err = cli("calendar", "add", "SOX 404 sign-off", "--due", "2027-03-31",
                         "--json", "--as", "admin", "--as-password-file", str(pw),
                         "--as-code", world.code("admin"))  # fmt: skip
    assert code == 0, err
    by_admin = json.loads(out)
    event = _events(world.home, "calendar.deadline_added")[-1]
    assert event["actor"] == "admin" and "auth" in event["details"]
    code, out, err = cli("calendar", "add", "Local one", "--due", "2027-04-01", "--json")
    assert code == 0, err
    local = _events(world.home, "calendar.deadline_added")[-1]
    assert local["actor"] == "tester@example.com" and "auth" not in local["details"]
    code, out, err = cli("calendar", "--from", "2027-03-01", "--to", "2027-04-30")
    assert code == 0, err
    assert "March 2027" in out and "April 2027" in out and "SOX 404 sign-off" in out
    code, out, err = cli("calendar", "remove", by_admin["id"], "--reason", "met", "--json")
    assert code == 0, err
    assert json.loads(out)["removal_reason"] == "met"
    # progress.publish is the operator's: a viewer acting through --as records nothing
    site = tmp_path / "site"
    site.mkdir()
    size = _size(world.home)
    code, _, err = cli("progress", "publish", "--out", str(site), "--as", "viewer",
                       "--as-password-file", str(pw), "--as-code", world.code("viewer"))  # fmt: skip
    assert code == 2 and "may not progress.publish" in err, err
    assert list(site.iterdir()) == []
    assert {e["action"] for e in _tail(world.home, size)} <= {"identity.login", "identity.logout"}
    code, out, err = cli("progress", "publish", "--out", str(site), "--json", "--as", "operator",
                         "--as-password-file", str(pw), "--as-code", world.code("operator"))  # fmt: skip
    assert code == 0, err
    [published] = _events(world.home, "progress.published")
    assert published["actor"] == "operator" and "auth" in published["details"]


def test_no_calendar_without_a_login(served: tuple[Served, World]) -> None:
    server, world = served
    with server.client() as http:
        for path in ("/calendar", "/calendar.ics"):
            assert http.get(path).status_code == 401
            assert http.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 401
        size = _size(world.home)
        assert http.post("/calendar/deadlines", json=DEADLINE).status_code == 401
        assert _size(world.home) == size


def _tail(home: Path, size: int) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("SELECT entry FROM ledger_entries WHERE seq >= ? ORDER BY seq", (size,))
        return [json.loads(e) for (e,) in rows]
