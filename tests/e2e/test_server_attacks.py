"""Attacks on ``affidavit serve``, each performed against a real server process (or, for the
hardening layer's timing, the ASGI layer itself): replayed codes and dead credentials,
privilege escalation through the API, CSRF with borrowed tokens, method override headers,
HEAD/OPTIONS, path traversal, hostile JSON and Content-Type tricks, hostile user agents, a
body that hangs or is abandoned, an access log forged, edited, expired then tampered and
exported then tampered, escape sequences aimed at an auditor's terminal, and a client
redirected elsewhere with its session secret.

Limitations shown here rather than fixed (docs/server.md, "Limits of these guarantees"): a
header the HTTP parser refuses (a user agent of 1 MB) is answered by uvicorn before the app
and is not in the access log; an export can withhold an entry as if it had expired (offline,
which entries expired is not signed); an entry edited in the catalog is found by ``verify``,
not refused while the server runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import (
    PASSWORD,
    SERVICE,
    Served,
    World,
    copy_world,
    make_world,
    serving,
)

from affidavit.cli import client as cli_client
from affidavit.config import load_settings
from affidavit.errors import OperationError
from affidavit.ledger import merkle
from affidavit.models.identity import AccountKind
from affidavit.models.permissions import Permission, Role
from affidavit.server.gates import CSRF_HEADER, SESSION_COOKIE, client_of
from affidavit.server.hardening import Hardening
from affidavit.services import access_log, roles
from affidavit.services import identity as idn
from affidavit.services import ledger as ledger_svc
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

SQL_TIME = "%Y-%m-%d %H:%M:%S.%f"


@contextmanager
def db(home: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


def ledger_size(home: Path) -> int:
    with db(home) as con:
        return int(con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with db(home) as con:
        rows = con.execute(
            "SELECT entry FROM ledger_entries WHERE action = ? ORDER BY seq", (action,)
        )
        return [json.loads(bytes(e)) for (e,) in rows]


def entries(home: Path) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        return [e.to_json() for e in access_log.show(app) if e.entry is not None]


def verify_codes(home: Path) -> set[str]:
    with open_app(load_settings(home=home)) as app:
        return {f.code.value for f in access_log.verify(app).findings}


def raw_request(served: Served, data: bytes) -> bytes:
    """Send ``data`` as it is on a new connection; the answer's bytes (the request says
    ``Connection: close``)."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def fresh_home(root: Path) -> Path:
    home = root / "home"
    initialise(load_settings(home=home))
    return home


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The world, made once for the module; the servers below each run on a copy of it."""
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        return make_world(fresh_home(tmp_path_factory.mktemp("attacks-template")))


@pytest.fixture(scope="module")
def shared(
    template: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, World]]:
    """One server and world for the attacks that leave the access log intact."""
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        world = copy_world(template, tmp_path_factory.mktemp("attacks") / "home")
        with serving(world.home) as served:
            yield served, world


@pytest.fixture
def own(template: World, tmp_path: Path, clean_env: None) -> Iterator[tuple[Served, World]]:
    """A server and world of this test's own (for attacks that break the access log)."""
    world = copy_world(template, tmp_path / "home")
    with serving(world.home) as served:
        yield served, world


# -- authentication ------------------------------------------------------------------------------


def test_a_code_is_refused_by_a_second_request_in_its_step(shared: tuple[Served, World]) -> None:
    served, world = shared
    code = world.code("approver")
    with served.client() as http:
        first = http.post("/auth/login", json={"name": "approver", "password": PASSWORD,
                                                "totp": code})  # fmt: skip
        assert first.status_code == 200, first.text
        again = http.post("/auth/login", json={"name": "approver", "password": PASSWORD,
                                                "totp": code})  # fmt: skip
        assert again.status_code == 401
        bearer = {"Authorization": f"Bearer {first.json()['secret']}"}
        stepped = http.post("/auth/step-up", json={"code": code}, headers=bearer)
        assert stepped.status_code == 401
    reasons = [e["details"]["reason"] for e in events(world.home, "identity.login_failed")]
    assert reasons[-1] == "totp-replayed"
    assert events(world.home, "identity.step_up_failed")[-1]["details"]["reason"] == (
        "totp-replayed"
    )


