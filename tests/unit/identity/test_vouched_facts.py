"""What the ledger vouches for about accounts (roles, service accounts) is read once per App
and kept while the ledger's newest role or account event stays the same
(``services.principals``). Kept facts must never outlive that event: a grant or revocation
recorded by another App (another process) counts at the next request, a writer's
uncommitted event is never kept, and a row forged in the catalog counts for nothing, warm
or cold. The clock is injected; the catalog is the real SQLite file.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from affidavit.config import Settings
from affidavit.crypto import totp
from affidavit.models.identity import AccountKind, Principal
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import HUMAN_ONLY_ROLES, Permission, Role
from affidavit.services import identity as idn
from affidavit.services import principals, roles
from affidavit.services.context import App, open_app

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
AT = T0 + timedelta(seconds=61)
CLIENT = ClientInfo(address="198.51.100.7", agent="test")
ADMIN_PW = "admin passphrase 1"
BOB_PW = "operator passphrase 22"


@contextmanager
def db(home: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(home / "catalog.sqlite")
    try:
        yield con
        con.commit()
    finally:
        con.close()


@dataclass
class World:
    """alice (administrator, TOTP), bob (operator, logged in: ``session``), ci-bot (a service
    account with an operator token: ``token``)."""

    app: App
    home: Path
    settings: Settings
    totp_secret: str
    admin: Principal
    session: str
    token: str

    def account_id(self, name: str) -> str:
        with db(self.home) as con:
            return str(con.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()[0])

    def bob(self) -> Principal:
        """bob's principal at his next request."""
        return idn.authenticate(self.app, self.session, now=AT)

    def robot(self) -> Principal:
        """ci-bot's principal at its next request."""
        return idn.authenticate(self.app, self.token, now=AT)


@pytest.fixture
def world(app: App, home: Path, settings: Settings) -> World:
    idn.bootstrap_admin(app, principals.local_principal(app), "alice", ADMIN_PW, now=T0)
    first = idn.login(app, "alice", ADMIN_PW, client=CLIENT, now=T0)
    enrolment = idn.begin_totp(app, first.principal, "alice", now=T0)
    idn.confirm_totp(app, first.principal, "alice", totp.code_at(enrolment.secret, T0), now=T0)
    at = T0 + timedelta(seconds=60)
    code = totp.code_at(enrolment.secret, at)
    admin = idn.login(app, "alice", ADMIN_PW, code, client=CLIENT, now=at).principal
    idn.create_account(app, admin, "bob", password=BOB_PW, now=at)
    roles.grant_role(app, admin, "bob", Role.OPERATOR, now=at)
    idn.create_account(app, admin, "ci-bot", kind=AccountKind.SERVICE, now=at)
    roles.grant_role(app, admin, "ci-bot", Role.OPERATOR, now=at)
    issued = idn.create_token(
        app, admin, "ci-bot", {Permission.BACKUP_READ}, timedelta(days=1), now=at
    )
    session = idn.login(app, "bob", BOB_PW, client=CLIENT, now=at).secret
    return World(app, home, settings, enrolment.secret, admin, session, issued.secret)


