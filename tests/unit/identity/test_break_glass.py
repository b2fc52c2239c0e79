"""The break-glass path: only the host's OS user, only with a real reason, and never silent
(one transaction of ledger events, an alert, the new administrator's role vouched)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.identity.test_attacks import db, events, make_world

from affidavit.errors import AccessDenied, AlreadyExists, InputError
from affidavit.models.permissions import Role
from affidavit.services import identity as idn
from affidavit.services import principals
from affidavit.services.context import App

REASON = "every administrator lost their TOTP device; approved by the CISO, ticket OPS-1"


def _size(home: Path) -> int:
    with db(home) as con:
        return int(con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def test_break_glass_creates_a_vouched_administrator_loudly(app: App, home: Path) -> None:
    make_world(app, home)
    local = principals.local_principal(app)
    account = idn.break_glass(app, local, "rescue", "a long passphrase of mine", reason=REASON)
    glass = events(home, "identity.break_glass")
    assert [(e["subject"], e["details"]["reason"]) for e in glass] == [("account:rescue", REASON)]
    assert glass[0]["details"]["os_user"] == "tester@example.com"
    granted = [e for e in events(home, "role.granted") if e["subject"] == "account:rescue"]
    assert granted[0]["details"]["approval"] == {
        "standing": "break-glass",
        "event": glass[0]["seq"],
    }
    alerts = events(home, "alert.raised")
    assert alerts[-1]["details"]["kind"] == "identity.break_glass"
    with app.read() as uow:
        assert principals.vouched_roles(uow, uow.identities.account(account.name)) == {Role.ADMIN}


def test_break_glass_is_refused_through_a_login_and_without_a_reason(app: App, home: Path) -> None:
    world = make_world(app, home)
    size = _size(home)
    with pytest.raises(AccessDenied, match="on the host"):
        idn.break_glass(app, world.admin, "rescue", "a long passphrase of mine", reason=REASON)
    local = principals.local_principal(app)
    with pytest.raises(InputError, match="at least 20"):
        idn.break_glass(app, local, "rescue", "a long passphrase of mine", reason="locked out")
    with pytest.raises(AlreadyExists):
        idn.break_glass(app, local, "bob", "a long passphrase of mine", reason=REASON)
    assert _size(home) == size