def test_a_recovery_code_is_refused_the_second_time(shared: tuple[Served, World]) -> None:
    served, world = shared
    used = world.recovery.pop()
    with served.client() as http:
        body = {"name": "admin", "password": PASSWORD, "totp": used}
        assert http.post("/auth/login", json=body).status_code == 200
        assert http.post("/auth/login", json=body).status_code == 401
        body["totp"] = used.lower().replace("-", " ")
        assert http.post("/auth/login", json=body).status_code == 401


def test_dead_guessed_and_truncated_sessions_are_refused(shared: tuple[Served, World]) -> None:
    served, world = shared
    with open_app(load_settings(home=world.home)) as app:
        admin = world.admin(app)
        idn.create_account(app, admin, "temp", password=PASSWORD)
        roles.grant_role(app, admin, "temp", Role.VIEWER)
    with served.client() as http:
        temp = http.post("/auth/login", json={"name": "temp", "password": PASSWORD}).json()
        expiring = http.post("/auth/login", json={"name": "temp", "password": PASSWORD}).json()
        secret = temp["secret"]

        def status(value: str) -> int:
            return http.get("/whoami", headers={"Authorization": f"Bearer {value}"}).status_code

        assert status(secret) == 200
        for guess in (secret[:-1], secret[:30], secret + "A", secret.rsplit("_", 1)[0] + "_",
                      "afs_" + "0" * 16 + "_" + secret.rsplit("_", 1)[1]):  # fmt: skip
            assert status(guess) == 401, guess
        # a session whose row says it idled out is refused
        with db(world.home) as con:
            con.execute(
                "UPDATE sessions SET idle_expires_at = ? WHERE id = ?",
                ((datetime.now(UTC) - timedelta(seconds=1)).strftime(SQL_TIME),
                 expiring["session"]["id"]),
            )  # fmt: skip
        assert status(expiring["secret"]) == 401
        # and the sessions of a disabled account die with it
        with open_app(load_settings(home=world.home)) as app:
            idn.disable_account(app, world.admin(app), "temp", reason="left")
        assert status(secret) == 401
        cookie = {"Cookie": f"{SESSION_COOKIE}={secret}"}
        assert http.get("/whoami", headers=cookie).status_code == 401


def test_a_token_loses_a_role_revoked_after_it_was_issued(shared: tuple[Served, World]) -> None:
    served, world = shared
    with open_app(load_settings(home=world.home)) as app:
        admin = world.admin(app)
        idn.create_account(app, admin, "bot3", kind=AccountKind.SERVICE)
        roles.grant_role(app, admin, "bot3", Role.OPERATOR)
        issued = idn.create_token(app, admin, "bot3", {Permission.POLICY_CHECK,
                                  Permission.BACKUP_READ}, timedelta(days=1))  # fmt: skip
    bearer = {"Authorization": f"Bearer {issued.secret}"}
    with served.client() as http:
        assert http.post("/policy/check", json={"offline": True}, headers=bearer).status_code == 200
        with open_app(load_settings(home=world.home)) as app:
            roles.revoke_role(app, world.admin(app), "bot3", Role.OPERATOR)
        answer = http.post("/policy/check", json={"offline": True}, headers=bearer)
        assert answer.status_code == 403, answer.text
        assert http.get("/whoami", headers=bearer).json()["permissions"] == []


# -- authorization -------------------------------------------------------------------------------


