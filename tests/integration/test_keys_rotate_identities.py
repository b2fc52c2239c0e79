"""A key rotation with an AWS KMS keystore (moto in server mode on 127.0.0.1) keeps every
TOTP secret usable: with KMS the same key wraps the backups' identities and the accounts'
TOTP secrets, so ``keys rotate`` re-wraps both under the new version before it retires the
old ones (it used to retire a version the TOTP secrets still needed, and nobody could log
in with TOTP again)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.config import load_settings
from affidavit.crypto import totp
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


def totp_versions(home: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return list(db.execute("select kek_id, kek_version from totp_credentials"))


def test_a_rotation_rewraps_the_totp_secrets_and_logins_go_on(
    cli: Any, home: Path, kms_key: str
) -> None:
    settings = load_settings(home=home)
    with open_app(settings) as app:
        idn.bootstrap_admin(app, principals.local_principal(app), "admin", PW, now=AT)
        first = idn.login(app, "admin", PW, client=CLIENT, now=AT)
        enrolment = idn.begin_totp(app, first.principal, "admin", now=AT)
        idn.confirm_totp(app, first.principal, "admin", totp.code_at(enrolment.secret, AT), now=AT)
    [(kek_id, before)] = totp_versions(home)
    assert kms_key in kek_id

    rotated = cli("keys", "rotate", "--json")
    assert rotated.code == 0, rotated.err
    result = json.loads(rotated.out)
    assert result["rewrapped_totp"] == 1
    [(_, after)] = totp_versions(home)
    assert after == result["new_version"] != before
    assert before in result["retired"]  # nothing needs the old version any more

    later = AT + timedelta(minutes=2)
    with open_app(load_settings(home=home)) as app:
        grant = idn.login(
            app, "admin", PW, totp.code_at(enrolment.secret, later), client=CLIENT, now=later
        )
    assert grant.principal.mfa_at == later
    with sqlite3.connect(home / "catalog.sqlite") as db:
        [(entry,)] = db.execute("select entry from ledger_entries where action = 'keys.rotated'")
    assert json.loads(entry)["details"]["rewrapped_totp"] == ["admin"]
