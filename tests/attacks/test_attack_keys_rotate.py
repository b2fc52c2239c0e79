"""Attacks on ``keys rotate`` with an AWS KMS keystore (moto in server mode), which re-wraps
the TOTP secrets the same key wraps (``services/keys.py``, ``services/identity.py:
totp_secrets_to_rewrap/rewrap_totp_secrets``).

What must hold: a TOTP reset and re-enrolment made while a rotation runs (between its read
of the secrets and its transaction) is not undone by the rotation writing the secret it read
over the new one (that would bring back a lost device's secret); and KMS refusing midway,
after the key was rotated, leaves every secret as it was, usable, with nothing recorded."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.config import load_settings
from affidavit.crypto import totp
from affidavit.errors import AuthenticationFailed, KeystoreError
from affidavit.keystores.kms import KmsKeystore
from affidavit.models.ledger import ClientInfo
from affidavit.services import identity as idn
from affidavit.services import principals
from affidavit.services.context import open_app

pytestmark = pytest.mark.integration

PW = "a long passphrase 42"
CLIENT = ClientInfo(address="127.0.0.1", agent="pytest")
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def kms_key(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    key_id: str = boto3.client("kms").create_key(Description="affidavit KEK")["KeyMetadata"][
        "KeyId"
    ]
    monkeypatch.setenv("AFFIDAVIT_KMS_KEY_ID", key_id)
    monkeypatch.setenv("AFFIDAVIT_KMS_REGION", "us-east-1")
    return key_id


def totp_rows(home: Path) -> list[tuple[bytes, str, int]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return list(db.execute("select wrapped_secret, kek_id, kek_version from totp_credentials"))


def rotated_events(home: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("select entry from ledger_entries where action = 'keys.rotated'")
        return [json.loads(e) for (e,) in rows]


def enrol(home: Path, at: datetime, code: str | None = None) -> str:
    """admin (made on first use) enrols TOTP; with ``code`` (of the current secret) it
    first resets the one it has. The new secret."""
    with open_app(load_settings(home=home)) as app:
        if code is None:
            idn.bootstrap_admin(app, principals.local_principal(app), "admin", PW, now=at)
        grant = idn.login(app, "admin", PW, code, client=CLIENT, now=at)
        if code is not None:
            idn.reset_totp(app, grant.principal, "admin", now=at)
        enrolment = idn.begin_totp(app, grant.principal, "admin", now=at)
        idn.confirm_totp(app, grant.principal, "admin", totp.code_at(enrolment.secret, at), now=at)
    return enrolment.secret


def logs_in(home: Path, secret: str, at: datetime) -> bool:
    with open_app(load_settings(home=home)) as app:
        try:
            idn.login(app, "admin", PW, totp.code_at(secret, at), client=CLIENT, now=at)
        except AuthenticationFailed:
            return False
    return True


def test_a_totp_reset_during_a_rotation_is_not_undone_by_it(
    cli: Any, home: Path, kms_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = enrol(home, AT)
    replaced: list[str] = []
    original: Callable[..., Any] = idn.totp_secrets_to_rewrap

    def read_then_reset(app: Any, kek_id: str) -> Any:
        found = original(app, kek_id)
        # meanwhile, in another process: the device was lost, the TOTP reset and enrolled
        replaced.append(
            enrol(home, AT + timedelta(minutes=1), totp.code_at(lost, AT + timedelta(minutes=1)))
        )
        return found

    monkeypatch.setattr(idn, "totp_secrets_to_rewrap", read_then_reset)
    rotated = cli("keys", "rotate", "--json")
    assert rotated.code == 0, rotated.err
    later = AT + timedelta(minutes=3)
    assert logs_in(home, replaced[0], later)  # the new device's secret
    assert not logs_in(home, lost, later + timedelta(minutes=1))  # never the lost one again
    result = json.loads(rotated.out)
    assert result["rewrapped_totp"] == 0  # changed meanwhile: left as it is now
    [(_, _, version)] = totp_rows(home)
    assert version not in result["retired"]  # the version it still needs is kept


def test_kms_refusing_after_the_rotation_leaves_every_secret_usable(
    cli: Any, home: Path, kms_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = enrol(home, AT)
    before = totp_rows(home)
    rotate, wrap = KmsKeystore.rotate, KmsKeystore.wrap
    state = {"rotated": False}

    def rotate_then_fail(self: KmsKeystore) -> Any:
        version = rotate(self)
        state["rotated"] = True
        return version

    def refusing_wrap(self: KmsKeystore, secret: bytes, *, context: bytes) -> Any:
        if state["rotated"]:
            raise KeystoreError("KMS refused: AccessDeniedException (test)")
        return wrap(self, secret, context=context)

    monkeypatch.setattr(KmsKeystore, "rotate", rotate_then_fail)
    monkeypatch.setattr(KmsKeystore, "wrap", refusing_wrap)
    failed = cli("keys", "rotate", "--json")
    assert failed.code == 3, (failed.out, failed.err)
    assert state["rotated"]
    assert totp_rows(home) == before  # nothing re-wrapped, nothing half-written
    assert rotated_events(home) == []  # nothing recorded
    assert logs_in(home, secret, AT + timedelta(minutes=2))

    monkeypatch.setattr(KmsKeystore, "rotate", rotate)
    monkeypatch.setattr(KmsKeystore, "wrap", wrap)
    again = cli("keys", "rotate", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["rewrapped_totp"] == 1
    assert logs_in(home, secret, AT + timedelta(minutes=4))
    assert len(rotated_events(home)) == 1
    assert cli("ledger", "verify").code == 0
