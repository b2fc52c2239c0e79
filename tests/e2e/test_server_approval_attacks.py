"""Adversarial review of multi-party approval through a real ``affidavit serve``.

The world: ``admin`` and ``admin2`` are the only administrators (both with TOTP), plus one
person per other role. A test that PASSES is an attack that was refused; a test that FAILS is
an attack that worked (it asserts what docs/approvals.md promises: "one administrator cannot
remove the others and then act on waivers").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from server_harness import CLIENT, PASSWORD, Served, World, copy_world, make_world, serving

from affidavit.config import load_settings
from affidavit.crypto import totp
from affidavit.models.permissions import Role
from affidavit.services import identity as idn
from affidavit.services import roles
from affidavit.services.context import open_app
from affidavit.services.policy_vouch import read_events
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e


def _clean(patch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            patch.delenv(var)
    patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Made once for the module: the harness world plus ``admin2`` (administrator, TOTP)."""
    with pytest.MonkeyPatch.context() as patch:
        _clean(patch)
        home = tmp_path_factory.mktemp("approval-attacks") / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        at = datetime.now(UTC) - timedelta(minutes=9)
        with open_app(load_settings(home=home)) as app:
            admin = idn.login(
                app, "admin", PASSWORD, totp.code_at(world.secrets["admin"], at), client=CLIENT,
                now=at,
            ).principal  # fmt: skip
            idn.create_account(app, admin, "admin2", password=PASSWORD, now=at)
            roles.grant_role(app, admin, "admin2", Role.ADMIN, now=at)  # alone: waived
            first = idn.login(app, "admin2", PASSWORD, client=CLIENT, now=at)
            enrolment = idn.begin_totp(app, first.principal, "admin2", now=at)
            idn.confirm_totp(
                app, first.principal, "admin2", totp.code_at(enrolment.secret, at), now=at
            )
            world.secrets["admin2"] = enrolment.secret
        world.used["admin"] = totp.time_step(at)
        return world


@pytest.fixture
def own(template: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[
    tuple[Served, World]
]:  # fmt: skip
    _clean(monkeypatch)
    world = copy_world(template, tmp_path / "home")
    with serving(world.home) as served:
        yield served, world


def _waivers(home: Path) -> int:
    with open_app(load_settings(home=home)) as app, app.read() as uow:
        return len(read_events(uow.ledger, "approval.waived"))


# -- SUCCESSFUL attacks (these tests fail until fixed) ---------------------------------------


def test_an_admin_cannot_strip_the_only_other_admin_over_http(own: tuple[Served, World]) -> None:
    served, world = own
    before = _waivers(world.home)
    with served.client() as http:
        admin = world.session(http, "admin").bearer
        answer = http.delete("/accounts/admin2/roles/admin", headers=admin)
        assert answer.status_code in (202, 403), answer.text
        admin2 = world.session(http, "admin2").bearer
        who = http.get("/whoami", headers=admin2).json()
        assert "admin" in who["roles"]
    assert _waivers(world.home) == before


def test_an_admin_cannot_disable_the_only_other_admin_over_http(own: tuple[Served, World]) -> None:
    served, world = own
    with served.client() as http:
        admin = world.session(http, "admin").bearer
        answer = http.post("/accounts/admin2/disable", json={"reason": "rogue"}, headers=admin)
        assert answer.status_code in (202, 403), answer.text


# -- REFUSED attacks (these pass) ------------------------------------------------------------


def test_hostile_request_ids_and_notes_are_refused(own: tuple[Served, World]) -> None:
    served, world = own
    with served.client() as http:
        admin = world.session(http, "admin").bearer
        asked = http.post("/accounts/viewer/roles", json={"role": "auditor"}, headers=admin)
        assert asked.status_code == 202, asked.text
        rid = asked.json()["request"]["id"]
        admin2 = world.session(http, "admin2").bearer
        for bad in ("..%2F" + rid, rid + "%00", "x" * 5000, rid.upper(), "%E2%80%AE" + rid):
            answer = http.post(f"/requests/{bad}/approve", json={}, headers=admin2)
            assert answer.status_code in (404, 422), (bad[:30], answer.text[:200])
            assert "x" * 100 not in answer.text
        huge = http.post(f"/requests/{rid}/approve", json={"note": "n" * 501}, headers=admin2)
        assert huge.status_code == 422
        typed = http.post(f"/requests/{rid}/approve", json={"note": ["x"]}, headers=admin2)
        assert typed.status_code == 422
        veto = http.post(f"/requests/{rid}/veto", json={"reason": ""}, headers=admin2)
        assert veto.status_code == 422
        mine = http.post(f"/requests/{rid}/approve", json={}, headers=admin)
        assert mine.status_code == 403
        assert http.get(f"/requests/{rid}", headers=admin).json()["state"] == "pending"


def test_a_token_never_approves_and_break_glass_has_no_route(own: tuple[Served, World]) -> None:
    served, world = own
    with served.client() as http:
        admin = world.session(http, "admin").bearer
        asked = http.post("/accounts/viewer/roles", json={"role": "auditor"}, headers=admin)
        rid = asked.json()["request"]["id"]
        token = {"Authorization": f"Bearer {world.token}"}
        assert http.post(f"/requests/{rid}/approve", json={}, headers=token).status_code == 403
        for path in ("/accounts/break-glass", "/break-glass", "/accounts/mallory/break-glass"):
            assert http.post(path, json={}, headers=admin).status_code in (404, 405)
