"""Attacks on the identity core, each performed here: replayed codes, dead and forged
credentials, lockout evasion, login timing, and privilege escalation, including through rows
edited behind affidavit's back (someone who can write the catalog but cannot sign ledger
events). The clock is injected (``now=``); the catalog is the real SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import load_settings
from affidavit.crypto import kek, passwords, tokens, totp
from affidavit.errors import AccessDenied, ApprovalPending, AuthenticationFailed, InputError
from affidavit.models.identity import AccountKind, AuthMethod, Principal
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import APPROVING, HUMAN_ONLY_ROLES, Permission, Role
from affidavit.services import identity as idn
from affidavit.services import principals, roles
from affidavit.services.context import App, open_app
from affidavit.services.setup import initialise

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
AT = T0 + timedelta(seconds=61)  # the administrator's MFA check is fresh until T0 + 6 min
CLIENT = ClientInfo(address="198.51.100.9", agent="attacker")
ADMIN_PW = "admin passphrase 1"
BOB_PW = "operator passphrase 22"
SQL_TIME = "%Y-%m-%d %H:%M:%S.%f"


@contextmanager
def db(home: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with db(home) as con:
        rows = con.execute(
            "SELECT entry FROM ledger_entries WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


def ledger_size(home: Path) -> int:
    with db(home) as con:
        return int(con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def code(secret: str, at: datetime) -> str:
    return totp.code_at(secret, at)


@dataclass
class World:
    """An administrator (alice, TOTP enrolled, logged in at T0 + 60 s) and an operator (bob,
    no TOTP)."""

    app: App
    home: Path
    secret: str
    admin: Principal
    recovery: tuple[str, ...]

    def account_id(self, name: str) -> str:
        with db(self.home) as con:
            return str(con.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()[0])


def make_world(app: App, home: Path) -> World:
    idn.bootstrap_admin(app, principals.local_principal(app), "alice", ADMIN_PW, now=T0)
    first = idn.login(app, "alice", ADMIN_PW, client=CLIENT, now=T0)
    enrolment = idn.begin_totp(app, first.principal, "alice", now=T0)
    recovery = idn.confirm_totp(app, first.principal, "alice", code(enrolment.secret, T0), now=T0)
    at = T0 + timedelta(seconds=60)
    admin = idn.login(app, "alice", ADMIN_PW, code(enrolment.secret, at), client=CLIENT, now=at)
    idn.create_account(app, admin.principal, "bob", password=BOB_PW, now=at)
    roles.grant_role(app, admin.principal, "bob", Role.OPERATOR, now=at)
    return World(app, home, enrolment.secret, admin.principal, recovery)


@pytest.fixture
def world(app: App, home: Path) -> World:
    return make_world(app, home)


@pytest.fixture
def robot(world: World) -> str:
    idn.create_account(world.app, world.admin, "ci-bot", kind=AccountKind.SERVICE, now=AT)
    roles.grant_role(world.app, world.admin, "ci-bot", Role.OPERATOR, now=AT)
    return "ci-bot"


def refused(call: Callable[[], object]) -> None:
    with pytest.raises(AuthenticationFailed):
        call()


# -- authentication ------------------------------------------------------------------------------


def test_a_totp_code_works_once_in_its_step_and_never_after_a_newer_one(world: World) -> None:
    at = T0 + timedelta(minutes=3)  # a step of its own (the world used T0 and T0 + 60 s)
    now_code = code(world.secret, at)
    first = idn.login(world.app, "alice", ADMIN_PW, now_code, client=CLIENT, now=at)
    # the same code in the same step, by a second request: a replay
    refused(lambda: idn.login(world.app, "alice", ADMIN_PW, now_code, client=CLIENT, now=at))
    refused(lambda: idn.step_up(world.app, first.principal, now_code, now=at))
    # the previous step's code is still inside the window, but older than the one used
    older = code(world.secret, at - timedelta(seconds=30))
    refused(lambda: idn.login(world.app, "alice", ADMIN_PW, older, client=CLIENT, now=at))
    reasons = [e["details"]["reason"] for e in events(world.home, "identity.login_failed")]
    assert reasons == ["totp-replayed", "totp-replayed"]
    assert events(world.home, "identity.step_up_failed")[-1]["details"]["reason"] == (
        "totp-replayed"
    )
    # the next step's code is new: accepted (as a step-up of the first session)
    later = at + timedelta(seconds=30)
    stepped = idn.step_up(world.app, first.principal, code(world.secret, later), now=later)
    assert stepped.mfa_at == later


def test_a_recovery_code_works_once_however_it_is_spelled(world: World) -> None:
    at = T0 + timedelta(minutes=3)
    used = world.recovery[0]
    grant = idn.login(world.app, "alice", ADMIN_PW, used, client=CLIENT, now=at)
    assert grant.principal.method is AuthMethod.PASSWORD_RECOVERY
    for spelling in (used, used.lower(), used.replace("-", ""), " ".join(used.split("-"))):
        refused(lambda s=spelling: idn.login(world.app, "alice", ADMIN_PW, s, client=CLIENT,
                                             now=at))  # fmt: skip
    # a recovery code is no TOTP code: it cannot refresh a step-up either
    refused(lambda: idn.step_up(world.app, grant.principal, world.recovery[1], now=at))
    with db(world.home) as con:
        left = con.execute("SELECT count(*) FROM recovery_codes WHERE used_at IS NULL").fetchone()
    assert left[0] == 9


def test_a_disabled_account_authenticates_nothing(world: World, robot: str) -> None:
    session = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=AT)
    issued = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_RUN},
                              timedelta(days=1), now=AT)  # fmt: skip
    # disabled behind affidavit's back (a catalog edit): refused all the same
    with db(world.home) as con:
        con.execute(
            "UPDATE accounts SET disabled_at = ? WHERE name IN ('bob', 'ci-bot')",
            (AT.strftime(SQL_TIME),),
        )
    refused(lambda: idn.authenticate_session(world.app, session.secret, now=AT))
    refused(lambda: idn.authenticate_token(world.app, issued.secret, now=AT))
    refused(lambda: idn.authenticate(world.app, session.secret, now=AT))
    refused(lambda: idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=AT))


def test_a_session_past_its_timeouts_is_refused_whatever_its_row_says(world: World) -> None:
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    idn.authenticate_session(world.app, grant.secret, now=T0 + timedelta(minutes=29))
    # idle: 30 minutes after its last use
    refused(lambda: idn.authenticate_session(world.app, grant.secret,
                                             now=T0 + timedelta(minutes=59, seconds=1)))  # fmt: skip
    # a row whose idle expiry was pushed into the far future still dies at 12 hours
    other = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    with db(world.home) as con:
        con.execute(
            "UPDATE sessions SET idle_expires_at = ?, last_seen_at = ? WHERE id = ?",
            ("2099-01-01 00:00:00.000000", "2099-01-01 00:00:00.000000", other.session.id),
        )
    idn.authenticate_session(world.app, other.secret, now=T0 + timedelta(hours=11))
    refused(lambda: idn.authenticate_session(world.app, other.secret,
                                             now=T0 + timedelta(hours=12)))  # fmt: skip
    # and a row edited to have expired is refused now
    third = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=T0)
    with db(world.home) as con:
        con.execute(
            "UPDATE sessions SET idle_expires_at = ? WHERE id = ?",
            ((T0 - timedelta(seconds=1)).strftime(SQL_TIME), third.session.id),
        )
    refused(lambda: idn.authenticate_session(world.app, third.secret, now=T0))


def test_a_token_loses_what_its_account_loses(world: World, robot: str) -> None:
    issued = idn.create_token(world.app, world.admin, robot,
                              {Permission.BACKUP_RUN, Permission.BACKUP_READ},
                              timedelta(days=30), now=AT)  # fmt: skip
    before = idn.authenticate_token(world.app, issued.secret, now=AT)
    assert before.permissions == {Permission.BACKUP_RUN, Permission.BACKUP_READ}
    roles.revoke_role(world.app, world.admin, robot, Role.OPERATOR, now=AT)
    after = idn.authenticate_token(world.app, issued.secret, now=AT + timedelta(minutes=1))
    assert after.permissions == frozenset()  # the scopes outlive the role, not its rights
    with pytest.raises(AccessDenied):
        principals.authorize(after, Permission.BACKUP_RUN)
    roles.grant_role(world.app, world.admin, robot, Role.VIEWER, now=AT)
    viewer = idn.authenticate_token(world.app, issued.secret, now=AT + timedelta(minutes=2))
    assert viewer.permissions == {Permission.BACKUP_READ}  # the viewer's, cut to the scopes


def test_secrets_are_compared_in_constant_time(
    world: World, robot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_READ},
                              timedelta(days=1), now=AT)  # fmt: skip
    session = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=AT)
    compared: list[tuple[bytes, bytes]] = []
    real = tokens.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    idn.authenticate_token(world.app, issued.secret, now=AT)
    idn.authenticate_session(world.app, session.secret, now=AT)
    assert idn.csrf_matches(session.secret, idn.csrf_token(session.secret))
    refused(lambda: idn.authenticate_token(world.app, issued.secret[:-1] + "x", now=AT))
    # every check compared two SHA-256 digests (64 hex digits), never the secret itself
    assert len(compared) == 4
    for a, b in compared:
        assert len(a) == len(b) == 64
        assert issued.secret.encode() not in (a, b)
        assert session.secret.encode() not in (a, b)


def test_guessed_truncated_and_borrowed_secrets_are_refused(world: World, robot: str) -> None:
    grant = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=AT)
    other = idn.login(world.app, "alice", ADMIN_PW, world.recovery[2], client=CLIENT, now=AT)
    token = idn.create_token(world.app, world.admin, robot, {Permission.BACKUP_READ},
                             timedelta(days=1), now=AT).secret  # fmt: skip
    secret = grant.secret
    _, session_id, rest = secret.split("_", 2)
    other_id = other.session.id
    guesses = [
        secret[:-1],  # truncated
        secret[: len(secret) // 2],
        f"afs_{session_id}_",
        f"afs_{session_id}",
        f"afs_{session_id}_{rest[:-1]}{'B' if rest.endswith('A') else 'A'}",  # one letter off
        f"afs_{other_id}_{rest}",  # bob's random part under alice's session id
        f"afs_{session_id.upper()}_{rest}",
        secret.upper(),
        secret + "x",
        secret + "\x00",
        secret + " " * 300,
        f"afv_{session_id}_{rest}",  # a session secret dressed as a token
        token.replace("afv_", "afs_", 1),  # and a token dressed as a session
        "afs_" + "0" * 16 + "_" + rest,
        "",
    ]  # fmt: skip
    for guess in guesses:
        refused(lambda g=guess: idn.authenticate(world.app, g, now=AT))
    assert idn.authenticate(world.app, secret, now=AT).name == "bob"


@pytest.mark.parametrize(
    "variants",
    [
        ["Bob", "bob ", " BOB", "\tbob\n", "\u3000bob", "bOb"],  # the same account: bob's lock
    ],
)
def test_spelling_a_name_differently_does_not_escape_its_lockout(
    world: World, variants: list[str]
) -> None:
    at = T0 + timedelta(minutes=20)
    for i, name in enumerate(variants[: idn.LOCKOUT_THRESHOLD]):
        refused(lambda n=name, i=i: idn.login(world.app, n, f"guess number {i}!", client=CLIENT,
                                              now=at))  # fmt: skip
    failed = events(world.home, "identity.login_failed")
    assert [e["subject"] for e in failed] == ["account:bob"] * idn.LOCKOUT_THRESHOLD
    assert "locked_until" in failed[-1]["details"]
    size = ledger_size(world.home)
    for name in variants:  # every spelling is locked out, the right password too
        refused(lambda n=name: idn.login(world.app, n, BOB_PW, client=CLIENT, now=at))
    assert ledger_size(world.home) == size  # and nothing more was written
    # look-alike letters are no spelling of bob: they are unknown names (their own counter)
    for name in (
        "\uff42\uff4f\uff42",
        "bob\u200b",
        "b\u043eb",
    ):  # fullwidth, zero-width space, Cyrillic o
        refused(lambda n=name: idn.login(world.app, n, BOB_PW, client=CLIENT, now=at))
    unknown = events(world.home, "identity.login_failed")[-3:]
    assert {e["subject"] for e in unknown} == {"identity:login"}
    assert {e["details"]["reason"] for e in unknown} == {"unknown-account"}
    # after the lockout the account opens again
    later = at + idn.LOCKOUT_BASE + timedelta(seconds=1)
    assert idn.login(world.app, "BOB", BOB_PW, client=CLIENT, now=later).principal.name == "bob"


def test_a_session_cannot_guess_its_password_past_the_lockout(world: World) -> None:
    """Changing one's own password checks the current one: while the account is locked it
    must not be checked at all, or a stolen session could guess it without limit."""
    at = T0 + timedelta(minutes=20)
    stolen = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=at).principal
    for i in range(idn.LOCKOUT_THRESHOLD):
        with pytest.raises(AuthenticationFailed):
            idn.set_password(world.app, stolen, "bob", "stolen passphrase 1",
                             current_password=f"guess number {i}!", now=at)  # fmt: skip
    size = ledger_size(world.home)
    with pytest.raises(AuthenticationFailed):  # the right guess, while locked: refused
        idn.set_password(world.app, stolen, "bob", "stolen passphrase 1",
                         current_password=BOB_PW, now=at)  # fmt: skip
    assert ledger_size(world.home) == size
    assert not events(world.home, "account.password_set")
    refused(lambda: idn.login(world.app, "bob", "stolen passphrase 1", client=CLIENT,
                              now=at + idn.LOCKOUT_BASE * 3))  # fmt: skip


def test_an_unknown_name_costs_the_same_argon2_work(
    world: World, robot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """User enumeration by timing: every refusal runs exactly one argon2 verification, for
    a name that does not exist, a service account (no password) and a disabled account as
    for a real person; roughly measured (CPU time), an unknown name is not faster."""
    at = T0 + timedelta(minutes=20)
    idn.create_account(
        world.app, world.admin, "carol", password="a passphrase of her own 3", now=AT
    )
    idn.disable_account(world.app, world.admin, "carol", reason="left", now=AT)
    verified: list[str] = []
    real = passwords.verify_password

    def counting(stored: str, password: str) -> bool:
        verified.append(password)
        return real(stored, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    for name in ("nobody-at-all", robot, "carol", "bob", "not a name!"):
        verified.clear()
        refused(lambda n=name: idn.login(world.app, n, "wrong password 12", client=CLIENT,
                                         now=at))  # fmt: skip
        assert verified == ["wrong password 12"], name

    def took(name: str) -> float:
        """This thread's CPU time for one refused login (argon2 runs on it): not the wall
        clock, which other processes on a busy machine would skew."""
        start = time.thread_time()
        refused(lambda: idn.login(world.app, name, "wrong password 12", client=CLIENT, now=at))
        return time.thread_time() - start

    unknown = statistics.median(took(f"ghost-{i}") for i in range(3))
    known = statistics.median(took("alice") for _ in range(3))
    assert unknown > 0.5 * known, (unknown, known)
    # the unknown names' counter is locked now (5 failures): a refusal of a locked counter
    # must cost as much, or a quick answer would tell that a name does not exist
    verified.clear()
    refused(lambda: idn.login(world.app, "ghost-9", "wrong password 12", client=CLIENT, now=at))
    assert verified == ["wrong password 12"]
    locked = statistics.median(took(f"ghost-{i}") for i in range(3))
    assert locked > 0.5 * known, (locked, known)


def test_the_second_factor_costs_no_key_derivation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a passphrase-protected identity KEK, each TOTP check used to derive the key
    (scrypt, tens of ms) after a right password only: a right password took visibly longer
    than a wrong one. The key is derived once per process now."""
    monkeypatch.setenv("AFFIDAVIT_PASSPHRASE", "a passphrase for the keys")
    home = tmp_path / "protected"
    settings = load_settings(home=home)
    initialise(settings)
    with open_app(settings) as app:
        world = make_world(app, home)
        derived: list[bytes] = []
        real = kek.derive_key

        def counting(passphrase: str, salt: bytes) -> bytes:
            derived.append(salt)
            return real(passphrase, salt)

        monkeypatch.setattr(kek, "derive_key", counting)
        at = T0 + timedelta(minutes=5)
        for i in range(3):
            moment = at + timedelta(seconds=30 * i)
            refused(lambda m=moment: idn.login(app, "alice", ADMIN_PW, "000000", client=CLIENT,
                                               now=m))  # fmt: skip
            idn.login(app, "alice", ADMIN_PW, code(world.secret, moment), client=CLIENT,
                      now=moment)  # fmt: skip
        assert derived == []


