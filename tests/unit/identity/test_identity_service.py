"""The identity service on a real SQLite catalog with real argon2 and TOTP: every refusal
of issue 15 that applies here, and that each one changed nothing but the recorded failure.

The clock is injected (``now=``): TOTP codes are computed for fixed moments.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.constants import ExitCode
from affidavit.crypto import totp
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    CatalogRowDamaged,
    InputError,
    KeystoreError,
    StepUpRequired,
)
from affidavit.models.identity import AccountKind, AuthMethod, Principal
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import Permission, Role
from affidavit.services import identity as idn
from affidavit.services import principals, roles
from affidavit.services.context import App

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
CLIENT = ClientInfo(address="192.0.2.7", agent="pytest")
ADMIN_PW = "admin passphrase 1"
BOB_PW = "operator passphrase 22"
TABLES = (
    "accounts",
    "role_grants",
    "api_tokens",
    "sessions",
    "recovery_codes",
    "totp_credentials",
    "login_failures",
    "ledger_entries",
)


@contextmanager
def db(home: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


def snapshot(home: Path) -> dict[str, Any]:
    """Every identity row and the ledger's size: what a refusal must leave as it was."""
    with db(home) as con:
        out: dict[str, Any] = {
            t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in TABLES
            if t != "ledger_entries"
        }
        out["ledger"] = con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
    return out


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with db(home) as con:
        rows = con.execute(
            "SELECT entry FROM ledger_entries WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


def code(secret: str, at: datetime) -> str:
    return totp.code_at(secret, at)


@dataclass
class World:
    """An administrator (alice, TOTP enrolled) and an operator (bob, no TOTP)."""

    app: App
    home: Path
    secret: str  # alice's TOTP secret
    admin: Principal  # logged in with TOTP at T0 + 60 s (fresh MFA)
    recovery: tuple[str, ...]

    def login_admin(self, at: datetime) -> Principal:
        return idn.login(
            self.app, "alice", ADMIN_PW, code(self.secret, at), client=CLIENT, now=at
        ).principal


@pytest.fixture
def world(app: App, home: Path) -> World:
    local = principals.local_principal(app)
    idn.bootstrap_admin(app, local, "alice", ADMIN_PW, email="alice@example.com", now=T0)
    first = idn.login(app, "alice", ADMIN_PW, client=CLIENT, now=T0)
    enrolment = idn.begin_totp(app, first.principal, "alice", now=T0)
    recovery = idn.confirm_totp(app, first.principal, "alice", code(enrolment.secret, T0), now=T0)
    at = T0 + timedelta(seconds=60)
    admin = idn.login(
        app, "alice", ADMIN_PW, code(enrolment.secret, at), client=CLIENT, now=at
    ).principal
    idn.create_account(app, admin, "bob", password=BOB_PW, now=at)
    roles.grant_role(app, admin, "bob", Role.OPERATOR, now=at)
    return World(app=app, home=home, secret=enrolment.secret, admin=admin, recovery=recovery)


# -- local mode and bootstrap ----------------------------------------------------------------


def test_the_local_os_user_is_not_authenticated_and_holds_nothing(app: App) -> None:
    local = principals.local_principal(app)
    assert local.method is AuthMethod.LOCAL_OS_USER
    assert not local.authenticated
    assert local.permissions == frozenset()
    with pytest.raises(AccessDenied, match="authenticated identity"):
        principals.authorize(local, Permission.BACKUP_READ)
    with pytest.raises(AccessDenied):
        idn.list_accounts(app, local)


def test_bootstrap_creates_the_first_admin_once_and_records_it(app: App, home: Path) -> None:
    local = principals.local_principal(app)
    account = idn.bootstrap_admin(app, local, "Alice", ADMIN_PW, now=T0)
    assert account.name == "alice"
    (event,) = events(home, "identity.bootstrapped")
    assert event["actor"] == "tester@example.com"
    assert event["details"]["auth"] == "local-os-user"
    assert event["details"]["role"] == "admin"
    assert ADMIN_PW not in json.dumps(event)
    before = snapshot(home)
    with pytest.raises(AccessDenied, match="accounts exist already"):
        idn.bootstrap_admin(app, local, "mallory", "a strong passphrase", now=T0)
    assert snapshot(home) == before


def test_bootstrap_refuses_an_authenticated_caller_and_a_weak_password(
    world: World,
) -> None:
    before = snapshot(world.home)
    with pytest.raises(AccessDenied, match="host that owns the home"):
        idn.bootstrap_admin(world.app, world.admin, "eve", "a strong passphrase")
    assert snapshot(world.home) == before


def test_a_weak_password_is_refused_before_anything_is_written(app: App, home: Path) -> None:
    before = snapshot(home)
    with pytest.raises(InputError, match="shorter than 12"):
        idn.bootstrap_admin(app, principals.local_principal(app), "alice", "short", now=T0)
    assert snapshot(home) == before


# -- logins --------------------------------------------------------------------------------------


def test_login_with_password_and_totp_opens_a_session(world: World) -> None:
    at = T0 + timedelta(minutes=5)
    grant = idn.login(world.app, "alice", ADMIN_PW, code(world.secret, at), client=CLIENT, now=at)
    assert grant.secret.startswith("afs_")
    assert grant.principal.method is AuthMethod.PASSWORD_TOTP
    assert grant.principal.mfa_at == at
    assert Role.ADMIN in grant.principal.roles
    assert grant.secret not in repr(grant)
    with db(world.home) as con:
        stored = con.execute("SELECT secret_sha256 FROM sessions WHERE id = ?",
                             (grant.session.id,)).fetchone()[0]  # fmt: skip
        assert grant.secret not in stored
        everything = b"".join(bytes(r[0]) for r in con.execute("SELECT entry FROM ledger_entries"))
    assert grant.secret.encode() not in everything
    event = events(world.home, "identity.login")[-1]
    assert event["client"] == {"address": "192.0.2.7", "agent": "pytest"}
    assert event["details"]["mfa"] is True


@pytest.mark.parametrize(
    ("password", "which_code", "reason"),
    [
        ("wrong passphrase!!", "now", "password"),
        (ADMIN_PW, "wrong", "totp"),
        (ADMIN_PW, "none", "totp-missing"),
        (ADMIN_PW, "replayed", "totp-replayed"),
        (ADMIN_PW, "older", "totp-replayed"),
        (ADMIN_PW, "bogus-recovery", "recovery-code"),
    ],
)
def test_a_refused_login_records_only_the_failure(
    world: World, password: str, which_code: str, reason: str
) -> None:
    at = T0 + timedelta(seconds=62)  # same step as the admin's last login (T0 + 60 s)
    codes = {
        "now": code(world.secret, at),
        "wrong": f"{(int(code(world.secret, at)) + 1) % 1_000_000:06d}",
        "none": "",
        "replayed": code(world.secret, T0 + timedelta(seconds=60)),
        "older": code(world.secret, T0 + timedelta(seconds=30)),
        "bogus-recovery": "ABCD-EFGH-JKLM-NPQR",
    }
    before = snapshot(world.home)
    with pytest.raises(AuthenticationFailed) as caught:
        idn.login(world.app, "alice", password, codes[which_code], client=CLIENT, now=at)
    assert caught.value.exit_code == ExitCode.CANNOT_RUN
    assert "wrong name, password or code" in caught.value.message
    after = snapshot(world.home)
    assert after["ledger"] == before["ledger"] + 1  # the failure, one event
    failed = events(world.home, "identity.login_failed")
    assert len(failed) == 1
    assert failed[0]["details"]["reason"] == reason
    assert failed[0]["actor"] == "anonymous"
    assert password not in json.dumps(failed)
    assert after["sessions"] == before["sessions"]  # no session
    assert after["totp_credentials"] == before["totp_credentials"]  # no step accepted
    assert len(after["login_failures"]) == 1


def test_an_unknown_name_is_recorded_without_the_name(world: World) -> None:
    with pytest.raises(AuthenticationFailed):
        idn.login(world.app, "hunter2-typed-as-a-name", "x" * 12, client=CLIENT, now=T0)
    (failed,) = events(world.home, "identity.login_failed")
    assert failed["subject"] == "identity:login"
    assert "hunter2" not in json.dumps(failed)
    with pytest.raises(AuthenticationFailed):
        idn.login(world.app, "not a valid name!", "x", client=CLIENT, now=T0)


def test_a_recovery_code_logs_in_once(world: World) -> None:
    at = T0 + timedelta(minutes=3)
    grant = idn.login(world.app, "alice", ADMIN_PW, world.recovery[0], client=CLIENT, now=at)
    assert grant.principal.method is AuthMethod.PASSWORD_RECOVERY
    assert grant.principal.mfa_at == at
    assert events(world.home, "identity.login")[-1]["details"]["recovery_codes_left"] == 9
    with pytest.raises(AuthenticationFailed):
        idn.login(world.app, "alice", ADMIN_PW, world.recovery[0], client=CLIENT, now=at)
    assert events(world.home, "identity.login_failed")[-1]["details"]["reason"] == "recovery-code"


def test_an_account_without_totp_logs_in_without_mfa(world: World) -> None:
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    assert grant.principal.method is AuthMethod.PASSWORD
    assert grant.principal.mfa_at is None
    assert grant.principal.roles == {Role.OPERATOR}
    assert Permission.BACKUP_RUN in grant.principal.permissions


def test_brute_force_locks_the_account_and_the_lock_expires_and_doubles(world: World) -> None:
    at = T0 + timedelta(minutes=10)
    for i in range(idn.LOCKOUT_THRESHOLD):
        with pytest.raises(AuthenticationFailed):
            idn.login(world.app, "bob", f"guess number {i}!", client=CLIENT, now=at)
    failed = events(world.home, "identity.login_failed")
    assert len(failed) == 5
    assert failed[-1]["details"]["locked_until"] == (at + timedelta(minutes=15)).isoformat()
    # locked: even the right password is refused, and nothing at all is written
    before = snapshot(world.home)
    for _ in range(20):
        with pytest.raises(AuthenticationFailed):
            idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at + timedelta(minutes=14))
    assert snapshot(world.home) == before
    with world.app.read() as uow:
        assert uow.identities.account("bob").locked(at + timedelta(minutes=14))
    # the lock expires; five more failures lock for twice as long
    later = at + timedelta(minutes=16)
    for i in range(idn.LOCKOUT_THRESHOLD):
        with pytest.raises(AuthenticationFailed):
            idn.login(world.app, "bob", f"guess again {i}!!", client=CLIENT, now=later)
    failed = events(world.home, "identity.login_failed")
    assert failed[-1]["details"]["locked_until"] == (later + timedelta(minutes=30)).isoformat()
    assert failed[-1]["details"]["lockout"] == 2
    # after it, the right password works and resets the count
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=later + timedelta(minutes=31))
    assert grant.principal.name == "bob"
    with db(world.home) as con:
        assert con.execute("SELECT count(*) FROM login_failures WHERE key != '*unknown*'"
                           ).fetchone()[0] == 0  # fmt: skip


