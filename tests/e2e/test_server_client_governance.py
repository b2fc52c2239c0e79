"""Access reviews, the ledger and the access log through a real ``affidavit serve`` in client
mode: each command prints through the server exactly what it prints locally (tables,
``--json``, exit codes), every permission is tried by someone who lacks it (refused, exit 2,
nothing changed, the denial in the access log), bad input is one line with a hint, and a read
of a ledger proof is in the access log as a read of that proof."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from server_harness import Served, World, make_world, password_file, serving

from affidavit.config import load_settings
from affidavit.services import access_log
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e


@dataclass
class Setup:
    cli: Any
    served: Served
    world: World
    password: Path

    @property
    def remote(self) -> tuple[str, str]:
        return ("--server", self.served.url)

    def login(self, name: str) -> None:
        done = self.cli("login", self.served.url, "--name", name, "--password-file",
                        str(self.password), "--code", self.world.code(name))  # fmt: skip
        assert done.code == 0, done.err

    def as_(self, name: str) -> tuple[str, ...]:
        """A local command's ``--as`` login as ``name``."""
        return ("--as", name, "--as-password-file", str(self.password),
                "--as-code", self.world.code(name))  # fmt: skip

    def same(self, *args: str, as_name: str | None = None) -> Any:
        """Run ``args`` locally (as ``as_name`` when given) and through the server (as the
        logged-in account); both print the same and exit the same. The remote result."""
        local = self.cli(*args, *(self.as_(as_name) if as_name else ()))
        through = self.cli(*self.remote, *args)
        assert (through.code, through.out) == (local.code, local.out), (args, through.err)
        assert through.err == local.err, args
        return through

    def refused(self, *args: str, text: str) -> Any:
        result = self.cli(*self.remote, *args)
        assert result.code == 2, (args, result.out, result.err)
        assert text in result.err, result.err
        assert "Traceback" not in result.err
        assert len([line for line in result.err.splitlines() if line.strip()]) <= 2, result.err
        return result


