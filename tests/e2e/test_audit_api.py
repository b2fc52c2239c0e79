"""Audit engagements and evidence requests through a real ``affidavit serve`` (docs/audit.md):
an administrator opens engagements for two auditors; each auditor sees its own engagement's
window only (records, proofs, checkpoints, the evidence package built on demand), nothing of
the other's, nothing once expired, and every read is in the access log; mutating routes
refuse the auditor, a viewer cannot open an engagement; the PBC workflow through its states,
illegal transitions refused with 409 and nothing recorded; an upload through the CLI stored
encrypted in the vault and downloaded (never inline) by the auditor."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from server_harness import CLIENT, PASSWORD, Served, World, make_world, password_file, serving

from affidavit.cli.main import main
from affidavit.config import load_settings
from affidavit.errors import NotFound
from affidavit.models.permissions import Role
from affidavit.services import access_log, audit, roles
from affidavit.services import identity as idn
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

TODAY = datetime.now(UTC).date()


def ledger_size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("select count(*) from ledger_entries").fetchone()[0])


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


@dataclass
class Audit:
    served: Served
    world: World
    a: str  # engagement of `auditor`: the last 30 days to the next 30
    b: str  # engagement of `outsider` (by e-mail address): 2025's first half, long ago
    expired: str  # engagement of `auditor` that expired yesterday
    vault: Path


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def engaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audit]:
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        root = tmp_path_factory.mktemp("audit")
        home = root / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        vault = root / "vault"
        assert main(["--home", str(home), "vault", "add", "v1", "--url", f"file://{vault}"]) == 0
        with open_app(load_settings(home=home)) as app:
            admin = world.admin(app)
            idn.create_account(app, admin, "outsider", password=PASSWORD,
                               email="Ext.Auditor@audit.example")  # fmt: skip
            roles.grant_role(app, admin, "outsider", Role.AUDITOR)
            past = datetime.now(UTC) - timedelta(days=3)
            expired = audit.open_engagement(
                app, admin, start=str(TODAY - timedelta(days=30)), end=str(TODAY),
                framework="soc2", auditor="auditor",
                expires=str(TODAY - timedelta(days=1)), now=past,
            )  # fmt: skip
        with serving(home) as served, served.client() as http:
            admin_s = world.session(http, "admin")
            opened = http.post(
                "/audit/engagements",
                json={"from": str(TODAY - timedelta(days=30)), "to": str(TODAY + timedelta(days=30)),
                      "framework": "soc2", "auditor": "auditor",
                      "expires": str(TODAY + timedelta(days=60)), "reason": "SOC 2 type II"},
                headers=admin_s.bearer,
            )  # fmt: skip
            assert opened.status_code == 201, opened.text
            other = http.post(
                "/audit/engagements",
                json={"from": "2025-01-01", "to": "2025-06-30", "framework": "iso-27001",
                      "auditor": "ext.auditor@AUDIT.example",
                      "expires": str(TODAY + timedelta(days=60))},
                headers=admin_s.bearer,
            )  # fmt: skip
            assert other.status_code == 201, other.text
            assert other.json()["auditor"] == "outsider"
            yield Audit(served, world, opened.json()["id"], other.json()["id"],
                        expired.id, vault)  # fmt: skip


def _outsider(http: Any) -> dict[str, str]:
    answer = http.post("/auth/login", json={"name": "outsider", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return _bearer(answer.json()["secret"])


def test_the_engagement_binds_the_auditors_account_and_never_its_email(engaged: Audit) -> None:
    opened = {e["subject"]: e for e in events(engaged.world.home, "audit.opened")}
    a, b = opened[f"audit:{engaged.a}"], opened[f"audit:{engaged.b}"]
    assert a["actor"] == "admin"
    assert a["details"]["auth"] == "session"
    assert (a["details"]["auditor"], b["details"]["auditor"]) == ("auditor", "outsider")
    assert a["details"]["auditor_id"] != b["details"]["auditor_id"]
    assert "audit.example" not in json.dumps(b).lower()  # the e-mail stays in the catalog


def test_each_auditor_sees_its_own_window_only(engaged: Audit) -> None:
    world, a, b = engaged.world, engaged.a, engaged.b
    with engaged.served.client() as http:
        mine = world.session(http, "auditor").bearer
        theirs = _outsider(http)
        listed = http.get("/audit/engagements", headers=mine).json()["engagements"]
        assert [e["id"] for e in listed] == [a]  # not b, not the expired one
        assert [e["id"] for e in http.get("/audit/engagements", headers=theirs).json()
                ["engagements"]] == [b]  # fmt: skip
        shown = http.get(f"/audit/engagements/{a}", headers=mine)
        assert shown.status_code == 200, shown.text
        assert shown.json()["state"] == "open"
        for path in ("", "/controls", "/verifications", "/drills", "/checkpoints"):
            assert http.get(f"/audit/engagements/{a}{path}", headers=mine).status_code == 200
            refused = http.get(f"/audit/engagements/{a}{path}", headers=theirs)
            assert refused.status_code == 404, (path, refused.text)
            assert refused.json()["error"] == f"no audit engagement '{a}'"
        controls = http.get(f"/audit/engagements/{a}/controls", headers=mine).json()
        assert controls["framework"] == "soc2"
        assert controls["controls"]
        # a proof of an event in A's window; the same seq is outside B's window
        seq = next(e["seq"] for e in events(world.home, "audit.opened")
                   if e["subject"] == f"audit:{a}")  # fmt: skip
        proof = http.get(f"/audit/engagements/{a}/proofs/{seq}", headers=mine)
        assert proof.status_code == 200, proof.text
        assert proof.json()["verified"] is True
        assert proof.json()["seq"] == seq
        outside = http.get(f"/audit/engagements/{b}/proofs/{seq}", headers=theirs)
        assert outside.status_code == 404, outside.text
        assert "window" in outside.json()["error"]
        checkpoints = http.get(f"/audit/engagements/{b}/checkpoints", headers=theirs).json()
        assert checkpoints["window_end"] is None  # the ledger began after B's window
        assert checkpoints["current"].startswith(checkpoints["current"].split("\n")[0])
        # the expired engagement is gone for its own auditor
        gone = http.get(f"/audit/engagements/{engaged.expired}", headers=mine)
        assert gone.status_code == 404
        # an administrator sees every engagement, expired ones with their state
        admin = world.session(http, "admin").bearer
        every = {e["id"]: e["state"] for e in
                 http.get("/audit/engagements", headers=admin).json()["engagements"]}  # fmt: skip
        assert every == {a: "open", b: "open", engaged.expired: "expired"}
    logged = {(e["identity"], e["route"], e["subject"], e["status"])
              for e in _access(world.home)}  # fmt: skip
    route = "/api/v1/audit/engagements/{engagement_id}/proofs/{seq}"
    assert ("auditor", route, f"engagement:{a}", 200) in logged
    assert ("outsider", route, f"engagement:{b}", 404) in logged
    assert ("auditor", "/api/v1/audit/engagements/{engagement_id}/controls",
            f"engagement:{a}", 200) in logged  # fmt: skip


def _access(home: Path) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        return [e.to_json() for e in access_log.show(app)]


def test_access_ends_by_itself_at_the_expiry(engaged: Audit) -> None:
    with open_app(load_settings(home=engaged.world.home)) as app:
        auditor = idn.login(
            app, "auditor", PASSWORD, engaged.world.code("auditor"), client=CLIENT
        ).principal
        later = datetime.now(UTC) + timedelta(days=61)
        assert audit.get_engagement(app, auditor, engaged.a).id == engaged.a
        with pytest.raises(NotFound):
            audit.get_engagement(app, auditor, engaged.a, now=later)
        assert audit.list_engagements(app, auditor, now=later) == []
        assert audit.list_requests(app, auditor, now=later) == []


def test_no_auditor_changes_anything_and_a_viewer_opens_no_engagement(engaged: Audit) -> None:
    world = engaged.world
    body = {"from": "2026-01-01", "to": "2026-01-31", "framework": "soc2", "auditor": "auditor",
            "expires": str(TODAY + timedelta(days=5))}  # fmt: skip
    with engaged.served.client() as http:
        auditor = world.session(http, "auditor").bearer
        viewer = world.session(http, "viewer").bearer
        size = ledger_size(world.home)
        for who in (auditor, viewer):
            answer = http.post("/audit/engagements", json=body, headers=who)
            assert answer.status_code == 403, answer.text
            assert answer.json()["exit_code"] == 2
        for path, payload in ((f"/audit/engagements/{engaged.a}/close", {}),
                              ("/audit/requests/pbc-x/answers", {"note": "mine"})):  # fmt: skip
            assert http.post(path, json=payload, headers=auditor).status_code == 403
        assert http.get("/audit/engagements", headers=viewer).status_code == 403
        assert ledger_size(world.home) == size
    denied = [(e["identity"], e["route"]) for e in _access(world.home) if e["status"] == 403]
    assert ("auditor", "/api/v1/audit/engagements") in denied
    assert ("viewer", "/api/v1/audit/engagements") in denied
    assert ("auditor", "/api/v1/audit/engagements/{engagement_id}/close") in denied


def test_the_evidence_package_of_the_window_is_built_on_demand(engaged: Audit) -> None:
    world = engaged.world
    with engaged.served.client() as http:
        auditor = world.session(http, "auditor").bearer
        got = http.get(f"/audit/engagements/{engaged.a}/evidence-package", headers=auditor)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/gzip"
        assert "attachment" in got.headers["content-disposition"]
        assert hashlib.sha256(got.content).hexdigest() == got.headers["x-affidavit-sha256"]
        gzip.decompress(got.content)  # a real archive
        refused = http.get(f"/audit/engagements/{engaged.a}/evidence-package",
                           headers=_outsider(http))  # fmt: skip
        assert refused.status_code == 404
    built = events(world.home, "evidence.built")[-1]
    assert built["actor"] == "auditor"
    assert built["details"]["framework"] == "soc2"
    logged = [e for e in _access(world.home)
              if e["route"].endswith("/evidence-package") and e["identity"] == "auditor"]  # fmt: skip
    assert logged
    assert logged[-1]["subject"] == f"engagement:{engaged.a}"


def test_an_evidence_request_goes_through_its_states(engaged: Audit) -> None:
    world, a = engaged.world, engaged.a
    with engaged.served.client() as http:
        auditor = world.session(http, "auditor").bearer
        operator = world.session(http, "operator").bearer
        package = http.get(f"/audit/engagements/{a}/evidence-package", headers=auditor)
        package_id = package.headers["x-affidavit-package"]
        # only the engagement's auditor raises requests, in its own open engagement
        ask = {"engagement": a, "title": "Backup policy", "detail": "the approved version",
               "due": str(TODAY + timedelta(days=7)), "items": ["policy", "approval"]}  # fmt: skip
        assert http.post("/audit/requests", json=ask, headers=operator).status_code == 403
        assert http.post("/audit/requests", json={**ask, "engagement": engaged.b},
                         headers=auditor).status_code == 404  # fmt: skip
        opened = http.post("/audit/requests", json=ask, headers=auditor)
        assert opened.status_code == 201, opened.text
        rid = opened.json()["id"]
        assert opened.json()["state"] == "open"
        assert http.get(f"/audit/requests/{rid}", headers=_outsider(http)).status_code == 404

        def step(path: str, body: dict[str, Any], who: dict[str, str], status: int = 200) -> Any:
            size = ledger_size(world.home)
            answer = http.post(f"/audit/requests/{rid}/{path}", json=body, headers=who)
            assert answer.status_code == status, (path, answer.text)
            if status >= 400:
                assert answer.json()["exit_code"] == 2
                assert ledger_size(world.home) == size  # nothing recorded
            return answer.json()

        assert "cannot be accepted" in step("accept", {}, auditor, 409)["error"]
        step("close", {}, auditor, 409)
        assert step("answers", {"note": "on it", "submit": False}, operator)["state"] == (
            "in_progress"
        )
        step("answers", {"artifacts": [{"kind": "drill", "ref": "dr-none"}]}, operator, 404)
        submitted = step(
            "answers",
            {"artifacts": [{"kind": "evidence-package", "ref": package_id}], "note": "here"},
            operator,
        )
        assert submitted["state"] == "submitted"
        assert submitted["artifacts"] == [{"kind": "evidence-package", "ref": package_id}]
        step("accept", {}, operator, 403)  # the owners never judge their own answer
        step("answers", {"note": "again"}, operator, 409)
        assert step("return", {"reason": "wrong period"}, auditor)["state"] == "returned"
        assert step("messages", {"text": "which period?"}, operator)["state"] == "returned"
        assert step("answers", {"note": "the right one"}, operator)["state"] == "submitted"
        assert step("accept", {"note": "thanks"}, auditor)["state"] == "accepted"
        closed = step("close", {}, auditor)
        assert closed["state"] == "closed"
        assert closed["answered_in_time"] is True
        step("messages", {"text": "late"}, auditor, 409)
        kinds = [t["kind"] for t in closed["thread"]]
        assert kinds == ["answer", "submit", "return", "message", "submit", "accept", "close"]
        viewer = world.session(http, "viewer").bearer
        assert http.get("/audit/requests", headers=viewer).status_code == 403
    for action, actor in (("audit.request_opened", "auditor"),
                          ("audit.request_answered", "operator"),
                          ("audit.request_returned", "auditor"),
                          ("audit.request_accepted", "auditor"),
                          ("audit.request_closed", "auditor"),
                          ("audit.request_message", "operator")):  # fmt: skip
        mine = [e for e in events(world.home, action) if e["subject"] == f"audit-request:{rid}"]
        assert mine, action
        assert {e["actor"] for e in mine} == {actor}
        assert all(e["details"]["auth"] == "session" for e in mine)


def _cli(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_an_upload_is_sniffed_hashed_encrypted_and_only_downloaded(
    engaged: Audit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = engaged.world
    home = world.home
    pw = password_file(tmp_path)
    with open_app(load_settings(home=home)) as app:
        auditor = idn.login(
            app, "auditor", PASSWORD, world.code("auditor"), client=CLIENT
        ).principal
        rid = audit.open_request(app, auditor, engaged.a, title="Restore evidence",
                                 due=TODAY + timedelta(days=3)).id  # fmt: skip
    as_operator = ["--as", "operator", "--as-password-file", str(pw)]
    size = ledger_size(home)
    hostile = tmp_path / "notes.txt"
    hostile.write_bytes(b"<html><script>alert(1)</script></html>")
    disguised = tmp_path / "report.pdf"
    disguised.write_bytes(b"just text, not a PDF\n")
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (10 * 1024 * 1024 + 1))
    for bad in (hostile, disguised, big):
        capsys.readouterr()
        code = _cli(home, "audit", "request", "answer", rid, "--file", str(bad), *as_operator,
                    "--as-code", world.code("operator"))  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err
    assert not list(engaged.vault.rglob("*.age"))  # nothing stored
    # the refused answers recorded nothing but the logins of --as
    answered = [e for e in events(home, "audit.request_answered")
                if e["subject"] == f"audit-request:{rid}"]  # fmt: skip
    assert answered == []
    assert ledger_size(home) > size
    pdf = b"%PDF-1.4\n% restore drill report\n1 0 obj << >> endobj\n%%EOF\n"
    good = tmp_path / "drill-report.pdf"
    good.write_bytes(pdf)
    # a good file with an artifact that does not exist: refused, and the stored file removed
    capsys.readouterr()
    code = _cli(home, "audit", "request", "answer", rid, "--file", str(good), "--drill",
                "dr-none", *as_operator, "--as-code", world.code("operator"))  # fmt: skip
    assert code == 2, capsys.readouterr().err
    assert not list(engaged.vault.rglob("*.age"))
    capsys.readouterr()
    code = _cli(home, "audit", "request", "answer", rid, "--file", str(good), "--note", "Q3",
                *as_operator, "--as-code", world.code("operator"), "--json")  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    shown = json.loads(out.out)
    assert shown["state"] == "submitted"
    (uploaded,) = shown["artifacts"]
    assert uploaded["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert (uploaded["media_type"], uploaded["size"], uploaded["name"]) == (
        "application/pdf", len(pdf), "drill-report.pdf")  # fmt: skip
    stored = list(engaged.vault.rglob("*.age"))
    assert len(stored) == 1
    assert b"restore drill report" not in stored[0].read_bytes()  # encrypted at rest
    assert stored[0].read_bytes().startswith(b"age-encryption.org/v1")
    with engaged.served.client() as http:
        got = http.get(f"/audit/requests/{rid}/files/{uploaded['ref']}",
                       headers=world.session(http, "auditor").bearer)  # fmt: skip
        assert got.status_code == 200, got.text
        assert got.content == pdf
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment")
        assert got.headers["x-affidavit-sha256"] == uploaded["sha256"]
        assert http.get(f"/audit/requests/{rid}/files/{uploaded['ref']}",
                        headers=_outsider(http)).status_code == 404  # fmt: skip
    event = next(e for e in events(home, "audit.request_answered")
                 if e["subject"] == f"audit-request:{rid}")  # fmt: skip
    assert event["actor"] == "operator"
    assert event["details"]["artifacts"][0]["wrapped"]["ciphertext"]


def test_bad_input_is_refused_with_a_hint_and_nothing_recorded(
    engaged: Audit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = engaged.world.home
    pw = password_file(tmp_path)
    cases = [
        ["audit", "open", "--from", "2026-02-01", "--to", "2026-01-01", "--framework", "soc2",
         "--auditor", "auditor", "--expires", str(TODAY + timedelta(days=9))],
        ["audit", "open", "--from", "2026-01-01", "--to", "2026-02-01", "--framework", "nope",
         "--auditor", "auditor", "--expires", str(TODAY + timedelta(days=9))],
        ["audit", "open", "--from", "2026-01-01", "--to", "2026-02-01", "--framework", "soc2",
         "--auditor", "viewer", "--expires", str(TODAY + timedelta(days=9))],
        ["audit", "open", "--from", "2026-01-01", "--to", "2026-02-01", "--framework", "soc2",
         "--auditor", "auditor", "--expires", "2020-01-01"],
    ]  # fmt: skip
    for args in cases:
        size = ledger_size(home)
        capsys.readouterr()
        code = _cli(home, *args, "--as", "admin", "--as-password-file", str(pw), "--as-code",
                    engaged.world.code("admin"))  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert "Traceback" not in err
        # only the --as login and logout were recorded
        assert ledger_size(home) - size <= 2, args
        assert not [e for e in events(home, "audit.opened") if e["seq"] >= size]
    capsys.readouterr()
    # without --as: the local OS user is not authenticated
    assert _cli(home, "audit", "list") == 2
    assert "authenticated identity" in capsys.readouterr().err


def test_the_cli_on_the_host_and_closing_an_engagement(
    engaged: Audit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs last: it closes engagement B, and the outsider's access ends at once."""
    world, b = engaged.world, engaged.b
    home = world.home
    pw = str(password_file(tmp_path))
    outsider = ["--as", "outsider", "--as-password-file", pw]  # no TOTP enrolled: no code

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = _cli(home, *args)
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        return code, out.out, out.err

    code, out, err = run("audit", "request", "open", b, "--title", "ISMS scope",
                         "--due", str(TODAY + timedelta(days=2)), "--item", "scope statement",
                         *outsider, "--json")  # fmt: skip
    assert code == 0, err
    rid = json.loads(out)["id"]
    size = ledger_size(home)
    code, _, err = run("audit", "request", "close", rid, *outsider)
    assert code == 2
    assert "cannot be closed" in err
    assert not [e for e in events(home, "audit.request_closed") if e["seq"] >= size]
    code, out, err = run("audit", "request", "message", rid, "--text", "PDF please", *outsider,
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["thread"][-1]["text"] == "PDF please"
    code, out, _ = run("audit", "show", b, *outsider, "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)["requests"]] == [rid]
    code, out, _ = run("audit", "request", "list", "--state", "open", *outsider, "--json")
    assert [r["id"] for r in json.loads(out)["requests"]] == [rid]
    assert run("audit", "request", "list", "--state", "bogus", *outsider)[0] == 2
    reads = [(e["identity"], e["route"], e["subject"]) for e in _access(home)]
    assert ("outsider", "cli audit show", f"engagement:{b}") in reads
    # the outsider cannot read engagement A on the host either
    code, _, err = run("audit", "show", engaged.a, *outsider)
    assert code == 2
    assert "no audit engagement" in err
    # an administrator closes B: the outsider's access ends at once, a second close is 409
    admin = ["--as", "admin", "--as-password-file", pw]
    code, out, err = run("audit", "close", b, "--reason", "fieldwork done", *admin,
                         "--as-code", world.code("admin"), "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["state"] == "closed"
    assert run("audit", "close", b, *admin, "--as-code", world.code("admin"))[0] == 2
    with engaged.served.client() as http:
        assert http.get(f"/audit/engagements/{b}", headers=_outsider(http)).status_code == 404
        gone = http.post(f"/audit/requests/{rid}/messages", json={"text": "still there?"},
                         headers=_outsider(http))  # fmt: skip
        assert gone.status_code == 404