def test_unknown_names_share_one_lockout(world: World) -> None:
    for i in range(idn.LOCKOUT_THRESHOLD):
        with pytest.raises(AuthenticationFailed):
            idn.login(world.app, f"ghost{i}", "some password!", client=CLIENT, now=T0)
    before = snapshot(world.home)
    for i in range(50):  # a spray of names fills nothing while the lock holds
        with pytest.raises(AuthenticationFailed):
            idn.login(world.app, f"spray{i}", "some password!", client=CLIENT, now=T0)
    assert snapshot(world.home) == before
    # real accounts are not locked by it
    assert idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0).principal.name == "bob"


def test_a_disabled_account_cannot_log_in_and_its_sessions_end(world: World) -> None:
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    idn.disable_account(world.app, world.admin, "bob", reason="left the company",
                        now=T0 + timedelta(seconds=61))  # fmt: skip
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(world.app, grant.secret, now=T0 + timedelta(seconds=62))
    with pytest.raises(AuthenticationFailed):
        idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0 + timedelta(seconds=62))
    assert events(world.home, "identity.login_failed")[-1]["details"]["reason"] == "disabled"


def test_the_last_admin_cannot_be_disabled(world: World) -> None:
    before = snapshot(world.home)
    with pytest.raises(AccessDenied, match="last enabled administrator"):
        idn.disable_account(world.app, world.admin, "alice", reason="oops")
    assert snapshot(world.home) == before