def test_privilege_escalation_through_the_api_is_refused(shared: tuple[Served, World]) -> None:
    served, world = shared
    token = {"Authorization": f"Bearer {world.token}"}
    with served.client() as http:
        operator = world.session(http, "operator").bearer
        officer = world.session(http, "security_officer").bearer
        admin = world.session(http, "admin").bearer
        world.session(http, "viewer")
        size = ledger_size(world.home)
        attempts: list[tuple[dict[str, str], str, str, Any, int]] = [
            # an operator issuing itself (or a robot) an administrator's token
            (operator, "POST", "/tokens", {"account": SERVICE, "scopes": ["role.grant"],
                                            "expires_in_days": 1}, 403),
            # a security officer granting itself admin
            (officer, "POST", "/accounts/security_officer/roles", {"role": "admin"}, 403),
            # an administrator granting its own account anything, under any spelling
            (admin, "POST", "/accounts/admin/roles", {"role": "approver"}, 403),
            (admin, "POST", "/accounts/ADMIN/roles", {"role": "approver"}, 403),
            # a service account getting an approving role, by an admin or by its own token
            (admin, "POST", f"/accounts/{SERVICE}/roles", {"role": "approver"}, 403),
            (token, "POST", f"/accounts/{SERVICE}/roles", {"role": "approver"}, 403),
            (token, "POST", "/tokens", {"account": SERVICE, "scopes": ["backup.run"],
                                         "expires_in_days": 1}, 403),
            # a token with an approving scope, or one beyond the account's roles
            (admin, "POST", "/tokens", {"account": SERVICE, "scopes": ["policy.approve"],
                                         "expires_in_days": 1}, 403),
            (admin, "POST", "/tokens", {"account": SERVICE, "scopes": ["account.manage"],
                                         "expires_in_days": 1}, 403),
            (admin, "POST", "/tokens", {"account": SERVICE, "scopes": ["everything"],
                                         "expires_in_days": 1}, 400),
            # a role that does not exist
            (admin, "POST", "/accounts/viewer/roles", {"role": "superuser"}, 400),
            (admin, "POST", "/accounts/viewer/roles", {"role": "Admin"}, 400),
            # the last administrator
            (admin, "DELETE", "/accounts/admin/roles/admin", None, 403),
        ]  # fmt: skip
        for headers, method, path, body, expected in attempts:
            answer = http.request(method, path, json=body, headers=headers)
            assert answer.status_code == expected, (method, path, body, answer.text)
        # an admin row written in SQL makes no second administrator
        with db(world.home) as con:
            (viewer_id,) = con.execute("SELECT id FROM accounts WHERE name = 'viewer'").fetchone()
            con.execute(
                "INSERT INTO role_grants (account_id, role, granted_at, granted_by, seq) "
                "VALUES (?, 'admin', ?, 'admin', 3)",
                (viewer_id, datetime.now(UTC).strftime(SQL_TIME)),
            )
        viewer = world.session(http, "viewer").bearer
        assert http.get("/whoami", headers=viewer).json()["roles"] == ["viewer"]
        assert http.get("/accounts", headers=viewer).status_code == 403
        answer = http.delete("/accounts/admin/roles/admin", headers=admin)
        assert answer.status_code == 403, answer.text
        assert "last enabled administrator" in answer.json()["error"]
        with db(world.home) as con:
            con.execute("DELETE FROM role_grants WHERE account_id = ? AND role = 'admin'",
                        (viewer_id,))  # fmt: skip
    assert ledger_size(world.home) == size


# -- CSRF, methods, paths ------------------------------------------------------------------------


def test_csrf_with_another_session_s_token_or_none(shared: tuple[Served, World]) -> None:
    served, world = shared
    with served.client() as http:
        operator = world.login(http, "operator")
        other = world.login(http, "operator")  # the same person's other session
        auditor = world.login(http, "auditor")
        cookie = {"Cookie": f"{SESSION_COOKIE}={operator.secret}"}
        size = ledger_size(world.home)
        for token in (other.csrf, auditor.csrf, operator.csrf.upper(), operator.csrf[:-1],
                      operator.secret, ""):  # fmt: skip
            answer = http.post("/policy/check", json={"offline": True},
                               headers=cookie | {CSRF_HEADER: token})  # fmt: skip
            assert answer.status_code == 403, token
        assert ledger_size(world.home) == size
        # a bearer credential decides who asks: the cookie adds nothing to it
        both = cookie | auditor.bearer
        assert http.get("/whoami", headers=both).json()["name"] == "auditor"
        answer = http.post("/policy/check", json={"offline": True}, headers=both)
        assert answer.status_code == 403  # the auditor may not; the operator's cookie is ignored
        for session in (operator, other, auditor):
            http.post("/auth/logout", headers=session.bearer)


