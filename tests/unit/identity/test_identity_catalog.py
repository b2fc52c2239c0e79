"""The identity tables: migration 0007 up and down on SQLite, and the core flow (bootstrap,
TOTP, login, grant, token) on a real PostgreSQL catalog."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from affidavit.catalog.store import MIGRATIONS_DIR, Catalog
from affidavit.config import load_settings
from affidavit.crypto import totp
from affidavit.errors import AuthenticationFailed
from affidavit.models.identity import AccountKind
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import Permission, Role
from affidavit.services import identity as idn
from affidavit.services import ledger as ledger_svc
from affidavit.services import principals, roles
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

IDENTITY_TABLES = {
    "accounts",
    "role_grants",
    "api_tokens",
    "sessions",
    "recovery_codes",
    "totp_credentials",
    "login_failures",
}


def _migrate(path: Path, revision: str, *, down: bool) -> None:
    catalog = Catalog(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with catalog._engine.begin() as conn:  # an old catalog, on purpose
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
    finally:
        catalog.close()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("select name from sqlite_master where type='table'")}


def test_0007_adds_the_identity_tables_and_takes_them_away(tmp_path: Path) -> None:
    home = tmp_path / "h"
    settings = load_settings(home=home, environ={"AFFIDAVIT_ACTOR": "t@example.com"})
    initialise(settings)
    path = home / "catalog.sqlite"
    assert _tables(path) >= IDENTITY_TABLES
    _migrate(path, "0006", down=True)
    assert not IDENTITY_TABLES & _tables(path)
    result = initialise(settings)  # upgrades 0006 -> head and records it
    assert result.schema_before == "0006"
    assert _tables(path) >= IDENTITY_TABLES
    with open_app(settings) as app:
        idn.bootstrap_admin(app, principals.local_principal(app), "root-admin", "a long passphrase")
        assert ledger_svc.verify_catalog(app).ok


@pytest.mark.integration
def test_the_identity_flow_on_postgresql(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    settings = load_settings(
        home=tmp_path / "h",
        environ={"AFFIDAVIT_ACTOR": "t@example.com", "AFFIDAVIT_CATALOG_URL": postgres_url},
    )
    initialise(settings)
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    client = ClientInfo(agent="pytest")
    with open_app(settings) as app:
        idn.bootstrap_admin(
            app, principals.local_principal(app), "alice", "a long passphrase", now=t0
        )
        first = idn.login(app, "alice", "a long passphrase", client=client, now=t0)
        enrolment = idn.begin_totp(app, first.principal, "alice", now=t0)
        idn.confirm_totp(app, first.principal, "alice", totp.code_at(enrolment.secret, t0), now=t0)
        at = t0 + timedelta(seconds=30)
        admin = idn.login(app, "alice", "a long passphrase",
                          totp.code_at(enrolment.secret, at), client=client, now=at).principal  # fmt: skip
        with pytest.raises(AuthenticationFailed):  # the same code again
            idn.login(app, "alice", "a long passphrase", totp.code_at(enrolment.secret, at),
                      client=client, now=at)  # fmt: skip
        idn.create_account(app, admin, "ci", kind=AccountKind.SERVICE, now=at)
        roles.grant_role(app, admin, "ci", Role.VIEWER, now=at)
        issued = idn.create_token(app, admin, "ci", {Permission.BACKUP_READ}, timedelta(days=1),
                                  now=at)  # fmt: skip
        robot = idn.authenticate_token(app, issued.secret, now=at)
        assert robot.permissions == {Permission.BACKUP_READ}
        assert robot.roles == {Role.VIEWER}
        assert [a.name for a in idn.list_accounts(app, admin)] == ["alice", "ci"]
        assert ledger_svc.verify_catalog(app).ok