# -- sessions and step-up --------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_at_their_absolute_limit(world: World) -> None:
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    principal = idn.authenticate_session(world.app, grant.secret, now=T0 + timedelta(minutes=29))
    assert principal.method is AuthMethod.SESSION
    assert principal.session_id == grant.session.id
    # used at 29 min: idle until 59 min
    idn.authenticate_session(world.app, grant.secret, now=T0 + timedelta(minutes=58))
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(world.app, grant.secret, now=T0 + timedelta(minutes=89))
    # kept busy, it still ends after 12 hours
    other = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    at = T0
    while at + timedelta(minutes=20) < T0 + timedelta(hours=12):
        at += timedelta(minutes=20)
        idn.authenticate_session(world.app, other.secret, now=at)
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(world.app, other.secret, now=T0 + timedelta(hours=12))


def test_wrong_logged_out_and_forged_session_secrets_are_refused(world: World) -> None:
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    forged = grant.secret[:-4] + ("AAAA" if not grant.secret.endswith("AAAA") else "BBBB")
    for bad in (forged, "afs_0123456789abcdef_x", "nonsense", ""):
        with pytest.raises(AuthenticationFailed):
            idn.authenticate_session(world.app, bad, now=T0)
    idn.logout(world.app, grant.principal, now=T0)
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(world.app, grant.secret, now=T0)
    assert events(world.home, "identity.logout")