def test_method_override_headers_head_and_options_change_nothing(
    shared: tuple[Served, World],
) -> None:
    served, world = shared
    overrides = {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE",
                 "X-Method-Override": "DELETE"}  # fmt: skip
    with served.client() as http:
        admin = world.session(http, "admin")
        size = ledger_size(world.home)
        # GET with an override stays a GET; POST stays the grant it is (409: held already)
        answer = http.get("/accounts", headers=admin.bearer | overrides)
        assert answer.status_code == 200
        answer = http.post("/accounts/viewer/roles", json={"role": "viewer"},
                           headers=admin.bearer | overrides)  # fmt: skip
        assert answer.status_code == 409, answer.text
        answer = http.post("/accounts/viewer/roles/viewer?_method=DELETE", headers=admin.bearer)
        assert answer.status_code == 405
        cookie = {"Cookie": f"{SESSION_COOKIE}={admin.secret}"}
        for method, path in (("HEAD", "/policy/check"), ("OPTIONS", "/policy/check"),
                             ("HEAD", "/accounts/viewer/roles/viewer"),
                             ("OPTIONS", "/accounts/viewer/roles/viewer"),
                             ("OPTIONS", "/tokens"), ("HEAD", "/backups")):  # fmt: skip
            for headers in (admin.bearer, cookie, cookie | overrides):
                answer = http.request(method, path, headers=headers | {
                    "Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"})  # fmt: skip
                assert answer.status_code == 405, (method, path, answer.text)
                assert "access-control-allow-origin" not in answer.headers
        assert ledger_size(world.home) == size
        viewer = world.session(http, "viewer")
        assert http.get("/whoami", headers=viewer.bearer).json()["roles"] == ["viewer"]


def test_path_traversal_in_ids_and_names_reaches_nothing(shared: tuple[Served, World]) -> None:
    served, world = shared
    keys = sorted(p.name for p in (world.home / "keys").iterdir())
    with served.client() as http:
        operator = world.session(http, "operator").bearer
        admin = world.session(http, "admin").bearer
        officer = world.session(http, "security_officer").bearer
        size = ledger_size(world.home)
        for ident in ("%2e%2e", "%2e%2e%2f%2e%2e%2fkeys%2fledger.key", "..%5c..%5ckeys",
                      "%00", "bk-1%0d%0aX-Injected:%201", "%ff%fe", "a" * 2000,
                      "%2Fetc%2Fpasswd"):  # fmt: skip
            for method, path, body, headers in (
                ("GET", f"/backups/{ident}", None, operator),
                ("POST", f"/backups/{ident}/verify", {}, operator),
                ("POST", f"/backups/{ident}/drills", {}, operator),
                ("POST", f"/backups/{ident}/holds", {"case": "c", "reason": "r"}, operator),
                ("POST", f"/backups/{ident}/holds/{ident}/release", {"reason": "r"}, officer),
                ("GET", f"/sources/{ident}", None, operator),
                ("POST", f"/accounts/{ident}/roles", {"role": "viewer"}, admin),
                ("DELETE", f"/accounts/{ident}/roles/{ident}", None, admin),
            ):
                answer = http.request(method, path, json=body, headers=headers)
                assert answer.status_code in (400, 404), (method, path, answer.text)
                assert "Traceback" not in answer.text
                assert "x-injected" not in answer.headers
    assert ledger_size(world.home) == size
    assert sorted(p.name for p in (world.home / "keys").iterdir()) == keys


# -- hostile bodies --------------------------------------------------------------------------------


def test_hostile_json_and_content_type_tricks(shared: tuple[Served, World]) -> None:
    served, world = shared
    json_type = {"Content-Type": "application/json"}
    with served.client() as http:
        operator = world.session(http, "operator").bearer
        admin = world.session(http, "admin").bearer
        size = ledger_size(world.home)
        hostile: list[tuple[dict[str, str], str, bytes, int]] = [
            ({}, "/auth/login", b"[" * 30000 + b"]" * 30000, 400),  # nested past recursion
            (operator, "/backups", b'{"source": "x", "datasets": ' + b"[" * 20000
             + b"]" * 20000 + b"}", 400),
            ({}, "/auth/login", b'{"name": "\xff\xfe", "password": "x"}', 400),  # not UTF-8
            ({}, "/auth/login", b'{"name": "\\ud800", "password": "\\udfff"}', 422),  # surrogates
            ({}, "/auth/login", b'{"name": "a", "name": "b", "password": "xxxxxxxxxxxx"}', 401),
            (admin, "/tokens", b'{"account": "x", "scopes": ["backup.read"], '
             b'"expires_in_days": NaN}', 422),
            (admin, "/tokens", b'{"account": "x", "scopes": ["backup.read"], '
             b'"expires_in_days": Infinity}', 422),
            (admin, "/tokens", b'{"account": "x", "scopes": ["backup.read"], '
             b'"expires_in_days": 1e400}', 422),
            (operator, "/backups", b'{"source": "x", "retain_days": ' + b"9" * 5000 + b"}", 400),
            (operator, "/policy/check", b'"offline"', 422),
            (operator, "/policy/check", b"null", 200),  # no options: the defaults
        ]  # fmt: skip
        for headers, path, body, expected in hostile:
            answer = http.post(path, content=body, headers=headers | json_type)
            assert answer.status_code == expected, (body[:60], answer.text)
            assert "Traceback" not in answer.text
            assert set(answer.json()) >= ({"error", "hint", "exit_code"} if expected != 200
                                          else {"ok"})  # fmt: skip
        offline = b'{"offline": true}'
        for content_type, expected in (
            ("text/plain", 415), ("text/plain; charset=utf-8", 415), ("", 415),
            ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
            ("application/jsonp", 415), ("application/vnd.api+json", 415),
            ("application/json; charset=utf-8", 200), ("APPLICATION/JSON", 200),
        ):  # fmt: skip
            answer = http.post("/policy/check", content=offline,
                               headers=operator | {"Content-Type": content_type})  # fmt: skip
            assert answer.status_code == expected, (content_type, answer.text)
        answer = http.post("/auth/login", content=b'{"name": "admin", "password": "x"}',
                           headers={"Content-Type": "text/plain"})  # fmt: skip
        assert answer.status_code == 415
    # only the two policy checks that were meant to run changed anything
    assert len(events(world.home, "policy.checked")) >= 1
    assert ledger_size(world.home) > size