@pytest.fixture
def setup(cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    password = password_file(tmp_path)
    with serving(home) as served:
        yield Setup(cli=cli, served=served, world=world, password=password)


def _events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("select entry from ledger_entries where action = ? order by seq",
                          (action,))  # fmt: skip
        return [json.loads(e) for (e,) in rows]


def _access(home: Path) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        return [e.to_json() for e in access_log.show(app)]


def _denied(home: Path, identity: str, method: str, route: str) -> list[dict[str, Any]]:
    return [
        e
        for e in _access(home)
        if (e.get("identity"), e.get("method"), e.get("route"), e.get("outcome"))
        == (identity, method, route, "denied")
    ]


def test_access_reviews_through_the_server(setup: Setup) -> None:
    home = setup.world.home
    setup.login("security_officer")
    started = setup.cli(*setup.remote, "access", "review", "start", "--lookback-days", "30",
                        "--json")  # fmt: skip
    assert started.code == 0, started.err
    review = json.loads(started.out)
    rid = review["id"]
    event = _events(home, "access_review.started")[-1]
    assert (event["actor"], event["details"]["auth"]) == ("security_officer", "session")
    assert {a["account"] for a in review["accounts"]} >= {"viewer", "auditor", "operator"}

    # bad input: one line and a hint, nothing recorded
    setup.refused("access", "review", "start", "--lookback-days", "0", text="look-back window")
    setup.refused("access", "review", "decide", rid, "nobody", "viewer", "keep",
                  "--justification", "x", text="is not a grant")  # fmt: skip
    setup.refused("access", "review", "show", "ar-missing", text="no access review")
    setup.refused("access", "review", "show", *setup.as_("auditor"), text="--as logs in on this")
    setup.refused("access", "review", "decide", rid, "security_officer", "security_officer",
                  "keep", "--justification", "mine", text="nobody decides on their own access")  # fmt: skip
    assert len(_events(home, "access_review.started")) == 1
    assert _events(home, "access_review.decided") == []

    decided = setup.cli(*setup.remote, "access", "review", "decide", rid, "viewer", "viewer",
                        "revoke", "--justification", "never used")  # fmt: skip
    assert decided.code == 0, decided.err
    assert f"Recorded: revoke viewer / viewer in review {rid}" in decided.out
    # a security officer may decide but not apply a revocation (role.grant): refused, open
    setup.refused("access", "review", "close", rid, text="may not role.grant")
    assert _events(home, "access_review.closed") == []

    # the security officer reads reviews (account.read) exactly as locally
    for args in (
        ("access", "review", "show"),
        ("access", "review", "show", "--json"),
        ("access", "review", "show", rid),
        ("access", "review", "show", rid, "--json"),
    ):
        setup.same(*args, as_name="security_officer")
    # an auditor reads through its audit engagements only: no review, and changes nothing
    setup.login("auditor")
    setup.refused("access", "review", "show", rid, text="may not account.read")
    setup.refused("access", "review", "start", text="may not access.review")
    setup.refused("access", "review", "decide", rid, "operator", "operator", "keep",
                  "--justification", "x", text="may not access.review")  # fmt: skip
    setup.refused("access", "review", "close", rid, text="may not access.review")
    assert len(_events(home, "access_review.started")) == 1
    assert len(_events(home, "access_review.decided")) == 1
    for route in ("/api/v1/access-reviews", "/api/v1/access-reviews/{access_review_id}/close"):
        assert _denied(home, "auditor", "POST", route), route
    # a viewer holds no account.read: cannot even read them
    setup.login("viewer")
    setup.refused("access", "review", "show", rid, text="may not account.read")
    setup.refused("access", "review", "show", text="may not account.read")
    denied = _denied(home, "viewer", "GET", "/api/v1/access-reviews/{access_review_id}")
    assert [e["subject"] for e in denied] == [f"access-review:{rid}"]

    # the administrator closes it, with a step-up: the revocation goes the approval path
    setup.login("admin")
    closed = setup.cli(*setup.remote, "access", "review", "close", rid, "--code",
                       setup.world.code("admin"), "--json")  # fmt: skip
    assert closed.code == 0, closed.err
    outcomes = {(o["account"], o["role"]): o for o in json.loads(closed.out)["closed"]["outcomes"]}
    assert outcomes[("viewer", "viewer")]["outcome"] in ("revoked", "pending")
    assert _events(home, "access_review.closed")[-1]["actor"] == "admin"
    setup.refused("access", "review", "close", rid, text="was closed")
    setup.same("access", "review", "show", rid, "--json", as_name="admin")


def test_ledger_and_access_log_through_the_server(setup: Setup) -> None:
    home = setup.world.home
    before = datetime.now(UTC) - timedelta(seconds=1)
    # an auditor reads through its audit engagements only: not the whole ledger or log
    setup.login("auditor")
    setup.refused("ledger", "show", "--limit", "1", text="may not ledger.read")
    setup.refused("ledger", "proof", "--seq", "3", text="may not ledger.read")
    setup.refused("access-log", "show", text="may not access_log.read")
    assert _denied(home, "auditor", "GET", "/api/v1/ledger/proof/{seq}")
    setup.login("security_officer")
    for args in (
        ("ledger", "show", "--action", "role.granted"),
        ("ledger", "show", "--action", "role.granted", "--json"),
        ("ledger", "show", "--limit", "3", "--json"),
        ("ledger", "proof", "--seq", "3"),
        ("ledger", "proof", "--seq", "3", "--json"),
        ("access-log", "show", "--until", before.isoformat()),
        ("access-log", "show", "--until", before.isoformat(), "--json"),
        ("access-log", "show", "--identity", "nobody"),
    ):
        setup.same(*args)
    # reads of a proof are in the access log as reads of that proof, by the account
    proofs = [e for e in _access(home) if e.get("route") == "/api/v1/ledger/proof/{seq}"
              and e.get("outcome") == "allowed"]  # fmt: skip
    assert [(e["identity"], e["subject"], e["outcome"]) for e in proofs] == [
        ("security_officer", "ledger-proof:3", "allowed")
    ] * 2

    # verification: the same verdict and exit code with the server's key
    for command in ("ledger", "access-log"):
        local, through = (
            setup.cli(command, "verify", "--json"),
            setup.cli(*setup.remote, command, "verify", "--json"),
        )
        assert (local.code, through.code) == (0, 0), (command, through.err)
        mine, theirs = json.loads(local.out), json.loads(through.out)
        assert (theirs["ok"], theirs["key"], theirs["findings"]) == (True, mine["key"], [])
        shown = setup.cli(*setup.remote, command, "verify")
        assert (shown.code, shown.out.startswith("ok: ")) == (0, True), shown.out
    assert setup.cli(*setup.remote, "ledger", "verify", "--full").code == 0

    # bad input: the server's one line and hint, as locally; files stay on this host
    bad = setup.refused("ledger", "show", "--since", "yesterday", text="not an RFC 3339 time")
    assert bad.err == setup.cli("ledger", "show", "--since", "yesterday").err
    setup.refused("access-log", "show", "--since", "soon", text="--since")
    setup.refused("ledger", "proof", "--seq", "999999", text="999999")
    setup.refused("ledger", "verify", "--file", "export.jsonl", text="only locally")
    setup.refused("access-log", "verify", "--public-key", "k", text="only locally")

    # who may not: an operator reads the ledger but not the access log; a viewer neither
    setup.login("operator")
    assert setup.cli(*setup.remote, "ledger", "show", "--limit", "1").code == 0
    setup.refused("access-log", "show", text="may not access_log.read")
    setup.refused("access-log", "verify", text="may not access_log.read")
    setup.login("viewer")
    setup.refused("ledger", "show", text="may not ledger.read")
    setup.refused("ledger", "proof", "--seq", "1", text="may not ledger.read")
    setup.refused("ledger", "verify", text="may not ledger.read")
    assert _denied(home, "operator", "GET", "/api/v1/access-log")
    assert _denied(home, "operator", "GET", "/api/v1/access-log/verify")
    assert _denied(home, "viewer", "GET", "/api/v1/ledger/entries")
    denied = _denied(home, "viewer", "GET", "/api/v1/ledger/proof/{seq}")
    assert [e["subject"] for e in denied] == ["ledger-proof:1"]


def test_a_tampered_ledger_fails_its_verification_through_the_server(setup: Setup) -> None:
    """Exit 1 and the findings, as locally, when an entry was edited in the catalog."""
    home = setup.world.home
    setup.login("security_officer")
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update ledger_entries set entry = replace(entry, ?, ?) where seq = (select min(seq) "
            "from ledger_entries where action = 'role.granted' and instr(entry, ?) > 0)",
            ('"viewer"', '"admin"', '"viewer"'),
        )
    local = setup.cli("ledger", "verify")
    through = setup.cli(*setup.remote, "ledger", "verify")
    assert (local.code, through.code) == (1, 1), (local.err, through.err)
    assert "the ledger does not verify" in through.err
    assert through.out == local.out


def test_findings_and_exceptions_through_the_server(setup: Setup) -> None:
    home, cli = setup.world.home, setup.cli
    assert cli("policy", "check", "--offline").code == 1  # no policy yet: two findings
    found = json.loads(cli("finding", "list", "--json").out)["findings"]
    fid = next(f["id"] for f in found if f["control"] == "config.baseline")

    setup.login("viewer")  # policy.read: reads them exactly as locally
    for args in (
        ("finding", "list"),
        ("finding", "list", "--json"),
        ("finding", "list", "--all", "--json"),
        ("finding", "list", "--status", "acknowledged", "--json"),
        ("finding", "list", "--status", "open", "--status", "resolved"),
        ("finding", "show", fid),
        ("finding", "show", fid, "--json"),
        ("exception", "list"),
    ):
        setup.same(*args)
    setup.refused("finding", "show", "F-missing", text="F-missing")
    setup.refused("finding", "ack", fid, "--note", "mine", text="may not finding.manage")
    setup.refused("exception", "add", "backup.immutable", "*", "--reason", "r", "--expires",
                  "2999-01-01", text="may not exception.request")  # fmt: skip
    denied = _denied(home, "viewer", "POST", "/api/v1/findings/{finding_id}/ack")
    assert [e["subject"] for e in denied] == [f"finding:{fid}"]
    assert _denied(home, "viewer", "POST", "/api/v1/exceptions")

    setup.login("operator")
    setup.refused("finding", "ack", fid, "--note", "   ", text="a note is required")
    acked = cli(*setup.remote, "finding", "ack", fid, "--note", "booked")
    assert (acked.code, acked.out.strip()) == (0, f"Finding {fid} acknowledged."), acked.err
    assert _events(home, "finding.acknowledged")[-1]["actor"] == "operator"
    setup.refused("finding", "ack", fid, "--note", "twice", text="not open")
    assert len(_events(home, "finding.acknowledged")) == 1

    soon = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    for args, text in (
        (("no.such.control", "*"), "no.such.control"),
        (("backup.immutable", "*", "--expires", "2001-01-01"), "not in the future"),
        (("backup.immutable", "*", "--expires", "next week"), "--expires"),
    ):
        full = ("exception", "add", *args, "--reason", "migration")
        setup.refused(*full, *(() if "--expires" in args else ("--expires", soon)), text=text)
    assert _events(home, "exception.requested") == []
    asked = cli(*setup.remote, "exception", "add", "backup.immutable", "*", "--reason",
                "vault migration", "--expires", soon, "--json")  # fmt: skip
    assert asked.code == 0, asked.err
    exception = json.loads(asked.out)
    assert (exception["requested_by"], exception["status"]) == ("operator", "requested")
    assert _events(home, "exception.requested")[-1]["actor"] == "operator"
    setup.refused("exception", "revoke", exception["id"], "--reason", "r",
                  text="may not exception.revoke")  # fmt: skip
    assert _denied(home, "operator", "POST", "/api/v1/exceptions/{exception_id}/revoke")

    setup.login("security_officer")
    revoked = cli(*setup.remote, "exception", "revoke", exception["id"], "--reason", "done",
                  "--json")  # fmt: skip
    assert revoked.code == 0, revoked.err
    assert json.loads(revoked.out)["status"] == "revoked"
    setup.refused("exception", "revoke", exception["id"], "--reason", "again",
                  text="already revoked")  # fmt: skip
    assert len(_events(home, "exception.revoked")) == 1

    setup.login("operator")
    resolved = cli(*setup.remote, "finding", "resolve", fid, "--note", "baseline approved",
                   "--json")  # fmt: skip
    assert resolved.code == 0, resolved.err
    assert [s["actor"] for s in json.loads(resolved.out)["trail"]][-2:] == ["operator"] * 2
    setup.login("viewer")
    for args in (("exception", "list", "--json"), ("finding", "show", fid), ("finding", "list")):
        setup.same(*args)


POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)


