"""Multi-party approval through a real ``affidavit serve``: a hold release and a role grant
wait for a second person (202 with the request), every way around it is refused (the
requester, a token, the wrong role, no CSRF token, a second approval by the same person,
executing someone else's request, executing twice) and logged, and the CLI in client mode
prints the pending request, approves with a step-up and executes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import CLIENT, PASSWORD, Served, World, make_world, serving

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.crypto import totp
from affidavit.models.permissions import Role
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import access_log, roles
from affidavit.services import identity as idn
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app
from affidavit.services.policy_vouch import read_events

pytestmark = pytest.mark.e2e


def _second_people(world: World) -> None:
    """``officer2`` (security officer) and ``admin2`` (administrator), TOTP enrolled: now
    every gated operation has another person who could approve it."""
    at = datetime.now(UTC) - timedelta(minutes=9)
    with open_app(load_settings(home=world.home)) as app:
        admin = idn.login(
            app, "admin", PASSWORD, totp.code_at(world.secrets["admin"], at), client=CLIENT, now=at
        ).principal
        for name, role in (("officer2", Role.SECURITY_OFFICER), ("admin2", Role.ADMIN)):
            idn.create_account(app, admin, name, password=PASSWORD, now=at)
            roles.grant_role(app, admin, name, role, now=at)  # nobody else yet: waived
            first = idn.login(app, name, PASSWORD, client=CLIENT, now=at)
            enrolment = idn.begin_totp(app, first.principal, name, now=at)
            idn.confirm_totp(app, first.principal, name, totp.code_at(enrolment.secret, at), now=at)
            world.secrets[name] = enrolment.secret
        world.used["admin"] = totp.time_step(at)


@pytest.fixture
def served(
    cli: Any, home: Path, tmp_path: Path, fresh_redis: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Served, World, str]]:
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=4, scale=1)
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    assert cli("backup", "run", "cache").code == 0
    backup_id = json.loads(cli("backup", "list", "--json").out)["backups"][0]["backup_id"]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    _second_people(world)
    with serving(home) as server:
        yield server, world, backup_id


def _bearer(world: World, http: httpx.Client, name: str) -> dict[str, str]:
    return world.session(http, name).bearer


def test_a_hold_release_waits_for_a_second_officer_and_nothing_gets_around_it(
    served: tuple[Served, World, str],
) -> None:
    server, world, backup_id = served
    with server.client() as http:
        op = _bearer(world, http, "operator")
        placed = http.post(
            f"/backups/{backup_id}/holds", json={"case": "C-1", "reason": "audit"}, headers=op
        )
        assert placed.status_code == 201, placed.text
        officer = _bearer(world, http, "security_officer")
        asked = http.post(
            f"/backups/{backup_id}/holds/C-1/release", json={"reason": "case closed"},
            headers=officer,
        )  # fmt: skip
        assert asked.status_code == 202, asked.text
        request = asked.json()["request"]
        assert (request["state"], request["operation"]) == ("pending", "hold.release")
        rid = request["id"]
        path = f"/requests/{rid}"
        assert http.get(f"/backups/{backup_id}", headers=officer).json()["holds"][0]["active"]

        listed = http.get("/requests", headers=_bearer(world, http, "approver"))
        assert [r["id"] for r in listed.json()["requests"]] == [rid]
        assert http.get("/requests", headers=_bearer(world, http, "viewer")).status_code == 403
        # an auditor reads through its audit engagements only
        assert http.get("/requests", headers=_bearer(world, http, "auditor")).status_code == 403

        token = {"Authorization": f"Bearer {world.token}"}
        for who, headers, status in (
            ("the requester", officer, 403),
            ("a service token", token, 403),
            ("the wrong role (approver)", _bearer(world, http, "approver"), 403),
            ("the wrong role (admin)", _bearer(world, http, "admin"), 403),
            ("an auditor", _bearer(world, http, "auditor"), 403),
        ):
            answer = http.post(f"{path}/approve", json={}, headers=headers)
            assert answer.status_code == status, (who, answer.text)
        # a browser session without the anti-CSRF token
        second = world.session(http, "officer2")
        cookie = http.post(
            f"{path}/approve", json={}, cookies={"__Host-affidavit-session": second.secret}
        )
        assert cookie.status_code == 403, cookie.text
        assert http.get(path, headers=officer).json()["state"] == "pending"

        approved = http.post(f"{path}/approve", json={"note": "checked"}, headers=second.bearer)
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "approved"
        again = http.post(f"{path}/approve", json={}, headers=second.bearer)
        assert again.status_code == 403
        assert http.post(f"{path}/execute", headers=second.bearer).status_code == 403

        done = http.post(f"{path}/execute", headers=officer)
        assert done.status_code == 200, done.text
        assert done.json()["request"]["state"] == "executed"
        assert not http.get(f"/backups/{backup_id}", headers=officer).json()["holds"][0]["active"]
        assert http.post(f"{path}/execute", headers=officer).status_code == 403  # a replay

    with open_app(load_settings(home=world.home)) as app:
        entries = [e.to_json() for e in access_log.show(app)]
    denied = {(e["identity"], e["route"]) for e in entries if e["outcome"] == "denied"}
    for name in ("security_officer", "approver", "admin", "auditor", "officer2"):
        assert (name, "/api/v1/requests/{request_id}/approve") in denied, name
    assert ("officer2", "/api/v1/requests/{request_id}/execute") in denied


def test_a_role_grant_waits_for_a_second_administrator(
    served: tuple[Served, World, str],
) -> None:
    server, world, _ = served
    with server.client() as http:
        admin = _bearer(world, http, "admin")
        asked = http.post("/accounts/viewer/roles", json={"role": "auditor"}, headers=admin)
        assert asked.status_code == 202, asked.text
        rid = asked.json()["request"]["id"]
        accounts = http.get("/accounts", headers=admin).json()["accounts"]
        assert any(a["name"] == "viewer" for a in accounts)
        admin2 = _bearer(world, http, "admin2")
        assert http.post(f"/requests/{rid}/approve", json={}, headers=admin2).status_code == 200
        done = http.post(f"/requests/{rid}/execute", headers=admin)
        assert done.status_code == 200, done.text
        assert done.json()["result"]["role"] == "auditor"
        viewer = world.login(http, "viewer")
        who = http.get("/whoami", headers=viewer.bearer).json()
        assert sorted(who["roles"]) == ["auditor", "viewer"]


def test_the_cli_asks_approves_and_executes_through_the_server(
    cli: Any, served: tuple[Served, World, str], tmp_path: Path
) -> None:
    server, world, backup_id = served
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)

    def login(name: str) -> None:
        result = cli("login", server.url, "--name", name, "--password-file", str(password),
                     "--code", world.code(name), "--json")  # fmt: skip
        assert result.code == 0, result.err

    remote = ("--server", server.url)
    login("operator")
    placed = cli(*remote, "hold", "add", backup_id, "--case", "C-9", "--reason", "audit",
                 "--json")  # fmt: skip
    assert placed.code == 0, placed.err
    assert json.loads(placed.out)["created_by"] == "operator"  # the account, not the OS user
    taken = cli(*remote, "backup", "run", "cache", "--json")
    assert taken.code == 0, taken.err
    new_id = json.loads(taken.out)["backup_id"]
    shown = json.loads(cli("backup", "show", new_id, "--json").out)
    assert (shown["status"], shown["backup_id"]) == ("complete", new_id)
    table_out = cli(*remote, "backup", "run", "cache")
    assert table_out.code == 0 and "complete" in table_out.out
    login("security_officer")
    asked = cli(*remote, "hold", "release", backup_id, "--case", "C-9", "--reason", "done",
                "--json")  # fmt: skip
    assert asked.code == 0, asked.err
    pending = json.loads(asked.out)
    assert pending["state"] == "pending"
    rid = pending["request"]["id"]
    shown = cli(*remote, "request", "list")
    assert shown.code == 0 and rid in shown.out and "pending" in shown.out
    mine = cli(*remote, "request", "approve", rid)
    assert mine.code == 2, mine.out
    assert "their own request" in mine.err
    login("officer2")
    ok = cli(*remote, "request", "approve", rid, "--code", world.code("officer2"), "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["state"] == "approved"
    login("security_officer")
    done = cli(*remote, "request", "execute", rid, "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["request"]["state"] == "executed"
    holds = json.loads(cli("hold", "list", backup_id, "--json").out)
    assert [h["active"] for h in holds["holds"] if h["case"] == "C-9"] == [False]
    rules = cli(*remote, "request", "rules", "--json")
    assert rules.code == 0
    assert {r["operation"] for r in json.loads(rules.out)["rules"]} >= {"backup.delete"}
    os.environ.pop("AFFIDAVIT_SERVER", None)


def _approve_and_execute(
    http: httpx.Client, world: World, answer: httpx.Response, requester: str, approver: str
) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    rid = answer.json()["request"]["id"]
    approved = http.post(
        f"/requests/{rid}/approve", json={}, headers=_bearer(world, http, approver)
    )
    assert approved.status_code == 200, approved.text
    done = http.post(f"/requests/{rid}/execute", headers=_bearer(world, http, requester))
    assert done.status_code == 200, done.text
    assert done.json()["request"]["state"] == "executed"
    return dict(done.json()["result"])


def test_key_custody_source_removal_and_disablement_wait_for_a_second_person(
    served: tuple[Served, World, str],
) -> None:
    server, world, backup_id = served
    with server.client() as http:
        officer = _bearer(world, http, "security_officer")
        rotated = _approve_and_execute(
            http, world, http.post("/keys/rotate", headers=officer), "security_officer", "officer2"
        )
        assert rotated["new_version"] == rotated["old_version"] + 1
        assert rotated["rewrapped"] == 1
        asked = http.post(f"/backups/{backup_id}/identity", json={"reason": "restore test"},
                          headers=officer)  # fmt: skip
        assert "AGE-SECRET-KEY" not in asked.text  # nothing disclosed before the approval
        exported = _approve_and_execute(http, world, asked, "security_officer", "officer2")
        assert str(exported["identity"]).startswith("AGE-SECRET-KEY-1")
        admin = _bearer(world, http, "admin")
        removed = _approve_and_execute(
            http, world, http.request("DELETE", "/sources/cache", json={"reason": "retired"}, headers=admin),
            "admin", "admin2",
        )  # fmt: skip
        assert removed == {"removed": "cache"}
        assert http.get("/sources", headers=admin).json()["sources"] == []
        disabled = _approve_and_execute(
            http, world,
            http.post("/accounts/viewer/disable", json={"reason": "left"}, headers=admin),
            "admin", "admin2",
        )  # fmt: skip
        assert disabled["account"]["disabled_at"] is not None
    with open_app(load_settings(home=world.home)) as app, app.read() as uow:
        exported_events = read_events(uow.ledger, "keys.identity_exported")
    assert exported_events[-1].details["approval"]["standing"] == "approved"
