"""The auditor portal, the evidence requests (PBC list) and the calendar's month view as
people use them: Debian's Chromium driven by Playwright against a real ``affidavit serve``
over the demo's home (backups, verifications, drills, attestations, a policy check), where an
administrator opened an engagement for ``auditor`` whose window starts after the demo (so the
demo's records lie before it), another for a second auditor, and one that has expired.

The auditor sees its engagement's window only (a verification before it is absent, a direct
URL to a backup, the ledger or another engagement is refused), is offered no mutating control
but its own steps, and a hand-made POST from its session with a valid anti-CSRF token to any
other mutating route is refused (403), recording nothing; the PBC flow end to end in two
browsers (raise, answer with an upload, accept), HTML, SVG and script uploads refused,
downloads only as attachments; the month grid; every page passes axe-core without serious or
critical violations and without a Content-Security-Policy violation; screenshots are written
(``/tmp/affidavit-screens/``)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from server_harness import CLIENT, PASSWORD, Served, World, make_world, serving
from web_harness import Watched, chromium, missing_tools, screenshot

from affidavit.config import load_settings
from affidavit.models.permissions import Role
from affidavit.services import audit, roles
from affidavit.services import backup as backup_service
from affidavit.services import identity as idn
from affidavit.services import verify as verify_service
from affidavit.services.context import open_app
from affidavit.services.demo import run_demo

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
]

AUDITOR_POSTS = re.compile(
    r"^/(logout|audit/engagements/[^/]+/requests|audit/requests/[^/]+/(messages|accept|return|close))$"
)
"""The only form actions an auditor's pages may offer (its own steps, and logging out)."""
FORM = "application/x-www-form-urlencoded"


@dataclass
class Portal:
    served: Served
    world: World
    engagement: str  # auditor's: from after the demo to the next 30 days
    other: str  # outsider's engagement
    expired: str  # auditor's, expired yesterday
    before: str  # a verification the demo made, before the window
    inside: str  # a verification made in the window
    old_backup: str  # a backup the demo made, before the window
    overdue: str  # an evidence request of the engagement, past its due date
    outside_seq: int  # a ledger event before the window


def _events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


def _ledger_size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("select count(*) from ledger_entries").fetchone()[0])


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        patch.setenv("AFFIDAVIT_CONNECT_TIMEOUT", "2")
        home = tmp_path_factory.mktemp("portal") / "home"
        run_demo(load_settings(home=home), scale=20)
        world = make_world(home)
        today = datetime.now(UTC).date()
        with open_app(load_settings(home=home)) as app:
            admin = world.admin(app)
            idn.create_account(app, admin, "outsider", password=PASSWORD)
            roles.grant_role(app, admin, "outsider", Role.AUDITOR)
            before = verify_service.list_verifications(app, None)[0]
            old_backup = next(
                b.id for b in backup_service.list_backups(app) if b.status.value == "complete"
            )
            outside_seq = _ledger_size(home) - 1
            time.sleep(1.1)
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            time.sleep(1.1)
            past = datetime.now(UTC) - timedelta(days=5)
            expired = audit.open_engagement(
                app, admin, start=str(today - timedelta(days=30)), end=str(today),
                framework="soc2", auditor="auditor", expires=str(today - timedelta(days=1)),
                now=past,
            )  # fmt: skip
            engagement = audit.open_engagement(
                app, admin, start=start.isoformat(), end=str(today + timedelta(days=30)),
                framework="soc2", auditor="auditor", expires=str(today + timedelta(days=60)),
            )  # fmt: skip
            other = audit.open_engagement(
                app, admin, start=str(today - timedelta(days=30)), end=str(today),
                framework="iso-27001", auditor="outsider", expires=str(today + timedelta(days=60)),
            )  # fmt: skip
            inside = verify_service.verify_backup(app, old_backup)
            auditor = idn.login(app, "auditor", PASSWORD, world.code("auditor"), client=CLIENT)
            # an overdue request: raised (as of four days ago) with a due date two days ago
            overdue = audit.open_request(
                app, auditor.principal, engagement.id, title="Quarterly access review",
                due=today - timedelta(days=2), items=["the signed review"],
                now=datetime.now(UTC) - timedelta(days=4),
            )  # fmt: skip
            idn.logout(app, auditor.principal)
        with serving(home) as served:
            yield Portal(
                served=served, world=world, engagement=engagement.id, other=other.id,
                expired=expired.id, before=before.id, inside=inside.id, old_backup=old_backup,
                overdue=overdue.id, outside_seq=outside_seq,
            )  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return tmp_path / "screens"