# -- authorization -------------------------------------------------------------------------------


def test_nobody_grants_themselves_anything(world: World) -> None:
    idn.create_account(world.app, world.admin, "sofia", password="officer passphrase 4", now=AT)
    roles.grant_role(world.app, world.admin, "sofia", Role.SECURITY_OFFICER, now=AT)
    sofia = idn.login(world.app, "sofia", "officer passphrase 4", client=CLIENT, now=AT).principal
    size = ledger_size(world.home)
    with pytest.raises(AccessDenied, match=r"may not role\.grant"):
        roles.grant_role(world.app, sofia, "sofia", Role.ADMIN, now=AT)
    with pytest.raises(AccessDenied, match=r"may not token\.manage"):
        idn.create_token(world.app, sofia, "bob", {Permission.ROLE_GRANT}, timedelta(days=1),
                         now=AT)  # fmt: skip
    for spelling in ("alice", "ALICE", " alice ", "Alice"):  # the admin, under any spelling
        with pytest.raises(AccessDenied, match="own account"):
            roles.grant_role(world.app, world.admin, spelling, Role.APPROVER, now=AT)
    for role in ("god", "ADMIN", "admin ", "", "role.grant"):
        with pytest.raises(InputError, match="not a role"):
            roles.grant_role(world.app, world.admin, "bob", role, now=AT)
    assert ledger_size(world.home) == size


