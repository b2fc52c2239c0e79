"""Attacks on authenticating a bearer from one statement (``catalog/identities.py:
bearer_session/bearer_token``, ``services/identity.py: authenticate_session/token``): rows
written behind affidavit's back by someone who can write the catalog but cannot sign ledger
events.

The world is test_approvals' (alice and carol: administrators; dave, erin, gina: security
officers; frank: approver; ci-bot: a service account, operator). What must hold: a role row
the ledger does not vouch for counts for nothing; a disabled account's or a deleted
account's session authenticates nobody; a token moved onto a human account authenticates
nobody; a second row of a role is refused by the catalog itself; a role revoked in the
ledger and re-inserted as a row counts for nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.unit.identity.homes import build_template, copied
from tests.unit.identity.test_approvals import People, _build
from tests.unit.identity.test_attacks import db
from tests.unit.identity.test_attacks_approvals_2 import _revoke, _session

from affidavit.errors import AuthenticationFailed
from affidavit.models.permissions import Permission, Role
from affidavit.services import identity as idn


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return build_template(tmp_path_factory, "bearer-attacks", _build)


@pytest.fixture
def people(
    template: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[People]:
    with copied(template[0], tmp_path, monkeypatch) as (app, home):
        yield People(app, home, dict(template[1]))


def _account_id(p: People, name: str) -> str:
    with db(p.home) as con:
        return str(con.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()[0])


def _add_role_row(p: People, name: str, role: Role) -> None:
    with db(p.home) as con:
        con.execute(
            "INSERT INTO role_grants (account_id, role, granted_at, granted_by) "
            "VALUES (?, ?, '2026-12-01 12:00:00.000000', 'alice')",
            (_account_id(p, name), role.value),
        )


def test_a_role_row_inserted_behind_affidavits_back_counts_for_nothing(people: People) -> None:
    secret, before = _session(people, "frank")
    assert Role.ADMIN not in before.roles
    _add_role_row(people, "frank", Role.ADMIN)
    principal = idn.authenticate_session(people.app, secret, now=before.mfa_at)
    assert principal.roles == before.roles == frozenset({Role.APPROVER})
    assert Permission.ROLE_GRANT not in principal.permissions


def test_a_second_row_of_a_role_is_refused_by_the_catalog(people: People) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        _add_role_row(people, "dave", Role.SECURITY_OFFICER)


def test_a_revoked_role_reinserted_as_a_row_counts_for_nothing(people: People) -> None:
    _revoke(people, "frank", Role.APPROVER)
    secret, before = _session(people, "frank")
    assert before.roles == frozenset()
    _add_role_row(people, "frank", Role.APPROVER)
    principal = idn.authenticate_session(people.app, secret, now=before.mfa_at)
    assert principal.roles == frozenset()
    assert Permission.REQUEST_APPROVE not in principal.permissions


def test_a_disabled_accounts_session_authenticates_nobody(people: People) -> None:
    secret, before = _session(people, "erin")
    with db(people.home) as con:
        con.execute(
            "UPDATE accounts SET disabled_at = '2026-12-01 12:00:00.000000' WHERE name = 'erin'"
        )
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(people.app, secret, now=before.mfa_at)


def test_a_session_whose_account_row_is_gone_authenticates_nobody(people: People) -> None:
    secret, before = _session(people, "gina")
    with db(people.home) as con:
        con.execute("PRAGMA foreign_keys = OFF")  # the session row stays, its account goes
        con.execute("DELETE FROM accounts WHERE name = 'gina'")
        assert con.execute("SELECT count(*) FROM sessions").fetchone()[0] > 0
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(people.app, secret, now=before.mfa_at)


def test_a_token_moved_onto_a_human_account_authenticates_nobody(people: People) -> None:
    alice = people.login("alice")
    issued = idn.create_token(
        people.app, alice, "ci-bot", {Permission.BACKUP_READ}, timedelta(days=1), now=alice.mfa_at
    )
    assert idn.authenticate_token(people.app, issued.secret, now=alice.mfa_at).name == "ci-bot"
    with db(people.home) as con:
        con.execute(
            "UPDATE api_tokens SET account_id = ? WHERE id = ?",
            (_account_id(people, "carol"), issued.token.id),
        )
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_token(people.app, issued.secret, now=alice.mfa_at)
    with pytest.raises(AuthenticationFailed):  # nor as a session secret
        idn.authenticate_session(people.app, issued.secret, now=alice.mfa_at)
