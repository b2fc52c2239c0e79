"""``affidavit progress publish|verify`` end to end: a summary of real policy checks, findings
and a real drill (redis-server), signed with the ledger key, published to a folder and to S3
(moto server), verified offline with the public key alone; an edited summary, a summary signed
by another home's key and a check whose catalog row was edited are caught; bad input records
nothing. Also the calendar of the same home: its drill, verifications and legal hold."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.crypto.dsse import Envelope
from affidavit.ledger.attestation import Statement, attest
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import policy as policies
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

POLICY = Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml"


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return json.loads(result.out) if result.out.lstrip().startswith("{") else result


def _actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [r[0] for r in db.execute("SELECT action FROM ledger_entries ORDER BY seq")]


def _approved_policy(cli: Any) -> None:
    _ok(cli("--actor", "alice", "policy", "propose", str(POLICY)))
    _ok(cli("--actor", "bob", "policy", "approve", "1"))


def _rewrite(path: Path, edit: Any, *, resign: Any = None) -> Path:
    """A copy of the envelope at ``path`` with its statement edited (and re-signed by
    ``resign``, a (key, keyid) pair, when given; else the old signature kept)."""
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    edit(statement["predicate"])
    out = path.with_name(f"edited-{path.name}")
    if resign is not None:
        signed = attest(Statement.from_json(json.dumps(statement)), *resign)
        out.write_text(signed.to_json())
    else:
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        out.write_text(json.dumps(envelope))
    return out


def test_a_published_summary_verifies_and_a_forged_one_does_not(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    _approved_policy(cli)
    settings = load_settings(home=home)
    now = datetime.now(UTC)
    with open_app(settings) as app:  # checks on three days (the last one of a day counts)
        for days_ago in (2, 1, 1, 0):
            policies.check_policy(app, live=False, now=now - timedelta(days=days_ago, hours=1))
    out = tmp_path / "site"
    out.mkdir()
    before = _actions(home)
    published = _ok(cli("progress", "publish", "--out", str(out), "--json"))
    assert _actions(home)[len(before) :] == ["attestation.created", "progress.published"]
    summary = published["summary"]
    assert summary["checks"] == {"vouched": 4, "unvouched": 0}
    assert summary["policy_version"] == 1
    assert summary["window"]["days"] == 90
    day = (now - timedelta(hours=1)).date().isoformat()
    assert summary["controls"]["policy.approved"]["days"][day] == "pass"
    # no source has a backup: dataset controls have nothing to judge, the checkpoint ones fail
    statuses = {c: e["days"][day] for c, e in summary["controls"].items() if day in e["days"]}
    assert "fail" in statuses.values()
    assert summary["findings"]["total"] == sum(summary["findings"]["open"].values()) > 0
    assert summary["drills"] == {}
    files = sorted(p.name for p in out.iterdir())
    assert files == ["latest.dsse.json", f"progress-{published['checkpoint_size']}.dsse.json"]
    latest = out / "latest.dsse.json"
    assert latest.read_bytes() == (out / files[1]).read_bytes()
    vkey = cli("ledger", "key").out.strip()
    verified = _ok(cli("progress", "verify", str(latest), "--public-key", vkey, "--json"))
    assert verified["summary"] == summary and verified["ok"] is True
    assert summary["checkpoint"]["size"] == published["checkpoint_size"]
    statement = json.loads(Envelope.from_json(latest.read_bytes()).payload)
    assert statement["subject"][0]["digest"]["sha256"] == summary["checkpoint"]["root"]
    shown = _ok(cli("progress", "verify", str(latest), "--public-key", vkey))
    assert "Verified" in shown.out

    # an edited summary: the signature no longer covers it
    fewer = _rewrite(latest, lambda p: p["findings"].update(total=0))
    refused = cli("progress", "verify", str(fewer), "--public-key", vkey)
    assert refused.code == 1, refused.err
    assert "changed or signed by another key" in refused.err and "Traceback" not in refused.err
    # the same edit signed by another home's ledger key, under this key id
    other = tmp_path / "other"
    initialise(load_settings(home=other))
    with open_app(load_settings(home=other)) as app:
        identity = app.ledger_identity()
        assert identity is not None
        stolen_id = json.loads(latest.read_text())["signatures"][0]["keyid"]
        forged = _rewrite(latest, lambda p: p["findings"].update(total=0),
                          resign=(identity.signer.key, stolen_id))  # fmt: skip
        other_vkey = identity.vkey
    assert cli("progress", "verify", str(forged), "--public-key", vkey).code == 1
    # ... and the genuine file checked with the other key
    assert cli("progress", "verify", str(latest), "--public-key", other_vkey).code == 1
    # not a progress envelope at all, or no such file: bad input
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert cli("progress", "verify", str(junk), "--public-key", vkey).code == 2
    assert cli("progress", "verify", str(tmp_path / "none"), "--public-key", vkey).code == 2
    assert cli("progress", "verify", str(latest), "--public-key", "not-a-key").code == 2


def test_a_check_whose_row_was_edited_does_not_count(cli: Any, home: Path, tmp_path: Path) -> None:
    _approved_policy(cli)
    assert cli("policy", "check").code in (0, 1)  # 1: a control failed (recorded all the same)
    with sqlite3.connect(home / "catalog.sqlite") as db:  # someone turns a failure into a pass
        (results,) = db.execute("SELECT results FROM check_runs").fetchone()
        db.execute("UPDATE check_runs SET results = ?", (results.replace('"fail"', '"pass"'),))
    published = _ok(cli("progress", "publish", "--out", str(tmp_path), "--json"))
    assert published["summary"]["checks"] == {"vouched": 0, "unvouched": 1}
    assert published["summary"]["controls"] == {}


def test_bad_destinations_record_nothing(cli: Any, home: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    before = _actions(home)
    for out, code in ((str(tmp_path / "missing"), 2), ("ftp://x/y", 2)):
        result = cli("progress", "publish", "--out", out)
        assert result.code == code, result.err
        assert result.err.startswith("error:") and "Traceback" not in result.err
    assert cli("progress", "publish", "--out", str(site), "--days", "0").code == 2
    assert _actions(home) == before
    assert list(site.iterdir()) == []


def test_a_drilled_source_in_the_summary_on_s3_and_in_the_calendar(
    cli: Any, home: Path, tmp_path: Path, s3_env: str
) -> None:
    import boto3

    with RedisScratch(replica_sync_delay=0) as red:
        parsed = ConnectionUri.parse(EngineName.REDIS, red.uri)
        with engine_for_uri(EngineName.REDIS, parsed, password=None, timeout=5) as engine:
            engine.seed_sample(seed=5, scale=2)
        _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", red.uri,
                "--classification", "internal"))  # fmt: skip
        _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}"))
        backup = _ok(cli("backup", "run", "cache", "--json"))["backup_id"]
        drill = _ok(cli("drill", "run", backup, "--json"))
    _ok(cli("hold", "add", backup, "--case", "LIT-7", "--reason", "litigation"))
    bucket = "progress-site"
    boto3.client("s3").create_bucket(Bucket=bucket)
    published = _ok(cli("progress", "publish", "--out", f"s3://{bucket}/acme", "--json"))
    [name] = published["files"]
    key = f"acme/progress-{published['checkpoint_size']}.dsse.json"
    assert name == f"s3://{bucket}/{key}"
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    fetched = tmp_path / "fetched.dsse.json"
    fetched.write_bytes(body)
    vkey = cli("ledger", "key").out.strip()
    verified = _ok(cli("progress", "verify", str(fetched), "--public-key", vkey, "--json"))
    last = verified["summary"]["drills"]["cache"]
    assert (last["drill_id"], last["backup_id"], last["ok"]) == (
        drill["drill_id"],
        backup,
        drill["ok"],
    )
    assert cli("progress", "publish", "--out", "s3://no-such-bucket-zz/p").code == 3

    calendar = _ok(cli("calendar", "--json"))
    items = {i["id"]: i for i in calendar["items"]}
    drilled = items["drill:cache"]
    assert drilled["state"] == "upcoming" and drilled["recurrence"] == "P30D"
    assert drilled["last_done"] is not None and drilled["link"] == f"backup:{backup}"
    full = items[f"verification:verify-full:{backup}"]
    assert full["state"] in ("due", "overdue") and full["detail"] == "never done"
    hold = items[f"legal-hold:{backup}:LIT-7"]
    assert hold["recurrence"] == "P180D" and hold["detail"] == "litigation"
    assert hold["state"] == "upcoming"
    feed = cli("calendar", "ics", "--out", str(tmp_path / "cal.ics"))
    assert feed.code == 0 and (tmp_path / "cal.ics").read_bytes().count(b"BEGIN:VEVENT") == len(
        calendar["items"]
    )
