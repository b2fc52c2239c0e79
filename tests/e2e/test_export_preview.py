"""What the approver of an export run sees (issue 17): the counts of a dry pass and a sample
of the minimised, transformed output. The counts travel in the request (and the ledger); the
sample is personal data, sealed in the home and shown only to the requester and the people
who may judge the request. The run executed afterwards must reach the approved counts.
Real SecantusDB, real backups, real accounts with TOTP, real age encryption."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    CLIENT,
    PW,
    SPEC,
    _consent,
    _consent_spec,
    _customers,
    events,
    prepare,
)

from affidavit.crypto import totp
from affidavit.errors import ApprovalPending, IntegrityError
from affidavit.models.identity import Principal
from affidavit.models.permissions import Role
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import gated, principals, requests, roles
from affidavit.services import identity as idn
from affidavit.services.context import App
from affidavit.services.exports import preview as export_preview
from affidavit.services.exports.run import run_export as run_export_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def _people(app: App, secrets: dict[str, str]) -> dict[str, Principal]:
    """alice (administrator), olga (operator), paul (approver), otto (another
    operator), aldo (auditor), all with
    TOTP; their fresh logins by name (TOTP secrets into ``secrets``)."""
    base = datetime.now(UTC) - timedelta(minutes=3)

    def t(step: int) -> datetime:
        return base + timedelta(seconds=31 * step)

    idn.bootstrap_admin(app, principals.local_principal(app), "alice", PW, now=t(0))
    first = idn.login(app, "alice", PW, client=CLIENT, now=t(0))
    enrol = idn.begin_totp(app, first.principal, "alice", now=t(0))
    idn.confirm_totp(app, first.principal, "alice", totp.code_at(enrol.secret, t(0)), now=t(0))
    alice = idn.login(
        app, "alice", PW, totp.code_at(enrol.secret, t(1)), client=CLIENT, now=t(1)
    ).principal
    fresh = {}
    cast = (
        ("olga", Role.OPERATOR),
        ("paul", Role.APPROVER),
        ("otto", Role.OPERATOR),
        ("aldo", Role.AUDITOR),
    )
    for name, role in cast:
        idn.create_account(app, alice, name, password=PW, now=t(1))
        roles.grant_role(app, alice, name, role, now=t(1))
        login = idn.login(app, name, PW, client=CLIENT, now=t(2))
        secret = idn.begin_totp(app, login.principal, name, now=t(2)).secret
        idn.confirm_totp(app, login.principal, name, totp.code_at(secret, t(2)), now=t(2))
        secrets[name] = secret
        fresh[name] = idn.login(
            app, name, PW, totp.code_at(secret, t(3)), client=CLIENT, now=t(3)
        ).principal
    return fresh


def _ledger_text(home: Path) -> str:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("SELECT entry FROM ledger_entries").fetchall()
    return "\n".join(bytes(r[0]).decode("utf-8") for r in rows)


def _show(
    cli: Any, tmp: Path, secrets: dict[str, str], who: str, request_id: str, *, code: int = 0
) -> Any:
    password = tmp / f"{who}.pw"
    password.write_text(PW)
    password.chmod(0o600)
    now = totp.code_at(secrets[who], datetime.now(UTC))
    r = cli(
        "request", "show", request_id, "--as", who, "--as-password-file", str(password),
        "--as-code", now, "--json",
    )  # fmt: skip
    assert r.code == code, r.err
    return json.loads(r.out) if code == 0 else r


def test_the_approver_sees_counts_and_a_sample_and_nobody_else_sees_the_sample(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    secrets: dict[str, str] = {}
    people = _people(app, secrets)
    with app.acting_as(people["olga"]), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme", reason="churn study")
    request_id = pending.value.request["id"]
    preview = pending.value.request["params"]["preview"]
    counts = {
        "in": 40,
        "out": 40,
        "excluded": {},
        "fields_dropped": 40,  # every record's "name"
        "contract_failed_records": 0,
        "contract_passed": True,
    }
    assert preview["counts"] == counts
    assert preview["sample_records"] == export_preview.SAMPLE_RECORDS
    assert list(s.dest.iterdir()) == []  # a dry pass: nothing delivered
    assert events(home, "export.requested") == []

    request = requests.get_request(app, people["paul"], request_id)
    seen = export_preview.shown(app, people["paul"], request)
    assert seen is not None
    sample = seen["sample"]
    assert len(sample) == 5
    for record in sample:
        assert set(record) <= {"_id", "email", "birth", "age", "country", "notes"}
        assert record["email"].startswith("*") and record["email"].endswith(".com")
        assert record["notes"] is None
        assert len(record["_id"]) == 64  # a pseudonym
    assert export_preview.shown(app, people["olga"], request)["sample"] == sample  # type: ignore[index]
    withheld = export_preview.shown(app, people["otto"], request)
    assert withheld is not None
    assert withheld["sample"] is None and withheld["sample_withheld"]
    assert withheld["counts"] == counts

    # the sample is in neither the ledger nor the home in the clear
    ledger = _ledger_text(home)
    sealed = b"".join(p.read_bytes() for p in (home / "export-previews").iterdir())
    for record in sample:
        assert record["_id"] not in ledger
        assert record["_id"].encode() not in sealed
    assert preview["sample_sha256"] in ledger  # referenced by its digest

    # through the CLI: another operator sees the counts, never the sample; an auditor not even the
    # request; the approver both
    refused = _show(cli, tmp_path, secrets, "aldo", request_id, code=2)
    assert "no approval request" in refused.err
    assert not any(r["_id"] in refused.out + refused.err for r in sample)
    as_otto = _show(cli, tmp_path, secrets, "otto", request_id)
    assert as_otto["preview"]["counts"] == counts
    assert as_otto["preview"]["sample"] is None
    assert not any(r["_id"] in json.dumps(as_otto) for r in sample)
    as_paul = _show(cli, tmp_path, secrets, "paul", request_id)
    assert as_paul["preview"]["sample"] == sample
    password = tmp_path / "olga.pw"
    password.write_text(PW)
    password.chmod(0o600)
    human = cli(
        "request", "show", request_id, "--as", "olga", "--as-password-file", str(password),
        "--as-code", totp.code_at(secrets["olga"], datetime.now(UTC)),
    )  # fmt: skip
    assert human.code == 0, human.err
    assert human.out.count("sample") == 5 and '"in": 40' in human.out
    assert sample[0]["_id"][:20] in human.out

    # the approved run reaches the same counts and delivers
    requests.approve(app, people["paul"], request_id, note="sample looks minimised")
    done = gated.execute(app, people["olga"], request_id)
    assert done.result["ok"] is True
    assert done.result["predicate"]["records"] == {
        k: counts[k] for k in ("in", "out", "excluded", "fields_dropped")
    }


def test_a_replaced_sealed_sample_is_not_shown(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    with app.acting_as(people["olga"]), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme")
    request = requests.get_request(app, people["paul"], pending.value.request["id"])
    digest = request.params["preview"]["sample_sha256"]
    sealed = home / "export-previews" / f"{digest}.json"
    body = json.loads(sealed.read_text())
    # another sample sealed the same way, put under this digest's name
    export_preview._seal(app, "0" * 64, b'[{"_id":"someone else"}]')
    other = json.loads((home / "export-previews" / f"{'0' * 64}.json").read_text())
    for swap in (other, {**body, "sealed": other["sealed"]}):
        sealed.write_text(json.dumps(swap))
        seen = export_preview.shown(app, people["paul"], request)
        assert seen is not None and seen["sample"] is None
        assert (
            "cannot be read" in seen["sample_withheld"] or "not the one" in seen["sample_withheld"]
        )
    sealed.unlink()
    seen = export_preview.shown(app, people["paul"], request)
    assert seen is not None and seen["sample"] is None
    with pytest.raises(IntegrityError):
        export_preview.open_sample(app, "../" + "a" * 61)


def test_a_run_whose_counts_differ_from_the_approved_ones_delivers_nothing(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    consents = tmp_path / "consents.jsonl"
    lines = [_consent(f"person{n}@example.com") for n in range(1, 40)]
    consents.write_text("\n".join(lines) + "\n")
    s = prepare(cli, home, tmp_path, mongo, spec=_consent_spec(consents))
    people = _people(app, {})
    soon = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines.append(_consent("person0@example.com", valid_to=soon))  # expires before the run
    consents.write_text("\n".join(lines) + "\n")
    with app.acting_as(people["olga"]), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme")
    request_id = pending.value.request["id"]
    assert pending.value.request["params"]["preview"]["counts"]["out"] == 40
    requests.approve(app, people["paul"], request_id)
    time.sleep(max(0.0, (datetime.fromisoformat(soon) - datetime.now(UTC)).total_seconds() + 1))
    with pytest.raises(IntegrityError, match="the data changed since the approval"):
        gated.execute(app, people["olga"], request_id)
    assert list(s.dest.iterdir()) == []
    failed = events(home, "export.failed")
    assert len(failed) == 1 and "changed since the approval" in failed[0]["details"]["error"]
    assert events(home, "export.completed") == []


def test_a_local_run_makes_no_preview(cli: Any, home: Path, tmp_path: Path, mongo: str) -> None:
    prepare(cli, home, tmp_path, mongo, spec=SPEC)
    r = cli("export", "run", "customers-to-acme", "--json")
    assert r.code == 0, r.err
    assert not (home / "export-previews").exists()