def test_an_operator_cannot_issue_tokens_and_a_token_holds_no_more_than_its_roles(
    world: World, robot: str
) -> None:
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=AT).principal
    with pytest.raises(AccessDenied, match=r"may not token\.manage"):
        idn.create_token(world.app, bob, robot, {Permission.ROLE_GRANT}, timedelta(days=1),
                         now=AT)  # fmt: skip
    for scopes in ({Permission.ROLE_GRANT}, {Permission.ACCOUNT_MANAGE, Permission.BACKUP_RUN},
                   {Permission.TOKEN_MANAGE}, set(APPROVING)):  # fmt: skip
        with pytest.raises(AccessDenied):
            idn.create_token(world.app, world.admin, robot, scopes, timedelta(days=1), now=AT)
    assert not events(world.home, "token.created")


def test_a_grant_row_written_in_sql_does_not_keep_the_last_admin_replaceable(
    world: World,
) -> None:
    """A forged ``admin`` row on bob (no ledger event) made him look like a second
    administrator, so the real and only one could be stripped of admin or disabled."""
    with db(world.home) as con:
        con.execute(
            "INSERT INTO role_grants (account_id, role, granted_at, granted_by, seq) "
            "VALUES (?, 'admin', ?, 'alice', 3)",
            (world.account_id("bob"), T0.strftime(SQL_TIME)),
        )
    size = ledger_size(world.home)
    with pytest.raises(AccessDenied, match="last enabled administrator"):
        roles.revoke_role(world.app, world.admin, "alice", Role.ADMIN, now=AT)
    with pytest.raises(AccessDenied, match="last enabled administrator"):
        idn.disable_account(world.app, world.admin, "alice", reason="takeover", now=AT)
    assert ledger_size(world.home) == size
    bob = idn.login(world.app, "bob", BOB_PW, client=CLIENT, now=AT).principal
    assert Role.ADMIN not in bob.roles
    assert {h.account: h.effective for h in roles.list_grants(world.app, world.admin)}["bob"] == {
        Role.OPERATOR
    }
    # with a genuine second administrator, the first may go (once dave approves it)
    idn.create_account(world.app, world.admin, "dave", password="admin passphrase 55", now=AT)
    roles.grant_role(world.app, world.admin, "dave", Role.ADMIN, now=AT)
    with pytest.raises(ApprovalPending):
        roles.revoke_role(world.app, world.admin, "alice", Role.ADMIN, now=AT)