def test_step_up_refreshes_mfa_and_refuses_wrong_and_replayed_codes(world: World) -> None:
    at = T0 + timedelta(minutes=30)
    stale = idn.authenticate_session(
        world.app,
        idn.login(world.app, "alice", ADMIN_PW, code(world.secret, at), client=CLIENT,
                  now=at).secret,
        now=at + timedelta(minutes=10),
    )  # fmt: skip
    later = at + timedelta(minutes=10)
    with pytest.raises(StepUpRequired):
        principals.require_fresh_mfa(stale, now=later)
    before = snapshot(world.home)
    with pytest.raises(AuthenticationFailed):
        idn.step_up(world.app, stale, code(world.secret, at), now=later)  # an old code
    assert snapshot(world.home)["ledger"] > before["ledger"]
    assert events(world.home, "identity.step_up_failed")[-1]["details"]["reason"] == "totp"
    fresh = idn.step_up(world.app, stale, code(world.secret, later), now=later)
    assert fresh.mfa_at == later
    principals.require_fresh_mfa(fresh, now=later + timedelta(minutes=4))
    with pytest.raises(AuthenticationFailed):  # the same code again: a replay
        idn.step_up(world.app, stale, code(world.secret, later), now=later + timedelta(seconds=5))
    assert events(world.home, "identity.step_up_failed")[-1]["details"]["reason"] == (
        "totp-replayed"
    )
    again = idn.authenticate_session(
        world.app,
        idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=later).secret,
        now=later,
    )
    with pytest.raises(InputError, match="no TOTP enrolled"):
        idn.step_up(world.app, again, "123456", now=later)


# -- roles ---------------------------------------------------------------------------------------


def test_a_non_admin_cannot_grant_a_role(world: World) -> None:
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0).principal
    before = snapshot(world.home)
    with pytest.raises(AccessDenied, match=r"may not role\.grant"):
        roles.grant_role(world.app, bob, "bob", Role.ADMIN, now=T0)
    with pytest.raises(AccessDenied):
        idn.create_account(world.app, bob, "eve", password="a strong passphrase")
    assert snapshot(world.home) == before


def test_a_grant_needs_a_fresh_mfa_check(world: World) -> None:
    idn.create_account(world.app, world.admin, "carol", password="a strong passphrase")
    before = snapshot(world.home)
    later = T0 + timedelta(minutes=30)
    with pytest.raises(StepUpRequired) as caught:
        roles.grant_role(world.app, world.admin, "carol", Role.APPROVER, now=later)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    session_only = idn.authenticate_session(
        world.app, idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=later).secret, now=later
    )
    assert session_only.mfa_at is None
    assert snapshot(world.home)["role_grants"] == before["role_grants"]
    fresh = world.login_admin(later)
    grant = roles.grant_role(world.app, fresh, "carol", Role.APPROVER, now=later)
    assert grant.seq is not None
    (event,) = [e for e in events(world.home, "role.granted") if e["subject"] == "account:carol"]
    assert event["actor"] == "alice"
    assert event["details"]["auth"] == "password+totp"
    assert roles.roles_of(world.app, fresh, "carol") == {Role.APPROVER}


