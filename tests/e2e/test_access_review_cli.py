"""``affidavit access review`` end to end through the CLI: a review started by a security
officer, decisions (one's own refused), a close that a security officer cannot apply and an
administrator does (the revocation through the approval path, here a recorded waiver: there is
no second administrator), a second close refused, and the access controls in ``policy check``
(local-mode approvals reported as not authenticated)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyotp
import pytest

from affidavit.crypto import totp

pytestmark = pytest.mark.e2e

Cli = Callable[..., Any]
PASSWORD = "review passphrase 1"
POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return json.loads(result.out) if result.out.lstrip().startswith("{") else result


def _refused(result: Any, text: str) -> None:
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err and text in result.err, result.err


def _actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [r[0] for r in db.execute("SELECT action FROM ledger_entries ORDER BY seq")]


def _enrol(cli: Cli, name: str, pw: str, step: int) -> list[str]:
    begun = _ok(cli("user", "totp-enroll", name, "--begin", "--json", "--as-password-file", pw))
    secret = pyotp.parse_uri(begun["uri"]).secret
    done = _ok(cli("user", "totp-enroll", name, "--code", pyotp.TOTP(secret).generate_otp(step),
                   "--json", "--as-password-file", pw))  # fmt: skip
    return list(done["recovery_codes"])


def test_an_access_review_from_start_to_close(cli: Cli, home: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, 0o600)
    step = totp.time_step(datetime.now(UTC))
    _ok(cli("user", "add", "alice", "--password-file", str(pw), "--json"))
    alice_codes = iter(_enrol(cli, "alice", str(pw), step))

    def alice() -> list[str]:
        return ["--as", "alice", "--as-password-file", str(pw), "--as-code", next(alice_codes)]

    for name, role in (("dave", "security_officer"), ("bob", "operator")):
        _ok(cli("user", "add", name, "--password-file", str(pw), *alice()))
        _ok(cli("role", "grant", name, role, "--json", *alice()))  # alone: waived
    dave_codes = iter(_enrol(cli, "dave", str(pw), step))

    def dave() -> list[str]:
        return ["--as", "dave", "--as-password-file", str(pw), "--as-code", next(dave_codes)]

    # start: every account holding a role, with what it used
    review = _ok(cli("access", "review", "start", "--lookback-days", "30", "--json", *dave()))
    rid = review["id"]
    accounts = {a["account"]: a for a in review["accounts"]}
    assert set(accounts) == {"alice", "bob", "dave"}
    assert accounts["bob"]["unused_roles"] == ["operator"]
    assert {"role.grant", "account.manage"} <= set(accounts["alice"]["used"])
    assert any("bob: role operator unused" in f for f in review["findings"])

    # decisions: one's own access and grants the review does not list are refused
    _ok(cli("access", "review", "decide", rid, "bob", "operator", "revoke",
            "--justification", "ran no backup in 30 days", *dave()))  # fmt: skip
    _ok(cli("access", "review", "decide", rid, "alice", "admin", "keep",
            "--justification", "the only administrator", *dave()))  # fmt: skip
    _refused(cli("access", "review", "decide", rid, "dave", "security_officer", "keep",
                 "--justification", "me", *dave()), "their own access")  # fmt: skip
    _refused(cli("access", "review", "decide", rid, "bob", "admin", "keep",
                 "--justification", "x", *dave()), "not a grant")  # fmt: skip
    _refused(cli("access", "review", "decide", rid, "bob", "operator", "keep", *dave()),
             "justification")  # fmt: skip

    # close: revoking needs an administrator (role.grant with a fresh TOTP check)
    _refused(cli("access", "review", "close", rid, *dave()), "role.grant")
    closed = _ok(cli("access", "review", "close", rid, "--json", *alice()))
    outcomes = {(o["account"], o["role"]): o for o in closed["closed"]["outcomes"]}
    assert outcomes[("bob", "operator")]["outcome"] == "revoked"  # nobody else could approve
    assert outcomes[("alice", "admin")]["outcome"] == "kept"
    assert outcomes[("dave", "security_officer")]["outcome"] == "undecided"
    _refused(cli("access", "review", "close", rid, *alice()), "closed")
    listed = _ok(cli("access", "review", "show", "--json", *dave()))
    assert [(r["id"], r["state"]) for r in listed["reviews"]] == [(rid, "closed")]
    shown = cli("access", "review", "show", rid, *dave())
    assert shown.code == 0 and "privilege creep" in shown.out, shown.err
    actions = _actions(home)
    assert actions.count("access_review.decided") == 2
    assert {"access_review.started", "access_review.closed", "role.revoked",
            "approval.waived"} <= set(actions)  # fmt: skip

    # the controls, under a policy proposed and approved locally (as asserted actors)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    _ok(cli("--actor", "p1", "policy", "propose", str(policy)))
    _ok(cli("--actor", "p2", "policy", "approve", "1"))
    check = cli("policy", "check", "--offline", "--json")
    assert check.code == 1, check.err
    results = {(r["control"], r["subject"]): r for r in json.loads(check.out)["results"]}
    assert results[("access.reviewed", "access-review")]["status"] == "pass"
    assert results[("access.least_privilege", "account:alice")]["status"] == "pass"
    assert ("access.least_privilege", "account:bob") not in results  # no role left
    assert results[("access.mfa_enforced", "account:dave")]["status"] == "pass"
    local = [r for (c, _), r in results.items() if c == "access.segregation_of_duties"
             and "not authenticated (local mode)" in r["message"]]  # fmt: skip
    assert [r["status"] for r in local] == ["fail"] and "policy.approved" in local[0]["message"]
    assert any("approval waived" in r["message"] for (c, _), r in results.items()
               if c == "access.segregation_of_duties")  # fmt: skip
    assert _ok(cli("ledger", "verify", "--json"))["ok"] is True