def test_a_service_account_edited_into_a_person_stays_a_service_account(
    world: World, robot: str
) -> None:
    """The catalog row of ci-bot edited to ``human`` (and given a password): the ledger that
    created it says service, so it gets no human-only role and approves nothing."""
    with db(world.home) as con:
        con.execute(
            "UPDATE accounts SET kind = 'human', password_hash = ? WHERE name = 'ci-bot'",
            (passwords.hash_password("robot passphrase 77"),),
        )
    size = ledger_size(world.home)
    for role in sorted(HUMAN_ONLY_ROLES):
        with pytest.raises(AccessDenied, match="service account can never hold"):
            roles.grant_role(world.app, world.admin, robot, role, now=AT)
    assert ledger_size(world.home) == size
    posing = idn.login(world.app, robot, "robot passphrase 77", client=CLIENT, now=AT).principal
    assert posing.kind is AccountKind.SERVICE
    assert posing.roles == {Role.OPERATOR}
    assert not posing.permissions & APPROVING


def test_a_role_the_ledger_granted_a_service_account_by_mistake_counts_for_nothing(
    world: World, robot: str
) -> None:
    """Even with a ledger event (an administrator tricked while the row said ``human``, as
    an affidavit before this rule let through), a service account holds no human-only
    role: the event that created it says service."""
    with db(world.home) as con:
        con.execute(
            "UPDATE accounts SET kind = 'human', password_hash = ? WHERE name = 'ci-bot'",
            (passwords.hash_password("robot passphrase 77"),),
        )
    robot_id = world.account_id(robot)
    with world.app.change() as change:
        event = change.record(
            "role.granted",
            f"account:{robot}",
            {"account_id": robot_id, "role": "approver", "auth": "password+totp"},
        )
        change.uow.identities.add_grant(robot_id, Role.APPROVER, at=AT, by="alice",
                                        seq=event.seq)  # fmt: skip
    holdings = {h.account: h.effective for h in roles.list_grants(world.app, world.admin)}
    assert holdings[robot] == {Role.OPERATOR}
    posing = idn.login(world.app, robot, "robot passphrase 77", client=CLIENT, now=AT).principal
    assert posing.roles == {Role.OPERATOR}
    assert not posing.permissions & APPROVING
    with pytest.raises(AccessDenied):
        principals.authorize(posing, Permission.POLICY_APPROVE)