def test_a_service_account_never_gets_an_approving_role(world: World) -> None:
    idn.create_account(world.app, world.admin, "ci-bot", kind=AccountKind.SERVICE)
    before = snapshot(world.home)
    for role in (Role.APPROVER, Role.ADMIN, Role.SECURITY_OFFICER):
        with pytest.raises(AccessDenied, match="service account can never hold"):
            roles.grant_role(world.app, world.admin, "ci-bot", role,
                             now=T0 + timedelta(seconds=61))  # fmt: skip
    assert snapshot(world.home) == before
    roles.grant_role(world.app, world.admin, "ci-bot", Role.OPERATOR,
                     now=T0 + timedelta(seconds=61))  # fmt: skip


def test_nobody_grants_themselves_and_the_last_admin_keeps_admin(world: World) -> None:
    at = T0 + timedelta(seconds=61)
    before = snapshot(world.home)
    with pytest.raises(AccessDenied, match="own account"):
        roles.grant_role(world.app, world.admin, "alice", Role.APPROVER, now=at)
    with pytest.raises(AccessDenied, match="last enabled administrator"):
        roles.revoke_role(world.app, world.admin, "alice", Role.ADMIN, now=at)
    with pytest.raises(AlreadyExists):
        roles.grant_role(world.app, world.admin, "bob", Role.OPERATOR, now=at)
    with pytest.raises(InputError, match="not a role"):
        roles.grant_role(world.app, world.admin, "bob", "god", now=at)
    assert snapshot(world.home) == before
    roles.revoke_role(world.app, world.admin, "bob", Role.OPERATOR, now=at)
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at).principal
    assert bob.roles == frozenset()
    assert bob.permissions == frozenset()
    assert events(world.home, "role.revoked")


def test_a_role_row_the_ledger_does_not_confirm_counts_for_nothing(world: World) -> None:
    """Someone who can write the catalog but not sign events gives bob admin: no effect."""
    with db(world.home) as con:
        bob_id = con.execute("SELECT id FROM accounts WHERE name = 'bob'").fetchone()[0]
        con.execute(
            "INSERT INTO role_grants (account_id, role, granted_at, granted_by, seq) "
            "VALUES (?, 'admin', '2026-12-01 12:00:00.000000', 'alice', 2)",
            (bob_id,),
        )
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0).principal
    assert bob.roles == {Role.OPERATOR}
    with pytest.raises(AccessDenied):
        principals.authorize(bob, Permission.ROLE_GRANT)
    holdings = {h.account: h for h in roles.list_grants(world.app, world.admin)}
    assert {g.role for g in holdings["bob"].grants} == {Role.ADMIN, Role.OPERATOR}
    assert holdings["bob"].effective == {Role.OPERATOR}


# -- API tokens ----------------------------------------------------------------------------------


@pytest.fixture
def robot(world: World) -> str:
    at = T0 + timedelta(seconds=61)
    idn.create_account(world.app, world.admin, "ci-bot", kind=AccountKind.SERVICE, now=at)
    roles.grant_role(world.app, world.admin, "ci-bot", Role.OPERATOR, now=at)
    return "ci-bot"


def test_a_token_authenticates_within_its_scopes(world: World, robot: str) -> None:
    at = T0 + timedelta(seconds=62)
    issued = idn.create_token(world.app, world.admin, robot,
                              {Permission.BACKUP_RUN, Permission.BACKUP_READ},
                              timedelta(days=30), now=at)  # fmt: skip
    assert issued.secret.startswith("afv_")
    principal = idn.authenticate_token(world.app, issued.secret, now=at + timedelta(days=1))
    assert principal.method is AuthMethod.TOKEN
    assert principal.permissions == {Permission.BACKUP_RUN, Permission.BACKUP_READ}
    assert principal.mfa_at is None
    principals.authorize(principal, Permission.BACKUP_RUN)
    with pytest.raises(AccessDenied):
        principals.authorize(principal, Permission.VERIFY_RUN)  # the role has it, the token not
    (event,) = events(world.home, "token.created")
    assert issued.secret not in json.dumps(event)
    listed = idn.list_tokens(world.app, world.admin, robot)
    assert [t.id for t in listed] == [issued.token.id]
    assert listed[0].last_used_at is not None