def test_policy_through_the_server(setup: Setup, tmp_path: Path) -> None:
    home, cli = setup.world.home, setup.cli
    policy, broken = tmp_path / "policy.toml", tmp_path / "broken.toml"
    policy.write_text(POLICY, encoding="utf-8")
    broken.write_text("[levels\n", encoding="utf-8")

    setup.login("viewer")
    for args in (("policy", "list"), ("policy", "list", "--json"), ("policy", "show")):
        setup.same(*args)  # nothing yet: the same empty list, the same refusal (exit 2)
    setup.refused("policy", "propose", str(policy), text="may not policy.propose")
    setup.refused("policy", "check", "--offline", text="may not policy.check")
    assert _denied(home, "viewer", "POST", "/api/v1/policy/versions")
    assert _denied(home, "viewer", "POST", "/api/v1/policy/check")

    setup.login("operator")
    setup.refused("policy", "propose", str(broken), text="broken.toml")
    setup.refused("policy", "propose", str(tmp_path / "missing.toml"), text="does not exist")
    assert _events(home, "policy.proposed") == []
    proposed = cli(*setup.remote, "policy", "propose", str(policy), "--json")
    assert proposed.code == 0, proposed.err
    assert json.loads(proposed.out)["proposed_by"] == "operator"
    assert _events(home, "policy.proposed")[-1]["actor"] == "operator"
    setup.refused("policy", "propose", str(policy), text="already proposed as version 1")
    assert len(_events(home, "policy.proposed")) == 1

    setup.login("approver")
    approved = cli(*setup.remote, "policy", "approve", "1", "--json")
    assert approved.code == 0, approved.err
    setup.login("viewer")
    for args in (
        ("policy", "list"),
        ("policy", "list", "--json"),
        ("policy", "show"),
        ("policy", "show", "1", "--json"),
    ):
        setup.same(*args)
    assert setup.cli(*setup.remote, "policy", "show").out == POLICY
    setup.refused("policy", "show", "7", text="no such policy version")

    setup.login("operator")  # a check through the server: a result (exit 1), not an error
    checked = cli(*setup.remote, "policy", "check", "--offline")
    assert checked.code == 1, checked.err
    assert "config.baseline" in checked.out and "Policy check chk-" in checked.out
    as_json = cli(*setup.remote, "policy", "check", "--offline", "--json")
    assert as_json.code == 1
    outcome = json.loads(as_json.out)
    assert (outcome["ok"], outcome["policy_version"]) == (False, 1)
    assert [e["actor"] for e in _events(home, "policy.checked")] == ["operator", "operator"]


