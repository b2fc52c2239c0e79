"""Every request to the server is an entry of the access log before its answer leaves:
logins (failed ones under the name tried), reads with what they read, refusals by a gate
(401, 403) and by the hardening layer (413); the log verifies, reads leave the main ledger
alone, and a log altered behind the signer's back stops the server from answering (503)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_harness import PASSWORD, Served, World, make_world, serving

from affidavit.config import load_settings
from affidavit.services import access_log
from affidavit.services.context import open_app
from affidavit.services.setup import initialise


def _entries(home: Path) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        return [e.to_json() for e in access_log.show(app)]


def _ledger_size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (n,) = db.execute("select count(*) from ledger_entries").fetchone()
        return int(n)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, World]]:
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        home = tmp_path_factory.mktemp("access") / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        with serving(home) as server:
            yield server, world


def test_every_request_is_logged_with_who_what_and_how_it_ended(
    served: tuple[Served, World],
) -> None:
    server, world = served
    home = world.home
    with server.client() as http:
        bad = http.post("/auth/login", json={"name": "viewer", "password": "wrong", "totp": "1"})
        assert bad.status_code == 401
        login = world.login(http, "viewer")
        bearer = {"Authorization": f"Bearer {login.secret}"}
        ledger_before = _ledger_size(home)
        assert http.get("/backups/bk-nope", headers=bearer).status_code == 404
        assert http.get("/accounts", headers=bearer).status_code == 403  # viewer: no right
        assert http.get("/whoami").status_code == 401  # nobody
        big = http.post("/backups", content=b"{" + b" " * 70_000 + b"}", headers=bearer)
        assert big.status_code == 413
        assert _ledger_size(home) == ledger_before  # reads and refusals write no ledger event
    got = _entries(home)
    seen = [(e["identity"], e["method"], e["route"], e["status"], e["outcome"]) for e in got]
    assert ("viewer", "POST", "/api/v1/auth/login", 401, "failed") in seen
    assert ("viewer", "POST", "/api/v1/auth/login", 200, "allowed") in seen
    assert ("viewer", "GET", "/api/v1/accounts", 403, "denied") in seen
    assert ("anonymous", "GET", "/api/v1/whoami", 401, "denied") in seen
    read = next(e for e in got if e["route"] == "/api/v1/backups/{backup_id}")
    assert (read["identity"], read["subject"], read["status"]) == ("viewer", "backup:bk-nope", 404)
    assert any(e["status"] == 413 for e in got)
    assert all(e["auth_method"] and e["client_ip"] == "127.0.0.1" for e in got)
    with open_app(load_settings(home=home)) as app:
        report = access_log.verify(app)
    assert report.ok, report


def test_an_access_log_altered_behind_the_signer_stops_the_answers(
    served: tuple[Served, World],
) -> None:
    server, world = served
    with server.client() as http:
        assert http.get("/health").status_code == 200
        with sqlite3.connect(world.home / "catalog.sqlite") as db:
            db.execute(
                "delete from access_log_entries where seq = (select max(seq) from access_log_entries)"
            )
        answer = http.get("/health")
        assert answer.status_code == 503, answer.text
        assert "access log" in answer.json()["error"]
        assert "Traceback" not in answer.text
    with open_app(load_settings(home=world.home)) as app:
        assert not access_log.verify(app).ok
    assert PASSWORD  # the world's accounts were made with it
