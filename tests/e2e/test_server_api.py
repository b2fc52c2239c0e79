"""``affidavit serve`` end to end: a real server process on a random loopback port, driven with
httpx by one account per role and a service account's token. Logins, step-up and logout;
refusals with one message and the lockout; every route by every role (generated from the
app's routes, so that a new route fails here until it has a rule and a harmless request);
an auditor changing nothing; dead tokens; CSRF; hostile and oversized input; headers; TLS;
and the acting account reaching the ledger."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from server_harness import (
    CLIENT,
    PASSWORD,
    PEOPLE,
    SERVICE,
    Served,
    World,
    make_world,
    serving,
)

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.models.identity import AccountKind
from affidavit.models.permissions import READ_ONLY, ROLES, Permission, Role
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.server.app import UngatedRoute, check_gates, create_app, route_rules
from affidavit.server.gates import CSRF_HEADER, SESSION_COOKIE, GateKind
from affidavit.server.run import ServeOptions, is_loopback
from affidavit.services import identity as idn
from affidavit.services import roles
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

REFUSED = "login refused: wrong name, password or code, or the account is locked or disabled"
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
MISSING = "no-such-thing"
WEB = "web:"  # a HARMLESS path of a web page: from the server's root, not /api/v1

# one harmless request per route: (path, JSON body); a route without one fails the
# generated test (add it here, and a rule to the route, when adding a route)
HARMLESS: dict[tuple[str, str], tuple[str, Any]] = {
    ("GET", "/api/v1/health"): ("/health", None),
    ("POST", "/api/v1/auth/login"): ("/auth/login", {"name": MISSING, "password": "x" * 12}),
    ("POST", "/api/v1/auth/logout"): ("/auth/logout", None),
    ("POST", "/api/v1/auth/step-up"): ("/auth/step-up", {"code": "not-a-code"}),
    # single sign-on: not configured in this home (404)
    ("GET", "/api/v1/auth/oidc/start"): ("/auth/oidc/start", None),
    ("GET", "/api/v1/auth/oidc/callback"): ("/auth/oidc/callback?state=s&code=c", None),
    ("POST", "/api/v1/auth/oidc/cli"): ("/auth/oidc/cli", {}),
    ("POST", "/api/v1/auth/oidc/cli/redeem"): (
        "/auth/oidc/cli/redeem",
        {"flow": "f", "flow_secret": "s", "code": "c"},
    ),
    ("GET", "/api/v1/whoami"): ("/whoami", None),
    ("GET", "/api/v1/sources"): ("/sources", None),
    ("GET", "/api/v1/sources/{name}"): (f"/sources/{MISSING}", None),
    ("GET", "/api/v1/vaults"): ("/vaults", None),
    ("GET", "/api/v1/backups"): ("/backups", None),
    ("GET", "/api/v1/backups/{backup_id}"): (f"/backups/{MISSING}", None),
    ("POST", "/api/v1/backups"): ("/backups", {"source": MISSING}),
    ("DELETE", "/api/v1/backups/{backup_id}"): (f"/backups/{MISSING}", {"reason": "test"}),
    ("GET", "/api/v1/requests"): ("/requests", None),
    ("GET", "/api/v1/requests/{request_id}"): (f"/requests/{MISSING}", None),
    ("POST", "/api/v1/requests/{request_id}/approve"): (f"/requests/{MISSING}/approve", {}),
    ("POST", "/api/v1/requests/{request_id}/veto"): (
        f"/requests/{MISSING}/veto",
        {"reason": "test"},
    ),
    ("POST", "/api/v1/requests/{request_id}/cancel"): (f"/requests/{MISSING}/cancel", {}),
    ("POST", "/api/v1/requests/{request_id}/execute"): (f"/requests/{MISSING}/execute", None),
    ("GET", "/api/v1/approval-rules"): ("/approval-rules", None),
    # a real rotation for the security officer (this world has no backup key to re-wrap)
    ("POST", "/api/v1/keys/rotate"): ("/keys/rotate", None),
    ("POST", "/api/v1/backups/{backup_id}/identity"): (
        f"/backups/{MISSING}/identity",
        {"reason": "test"},
    ),
    ("DELETE", "/api/v1/sources/{name}"): (f"/sources/{MISSING}", {"reason": "test"}),
    ("POST", "/api/v1/accounts/{name}/disable"): (
        f"/accounts/{MISSING}/disable",
        {"reason": "test"},
    ),
    ("POST", "/api/v1/policy/versions/{version}/approve"): (
        "/policy/versions/999999/approve",
        None,
    ),
    ("POST", "/api/v1/exceptions/{exception_id}/approve"): (f"/exceptions/{MISSING}/approve", None),
    # a rule the service refuses (rule changes always keep an approver): 400, nothing changes
    ("POST", "/api/v1/approval-rules"): (
        "/approval-rules",
        {
            "operation": "approval.rule_change",
            "approvers": 0,
            "role": "admin",
            "approval_window_s": 3600,
            "execution_window_s": 3600,
        },
    ),
    ("POST", "/api/v1/backups/{backup_id}/verify"): (f"/backups/{MISSING}/verify", {}),
    ("GET", "/api/v1/verifications"): ("/verifications", None),
    ("POST", "/api/v1/backups/{backup_id}/drills"): (f"/backups/{MISSING}/drills", {}),
    ("GET", "/api/v1/drills"): ("/drills", None),
    ("POST", "/api/v1/backups/{backup_id}/holds"): (
        f"/backups/{MISSING}/holds",
        {"case": "c-1", "reason": "test"},
    ),
    ("POST", "/api/v1/backups/{backup_id}/holds/{case}/release"): (
        f"/backups/{MISSING}/holds/c-1/release",
        {"reason": "test"},
    ),
    ("GET", "/api/v1/ledger/checkpoint"): ("/ledger/checkpoint", None),
    ("GET", "/api/v1/ledger/verify"): ("/ledger/verify", None),
    ("GET", "/api/v1/ledger/proof/{seq}"): ("/ledger/proof/0", None),
    ("POST", "/api/v1/policy/check"): ("/policy/check", {"offline": True}),
    ("GET", "/api/v1/accounts"): ("/accounts", None),
    ("POST", "/api/v1/accounts/{name}/roles"): (f"/accounts/{MISSING}/roles", {"role": "viewer"}),
    ("DELETE", "/api/v1/accounts/{name}/roles/{role}"): (
        f"/accounts/{MISSING}/roles/viewer",
        None,
    ),
    ("POST", "/api/v1/tokens"): (
        "/tokens",
        {"account": MISSING, "scopes": ["backup.read"], "expires_in_days": 1},
    ),
    ("GET", "/api/v1/access-reviews"): ("/access-reviews", None),
    ("GET", "/api/v1/access-reviews/{access_review_id}"): (f"/access-reviews/{MISSING}", None),
    # a look-back window the service refuses (400): no review is started
    ("POST", "/api/v1/access-reviews"): ("/access-reviews", {"lookback_days": 0}),
    ("POST", "/api/v1/access-reviews/{access_review_id}/decisions"): (
        f"/access-reviews/{MISSING}/decisions",
        {"account": "viewer", "role": "viewer", "decision": "keep", "justification": "test"},
    ),
    ("POST", "/api/v1/access-reviews/{access_review_id}/close"): (
        f"/access-reviews/{MISSING}/close",
        None,
    ),
    ("GET", "/api/v1/ledger/entries"): ("/ledger/entries?limit=1", None),
    ("GET", "/api/v1/access-log"): ("/access-log?limit=1", None),
    ("GET", "/api/v1/access-log/verify"): ("/access-log/verify", None),
    ("GET", "/api/v1/findings"): ("/findings?status=open", None),
    ("GET", "/api/v1/findings/{finding_id}"): (f"/findings/{MISSING}", None),
    ("POST", "/api/v1/findings/{finding_id}/ack"): (f"/findings/{MISSING}/ack", {"note": "t"}),
    ("POST", "/api/v1/findings/{finding_id}/resolve"): (
        f"/findings/{MISSING}/resolve",
        {"note": "test"},
    ),
    ("GET", "/api/v1/exceptions"): ("/exceptions", None),
    # a control that does not exist (400): nothing is requested
    ("POST", "/api/v1/exceptions"): (
        "/exceptions",
        {"control": MISSING, "subject": "*", "reason": "test", "expires": "2999-01-01"},
    ),
    ("POST", "/api/v1/exceptions/{exception_id}/revoke"): (
        f"/exceptions/{MISSING}/revoke",
        {"reason": "test"},
    ),
    ("GET", "/api/v1/policy/versions"): ("/policy/versions", None),
    ("GET", "/api/v1/policy/versions/{version}"): ("/policy/versions/999999", None),
    ("GET", "/api/v1/policy/effective"): ("/policy/effective", None),
    # a file that does not parse (400): nothing is proposed
    ("POST", "/api/v1/policy/versions"): ("/policy/versions", {"name": "p.toml", "text": "["}),
    ("GET", "/api/v1/baseline"): ("/baseline", None),
    # an empty note (400): nothing is read or approved
    ("POST", "/api/v1/baselines"): ("/baselines", {"note": " "}),
    ("GET", "/api/v1/schedule/due"): ("/schedule/due?all=true", None),
    # this world holds no backup: nothing is due, nothing runs
    ("POST", "/api/v1/schedule/run-due"): ("/schedule/run-due", None),
    # a password the policy refuses (400): no account is made
    ("POST", "/api/v1/accounts"): ("/accounts", {"name": MISSING, "password": "x"}),
    ("GET", "/api/v1/roles"): ("/roles", None),
    ("GET", "/api/v1/tokens"): ("/tokens", None),
    ("DELETE", "/api/v1/tokens/{token_id}"): (f"/tokens/{MISSING}", None),
    # a source that is not registered (404): nothing is probed or recorded
    ("POST", "/api/v1/inventory"): ("/inventory", {"sources": [MISSING]}),
    # a framework that does not exist (400): no package is built
    ("POST", "/api/v1/evidence-packages"): (
        "/evidence-packages",
        {"from": "2026-01-01", "to": "2026-01-31", "framework": MISSING},
    ),
    ("GET", "/api/v1/evidence-packages/{evidence_package_id}"): (
        f"/evidence-packages/{MISSING}",
        None,
    ),
    ("GET", "/api/v1/holds"): ("/holds?active=true", None),
    ("GET", "/api/v1/vaults/{name}"): (f"/vaults/{MISSING}", None),
    ("GET", "/api/v1/keys/status"): ("/keys/status", None),
    ("GET", "/api/v1/ledger/key"): ("/ledger/key", None),
    ("GET", "/api/v1/ledger/consistency"): ("/ledger/consistency?old_size=1", None),
    # a dataset not named SOURCE/DATASET (400): nothing is classified
    ("POST", "/api/v1/dataset-classifications"): (
        "/dataset-classifications",
        {"dataset": MISSING, "level": "internal", "reason": "test"},
    ),
}
# the web pages (outside /api/v1: WEB marks a path from the server's root; docs/web.md)
HARMLESS.update(
    {
        ("GET", "/static/{name}"): (f"{WEB}/static/app.css", None),
        ("GET", "/login"): (f"{WEB}/login", None),
        # no login form token: 400, nobody is logged in
        ("POST", "/login"): (f"{WEB}/login", None),
        ("POST", "/logout"): (f"{WEB}/logout", None),
        ("GET", "/"): (f"{WEB}/", None),
        ("GET", "/approvals"): (f"{WEB}/approvals", None),
        ("POST", "/approvals/{request_id}/approve"): (f"{WEB}/approvals/{MISSING}/approve", None),
        ("POST", "/approvals/{request_id}/veto"): (f"{WEB}/approvals/{MISSING}/veto", None),
        ("GET", "/sources"): (f"{WEB}/sources", None),
        # no such source (404): nothing is backed up
        ("POST", "/sources/{name}/backups"): (f"{WEB}/sources/{MISSING}/backups", None),
        ("GET", "/backups"): (f"{WEB}/backups", None),
        ("GET", "/backups/{backup_id}"): (f"{WEB}/backups/{MISSING}", None),
        # no case, no reason (400), and no such backup: nothing is held
        ("POST", "/backups/{backup_id}/holds"): (f"{WEB}/backups/{MISSING}/holds", None),
        ("GET", "/verifications"): (f"{WEB}/verifications", None),
        ("GET", "/drills"): (f"{WEB}/drills", None),
        ("GET", "/findings"): (f"{WEB}/findings", None),
        ("GET", "/exceptions"): (f"{WEB}/exceptions", None),
        ("GET", "/checks/{run_id}"): (f"{WEB}/checks/{MISSING}", None),
        ("GET", "/ledger"): (f"{WEB}/ledger", None),
        ("GET", "/calendar"): (f"{WEB}/calendar?month=2026-01", None),
        # the audit pages: no such engagement or request (404), or a form without its
        # fields (400): nothing is raised, answered, stored or decided
        ("GET", "/audit"): (f"{WEB}/audit", None),
        ("GET", "/audit/requests"): (f"{WEB}/audit/requests", None),
        **{
            ("GET", f"/audit/engagements/{{engagement_id}}{view}"): (
                f"{WEB}/audit/engagements/{MISSING}{view}",
                None,
            )
            for view in (
                "",
                "/controls",
                "/verifications",
                "/drills",
                "/attestations",
                "/checkpoints",
                "/proofs",
                "/evidence-package",
            )
        },
        ("POST", "/audit/engagements/{engagement_id}/requests"): (
            f"{WEB}/audit/engagements/{MISSING}/requests",
            None,
        ),
        ("GET", "/audit/requests/{audit_request_id}"): (f"{WEB}/audit/requests/{MISSING}", None),
        ("GET", "/audit/requests/{audit_request_id}/files/{file_id}"): (
            f"{WEB}/audit/requests/{MISSING}/files/{MISSING}",
            None,
        ),
        **{
            ("POST", f"/audit/requests/{{audit_request_id}}/{step}"): (
                f"{WEB}/audit/requests/{MISSING}/{step}",
                None,
            )
            for step in ("answers", "accept", "return", "close", "messages")
        },
        # a file form without its file (400): nothing is stored
        ("POST", "/audit/requests/{audit_request_id}/upload"): (
            f"{WEB}/audit/requests/{MISSING}/upload",
            b'--harmless\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n'
            b"--harmless--\r\n",
        ),
    }
)
# the governance calendar (docs/calendar.md)
HARMLESS.update(
    {
        ("GET", "/api/v1/calendar"): ("/calendar?from=2026-01-01&to=2026-01-31", None),
        ("GET", "/api/v1/calendar.ics"): ("/calendar.ics", None),
        # a due date that does not parse (400): no deadline is recorded
        ("POST", "/api/v1/calendar/deadlines"): (
            "/calendar/deadlines",
            {"title": "test", "due": "2026-13-01"},
        ),
        ("DELETE", "/api/v1/calendar/deadlines/{deadline_id}"): (
            f"/calendar/deadlines/{MISSING}",
            None,
        ),
    }
)
# the remaining commands through the server (issue 15): nothing is registered or changed
HARMLESS.update(
    {
        # a URI that carries a password (400): no source is registered
        ("POST", "/api/v1/sources"): (
            "/sources",
            {
                "name": MISSING,
                "engine": "redis",
                "uri": "redis://user:pw@127.0.0.1:9",
                "classification": "internal",
            },
        ),
        ("POST", "/api/v1/sources/{name}/test"): (f"/sources/{MISSING}/test", None),
        # a URL of no vault kind (400): no vault is registered
        ("POST", "/api/v1/vaults"): ("/vaults", {"name": MISSING, "url": "ftp://nowhere/x"}),
        # another account than the caller's own (400): no credential changes
        ("POST", "/api/v1/me/password"): (
            "/me/password",
            {"account": MISSING, "current_password": "x", "password": "y" * 16},
        ),
        ("POST", "/api/v1/me/totp"): ("/me/totp", {"account": MISSING}),
        ("POST", "/api/v1/me/totp/confirm"): (
            "/me/totp/confirm",
            {"account": MISSING, "code": "000000"},
        ),
        ("DELETE", "/api/v1/me/totp"): ("/me/totp", {"account": MISSING}),
        ("POST", "/api/v1/accounts/{name}/password"): (
            f"/accounts/{MISSING}/password",
            {"password": "y" * 16},
        ),
        ("DELETE", "/api/v1/accounts/{name}/totp"): (f"/accounts/{MISSING}/totp", None),
        ("POST", "/api/v1/accounts/{name}/unlock"): (f"/accounts/{MISSING}/unlock", None),
        ("POST", "/api/v1/accounts/{name}/oidc"): (
            f"/accounts/{MISSING}/oidc",
            {"issuer": "https://idp.example", "subject": "s-1"},
        ),
        # a real export for those who may (a file in the home, recorded): reads only
        ("POST", "/api/v1/ledger/exports"): ("/ledger/exports", None),
        ("GET", "/api/v1/ledger/exports/{ledger_export_id}"): (f"/ledger/exports/{MISSING}", None),
        ("POST", "/api/v1/access-log/exports"): ("/access-log/exports", None),
        ("GET", "/api/v1/access-log/exports/{access_log_export_id}"): (
            f"/access-log/exports/{MISSING}",
            None,
        ),
        # nothing is a century old: nothing expires, nothing is recorded
        ("POST", "/api/v1/access-log/expire"): ("/access-log/expire", {"older_than_days": 36500}),
        # a folder (on the server's host: 400): nothing is signed or published
        ("POST", "/api/v1/progress"): ("/progress", {"destination": "/tmp"}),
        # exports: nobody and nothing of that name (404), or a key that is none (400)
        ("GET", "/api/v1/recipients"): ("/recipients", None),
        ("POST", "/api/v1/recipients"): (
            "/recipients",
            {"name": "r-1", "org": "Org", "contact": "c@example.com", "public_key": "age1nope"},
        ),
        ("POST", "/api/v1/recipients/{name}/verify"): (
            f"/recipients/{MISSING}/verify",
            {"response": "x"},
        ),
        ("GET", "/api/v1/export-specs"): ("/export-specs", None),
        ("GET", "/api/v1/export-specs/{name}"): (f"/export-specs/{MISSING}", None),
        # a text that does not parse (400): nothing is proposed
        ("POST", "/api/v1/export-specs"): ("/export-specs", {"name": "s.toml", "text": "["}),
        ("POST", "/api/v1/export-specs/{name}/versions/{version}/approve"): (
            f"/export-specs/{MISSING}/versions/1/approve",
            None,
        ),
        ("GET", "/api/v1/exports"): ("/exports", None),
        ("POST", "/api/v1/exports"): ("/exports", {"spec": MISSING}),
    }
)
# audit engagements and evidence requests (docs/audit.md): no engagement or request exists
# here, so every reader gets 404 and nothing is opened (an unknown framework: 400)
_ENGAGEMENT = f"/audit/engagements/{MISSING}"
_PBC = f"/audit/requests/{MISSING}"
HARMLESS.update(
    {
        ("GET", "/api/v1/audit/engagements"): ("/audit/engagements", None),
        ("POST", "/api/v1/audit/engagements"): (
            "/audit/engagements",
            {
                "from": "2026-01-01",
                "to": "2026-03-31",
                "framework": MISSING,
                "auditor": "auditor",
                "expires": "2999-01-01",
            },
        ),
        ("GET", "/api/v1/audit/engagements/{engagement_id}"): (_ENGAGEMENT, None),
        ("POST", "/api/v1/audit/engagements/{engagement_id}/close"): (f"{_ENGAGEMENT}/close", {}),
        ("GET", "/api/v1/audit/engagements/{engagement_id}/controls"): (
            f"{_ENGAGEMENT}/controls",
            None,
        ),
        ("GET", "/api/v1/audit/engagements/{engagement_id}/verifications"): (
            f"{_ENGAGEMENT}/verifications",
            None,
        ),
        ("GET", "/api/v1/audit/engagements/{engagement_id}/drills"): (
            f"{_ENGAGEMENT}/drills",
            None,
        ),
        ("GET", "/api/v1/audit/engagements/{engagement_id}/checkpoints"): (
            f"{_ENGAGEMENT}/checkpoints",
            None,
        ),
        ("GET", "/api/v1/audit/engagements/{engagement_id}/proofs/{seq}"): (
            f"{_ENGAGEMENT}/proofs/0",
            None,
        ),
        ("GET", "/api/v1/audit/engagements/{engagement_id}/evidence-package"): (
            f"{_ENGAGEMENT}/evidence-package",
            None,
        ),
        ("GET", "/api/v1/audit/requests"): ("/audit/requests", None),
        ("POST", "/api/v1/audit/requests"): (
            "/audit/requests",
            {"engagement": MISSING, "title": "test", "due": "2999-01-01"},
        ),
        ("GET", "/api/v1/audit/requests/{audit_request_id}"): (_PBC, None),
        ("GET", "/api/v1/audit/requests/{audit_request_id}/files/{file_id}"): (
            f"{_PBC}/files/{MISSING}",
            None,
        ),
        ("POST", "/api/v1/audit/requests/{audit_request_id}/answers"): (
            f"{_PBC}/answers",
            {"note": "test"},
        ),
        ("POST", "/api/v1/audit/requests/{audit_request_id}/accept"): (f"{_PBC}/accept", {}),
        ("POST", "/api/v1/audit/requests/{audit_request_id}/return"): (
            f"{_PBC}/return",
            {"reason": "test"},
        ),
        ("POST", "/api/v1/audit/requests/{audit_request_id}/close"): (f"{_PBC}/close", {}),
        ("POST", "/api/v1/audit/requests/{audit_request_id}/messages"): (
            f"{_PBC}/messages",
            {"text": "test"},
        ),
        # uploads and the commands that use them (a JSON body is no upload: 415 for anyone)
        ("POST", "/api/v1/uploads"): ("/uploads", {}),
        ("POST", "/api/v1/backups/ingests"): (
            "/backups/ingests",
            {"upload": "up-0000000000000000", "name": "dump.rdb", "format": "rdb"},
        ),
        ("POST", "/api/v1/fingerprints"): ("/fingerprints", {"target": MISSING}),
        ("POST", "/api/v1/audit/reminders"): ("/audit/reminders", {}),
    }
)
# lineage (docs/lineage.md): a subject nobody names (404); a real verification and export
# (they read the ledger; the export is a file in the home); no openlineage_url set here, so
# emit sends nothing (400)
HARMLESS.update(
    {
        ("GET", "/api/v1/lineage"): (f"/lineage?subject={MISSING}", None),
        ("POST", "/api/v1/lineage/verify"): ("/lineage/verify", None),
        ("POST", "/api/v1/lineage/exports"): ("/lineage/exports", {"since": -1}),
        ("GET", "/api/v1/lineage/exports/{lineage_export_id}"): (
            f"/lineage/exports/{MISSING}",
            None,
        ),
        ("POST", "/api/v1/lineage/emit"): ("/lineage/emit", {}),
    }
)
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def ledger_size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("select count(*) from ledger_entries").fetchone()[0])


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


def send(http: httpx.Client, method: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    if path.startswith(WEB):  # a web page: from the server's root
        path = str(http.base_url.copy_with(raw_path=path.removeprefix(WEB).encode()))
    if isinstance(body, bytes):  # a web page's file form
        headers = {
            **kw.pop("headers", {}),
            "Content-Type": "multipart/form-data; boundary=harmless",
        }
        return http.request(method, path, content=body, headers=headers, **kw)
    return (
        http.request(method, path, json=body, **kw)
        if body is not None
        else http.request(method, path, **kw)
    )


def check_error_shape(response: httpx.Response) -> dict[str, Any]:
    """An error: JSON with error, hint and exit_code, the security headers, no traceback."""
    assert "Traceback" not in response.text
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    body = response.json()
    assert set(body) >= {"error", "hint", "exit_code"}, body
    return dict(body)


def check_refusal(path: str, response: httpx.Response) -> None:
    """A refusal: an API error's JSON shape, or a web page's error page (HTML, the same
    security headers, no traceback)."""
    if not path.startswith(WEB):
        check_error_shape(response)
        return
    assert "Traceback" not in response.text
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert '<p class="alert" role="alert">' in response.text


def fresh_home(root: Path) -> Path:
    home = root / "home"
    initialise(load_settings(home=home))
    return home


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, World]]:
    """One server and one world for the tests that do not lock or disable accounts."""
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        home = fresh_home(tmp_path_factory.mktemp("server"))
        world = make_world(home)
        with serving(home) as served:
            yield served, world


# -- logins ------------------------------------------------------------------------------------


def test_login_whoami_step_up_logout(shared: tuple[Served, World]) -> None:
    served, world = shared
    with served.client() as http:
        answer = http.post(
            "/auth/login",
            json={"name": "viewer", "password": PASSWORD, "totp": world.code("viewer")},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["secret"].startswith("afs_")
        assert body["principal"]["roles"] == ["viewer"]
        assert body["principal"]["method"] == "password+totp"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert flag.lower() in cookie.lower(), cookie
        bearer = {"Authorization": f"Bearer {body['secret']}"}

        who = http.get("/whoami", headers=bearer)
        assert who.status_code == 200
        me = who.json()
        assert (me["name"], me["method"], me["authenticated"]) == ("viewer", "session", True)
        assert me["permissions"] == sorted(p.value for p in ROLES[Role.VIEWER])
        assert me["mfa_age_seconds"] is not None
        assert 0 <= me["mfa_age_seconds"] < 60

        stepped = http.post("/auth/step-up", json={"code": world.code("viewer")}, headers=bearer)
        assert stepped.status_code == 200, stepped.text
        assert stepped.json()["principal"]["mfa_age_seconds"] <= 1
        assert events(world.home, "identity.mfa_verified")[-1]["actor"] == "viewer"

        out = http.post("/auth/logout", headers=bearer)
        assert out.status_code == 200, out.text
        assert f"{SESSION_COOKIE}=" in out.headers["set-cookie"]
        again = http.get("/whoami", headers=bearer)
        assert again.status_code == 401
        assert check_error_shape(again)["exit_code"] == 3
        assert again.headers["www-authenticate"] == "Bearer"
        logout = events(world.home, "identity.logout")[-1]
        assert (logout["actor"], logout["details"]["auth"]) == ("viewer", "session")


def test_refusals_are_one_401_and_the_account_locks_after_five(
    shared: tuple[Served, World],
) -> None:
    served, world = shared
    with open_app(load_settings(home=world.home)) as app:
        idn.create_account(app, world.admin(app), "locky", password=PASSWORD)
    with served.client() as http:
        # a wrong TOTP code, a missing one, a wrong password, an unknown name: one message
        for attempt in (
            {"name": "approver", "password": PASSWORD, "totp": "000000"},
            {"name": "approver", "password": PASSWORD},
            {"name": "approver", "password": "wrong password 123", "totp": world.code("approver")},
            {"name": "nobody-at-all", "password": PASSWORD},
        ):
            answer = http.post("/auth/login", json=attempt)
            assert answer.status_code == 401, answer.text
            assert check_error_shape(answer)["error"] == REFUSED
            assert "secret" not in answer.text
        assert http.post("/auth/login", json={"name": "approver", "password": PASSWORD,
                                               "totp": world.code("approver")}).status_code == 200  # fmt: skip

        before = len(events(world.home, "identity.login_failed"))
        for _ in range(5):
            answer = http.post("/auth/login", json={"name": "locky", "password": "not it 12345"})
            assert answer.status_code == 401
        assert len(events(world.home, "identity.login_failed")) == before + 5
        assert events(world.home, "identity.login_failed")[-1]["details"]["locked_until"]
        # locked: the right password is refused too, and nothing more is recorded
        size = ledger_size(world.home)
        answer = http.post("/auth/login", json={"name": "locky", "password": PASSWORD})
        assert answer.status_code == 401
        assert answer.json()["error"] == REFUSED
        assert ledger_size(world.home) == size


def test_a_stale_mfa_check_asks_for_a_step_up(shared: tuple[Served, World]) -> None:
    """A session whose last TOTP check is older than five minutes: the MFA routes answer 403
    with ``step_up_required`` until a step-up, then go through."""
    served, world = shared
    past = datetime.now(UTC) - timedelta(minutes=10)
    with open_app(load_settings(home=world.home)) as app:  # a login ten minutes ago
        stale = idn.login(app, "admin", PASSWORD, world.recovery.pop(), client=CLIENT, now=past)
    bearer = {"Authorization": f"Bearer {stale.secret}"}
    with served.client() as http:
        assert http.get("/accounts", headers=bearer).status_code == 200  # no MFA needed
        size = ledger_size(world.home)
        for method, path, body in (
            ("DELETE", f"/accounts/{MISSING}/roles/viewer", None),
            ("POST", f"/accounts/{MISSING}/roles", {"role": "viewer"}),
            ("POST", "/tokens", {"account": MISSING, "scopes": ["backup.read"],
                                 "expires_in_days": 1}),
        ):  # fmt: skip
            answer = send(http, method, path, body, headers=bearer)
            assert answer.status_code == 403, answer.text
            refused = check_error_shape(answer)
            assert refused["step_up_required"] is True
            assert refused["exit_code"] == 2
        assert ledger_size(world.home) == size
        stepped = http.post("/auth/step-up", json={"code": world.code("admin")}, headers=bearer)
        assert stepped.status_code == 200, stepped.text
        answer = http.delete(f"/accounts/{MISSING}/roles/viewer", headers=bearer)
        assert answer.status_code == 404, answer.text


# -- the authorization matrix ------------------------------------------------------------------


def test_every_route_answers_every_role_by_its_rule(shared: tuple[Served, World]) -> None:
    """Generated from the app's routes: for each route and each role (and a service
    account's token), 403 exactly when the route's rule refuses that identity."""
    served, world = shared
    rules = route_rules(create_app(load_settings(home=world.home)))
    assert {(r.method, r.path) for r in rules} == set(HARMLESS), (
        "a route without a harmless request here, or a stale one: "
        f"{sorted({(r.method, r.path) for r in rules} ^ set(HARMLESS))}"
    )
    # logout last: it ends the session the other requests use
    rules.sort(key=lambda r: r.path.endswith("/logout"))
    with served.client() as http:
        callers: dict[str, tuple[dict[str, str], frozenset[Permission], bool]] = {}
        for name, role in PEOPLE.items():
            callers[name] = (world.session(http, name).bearer, ROLES[role], True)
        callers[SERVICE] = (
            {"Authorization": f"Bearer {world.token}"},
            frozenset(ROLES[Role.OPERATOR]),
            False,
        )
        seen: list[str] = []
        for rule in rules:
            path, body = HARMLESS[(rule.method, rule.path)]
            for who, (headers, held, person) in callers.items():
                gate = rule.gate
                forbidden = (gate.permission is not None and gate.permission not in held) or (
                    gate.kind is GateKind.SESSION and not person
                )
                answer = send(http, rule.method, path, body, headers=headers)
                label = f"{who}: {rule.method} {rule.path} -> {answer.status_code} {answer.text}"
                assert answer.status_code < 500, label
                assert answer.status_code != 401 or rule.gate.kind in (
                    GateKind.PUBLIC,
                    GateKind.SESSION,  # a wrong step-up code is a failed login
                ), label
                assert (answer.status_code == 403) == forbidden, label
                if answer.status_code == 403 and forbidden:
                    check_refusal(path, answer)
                seen.append(label)
    world.forget()  # every session was logged out last
    assert len(seen) == len(rules) * len(callers)


def test_a_route_without_a_rule_is_never_built() -> None:
    router = APIRouter()

    @router.get("/ungated")
    def ungated() -> dict[str, str]:
        return {"oops": "no gate"}

    api = FastAPI(openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    api.include_router(router, prefix="/api/v1")
    with pytest.raises(UngatedRoute, match="/api/v1/ungated declares 0 gates"):
        check_gates(api.routes)
    bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @bare.post("/direct")
    def direct() -> None:
        return None

    with pytest.raises(UngatedRoute, match="/direct"):
        check_gates(bare.routes)


def test_an_auditor_changes_nothing(shared: tuple[Served, World]) -> None:
    served, world = shared
    rules = [
        r
        for r in route_rules(create_app(load_settings(home=world.home)))
        if r.method in MUTATING
        and r.gate.kind is GateKind.PERMISSION
        # an export (ledger.export, access_log.export) is a POST that writes a file for the
        # auditor and records that it did: a read-only permission, an auditor's to use
        and r.gate.permission not in READ_ONLY
    ]
    assert len(rules) >= 9
    with served.client() as http:
        auditor = world.session(http, "auditor")
        size = ledger_size(world.home)
        for rule in rules:
            path, body = HARMLESS[(rule.method, rule.path)]
            answer = send(http, rule.method, path, body, headers=auditor.bearer)
            assert answer.status_code == 403, (rule, answer.text)
            if path.startswith(WEB):
                check_refusal(path, answer)
                continue
            assert check_error_shape(answer)["exit_code"] == 2
        # and with real subjects too: the auditor may not run a backup of a real source
        answer = http.post("/backups", json={"source": "anything"}, headers=auditor.bearer)
        assert answer.status_code == 403
        assert "may not backup.run" in answer.json()["error"]
    assert ledger_size(world.home) == size


# -- tokens ------------------------------------------------------------------------------------


def test_expired_revoked_and_disabled_tokens_are_refused(shared: tuple[Served, World]) -> None:
    served, world = shared
    now = datetime.now(UTC)
    with open_app(load_settings(home=world.home)) as app:
        principal = world.admin(app)
        idn.create_account(app, principal, "bot2", kind=AccountKind.SERVICE)
        roles.grant_role(app, principal, "bot2", Role.VIEWER)
        scopes = {Permission.BACKUP_READ}
        expired = idn.create_token(app, principal, "bot2", scopes, timedelta(seconds=1))
        revoked = idn.create_token(app, principal, "bot2", scopes, timedelta(days=1))
        idn.revoke_token(app, principal, revoked.token.id)
        live = idn.create_token(app, principal, "bot2", scopes, timedelta(days=1))
    time.sleep(max(0.0, (now + timedelta(seconds=1.5) - datetime.now(UTC)).total_seconds()))
    with served.client() as http:

        def status(secret: str) -> int:
            return http.get("/backups", headers={"Authorization": f"Bearer {secret}"}).status_code

        assert status(live.secret) == 200
        assert status(expired.secret) == 401
        assert status(revoked.secret) == 401
        assert status(live.secret[:-2] + "xx") == 401
        assert status("afv_0123456789abcdef_forged") == 401
        # a token carries its scopes only: bot2 holds viewer, the token backup.read only
        who = http.get("/whoami", headers={"Authorization": f"Bearer {live.secret}"}).json()
        assert (who["method"], who["permissions"]) == ("token", ["backup.read"])
        assert http.get("/sources", headers={"Authorization": f"Bearer {live.secret}"}
                        ).status_code == 403  # fmt: skip
        with open_app(load_settings(home=world.home)) as app:
            idn.disable_account(app, world.admin(app), "bot2", reason="test")
        assert status(live.secret) == 401
        answer = http.get("/backups", headers={"Authorization": "Basic YTpi"})
        assert answer.status_code == 401


# -- CSRF --------------------------------------------------------------------------------------


def test_cookie_requests_that_change_state_need_the_csrf_token(
    shared: tuple[Served, World],
) -> None:
    served, world = shared
    with served.client() as http:
        operator = world.login(http, "operator")
        cookie = {"Cookie": f"{SESSION_COOKIE}={operator.secret}"}
        # reading with the cookie needs no token
        assert http.get("/whoami", headers=cookie).json()["name"] == "operator"
        size = ledger_size(world.home)
        for extra in ({}, {CSRF_HEADER: "0" * 64}, {CSRF_HEADER: ""}):
            answer = http.post("/policy/check", json={"offline": True}, headers=cookie | extra)
            assert answer.status_code == 403, answer.text
            assert "anti-CSRF" in check_error_shape(answer)["error"]
            answer = http.post("/auth/logout", headers=cookie | extra)
            assert answer.status_code == 403
        assert ledger_size(world.home) == size
        # a token in the cookie is not a session
        token_cookie = {"Cookie": f"{SESSION_COOKIE}={world.token}"}
        assert http.get("/whoami", headers=token_cookie).status_code == 401
        # with the session's token the same requests go through
        good = cookie | {CSRF_HEADER: operator.csrf}
        answer = http.post("/policy/check", json={"offline": True}, headers=good)
        assert answer.status_code == 200, answer.text
        assert ledger_size(world.home) > size
        # and a bearer request needs none (a browser never adds the header by itself)
        answer = http.post("/policy/check", json={"offline": True}, headers=operator.bearer)
        assert answer.status_code == 200
        assert http.post("/auth/logout", headers=good).status_code == 200


# -- hostile input, limits, headers ------------------------------------------------------------


def test_hostile_and_oversized_input_never_reach_a_500(shared: tuple[Served, World]) -> None:
    served, world = shared
    with served.client() as http:
        reader = world.session(http, "security_officer")
        admin = world.session(http, "admin")
        for path in (
            "/backups/1'%20OR%20'1'='1",
            "/backups/%27%3B%20DROP%20TABLE%20backups%3B--",
            "/sources/x'%20UNION%20SELECT%20*%20FROM%20accounts--",
            "/sources/%00",
            "/backups/..%2F..%2Fetc%2Fpasswd",
        ):
            answer = http.get(path, headers=reader.bearer)
            assert answer.status_code == 404, (path, answer.text)
            assert check_error_shape(answer)["exit_code"] == 2
        answer = http.get("/backups", params={"source": "x' OR 1=1--"}, headers=reader.bearer)
        assert answer.status_code == 404, answer.text
        answer = http.get("/ledger/proof/1%20OR%201=1", headers=admin.bearer)
        assert answer.status_code == 422
        assert check_error_shape(answer)["exit_code"] == 2
        answer = http.delete("/accounts/x'--/roles/admin'--", headers=admin.bearer)
        assert answer.status_code in (400, 404), answer.text
        answer = http.post("/accounts/viewer/roles", json={"role": "root'--"}, headers=admin.bearer)
        assert answer.status_code == 400, answer.text

        size = ledger_size(world.home)
        big = {"source": "x" * (70 * 1024)}
        answer = http.post("/backups", json=big, headers=admin.bearer)
        assert answer.status_code == 413
        assert check_error_shape(answer)["exit_code"] == 2

        def chunks() -> Iterator[bytes]:  # no Content-Length: streamed, chunked
            yield b'{"source": "'
            for _ in range(100):
                yield b"y" * 1024
            yield b'"}'

        answer = http.post(
            "/backups",
            content=chunks(),
            headers=admin.bearer | {"Content-Type": "application/json"},
        )
        assert answer.status_code == 413
        answer = http.post(
            "/auth/login",
            content=b"name=admin&password=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 415
        answer = http.post(
            "/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422
        answer = http.post("/auth/login", json={"name": "a", "password": "b", "extra": 1})
        assert answer.status_code == 422
        assert "extra" in answer.json()["error"]
        answer = http.get("/no/such/route")
        assert answer.status_code == 404
        assert check_error_shape(answer)["error"] == "no such route"
        assert ledger_size(world.home) == size


def test_every_answer_carries_the_security_headers(shared: tuple[Served, World]) -> None:
    served, _ = shared
    with served.client() as http:
        for answer in (http.get("/health"), http.get("/openapi.json"), http.get("/backups")):
            for name, value in HEADERS.items():
                assert answer.headers[name] == value
            csp = answer.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "frame-ancestors 'none'" in csp
            assert "strict-transport-security" not in answer.headers  # plain http on loopback
            assert "server" not in answer.headers
        document = http.get("/openapi.json").json()
        assert "/api/v1/backups" in document["paths"]
        assert http.get("/docs").status_code == 404


# -- TLS and binding ---------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_and_the_bind_rules(home: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with serving(home, "--tls-cert", str(cert), "--tls-key", str(key), scheme="https",
                 verify=trust) as served, served.client() as http:  # fmt: skip
        answer = http.get("/health")
        assert answer.status_code == 200
        assert answer.headers["strict-transport-security"].startswith("max-age=")
    # a non-loopback bind without TLS is refused before anything starts
    run = subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), "serve", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "without TLS" in run.stderr
    assert "Traceback" not in run.stderr
    assert ServeOptions(host="0.0.0.0", unsafe_no_tls=True).check()[0].startswith("UNSAFE")
    assert ServeOptions(host="10.0.0.1", tls_cert=cert, tls_key=key).check() == []
    with pytest.raises(Exception, match="go together"):
        ServeOptions(tls_cert=cert).check()
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")


# -- the acting account reaches the ledger -----------------------------------------------------


def seed_redis(uri: str) -> None:
    parsed = ConnectionUri.parse(EngineName.REDIS, uri)
    with engine_for_uri(EngineName.REDIS, parsed, password=None, timeout=5) as engine:
        engine.seed_sample(seed=3, scale=2)


def test_a_backup_through_the_api_names_the_authenticated_account(
    cli: Any, home: Path, tmp_path: Path, fresh_redis: RedisScratch
) -> None:
    seed_redis(fresh_redis.uri)
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    world = make_world(home)
    with serving(home) as served, served.client() as http:
        operator = world.login(http, "operator")
        answer = http.post("/backups", json={"source": "cache"}, headers=operator.bearer)
        assert answer.status_code == 201, answer.text
        backup = answer.json()
        assert backup["status"] == "complete"
        by_token = http.post(
            "/backups", json={"source": "cache"}, headers={"Authorization": f"Bearer {world.token}"}
        )
        assert by_token.status_code == 201, by_token.text
        # the same JSON as the CLI's `backup show --json`
        shown = http.get(f"/backups/{backup['backup_id']}", headers=operator.bearer).json()
        local = cli("backup", "show", backup["backup_id"], "--json")
        assert json.loads(local.out) == shown
        verified = http.post(f"/backups/{backup['backup_id']}/verify", json={},
                             headers=operator.bearer)  # fmt: skip
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True
        listed = http.get("/verifications", params={"backup": backup["backup_id"]},
                          headers=operator.bearer)  # fmt: skip
        local = cli("verify", "list", backup["backup_id"], "--json")
        assert json.loads(local.out) == listed.json()
        assert len(listed.json()["verifications"]) == 1
        hold = http.post(f"/backups/{backup['backup_id']}/holds",
                         json={"case": "legal-1", "reason": "audit"}, headers=operator.bearer)  # fmt: skip
        assert hold.status_code == 201, hold.text
        assert hold.json()["created_by"] == "operator"

    for ident, who, auth in ((backup["backup_id"], "operator", "session"),
                             (by_token.json()["backup_id"], SERVICE, "token")):  # fmt: skip
        mine = [
            e
            for action in ("backup.started", "backup.completed", "attestation.created")
            for e in events(home, action)
            if ident in e["subject"] or e["details"].get("backup_id") == ident
        ]
        assert {e["action"] for e in mine} >= {"backup.started", "backup.completed"}, mine
        for event in mine:
            assert event["actor"] == who, event
            assert event["details"]["auth"] == auth, event
            assert event["client"]["address"] == "127.0.0.1", event
            assert event["client"]["agent"].startswith("api python-httpx"), event
    held = events(home, "hold.added")[-1]
    assert (held["actor"], held["details"]["auth"]) == ("operator", "session")
    # local mode still records the asserted actor, without an auth claim
    assert cli("policy", "check", "--offline", "--json").code in (0, 1)
    local_event = events(home, "policy.checked")[-1]
    assert local_event["actor"] == "tester@example.com"
    assert "auth" not in local_event["details"]