def test_expired_revoked_and_disabled_account_tokens_are_refused(world: World, robot: str) -> None:
    at = T0 + timedelta(seconds=62)
    short = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_READ},
                             timedelta(hours=1), now=at)  # fmt: skip
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_token(world.app, short.secret, now=at + timedelta(hours=1))
    revoked = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_READ},
                               timedelta(days=1), now=at)  # fmt: skip
    idn.revoke_token(world.app, world.admin, revoked.token.id, now=at)
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_token(world.app, revoked.secret, now=at)
    with pytest.raises(InputError, match="revoked already"):
        idn.revoke_token(world.app, world.admin, revoked.token.id, now=at)
    live = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_READ},
                            timedelta(days=1), now=at)  # fmt: skip
    idn.authenticate_token(world.app, live.secret, now=at)
    before = snapshot(world.home)["ledger"]
    idn.disable_account(world.app, world.admin, robot, reason="retired pipeline", now=at)
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_token(world.app, live.secret, now=at)
    # account.disabled and approval.waived (alice is the only administrator), no auth event
    assert snapshot(world.home)["ledger"] == before + 2


@pytest.mark.parametrize(
    ("account", "scopes", "days", "error", "match"),
    [
        ("ci-bot", {Permission.POLICY_APPROVE}, 1, AccessDenied, "can never approve"),
        ("ci-bot", {Permission.BACKUP_DELETE}, 1, AccessDenied, "does not hold"),
        ("ci-bot", set(), 1, InputError, "at least one scope"),
        ("ci-bot", {Permission.BACKUP_RUN}, 91, InputError, "90 days"),
        ("ci-bot", {Permission.BACKUP_RUN}, 0, InputError, "90 days"),
        ("bob", {Permission.BACKUP_RUN}, 1, InputError, "service accounts"),
    ],
)
def test_token_issue_refusals_change_nothing(
    world: World, robot: str, account: str, scopes: set[Permission], days: int,
    error: type[Exception], match: str,
) -> None:  # fmt: skip
    before = snapshot(world.home)
    with pytest.raises(error, match=match):
        idn.create_token(world.app, world.admin, account, scopes, timedelta(days=days),
                         now=T0 + timedelta(seconds=62))  # fmt: skip
    assert snapshot(world.home) == before


def test_token_issue_needs_token_manage_and_fresh_mfa(world: World, robot: str) -> None:
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0).principal
    with pytest.raises(AccessDenied):
        idn.create_token(world.app, bob, robot, {Permission.BACKUP_RUN}, timedelta(days=1))
    with pytest.raises(StepUpRequired):
        idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_RUN},
                         timedelta(days=1), now=T0 + timedelta(hours=1))  # fmt: skip


# -- passwords and TOTP management -----------------------------------------------------------------


def test_changing_a_password(world: World) -> None:
    at = T0 + timedelta(seconds=61)
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at)
    other = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at)
    before = snapshot(world.home)
    with pytest.raises(AuthenticationFailed):  # wrong current password: a failed login
        idn.set_password(world.app, bob.principal, "bob", "a new passphrase",
                         current_password="not the password", now=at)  # fmt: skip
    assert events(world.home, "identity.login_failed")[-1]["details"]["reason"] == "password"
    assert snapshot(world.home)["accounts"] == before["accounts"]
    idn.set_password(world.app, bob.principal, "bob", "a new passphrase",
                     current_password=BOB_PW, now=at)  # fmt: skip
    idn.authenticate_session(world.app, bob.secret, now=at)  # this session stays
    with pytest.raises(AuthenticationFailed):
        idn.authenticate_session(world.app, other.secret, now=at)  # the other one ended
    with pytest.raises(AuthenticationFailed):
        idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at)
    idn.login(world.app, "bob", "a new passphrase", client=CLIENT, now=at)
    # an administrator resets it, with a fresh MFA check
    with pytest.raises(StepUpRequired):
        idn.set_password(world.app, world.admin, "bob", "reset passphrase",
                         now=T0 + timedelta(hours=1))  # fmt: skip
    idn.set_password(world.app, world.admin, "bob", "reset passphrase", now=at)
    with pytest.raises(AccessDenied):  # bob cannot reset alice's
        idn.set_password(world.app, bob.principal, "alice", "bob owns you now", now=at)


