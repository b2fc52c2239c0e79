"""``affidavit user|role|token`` end to end: the first administrator on the host, TOTP
enrolment in two steps, logins with --as (TOTP and recovery codes), role grants, API tokens,
and refusals that print one line with a hint, exit 2 or 3, and show no traceback."""

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
PASSWORD = "admin passphrase 1"


def _secret_file(folder: Path, name: str, value: str) -> str:
    path = folder / name
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return str(path)


def _one_line_error(result: Any, code: int) -> None:
    assert result.code == code, (result.out, result.err)
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ")
    assert any(line.startswith("hint: ") for line in lines[1:]), result.err


def _actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [r[0] for r in db.execute("SELECT action FROM ledger_entries ORDER BY seq")]


def test_accounts_roles_and_tokens_from_the_cli(cli: Cli, home: Path, tmp_path: Path) -> None:
    pw = _secret_file(tmp_path, "pw", PASSWORD)
    acting = ["--as", "alice", "--as-password-file", pw]

    # the first administrator, created as the local OS user on the host
    result = cli("user", "add", "alice", "--password-file", pw, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["bootstrapped"] is True
    assert data["account"]["name"] == "alice"
    assert "identity.bootstrapped" in _actions(home)

    # after it, the local OS user manages nothing
    _one_line_error(cli("user", "add", "mallory", "--password-file", pw), 2)
    _one_line_error(cli("user", "list"), 2)

    # TOTP enrolment in two steps
    result = cli("user", "totp-enroll", "alice", "--begin", "--json", "--as-password-file", pw)
    assert result.code == 0, result.err
    uri = json.loads(result.out)["uri"]
    secret = pyotp.parse_uri(uri).secret
    assert uri.startswith("otpauth://totp/affidavit:alice?")
    base = totp.time_step(datetime.now(UTC))
    result = cli("user", "totp-enroll", "alice", "--code", pyotp.TOTP(secret).generate_otp(base),
                 "--json", "--as-password-file", pw)  # fmt: skip
    assert result.code == 0, result.err
    recovery = json.loads(result.out)["recovery_codes"]
    assert len(recovery) == 10

    # a login now needs the code: without it, or with a wrong password, exit 3
    _one_line_error(cli("user", "list", *acting, "--as-code", ""), 3)
    wrong = _secret_file(tmp_path, "wrong", "not the password at all")
    _one_line_error(
        cli("user", "list", "--as", "alice", "--as-password-file", wrong, "--as-code", "123456"),
        3,
    )

    # a service account, its role and a token, each by a real login
    result = cli("user", "add", "ci-bot", "--service", *acting,
                 "--as-code", pyotp.TOTP(secret).generate_otp(base + 1), "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["account"]["kind"] == "service"
    result = cli("role", "grant", "ci-bot", "operator", *acting, "--as-code", recovery[0],
                 "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["grant"]["role"] == "operator"
    _one_line_error(
        cli("role", "grant", "ci-bot", "approver", *acting, "--as-code", recovery[1]), 2
    )
    result = cli("token", "create", "ci-bot", "--scope", "backup.read", "--scope", "backup.run",
                 "--expires-in", "7", *acting, "--as-code", recovery[2], "--json")  # fmt: skip
    assert result.code == 0, result.err
    issued = json.loads(result.out)
    assert issued["secret"].startswith("afv_")
    assert issued["token"]["scopes"] == ["backup.read", "backup.run"]
    _one_line_error(cli("token", "create", "ci-bot", "--scope", "policy.approve",
                        "--expires-in", "7", *acting, "--as-code", recovery[3]), 2)  # fmt: skip
    _one_line_error(cli("token", "create", "ci-bot", "--scope", "everything",
                        "--expires-in", "7", *acting, "--as-code", recovery[4]), 2)  # fmt: skip

    # the lists
    result = cli("user", "list", "--json", *acting, "--as-code", recovery[5])
    assert result.code == 0, result.err
    accounts = {a["name"]: a for a in json.loads(result.out)["accounts"]}
    assert accounts["alice"]["totp_enrolled"] is True
    assert set(accounts) == {"alice", "ci-bot"}
    result = cli("role", "list", "--json", *acting, "--as-code", recovery[6])
    assert result.code == 0, result.err
    listed = {a["account"]: a["effective"] for a in json.loads(result.out)["accounts"]}
    assert listed == {"alice": ["admin"], "ci-bot": ["operator"]}
    result = cli("token", "list", "--json", *acting, "--as-code", recovery[7])
    assert result.code == 0, result.err
    (token,) = json.loads(result.out)["tokens"]
    assert "secret" not in token
    assert issued["secret"] not in result.out
    result = cli("token", "revoke", token["id"], *acting, "--as-code", recovery[8])
    assert result.code == 0, result.err

    # a used recovery code is refused
    _one_line_error(cli("user", "list", *acting, "--as-code", recovery[0]), 3)

    actions = _actions(home)
    for action in ("identity.totp_enrolled", "identity.login", "identity.login_failed",
                   "identity.logout", "account.created", "role.granted", "token.created",
                   "token.revoked"):  # fmt: skip
        assert action in actions, action
    result = cli("ledger", "verify", "--json")
    assert result.code == 0, result.err


def test_a_weak_password_and_a_bad_name_are_bad_input(cli: Cli, tmp_path: Path) -> None:
    weak = _secret_file(tmp_path, "weak", "short")
    _one_line_error(cli("user", "add", "alice", "--password-file", weak), 2)
    pw = _secret_file(tmp_path, "pw", PASSWORD)
    _one_line_error(cli("user", "add", "no spaces please", "--password-file", pw), 2)
    _one_line_error(cli("user", "add", "svc", "--service"), 2)
    loose = tmp_path / "loose"
    loose.write_text(PASSWORD)
    os.chmod(loose, 0o644)
    _one_line_error(cli("user", "add", "alice", "--password-file", str(loose)), 2)
