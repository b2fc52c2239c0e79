"""What ``verify`` signs is a valid :class:`~affidavit.models.predicates.VerificationPredicate`
(issue 14): the predicate of every verification the CLI records reads as the typed value and
writes back to the very bytes the ledger key signed, whether the verification is clean,
sampled, compared with a live source that changed, or of a tampered backup with findings."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.crypto.dsse import Envelope
from affidavit.ledger.attestation import VERIFICATION_PREDICATE_TYPE, Statement, verify_attestation
from affidavit.models.predicates import VerificationPredicate
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import verify as verify_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import load_ledger_identity, open_app

pytestmark = pytest.mark.e2e


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _verify(cli: Any, *args: str) -> dict[str, Any]:
    r = cli("verify", *args, "--json")
    assert r.out and "Traceback" not in r.err, r.err
    out: dict[str, Any] = json.loads(r.out)
    return out


def _signed(home: Path, backup_id: str) -> dict[str, tuple[Statement, Envelope]]:
    """Every recorded verification of ``backup_id``: its statement, checked against the
    ledger key, and its envelope."""
    identity = load_ledger_identity(home)
    assert identity is not None
    keys = {identity.keyid: identity.signer.key.public_key}
    with open_app(load_settings(home=home)) as app:
        stored = verify_service.list_verifications(app, backup_id)
    out = {}
    for verification in stored:
        assert verification.envelope is not None
        envelope = Envelope.from_json(verification.envelope)
        statement = verify_attestation(envelope, keys, predicate_type=VERIFICATION_PREDICATE_TYPE)
        out[verification.id] = (statement, envelope)
    return out


def _round_trips(statement: Statement, envelope: Envelope) -> VerificationPredicate:
    predicate = statement.predicate
    typed = VerificationPredicate.from_predicate(predicate)
    assert typed.to_predicate() == predicate
    rebuilt = Statement(
        subjects=statement.subjects,
        predicate_type=VERIFICATION_PREDICATE_TYPE,
        predicate=typed.to_predicate(),
    )
    assert rebuilt.to_json() == envelope.payload  # the bytes the key signed
    return typed


def test_every_signed_verification_round_trips(
    cli: Any, home: Path, fresh_redis: RedisScratch, tmp_path: Path
) -> None:
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=14, scale=3)
    vault = tmp_path / "vault"
    _ok(cli("vault", "add", "v1", "--url", f"file://{vault}"))
    add = ("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri)
    _ok(cli(*add, "--classification", "internal"))
    backup_id = json.loads(_ok(cli("backup", "run", "cache", "--json")).out)["backup_id"]

    clean = _verify(cli, backup_id)
    assert clean["ok"] is True and clean["findings"] == []
    sampled = _verify(cli, backup_id, "--sample", "50")
    assert sampled["ok"] is True and sampled["kind"] == "sample"

    # the source changes after the backup: a comparison with findings naming keys
    client = redis.Redis(host="127.0.0.1", port=fresh_redis.port)
    try:
        client.set("after-the-backup", "new")
    finally:
        client.close()
    compared = _verify(cli, backup_id, "--against-source")
    assert compared["kind"] == "against-source" and compared["findings"]

    # tampered: a byte flipped in every data artifact and a file the backup never wrote
    artifacts = json.loads(_ok(cli("backup", "show", backup_id, "--json")).out)["artifacts"]
    for art in [a for a in artifacts if a["role"] == "data"]:
        path = vault / art["path"]
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    (vault / artifacts[0]["path"]).with_name("stray.bin").write_bytes(b"stray")
    tampered = _verify(cli, backup_id)
    assert tampered["ok"] is False
    assert {"artifact-hash-mismatch", "artifact-unexpected"} <= {
        f["code"] for f in tampered["findings"]
    }

    signed = _signed(home, backup_id)
    assert set(signed) == {clean["id"], sampled["id"], compared["id"], tampered["id"]}
    typed = {
        vid: _round_trips(statement, envelope) for vid, (statement, envelope) in signed.items()
    }
    sample = typed[sampled["id"]].sample
    assert sample is not None and sample.percent == 50
    assert typed[compared["id"]].against_source is not None
    assert typed[compared["id"]].against_source["source"] == "cache"
    assert {f.code for f in typed[tampered["id"]].findings} == {
        f["code"] for f in tampered["findings"]
    }