@pytest.fixture
def ledger_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The actions whose events principals reads from the ledger (each a full read)."""
    seen: list[str] = []
    real = principals.read_events

    def counted(ledger: object, action: str) -> object:
        seen.append(action)
        return real(ledger, action)  # type: ignore[arg-type]

    monkeypatch.setattr(principals, "read_events", counted)
    return seen


def test_the_facts_are_read_once_and_again_after_a_new_role_event(
    world: World, ledger_reads: list[str]
) -> None:
    assert world.bob().roles == {Role.OPERATOR}
    ledger_reads.clear()
    for _ in range(3):
        assert world.bob().roles == {Role.OPERATOR}
        assert world.robot().kind is AccountKind.SERVICE
    assert ledger_reads == []  # kept: one index seek per request, no event read
    roles.grant_role(world.app, world.admin, "bob", Role.AUDITOR, now=AT)
    ledger_reads.clear()
    assert world.bob().roles == {Role.OPERATOR, Role.AUDITOR}
    assert ledger_reads  # read again after the grant
    ledger_reads.clear()
    assert world.bob().roles == {Role.OPERATOR, Role.AUDITOR}
    assert ledger_reads == []


def test_a_grant_and_a_revocation_by_another_app_count_at_the_next_request(
    world: World,
) -> None:
    """The other App has a catalog (and kept facts) of its own, as another server process
    on the same catalog has."""
    assert world.bob().roles == {Role.OPERATOR}  # kept by this App now
    with open_app(world.settings) as other:
        at = AT + timedelta(seconds=30)
        code = totp.code_at(world.totp_secret, at)
        admin = idn.login(other, "alice", ADMIN_PW, code, client=CLIENT, now=at).principal
        roles.grant_role(other, admin, "bob", Role.AUDITOR, now=at)
        assert world.bob().roles == {Role.OPERATOR, Role.AUDITOR}
        roles.revoke_role(other, admin, "bob", Role.OPERATOR, now=at)
        assert world.bob().roles == {Role.AUDITOR}
        roles.revoke_role(other, admin, "ci-bot", Role.OPERATOR, now=at)
    robot = world.robot()
    assert robot.roles == frozenset()
    assert not robot.permissions


def test_a_revocation_by_another_process_counts_at_the_next_request(world: World) -> None:
    assert Permission.BACKUP_READ in world.robot().permissions  # kept by this App now
    at = AT + timedelta(seconds=30)
    script = textwrap.dedent(
        f"""
        from datetime import datetime
        from pathlib import Path
        from affidavit.config import load_settings
        from affidavit.crypto import totp
        from affidavit.models.ledger import ClientInfo
        from affidavit.models.permissions import Role
        from affidavit.services import identity, roles
        from affidavit.services.context import open_app

        at = datetime.fromisoformat({at.isoformat()!r})
        with open_app(load_settings(home=Path({str(world.home)!r}))) as app:
            code = totp.code_at({world.totp_secret!r}, at)
            admin = identity.login(
                app, "alice", {ADMIN_PW!r}, code, client=ClientInfo(address="::1"), now=at
            ).principal
            roles.revoke_role(app, admin, "ci-bot", Role.OPERATOR, now=at)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert Permission.BACKUP_READ not in world.robot().permissions


def test_a_forged_grant_row_counts_for_nothing_with_the_facts_kept(world: World) -> None:
    assert world.bob().roles == {Role.OPERATOR}  # kept
    with db(world.home) as con:
        con.execute(
            "INSERT INTO role_grants (account_id, role, granted_at, granted_by, seq) "
            "VALUES (?, 'admin', '2026-12-01 12:00:00.000000', 'alice', 3)",
            (world.account_id("bob"),),
        )
    assert world.bob().roles == {Role.OPERATOR}
    assert not world.bob().holds(Permission.ROLE_GRANT)


def test_a_service_account_edited_into_a_person_stays_one_with_the_facts_kept(
    world: World,
) -> None:
    assert world.robot().kind is AccountKind.SERVICE  # kept
    with db(world.home) as con:
        con.execute("UPDATE accounts SET kind = 'human' WHERE name = 'ci-bot'")
        con.execute(
            "INSERT INTO role_grants (account_id, role, granted_at, granted_by, seq) "
            "VALUES (?, 'approver', '2026-12-01 12:00:00.000000', 'alice', 3)",
            (world.account_id("ci-bot"),),
        )
    with world.app.read() as uow:
        account = uow.identities.account("ci-bot")
        assert principals.is_service(uow, account)
        assert not principals.vouched_roles(uow, account) & HUMAN_ONLY_ROLES


def test_an_event_a_writer_rolled_back_is_never_kept(world: World) -> None:
    """Inside its transaction a writer sees its own new grant; once it rolls back, the next
    request must not (what the writer read was not kept)."""
    bob_id = world.account_id("bob")

    class Abort(Exception):
        pass

    with pytest.raises(Abort), world.app.change() as change:
        event = change.record(
            "role.granted", "account:bob", {"account_id": bob_id, "role": Role.AUDITOR.value}
        )
        change.uow.identities.add_grant(bob_id, Role.AUDITOR, at=AT, by="alice", seq=event.seq)
        bob = change.uow.identities.account("bob")
        assert Role.AUDITOR in principals.vouched_roles(change.uow, bob)
        raise Abort
    assert world.bob().roles == {Role.OPERATOR}
    with world.app.read() as uow:
        assert (bob_id, Role.AUDITOR) not in principals.ledger_roles(uow)