def test_baseline_and_schedule_through_the_server(setup: Setup) -> None:
    home, cli = setup.world.home, setup.cli
    setup.login("viewer")
    for args in (("baseline", "show"), ("due",), ("due", "--all", "--json")):
        setup.same(*args)  # no baseline yet (exit 2, the same message); nothing due
    setup.refused("baseline", "approve", "--note", "fine", text="may not baseline.approve")
    setup.refused("run-due", text="may not schedule.run_due")
    assert _denied(home, "viewer", "POST", "/api/v1/baselines")
    assert _denied(home, "viewer", "POST", "/api/v1/schedule/run-due")

    setup.login("approver")
    setup.refused("baseline", "approve", "--note", "   ", text="a note is required")
    assert _events(home, "baseline.approved") == []
    approved = cli(*setup.remote, "baseline", "approve", "--note", "as reviewed", "--code",
                   setup.world.code("approver"), "--json")  # fmt: skip
    assert approved.code == 0, approved.err
    assert json.loads(approved.out)["approved_by"] == "approver"
    event = _events(home, "baseline.approved")[-1]
    assert (event["actor"], event["details"]["note"]) == ("approver", "as reviewed")

    setup.login("viewer")
    for args in (("baseline", "show"), ("baseline", "show", "--json")):
        setup.same(*args)
    setup.login("operator")
    ran = setup.same("run-due")
    assert ran.out.strip() == "Nothing was due."
    assert setup.cli(*setup.remote, "run-due", "--json").code == 0