def test_only_the_owner_enrols_totp_and_a_reset_needs_mfa(world: World) -> None:
    at = T0 + timedelta(seconds=61)
    with pytest.raises(AccessDenied, match="only 'bob' itself"):
        idn.begin_totp(world.app, world.admin, "bob", now=at)
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at).principal
    enrolment = idn.begin_totp(world.app, bob, "bob", now=at)
    assert enrolment.secret not in repr(enrolment)
    before = snapshot(world.home)
    with pytest.raises(InputError, match="does not match"):
        idn.confirm_totp(world.app, bob, "bob", "000000" if code(enrolment.secret, at) != "000000"
                         else "111111", now=at)  # fmt: skip
    assert snapshot(world.home) == before
    idn.confirm_totp(world.app, bob, "bob", code(enrolment.secret, at), now=at)
    with pytest.raises(InputError, match="enrolled already"):
        idn.begin_totp(world.app, bob, "bob", now=at)
    with pytest.raises(StepUpRequired):  # bob logged in before he had TOTP: no MFA
        idn.reset_totp(world.app, bob, "bob", now=at)
    idn.reset_totp(world.app, world.admin, "bob", now=at)
    assert events(world.home, "identity.totp_reset")


def test_the_totp_secret_is_never_in_the_catalog_in_the_clear(world: World) -> None:
    raw = (world.home / "catalog.sqlite").read_bytes()
    wal = world.home / "catalog.sqlite-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert world.secret.encode() not in raw
    assert (world.home / "keys" / idn.IDENTITY_KEK_FILENAME).exists()
    # the wrapping is bound to the account: moved to bob's row it does not unwrap
    at = T0 + timedelta(seconds=61)
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at).principal
    idn.begin_totp(world.app, bob, "bob", now=at)
    with db(world.home) as con:
        con.execute(
            "UPDATE totp_credentials SET wrapped_secret = (SELECT wrapped_secret FROM "
            "totp_credentials t JOIN accounts a ON a.id = t.account_id WHERE a.name = 'alice') "
            "WHERE account_id = (SELECT id FROM accounts WHERE name = 'bob')"
        )
    with pytest.raises(KeystoreError):
        idn.confirm_totp(world.app, bob, "bob", code(world.secret, at), now=at)


# -- damaged rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "table", "column"),
    [
        ("UPDATE accounts SET kind = 'robot' WHERE name = 'bob'", "accounts", "kind"),
        ("UPDATE accounts SET created_at = 'yesterday' WHERE name = 'bob'", "accounts",
         "created_at"),
        ("UPDATE role_grants SET role = 'god'", "role_grants", "role"),
        ("UPDATE login_failures SET failures = 'many'", "login_failures", "failures"),
    ],
)  # fmt: skip
def test_damaged_identity_rows_are_named(
    world: World, statement: str, table: str, column: str
) -> None:
    with pytest.raises(AuthenticationFailed):  # a counter row to damage
        idn.login(world.app, "bob", "wrong password!", client=CLIENT, now=T0)
    with db(world.home) as con:
        assert con.execute(statement).rowcount >= 1
    with pytest.raises(CatalogRowDamaged) as caught, world.app.read() as uow:
        uow.identities.accounts()
        for account in uow.identities.accounts():
            uow.identities.roles(account.id)
            uow.identities.throttle(account.id)
    assert (caught.value.table, caught.value.column) == (table, column)
    assert caught.value.exit_code == ExitCode.CANNOT_RUN


def test_damaged_token_scopes_are_named(world: World, robot: str) -> None:
    issued = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_READ},
                              timedelta(days=1), now=T0 + timedelta(seconds=62))  # fmt: skip
    for value in ("{", '["backup.read", "everything"]'):
        with db(world.home) as con:
            con.execute("UPDATE api_tokens SET scopes = ?", (value,))
        with pytest.raises(CatalogRowDamaged) as caught:
            idn.authenticate_token(world.app, issued.secret, now=T0 + timedelta(minutes=2))
        assert (caught.value.table, caught.value.column) == ("api_tokens", "scopes")


def test_a_day_without_failures_forgets_them(world: World) -> None:
    for i in range(idn.LOCKOUT_THRESHOLD - 1):
        with pytest.raises(AuthenticationFailed):
            idn.login(world.app, "bob", f"guess number {i}!", client=CLIENT, now=T0)
    later = T0 + timedelta(days=1, minutes=1)
    with pytest.raises(AuthenticationFailed):
        idn.login(world.app, "bob", "one more guess!!", client=CLIENT, now=later)
    last = events(world.home, "identity.login_failed")[-1]["details"]
    assert last["failures"] == 1
    assert "locked_until" not in last
    assert idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=later).principal.name == "bob"