def _check_page(tab: Watched, path: str, status: int = 200) -> None:
    response = tab.goto(path)
    assert response is not None and response.status == status, (path, response and response.status)
    assert "script-src" not in response.headers["content-security-policy"]
    violations = tab.axe()
    assert violations == [], (path, json.dumps(violations, indent=1)[:3000])


def _form_actions(tab: Watched) -> list[tuple[str, str]]:
    """(method, action path) of every form on the page."""
    found = tab.page.eval_on_selector_all(
        "form",
        "forms => forms.map(f => [f.method, new URL(f.action).pathname])",
    )
    return [(str(m), str(a)) for m, a in found]


def _csrf(tab: Watched) -> str:
    token = tab.page.locator("header form[action='/logout'] input[name=csrf_token]")
    return token.get_attribute("value") or ""


def _post_form(tab: Watched, path: str, fields: dict[str, str], *, enctype: str = FORM) -> Any:
    """A hand-made form POST from the page (built in the DOM, as a forged page would: the
    browser sends its cookie); the response."""
    with tab.page.expect_navigation() as answer:
        tab.page.evaluate(
            """([action, fields, enctype]) => {
                const form = document.createElement('form');
                form.method = 'post';
                form.enctype = enctype;
                form.action = action;
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement('input');
                    input.type = 'hidden';
                    input.name = name;
                    input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            [path, fields, enctype],
        )
    tab.page.wait_for_load_state("load")
    return answer.value


# -- the auditor sees its window only ----------------------------------------------------------


def test_the_auditor_sees_only_its_engagements_window(
    portal: Portal, browser: Any, shots: Path
) -> None:
    tab = Watched(browser, portal.served.url)
    base = f"/audit/engagements/{portal.engagement}"
    try:
        tab.login(portal.world, "auditor")
        # the landing page is the auditor's engagements, not the dashboard it may not read
        assert tab.page.url == portal.served.url + "/audit", tab.page.url
        nav = tab.page.locator("header nav a")
        assert sorted(nav.all_inner_texts()) == ["Audit", "Evidence requests"]
        rows = tab.page.locator("#engagements tbody tr")
        assert rows.count() == 1
        assert portal.engagement in rows.first.inner_text()
        body = tab.page.inner_text("main")
        assert portal.other not in body and portal.expired not in body
        pages = (
            "/audit",
            base,
            f"{base}/controls",
            f"{base}/verifications",
            f"{base}/drills",
            f"{base}/attestations",
            f"{base}/checkpoints",
            f"{base}/proofs",
            "/audit/requests",
            f"/audit/requests/{portal.overdue}",
        )
        for i, path in enumerate(pages):
            _check_page(tab, path)
            for method, action in _form_actions(tab):
                assert method == "get" or AUDITOR_POSTS.match(action), (path, action)
            # nothing links to a page the auditor may not open
            hrefs = tab.page.eval_on_selector_all(
                "a[href^='/']", "links => links.map(a => a.getAttribute('href'))"
            )
            for href in hrefs:
                assert href.startswith(("/audit", "/static")), (path, href)
            name = (
                "home"
                if path == "/audit"
                else "requests"
                if path == "/audit/requests"
                else "request"
                if path.startswith("/audit/requests/")
                else path.removeprefix(base).strip("/") or "engagement"
            )
            screenshot(tab.page, shots, f"a{i:x}-auditor-{name}")
        # the window: the verification made in it is listed, the demo's before it is not
        tab.goto(f"{base}/verifications")
        listed = tab.page.inner_text("#records")
        assert portal.inside in listed and portal.before not in listed
        # the attestations of the window, each leading to its inclusion proof
        tab.goto(f"{base}/attestations")
        proofs = tab.page.locator("#attestations a[href*='/proofs?seq=']")
        assert proofs.count() >= 1
        with tab.page.expect_navigation():
            proofs.first.click()
        assert '"audit_path"' in tab.page.inner_text("#proof") or "root" in tab.page.inner_text(
            "#proof"
        )
        assert tab.axe() == []
        screenshot(tab.page, shots, "aa-auditor-proof")
        # outside the window, another engagement, an expired one: absent (404); the global
        # pages: refused (403), whatever URL the auditor types
        for path, status in (
            (f"{base}/proofs?seq={portal.outside_seq}", 404),
            (f"/audit/engagements/{portal.other}", 404),
            (f"/audit/engagements/{portal.other}/verifications", 404),
            (f"/audit/engagements/{portal.expired}", 404),
            (f"/audit/engagements/{portal.expired}/evidence-package", 404),
            (f"/backups/{portal.old_backup}", 403),
            ("/backups", 403),
            ("/verifications", 403),
            ("/drills", 403),
            ("/ledger", 403),
            ("/sources", 403),
            ("/calendar", 403),
            ("/", 403),
        ):
            response = tab.goto(path)
            assert response is not None and response.status == status, path
            assert portal.before not in tab.page.inner_text("body"), path
        # the refusal leads back to the auditor's own pages (the navigation it may use)
        assert tab.page.locator("main a[href='/audit']").count() == 1
        assert sorted(tab.page.locator("header nav a").all_inner_texts()) == [
            "Audit",
            "Evidence requests",
        ]
        assert tab.axe() == []
        assert tab.csp_violations() == []
    finally:
        tab.close()
    # the API answers alike for the auditor's session
    with portal.served.client() as http:
        bearer = portal.world.session(http, "auditor").bearer
        for path in (
            f"/backups/{portal.old_backup}",
            "/backups",
            "/verifications",
            "/ledger/entries",
            f"/ledger/proof/{portal.outside_seq}",
            "/access-log",
            "/accounts",
            "/calendar",
            "/requests",
            "/sources",
            "/vaults",
            "/findings",
            "/schedule/due",
            "/keys/status",
            "/ledger/checkpoint",
        ):
            assert http.get(path, headers=bearer).status_code == 403, path
        mine = http.get(f"/audit/engagements/{portal.engagement}/verifications", headers=bearer)
        ids = [v["id"] for v in mine.json()["verifications"]]
        assert portal.inside in ids and portal.before not in ids


def test_every_view_and_download_is_in_the_access_log(portal: Portal, browser: Any) -> None:
    tab = Watched(browser, portal.served.url)
    try:
        tab.login(portal.world, "auditor", next_path="/audit")
        response = tab.context.request.get(
            portal.served.url + f"/audit/engagements/{portal.engagement}/evidence-package"
        )
        assert response.status == 200
        assert response.headers["content-disposition"].startswith("attachment;")
        assert response.headers["content-type"] == "application/gzip"
        assert response.body()[:2] == b"\x1f\x8b"
        tab.goto(f"/audit/engagements/{portal.engagement}/checkpoints")
    finally:
        tab.close()
    from affidavit.services import access_log

    with open_app(load_settings(home=portal.world.home)) as app:
        seen = {
            (e.action, e.entry.subject)
            for e in access_log.show(app, identity="auditor")
            if e.entry is not None
        }
    for route in ("evidence-package", "checkpoints"):
        wanted = (
            f"GET /audit/engagements/{{engagement_id}}/{route}",
            f"engagement:{portal.engagement}",
        )
        assert wanted in seen, (wanted, sorted(seen))


def test_hand_made_posts_from_the_auditors_session_are_refused(
    portal: Portal, browser: Any
) -> None:
    """With the session's own valid anti-CSRF token, every mutating route but the auditor's
    own steps answers 403, and nothing is recorded."""
    size = _ledger_size(portal.world.home)
    tab = Watched(browser, portal.served.url)
    try:
        tab.login(portal.world, "auditor", next_path="/audit")
        token = _csrf(tab)
        assert token
        request = portal.overdue
        for path, fields in (
            ("/sources/anything/backups", {}),
            (f"/backups/{portal.old_backup}/holds", {"case": "X", "reason": "y"}),
            ("/approvals/rq-nothing/approve", {"code": "000000"}),
            ("/approvals/rq-nothing/veto", {"reason": "no"}),
            (f"/audit/requests/{request}/answers", {"note": "my own answer"}),
            (f"/audit/requests/{request}/upload", {"note": "a file"}),
            # the auditor's steps on another auditor's engagement: absent
            (f"/audit/engagements/{portal.other}/requests", {"title": "x", "due": "2099-01-01"}),
        ):
            kind = "multipart/form-data" if path.endswith("/upload") else FORM
            answer = _post_form(tab, path, {"csrf_token": token, **fields}, enctype=kind)
            expected = 404 if path.startswith(f"/audit/engagements/{portal.other}") else 403
            assert answer.status == expected, (path, answer.status)
        # a step the state machine does not allow (nothing was submitted): refused (409)
        answer = _post_form(tab, f"/audit/requests/{request}/accept", {"csrf_token": token})
        assert answer.status == 409
        # and without the token, even the auditor's own step is refused
        answer = _post_form(tab, f"/audit/requests/{request}/messages", {"text": "hello"})
        assert answer.status == 403
    finally:
        tab.close()
    assert _ledger_size(portal.world.home) == size


# -- evidence requests end to end --------------------------------------------------------------


def _download(tab: Watched, href: str) -> Any:
    return tab.context.request.get(tab.base + href)


def test_the_pbc_flow_raise_answer_with_an_upload_accept(
    portal: Portal, browser: Any, shots: Path
) -> None:
    world = portal.world
    auditor = Watched(browser, portal.served.url)
    owner = Watched(browser, portal.served.url)
    due = (datetime.now(UTC).date() + timedelta(days=7)).isoformat()
    try:
        # the auditor raises a request from the engagement's page
        auditor.login(world, "auditor", next_path=f"/audit/engagements/{portal.engagement}")
        auditor.page.fill("#r-title", "Backup restore evidence <b>Q4</b>")
        auditor.page.fill("#r-detail", "the restore logs of the quarter")
        auditor.page.fill("#r-due", due)
        auditor.page.fill("#r-items", "restore log\nsign-off")
        with auditor.page.expect_navigation():
            auditor.page.click("#raise-form button[type=submit]")
        assert "/audit/requests/pbc-" in auditor.page.url and "done=raised" in auditor.page.url
        request_id = auditor.page.url.split("/audit/requests/", 1)[1].split("?", 1)[0]
        assert auditor.page.get_by_text("Backup restore evidence <b>Q4</b>").count() >= 1
        assert "open" in auditor.page.inner_text("#request-state")
        assert auditor.page.locator("#answer-form, #upload-form").count() == 0
        assert auditor.axe() == []

        # the owner sees it in the list (the overdue one marked) and answers with a file
        owner.login(world, "operator", next_path="/audit/requests")
        _check_page(owner, "/audit/requests")
        overdue_row = owner.page.locator(
            f"#requests tr.overdue:has(a[href='/audit/requests/{portal.overdue}'])"
        )
        assert overdue_row.count() == 1
        assert "overdue" in owner.page.inner_text("#overdue-count")
        screenshot(owner.page, shots, "b0-owner-requests-list")
        _check_page(owner, "/audit")  # every engagement, for those who answer requests
        assert portal.other in owner.page.inner_text("#engagements")
        _check_page(owner, f"/audit/engagements/{portal.engagement}")
        assert owner.page.locator("#raise-form").count() == 0  # the auditor's alone
        _check_page(owner, f"/audit/requests/{request_id}")  # with the answer forms
        assert owner.page.locator("#answer-form, #upload-form").count() == 2
        assert owner.page.locator("#accept-form, #close-form").count() == 0
        screenshot(owner.page, shots, "b0-owner-request")
        # hostile files first: refused by their content, nothing stored or recorded
        size = _ledger_size(world.home)
        for name, data in (
            ("report.html", b"<!doctype html><script>alert(1)</script>"),
            ("chart.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
            ("notes.txt", b"#!/bin/sh\nrm -rf /\n"),
            ("evil.txt", b"harmless <script>alert(1)</script>"),
        ):
            owner.goto(f"/audit/requests/{request_id}")
            owner.page.set_input_files(
                "#up-file", files=[{"name": name, "mimeType": "text/plain", "buffer": data}]
            )
            with owner.page.expect_navigation() as refused:
                owner.page.click("#upload-form button[type=submit]")
            assert refused.value.status == 400, (name, refused.value.status)
            assert "not an allowed type" in owner.page.inner_text("main"), name
            assert owner.dialogs == []
        assert _ledger_size(world.home) == size
        owner.goto(f"/audit/requests/{request_id}")
        content = b"date,restore,seconds\n2026-12-01,ok,41\n"
        owner.page.set_input_files(
            "#up-file",
            files=[{"name": "restore-log.csv", "mimeType": "text/csv", "buffer": content}],
        )
        owner.page.fill("#up-note", "the quarter's restores")
        with owner.page.expect_navigation():
            owner.page.click("#upload-form button[type=submit]")
        assert "done=uploaded" in owner.page.url, owner.page.url
        assert "submitted" in owner.page.inner_text("#request-state")
        link = owner.page.locator("#thread a[href*='/files/']")
        assert link.count() == 1 and link.inner_text() == "restore-log.csv"
        assert owner.axe() == []
        assert owner.csp_violations() == []
        screenshot(owner.page, shots, "b1-owner-answered")
        # an answer with a record affidavit holds, kept in progress; one it does not hold
        # is refused (404), nothing recorded
        owner.goto(f"/audit/requests/{portal.overdue}")
        owner.page.fill("#ans-verification", "vf-no-such-record")
        with owner.page.expect_navigation() as missing:
            owner.page.click("#answer-form button[type=submit]")
        assert missing.value.status == 404
        owner.goto(f"/audit/requests/{portal.overdue}")
        owner.page.fill("#ans-verification", portal.inside)
        owner.page.fill("#ans-note", "the quarter's verification, more to come")
        owner.page.check("#answer-form input[name=submit][value=no]")
        with owner.page.expect_navigation():
            owner.page.click("#answer-form button[type=submit]")
        assert "done=answered" in owner.page.url
        assert "in_progress" in owner.page.inner_text("#request-state")
        assert portal.inside in owner.page.inner_text("#thread")

        # the auditor downloads it (an attachment, never inline) and accepts
        auditor.goto(f"/audit/requests/{request_id}")
        href = auditor.page.locator("#thread a[href*='/files/']").get_attribute("href") or ""
        got = _download(auditor, href)
        assert got.status == 200
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert got.body() == content
        screenshot(auditor.page, shots, "b2-auditor-review")
        auditor.page.fill("#a-note", "complete")
        with auditor.page.expect_navigation():
            auditor.page.click("#accept-form button[type=submit]")
        assert "accepted" in auditor.page.inner_text("#request-state")
        auditor.page.fill("#m-text", "thank you")
        with auditor.page.expect_navigation():
            auditor.page.click("#message-form button[type=submit]")
        assert "thank you" in auditor.page.inner_text("#thread")
        assert auditor.axe() == []
        assert auditor.csp_violations() == []
        screenshot(auditor.page, shots, "b3-auditor-accepted")
        auditor.page.fill("#c-note", "done")
        with auditor.page.expect_navigation():
            auditor.page.click("#close-form button[type=submit]")
        assert "closed" in auditor.page.inner_text("#request-state")
        assert auditor.page.locator("main form[method=post]").count() == 0  # nothing left
    finally:
        auditor.close()
        owner.close()
    subject = f"audit-request:{request_id}"
    trail = [
        (e["action"], e["actor"])
        for action in (
            "audit.request_opened",
            "audit.request_answered",
            "audit.request_accepted",
            "audit.request_message",
            "audit.request_closed",
        )
        for e in _events(world.home, action)
        if e["subject"] == subject
    ]
    assert trail == [
        ("audit.request_opened", "auditor"),
        ("audit.request_answered", "operator"),
        ("audit.request_accepted", "auditor"),
        ("audit.request_message", "auditor"),
        ("audit.request_closed", "auditor"),
    ]
    answered = next(
        e for e in _events(world.home, "audit.request_answered") if e["subject"] == subject
    )
    (stored,) = answered["details"]["artifacts"]
    assert stored["name"] == "restore-log.csv" and stored["size"] == len(content)
    vault_files = [p for p in Path(world.home).rglob("*.age") if stored["ref"] in p.name]
    for found in vault_files:
        assert content not in found.read_bytes()  # encrypted at rest


def test_an_upload_without_its_token_is_refused(portal: Portal, browser: Any) -> None:
    """The multipart form's anti-CSRF field is checked like a plain form's: removed from the
    page's form before it is sent, the upload is refused (403), nothing recorded."""
    size = _ledger_size(portal.world.home)
    owner = Watched(browser, portal.served.url)
    try:
        owner.login(portal.world, "operator", next_path=f"/audit/requests/{portal.overdue}")
        owner.page.evaluate(
            "() => document.querySelector('#upload-form input[name=csrf_token]').remove()"
        )
        owner.page.set_input_files(
            "#up-file", files=[{"name": "a.txt", "mimeType": "text/plain", "buffer": b"hello\n"}]
        )
        with owner.page.expect_navigation() as refused:
            owner.page.click("#upload-form button[type=submit]")
        assert refused.value.status == 403
    finally:
        owner.close()
    assert _ledger_size(portal.world.home) == size


# -- the calendar ------------------------------------------------------------------------------


def test_the_calendar_month_grid(portal: Portal, browser: Any, shots: Path) -> None:
    tab = Watched(browser, portal.served.url)
    today = datetime.now(UTC).date()
    due = today - timedelta(days=2)  # the overdue request's day
    try:
        tab.login(portal.world, "operator", next_path=f"/calendar?month={due:%Y-%m}")
        _check_page(tab, f"/calendar?month={due:%Y-%m}")
        assert tab.page.locator("#month thead th").count() == 7
        weeks = tab.page.locator("#month tbody tr")
        assert 4 <= weeks.count() <= 6
        for i in range(weeks.count()):
            assert weeks.nth(i).locator("td").count() == 7
        cell = tab.page.locator(f"#month td[data-day='{due.isoformat()}']")
        assert "has-overdue" in (cell.get_attribute("class") or "")
        item = cell.locator("li.item.overdue a", has_text="Quarterly access review")
        assert item.count() == 1
        assert item.get_attribute("href") == f"/audit/requests/{portal.overdue}"
        screenshot(tab.page, shots, "c0-calendar")
        with tab.page.expect_navigation():
            tab.page.click("#month-next")
        following = date(due.year + due.month // 12, due.month % 12 + 1, 1)
        assert tab.page.url.endswith(f"/calendar?month={following:%Y-%m}")
        with tab.page.expect_navigation():
            tab.page.click("#month-previous")
        assert tab.page.url.endswith(f"/calendar?month={due:%Y-%m}")
        ics = tab.page.locator("#ics-feed").get_attribute("href") or ""
        feed = tab.context.request.get(tab.base + ics)
        assert feed.status == 200 and feed.headers["content-type"].startswith("text/calendar")
        assert b"BEGIN:VCALENDAR" in feed.body()
        # bad months: a page saying so, no 500
        for month in ("2026-13", "x", "99999-01", "0-01"):
            response = tab.goto(f"/calendar?month={month}")
            assert response is not None and response.status in (400, 422), month
        assert tab.csp_violations() == []
        tab.goto("/audit/requests")
        with tab.page.expect_navigation():
            tab.page.click("header nav a:has-text('Calendar')")
        assert tab.page.locator(f"#month td.today[data-day='{today.isoformat()}']").count() == 1
    finally:
        tab.close()