def test_accounts_roles_and_tokens_through_the_server(setup: Setup, tmp_path: Path) -> None:
    home, cli = setup.world.home, setup.cli
    weak = tmp_path / "weak"
    weak.write_text("short\n")
    weak.chmod(0o600)
    # an auditor reads through its audit engagements only: not the accounts
    setup.login("auditor")
    setup.refused("user", "list", text="may not account.read")
    setup.login("security_officer")  # account.read: reads exactly as locally, manages nothing
    for args in (
        ("user", "list"),
        ("user", "list", "--json"),
        ("role", "list"),
        ("role", "list", "--json"),
        ("token", "list"),
        ("token", "list", "ci-bot", "--json"),
    ):
        setup.same(*args, as_name="security_officer")
    size = len(_events(home, "account.created"))
    setup.refused("user", "add", "dora", "--password-file", str(setup.password),
                  text="may not account.manage")  # fmt: skip
    setup.refused("role", "grant", "viewer", "operator", text="may not role.grant")
    setup.refused("role", "revoke", "viewer", "viewer", text="may not role.grant")
    setup.refused("token", "create", "ci-bot", "--scope", "backup.read", "--expires-in", "1",
                  text="may not token.manage")  # fmt: skip
    setup.refused("token", "revoke", "tok-x", text="may not token.manage")
    assert len(_events(home, "account.created")) == size
    assert _events(home, "role.granted")[-1]["actor"] != "security_officer"
    for method, route in (
        ("POST", "/api/v1/accounts"),
        ("POST", "/api/v1/accounts/{name}/roles"),
        ("DELETE", "/api/v1/accounts/{name}/roles/{role}"),
        ("POST", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/{token_id}"),
    ):
        assert _denied(home, "security_officer", method, route), route

    setup.login("admin")
    setup.refused("user", "add", "dora", "--password-file", str(weak), text="password")
    setup.refused("user", "add", "viewer", "--password-file", str(setup.password),
                  text="viewer")  # fmt: skip
    assert len(_events(home, "account.created")) == size
    added = cli(*setup.remote, "user", "add", "dora", "--password-file", str(setup.password),
                "--json")  # fmt: skip
    assert added.code == 0, added.err
    assert json.loads(added.out) == {"account": json.loads(added.out)["account"],
                                     "bootstrapped": False}  # fmt: skip
    service = cli(*setup.remote, "user", "add", "eve-bot", "--service")
    assert (service.code, service.out.strip()) == (0, "Added service account eve-bot (no role).")
    assert [e["actor"] for e in _events(home, "account.created")][-2:] == ["admin", "admin"]

    code = setup.world.code("admin")
    setup.refused("role", "grant", "dora", "root", "--code", code, text="root")
    granted = cli(*setup.remote, "role", "grant", "dora", "viewer", "--json")
    assert granted.code == 0, granted.err
    grant = json.loads(granted.out)["grant"]
    event = _events(home, "role.granted")[-1]
    assert (grant["account"], grant["role"], grant["seq"]) == ("dora", "viewer", event["seq"])
    assert (event["actor"], event["details"]["auth"]) == ("admin", "session")
    revoked = cli(*setup.remote, "role", "revoke", "dora", "viewer")
    assert (revoked.code, revoked.out.strip()) == (0, "Revoked viewer from dora."), revoked.err
    assert _events(home, "role.revoked")[-1]["actor"] == "admin"

    setup.refused("token", "create", "eve-bot", "--scope", "no.such", "--expires-in", "1",
                  text="is not a permission")  # fmt: skip
    setup.refused(
        "token", "create", "eve-bot", "--scope", "backup.read", "--expires-in", "1", text="eve-bot"
    )  # fmt: skip  (a service account without a role)
    cli(*setup.remote, "role", "grant", "eve-bot", "viewer")
    created = cli(*setup.remote, "token", "create", "eve-bot", "--scope", "backup.read",
                  "--expires-in", "1", "--json")  # fmt: skip
    assert created.code == 0, created.err
    token = json.loads(created.out)
    assert token["secret"].startswith("afv_")
    listed = json.loads(cli(*setup.remote, "token", "list", "eve-bot", "--json").out)["tokens"]
    assert [t["id"] for t in listed] == [token["token"]["id"]]
    assert "afv_" not in cli(*setup.remote, "token", "list").out
    gone = cli(*setup.remote, "token", "revoke", token["token"]["id"])
    assert gone.code == 0, gone.err
    assert gone.out.strip() == f"Token {token['token']['id']} of eve-bot revoked."
    setup.refused("token", "revoke", token["token"]["id"], text="revoked already")
    assert _events(home, "token.revoked")[-1]["actor"] == "admin"
    setup.login("security_officer")
    setup.same("token", "list", "eve-bot", "--json", as_name="security_officer")
    setup.same("role", "list", as_name="security_officer")


def test_an_evidence_package_built_through_the_server(setup: Setup, tmp_path: Path) -> None:
    home, cli = setup.world.home, setup.cli
    period = ("--from", "2026-01-01", "--to", "2030-12-31")
    out = tmp_path / "pkg.tar.gz"
    setup.login("viewer")
    setup.refused("evidence", "build", *period, "--out", str(out), text="may not evidence.build")
    assert not out.exists()

    setup.login("operator")
    setup.refused("evidence", "build", *period, "--out", str(out), "--framework", "nope",
                  text="nope")  # fmt: skip
    out.write_bytes(b"mine")
    setup.refused("evidence", "build", *period, "--out", str(out), text="already exists")
    assert out.read_bytes() == b"mine"
    setup.refused("evidence", "build", *period, "--out", str(tmp_path / "no" / "p.tar.gz"),
                  text="does not exist")  # fmt: skip
    assert _events(home, "evidence.built") == []
    out.unlink()
    built = cli(*setup.remote, "evidence", "build", *period, "--out", str(out), "--json")
    assert built.code == 0, built.err
    summary = json.loads(built.out)
    assert summary["path"] == str(out) and "package" not in summary
    assert hashlib.sha256(out.read_bytes()).hexdigest() == summary["sha256"]
    assert out.stat().st_mode & 0o777 == 0o600
    event = _events(home, "evidence.built")[-1]
    assert (event["actor"], event["subject"]) == ("operator", f"evidence:{summary['sha256']}")
    downloads = [e for e in _access(home)
                 if e.get("route") == "/api/v1/evidence-packages/{evidence_package_id}"]  # fmt: skip
    assert [(e["identity"], e["outcome"]) for e in downloads] == [("operator", "allowed")]
    package = downloads[0]["subject"].removeprefix("evidence-package:")
    assert package.startswith("ev-")
    text = cli(*setup.remote, "evidence", "build", *period, "--out", str(tmp_path / "b.tgz"))
    assert text.code == 0 and text.out.startswith(f"Evidence package {tmp_path / 'b.tgz'}")
    # offline verification needs no server: it runs here in client mode too
    vkey = cli("ledger", "key").out.strip()
    checked = cli(*setup.remote, "evidence", "verify", str(out), "--public-key", vkey, "--json")
    assert checked.code in (0, 1) and "files" in json.loads(checked.out)["summary"]

    # who may fetch a package: whoever may verify one (an operator), not a viewer, nor an
    # auditor (who downloads its engagement's own package: docs/audit.md)
    with setup.served.client() as http:
        reader = setup.world.session(http, "operator").bearer
        fetched = http.get(f"/evidence-packages/{package}", headers=reader)
        assert fetched.status_code == 200 and fetched.content == out.read_bytes()
        for hostile in ("ev-..%2F..%2Fcatalog.sqlite", "ev-0000000000000000", "catalog"):
            assert http.get(f"/evidence-packages/{hostile}", headers=reader).status_code == 404
        for name in ("viewer", "auditor"):
            refused = setup.world.session(http, name).bearer
            assert http.get(f"/evidence-packages/{package}", headers=refused).status_code == 403
    assert _denied(home, "viewer", "GET", "/api/v1/evidence-packages/{evidence_package_id}")