def test_hostile_user_agents(shared: tuple[Served, World]) -> None:
    served, world = shared
    with served.client() as http:
        operator = world.session(http, "operator")
    size_before = len(entries(world.home))
    auth = f"Authorization: Bearer {operator.secret}\r\n".encode()
    # a control character inside a header value (CR, NUL, a terminal escape): refused by the
    # HTTP parser (llhttp, through httptools), before the app
    for agent in (b"a\rX-Injected: 1", b"a\x00b", b"esc\x1b[2J\x1b]0;pwned\x07"):
        answer = raw_request(served, b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n" + auth
                             + b"User-Agent: " + agent + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"X-Injected" not in answer
    # a tab passes the parser: logged as it came, kept out of the ledger
    answer = raw_request(served, b"POST /api/v1/policy/check HTTP/1.1\r\nHost: x\r\n" + auth
                         + b"User-Agent: tab\there\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
                         b"\r\n{}")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    recorded = events(world.home, "policy.checked")[-1]["client"]["agent"]
    assert recorded == "api tabhere"
    # a user agent of 1 MB: a head over 64 KiB is refused before the app (431; a limitation:
    # not logged)
    with served.client() as http:
        try:  # (the server answers 431 and closes, maybe before the whole header was sent)
            big = http.get("/whoami", headers=operator.bearer | {"User-Agent": "A" * (1 << 20)})
            assert big.status_code == 431
        except httpx.TransportError:
            pass
        # bytes beyond ASCII (obs-text) pass the parser: logged, and kept out of the ledger
        agent = "curl/8.5.0 \x85\x9b31m\xa0latin"
        answer = http.post("/policy/check", json={"offline": True},
                           headers=operator.bearer | {"User-Agent": agent.encode("latin-1")})  # fmt: skip
        assert answer.status_code == 200
        recorded = events(world.home, "policy.checked")[-1]["client"]["agent"]
        long_agent = "Mozilla/5.0 " + "x" * 50_000
        assert http.get("/whoami", headers=operator.bearer | {"User-Agent": long_agent}
                        ).status_code == 200  # fmt: skip
        assert http.get("/health").status_code == 200  # still serving
    logged = entries(world.home)[size_before:]
    assert not any(e["status"] == 400 and e["route"] == "/api/v1/whoami" for e in logged)
    assert any(e["user_agent"] == agent for e in logged)
    assert any(e["user_agent"] == "tab\there" for e in logged)  # as it came
    longest = max(len(e["user_agent"] or "") for e in logged)
    assert longest == 1024
    assert recorded.isprintable()
    assert recorded.startswith("api curl/8.5.0")


def test_the_ledger_agent_keeps_no_control_characters() -> None:
    """``client_of`` (what the ledger records of a request's client) drops CR, LF, escape
    sequences and bidirectional overrides, whatever reached the app."""
    from starlette.requests import Request

    agent = "ok\r\nX-Injected: 1\x1b[2J\u202eevil\x00"
    scope = {"type": "http", "method": "GET", "path": "/", "headers":
             [(b"user-agent", agent.encode("latin-1", "replace"))], "client": ("192.0.2.1", 1)}  # fmt: skip
    info = client_of(Request(scope))
    assert info.agent is not None
    assert info.agent.isprintable()
    assert "\r" not in info.agent
    assert "\n" not in info.agent
    assert "\x1b" not in info.agent
    entry = access_log.request_entry(
        started=datetime.now(UTC),
        identity="x\r\ny",
        auth_method="none",
        method="GET",
        route="/api/v1/health",
        outcome="allowed",
        user_agent=agent + "A" * (1 << 20),
    )
    assert entry.user_agent is not None
    assert len(entry.user_agent) == 1024
    numbered = dataclasses.replace(entry, seq=0)
    assert b"\r" not in numbered.canonical()  # escaped by the JSON, never raw
    assert type(entry).from_canonical(numbered.canonical()).user_agent == entry.user_agent


# -- a body that hangs or is abandoned ------------------------------------------------------------


def _through_hardening(
    messages: list[dict[str, Any]], *, hang: bool, timeout: float = 0.2
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Run one POST through the hardening layer alone: the body ``messages``, then a
    receive that hangs (``hang``) or says the client went away. Returns what the app was
    handed (nothing when it never ran) and what was sent."""
    handed: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        handed.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def run() -> None:
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            if hang:
                await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/v1/policy/check",
                 "headers": [(b"content-type", b"application/json"),
                             (b"content-length", b"100")]}  # fmt: skip
        await Hardening(route, tls=False, body_timeout=timeout)(scope, receive, send)

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    return handed, sent


def test_a_body_that_hangs_or_is_abandoned_never_reaches_a_route() -> None:
    part = {"type": "http.request", "body": b'{"offline": true}', "more_body": True}
    handed, sent = _through_hardening([part], hang=True)
    assert handed == []
    assert sent[0]["status"] == 408
    assert b"did not arrive" in sent[1]["body"]
    # the client went away midway: the part that came is no request to run
    handed, sent = _through_hardening([part], hang=False)
    assert handed == []
    assert sent[0]["status"] == 400
    assert b"cut short" in sent[1]["body"]
    whole = {"type": "http.request", "body": b'{"offline": true}', "more_body": False}
    handed, sent = _through_hardening([whole], hang=True)
    assert handed[0]["body"] == b'{"offline": true}'
    assert sent[0]["status"] == 200


def test_a_hanging_or_abandoned_body_on_the_server(shared: tuple[Served, World]) -> None:
    served, world = shared
    with served.client() as http:
        operator = world.session(http, "operator")
    checks = len(events(world.home, "policy.checked"))
    before = len(entries(world.home))
    head = (
        b"POST /api/v1/policy/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {operator.secret}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"offline": true}'
    )
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as hanging:
        hanging.sendall(head)  # and nothing more: the server goes on serving others
        with served.client() as http:
            assert http.get("/health").status_code == 200
            assert http.get("/whoami", headers=operator.bearer).status_code == 200
    # the connection closed with 17 of 100 bytes sent: the check never ran
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while datetime.now(UTC) < deadline:
        cut = [e for e in entries(world.home)[before:]
               if e["method"] == "POST" and e["status"] == 400]  # fmt: skip
        if cut:
            break
        time.sleep(0.2)
    assert cut, "the abandoned request is not in the access log"
    assert cut[-1]["identity"] == "anonymous"  # refused before any gate ran
    assert len(events(world.home, "policy.checked")) == checks


# -- the access log --------------------------------------------------------------------------------


def test_a_forged_access_log_row_stops_the_answers(own: tuple[Served, World]) -> None:
    served, world = own
    with served.client() as http:
        world.login(http, "viewer")
        assert http.get("/health").status_code == 200
    forged = json.dumps({
        "auth_method": "password+totp", "client_ip": "192.0.2.66",
        "device": {"browser": None, "os": None, "type": "unknown"}, "identity": "admin",
        "latency_us": 1, "method": "POST", "outcome": "allowed", "route": "/api/v1/tokens",
        "seq": 0, "status": 201, "subject": None, "time": "2026-01-01T00:00:00.000000Z",
        "user_agent": None}, separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
    with db(world.home) as con:
        (last,) = con.execute("SELECT max(seq) FROM access_log_entries").fetchone()
        entry = forged.replace(b'"seq":0', b'"seq":%d' % (last + 1))
        con.execute(
            "INSERT INTO access_log_entries (seq, time, identity, action, subject, outcome, "
            "entry, leaf_hash, nodes) VALUES (?, ?, 'admin', 'POST /api/v1/tokens', NULL, "
            "'allowed', ?, ?, ?)",
            (last + 1, "2026-01-01T00:00:00.000000Z", entry, merkle.leaf_hash(entry), b""),
        )
    with served.client() as http:
        for _ in range(2):
            answer = http.get("/health")
            assert answer.status_code == 503, answer.text
            assert "access log" in answer.json()["error"]
    assert "unsigned-entries" in verify_codes(world.home)


def test_an_access_log_entry_edited_while_serving_is_found_by_verify(
    own: tuple[Served, World],
) -> None:
    """A limitation: the running signer goes on from what it signed (it vouches for the tree,
    not for each payload), so the server keeps answering; ``verify`` names the edit."""
    served, world = own
    with served.client() as http:
        world.login(http, "viewer")
    with db(world.home) as con:
        seq, entry = con.execute(
            "SELECT seq, entry FROM access_log_entries WHERE identity = 'viewer' "
            "ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        edited = bytes(entry).replace(b'"identity":"viewer"', b'"identity":"auditor"')
        assert edited != bytes(entry)
        con.execute(
            "UPDATE access_log_entries SET entry = ?, leaf_hash = ?, identity = 'auditor' "
            "WHERE seq = ?",
            (edited, merkle.leaf_hash(edited), seq),
        )
    with served.client() as http:
        assert http.get("/health").status_code == 200
    assert "root-mismatch" in verify_codes(world.home)


def test_expired_then_tampered_access_log(own: tuple[Served, World]) -> None:
    served, world = own
    with served.client() as http:
        world.login(http, "auditor")
    later = datetime.now(UTC) + timedelta(days=2)
    with open_app(load_settings(home=world.home)) as app:
        expired = access_log.expire(app, older_than=timedelta(days=1), now=later)
    assert expired.count > 0
    assert expired.last is not None
    with served.client() as http:  # expiry keeps every leaf: the signer goes on
        for _ in range(3):
            assert http.get("/health").status_code == 200
    assert verify_codes(world.home) == set()
    with db(world.home) as con:
        (entry,) = con.execute("SELECT entry FROM access_log_entries WHERE seq = ?",
                               (expired.last + 1,)).fetchone()  # fmt: skip
        restored = bytes(entry).replace(b'"seq":%d' % (expired.last + 1),
                                        b'"seq":%d' % expired.last)  # fmt: skip
        # a payload put back into an expired row
        con.execute("UPDATE access_log_entries SET entry = ? WHERE seq = ?",
                    (restored, expired.last))  # fmt: skip
    assert "payload-after-expiry" in verify_codes(world.home)
    with db(world.home) as con:
        con.execute("UPDATE access_log_entries SET entry = NULL WHERE seq = ?", (expired.last,))
        # and a payload dropped after the expired range, as if it had expired too
        con.execute(
            "UPDATE access_log_entries SET entry = NULL, identity = NULL, expired_at = ? "
            "WHERE seq = ?",
            (later.isoformat(), expired.last + 1),
        )
    assert verify_codes(world.home) == {"payload-missing"}
    with open_app(load_settings(home=world.home)) as app, pytest.raises(Exception,
                                                                      match="does not verify"):  # fmt: skip
        access_log.expire(app, older_than=timedelta(days=1), now=later)


def test_an_export_tampered_offline(own: tuple[Served, World], tmp_path: Path) -> None:
    served, world = own
    with served.client() as http:
        world.login(http, "viewer")
        http.get("/whoami")
    out = tmp_path / "access.jsonl"
    with open_app(load_settings(home=world.home)) as app:
        access_log.export(app, out)
        vkey = ledger_svc.ledger_vkey(app.settings)
    good = out.read_text("utf-8").splitlines(keepends=True)

    def check(lines: list[str]) -> Any:
        path = tmp_path / "tampered.jsonl"
        path.write_text("".join(lines), "utf-8")
        return access_log.verify_file(path, vkey=vkey)

    assert check(good).ok
    size = check(good).size
    # the header is not trusted: lying in it changes nothing
    header = json.loads(good[0]) | {"size": 0, "expired": 99, "vkey": "x+1+AAAA"}
    assert check([json.dumps(header) + "\n", *good[1:]]).size == size
    # swapped entry lines
    swapped = [*good[:-2], good[-1], good[-2]]
    assert not check(swapped).ok
    # an entry appended, signed by no checkpoint
    last = json.loads(good[-1])
    entry = last["entry"].replace(f'"seq":{last["seq"]}', f'"seq":{last["seq"] + 1}')
    extra = {"type": "entry", "seq": last["seq"] + 1, "entry": entry,
             "leaf_hash": merkle.leaf_hash(entry.encode()).hex()}  # fmt: skip
    codes = {f.code.value for f in check([*good, json.dumps(extra) + "\n"]).findings}
    assert "unsigned-entries" in codes
    # a limitation: an entry withheld as if it had expired still verifies; it shows as
    # expired, and only the catalog's verification (the ledger's expiry events) tells
    withheld = json.loads(good[-1])
    del withheld["entry"]
    withheld["expired_at"] = "2026-01-01T00:00:00Z"
    report = check([*good[:-1], json.dumps(withheld) + "\n"])
    assert report.ok
    assert report.expired == 1


# -- what reaches an auditor's terminal ------------------------------------------------------------


def test_escape_sequences_in_the_access_log_never_reach_a_terminal(
    shared: tuple[Served, World], cli: Any
) -> None:
    served, world = shared
    sneaky = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m\u202eevil"
    with served.client() as http:
        answer = http.post("/auth/login", json={"name": sneaky, "password": "x" * 12})
        assert answer.status_code == 401
        operator = world.session(http, "operator")
        assert http.get("/backups/%1b%5b2J", headers=operator.bearer).status_code == 404
    logged = [e for e in entries(world.home) if e["identity"] == sneaky]
    assert logged  # logged as it came, never refused for its own entry
    shown = cli("access-log", "show", "--limit", "20", home_dir=world.home)
    assert shown.code == 0, shown.err
    for character in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert character not in shown.out, repr(character)
    assert "\\x1b" in shown.out


def test_a_login_is_logged_under_the_account_s_own_name(shared: tuple[Served, World]) -> None:
    """A login as ``  Approver `` is the approver's: logged under ``approver`` (with how it
    authenticated), so that a search of the access log by name misses no spelling. (The
    approver: the account that has used the fewest TOTP codes here, so that a fresh code
    needs no wait for the next time step.)"""
    served, world = shared
    with served.client() as http:
        answer = http.post("/auth/login", json={"name": "  Approver ", "password": PASSWORD,
                                                 "totp": world.code("approver")})  # fmt: skip
        assert answer.status_code == 200, answer.text
        failed = http.post("/auth/login", json={"name": "APPROVER", "password": "not it 12345"})
        assert failed.status_code == 401
    logins = [e for e in entries(world.home) if e["route"] == "/api/v1/auth/login"][-2:]
    assert [(e["identity"], e["auth_method"], e["outcome"]) for e in logins] == [
        ("approver", "password+totp", "allowed"),
        ("approver", "password", "failed"),
    ]


# -- the client's session secret goes nowhere else -----------------------------------------------


def test_the_client_follows_no_redirect_with_its_session_secret() -> None:
    seen: list[str | None] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            return None

    elsewhere = HTTPServer(("127.0.0.1", 0), Elsewhere)
    target = f"http://127.0.0.1:{elsewhere.server_port}/api/v1/whoami"

    class Redirecting(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(int(self.path.rsplit("=", 1)[-1]) if "=" in self.path else 302)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    redirecting = HTTPServer(("127.0.0.1", 0), Redirecting)
    threads = [threading.Thread(target=s.serve_forever, daemon=True)
               for s in (elsewhere, redirecting)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        client = cli_client.Client(f"http://127.0.0.1:{redirecting.server_port}",
                                   secret="afs_0123456789abcdef_secret")  # fmt: skip
        for code in ("301", "302", "303", "307", "308"):
            with pytest.raises(OperationError, match="redirect") as caught:
                client.get("/whoami", code=code)
            assert f"HTTP {code}" in caught.value.message
        assert seen == []
    finally:
        for server in (elsewhere, redirecting):
            server.shutdown()
            server.server_close()