def test_a_second_account_cannot_promote_the_one_that_made_it(world: World) -> None:
    """alice makes "alice-alt", gives it admin, enrols its TOTP, then tries to have it grant
    alice approver: one person holding both through a puppet account is refused."""
    idn.create_account(world.app, world.admin, "alice-alt", password="second passphrase 7", now=AT)
    roles.grant_role(world.app, world.admin, "alice-alt", Role.ADMIN, now=AT)
    first = idn.login(world.app, "alice-alt", "second passphrase 7", client=CLIENT, now=AT)
    enrolment = idn.begin_totp(world.app, first.principal, "alice-alt", now=AT)
    idn.confirm_totp(world.app, first.principal, "alice-alt", code(enrolment.secret, AT), now=AT)
    later = AT + timedelta(seconds=60)
    alt = idn.login(
        world.app, "alice-alt", "second passphrase 7", code(enrolment.secret, later),
        client=CLIENT, now=later,
    ).principal  # fmt: skip
    size = ledger_size(world.home)
    with pytest.raises(AccessDenied, match="second account"):
        roles.grant_role(world.app, alt, "alice", Role.APPROVER, now=later)
    assert ledger_size(world.home) == size
    with pytest.raises(ApprovalPending):  # others: a request that alice may approve
        roles.grant_role(world.app, alt, "bob", Role.VIEWER, now=later)
