"""Governed exports through the CLI (issue 17): recipients proven by a challenge, specs
approved by a second person, runs that minimise, check, encrypt and deliver with a signed
manifest, and ``export verify`` at the destination, which catches every tamper tried here.
The run is a gated operation: asked for by an authenticated operator it waits for another
person's approval. Real SecantusDB, real backups made by ``backup run``, real accounts, real
age encryption (pyrage)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyrage
import pytest
from pymongo import MongoClient
from pyrage import x25519

from affidavit.crypto import totp
from affidavit.errors import AccessDenied, ApprovalPending
from affidavit.models.approval import GatedOperation, RequestState
from affidavit.models.identity import Principal
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import Role
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import gated, principals, requests, roles
from affidavit.services import identity as idn
from affidavit.services.context import App
from affidavit.services.exports.run import run_export as run_export_service

pytestmark = pytest.mark.e2e

DATASET = "shop.customers"


def _customers() -> list[dict[str, Any]]:
    out = []
    for n in range(40):
        out.append(
            {
                "_id": n + 1,
                "email": f"person{n}@example.com",
                "name": f"Person {n}",
                "birth": datetime(1960 + n, 5, 17, tzinfo=UTC),
                "age": 20 + n,
                "country": ["FR", "DE", "NL"][n % 3],
                "notes": "private note",
            }
        )
    return out


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client["shop"]["orders"].insert_many([{"_id": i, "total": i * 3} for i in range(5)])
        client.close()
        yield server.uri


SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{dest}"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "pseudonymise"
email = {{ transform = "mask", keep = 4 }}
birth = "generalise"
age = {{ transform = "generalise", width = 10 }}
country = "keep"
notes = "redact"

[contract]
min_records = 1
unique = ["_id"]
max_violations = 0

[contract.max_nulls]
country = 0

[contract.schema]
type = "object"
required = ["_id", "email", "country"]

[contract.schema.properties.country]
type = "string"
enum = ["FR", "DE", "NL"]
"""


@dataclass
class Setup:
    home: Path
    dest: Path
    identity: str  # the recipient's AGE-SECRET-KEY-1...
    identity_file: Path
    vkey: str
    backup_id: str
    spec_file: Path


def _json(r: Any) -> Any:
    assert r.code == 0, r.err + r.out
    return json.loads(r.out)


def add_recipient(cli: Any, tmp: Path, name: str = "acme", *, dpa: str | None = None) -> str:
    identity = x25519.Identity.generate()
    challenge = tmp / f"{name}.challenge.age"
    args = ["recipient", "add", name, "--org", "Acme Analytics", "--contact", "dpo@acme.test"]
    args += ["--public-key", str(identity.to_public()), "--challenge-out", str(challenge)]
    if dpa:
        args += ["--dpa", dpa]
    _json(cli(*args, "--json"))
    answer = pyrage.decrypt(challenge.read_bytes(), [identity])
    response = tmp / f"{name}.response.txt"
    response.write_bytes(answer)
    out = _json(cli("recipient", "verify", name, "--response", str(response), "--json"))
    assert out["verified"] is True
    return str(identity)


def prepare(
    cli: Any,
    home: Path,
    tmp: Path,
    mongo: str,
    *,
    spec: str = SPEC,
    classification: str = "confidential",
) -> Setup:
    add = ("source", "add", "shop", "--engine", "mongodb", "--uri", mongo)
    assert cli(*add, "--classification", classification).code == 0
    assert cli("vault", "add", "v1", "--url", f"file://{tmp / 'vault'}").code == 0
    backup_id = _json(cli("backup", "run", "shop", "--json"))["backup_id"]
    identity = add_recipient(cli, tmp)
    identity_file = tmp / "acme.key"
    identity_file.write_text(f"# created: now\n{identity}\n")
    dest = tmp / "outbox"
    dest.mkdir()
    spec_file = tmp / "spec.toml"
    spec_file.write_text(spec.format(dest=dest))
    added = _json(cli("--actor", "olga", "export", "spec", "add", str(spec_file), "--json"))
    approved = _json(
        cli("--actor", "paul", "export", "spec", "approve", added["name"], "1", "--json")
    )
    assert approved["approved_by"] == "paul"
    vkey = cli("ledger", "key").out.strip().splitlines()[-1]
    return Setup(home, dest, identity, identity_file, vkey, backup_id, spec_file)


def run_export(cli: Any, *args: str, code: int = 0) -> dict[str, Any]:
    r = cli("export", "run", "customers-to-acme", *args, "--json")
    assert r.code == code, r.err + r.out
    out: dict[str, Any] = json.loads(r.out)
    return out


def verify(cli: Any, s: Setup, file: Path, manifest: Path, **kw: Any) -> Any:
    return cli(
        "export",
        "verify",
        str(file),
        "--manifest",
        str(manifest),
        "--public-key",
        kw.get("vkey", s.vkey),
        "--identity",
        str(kw.get("identity", s.identity_file)),
        "--json",
        home_dir=None,
    )


def export_controls(cli: Any) -> dict[str, dict[str, Any]]:
    """The ``export.*`` results of an offline policy check, by control (one export)."""
    r = cli("policy", "check", "--offline", "--json")
    assert r.code in (0, 1), r.err
    results = json.loads(r.out)["results"]
    out = {x["control"]: x for x in results if x["control"].startswith("export.")}
    assert len(out) == 6
    return out


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "SELECT entry FROM ledger_entries WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


def test_export_story(cli: Any, home: Path, tmp_path: Path, mongo: str) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    out = run_export(cli)
    assert out["ok"] is True
    output, manifest = Path(out["output"]), Path(out["manifest"])
    assert output.parent == s.dest
    predicate = out["predicate"]
    assert predicate["records"] == {"in": 40, "out": 40, "excluded": {}, "fields_dropped": 40}
    assert predicate["input"]["backup_id"] == s.backup_id
    assert predicate["recipient"]["name"] == "acme"
    plain = pyrage.decrypt(output.read_bytes(), [x25519.Identity.from_str(s.identity)])
    lines = [json.loads(line) for line in plain.decode().splitlines()]
    assert len(lines) == 40
    first = lines[0]
    assert set(first) == {"_id", "email", "birth", "age", "country", "notes"}
    assert "name" not in first  # not allow-listed
    assert first["notes"] is None
    assert first["email"] == "*" * (len("person0@example.com") - 4) + ".com"
    assert first["birth"] == {"$numberInt": "1960"}
    assert first["age"] == "20..30"
    assert isinstance(first["_id"], str)
    assert len(first["_id"]) == 64
    checked = verify(cli, s, output, manifest)
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == 40
    actions = [
        "recipient.added",
        "recipient.verified",
        "export.spec_added",
        "export.spec_approved",
        "export.requested",
        "export.completed",
    ]
    for action in actions:
        assert events(home, action), action
    listed = _json(cli("export", "list", "--json"))["exports"]
    assert [e["status"] for e in listed] == ["completed"]
    assert cli("ledger", "verify").code == 0
    controls = export_controls(cli)
    subject = f"export:{predicate['export_id']}"
    assert {c["subject"] for c in controls.values()} == {subject}
    # local mode: nobody was authenticated, so nobody approved the run
    assert controls["export.approved"]["status"] == "fail"
    assert "local mode" in controls["export.approved"]["message"]
    for cid in ("minimised", "consent", "contract_valid", "recipient_verified"):
        assert controls[f"export.{cid}"]["status"] == "pass", controls[f"export.{cid}"]
    assert "legitimate_interests" in controls["export.consent"]["message"]
    # the human renderings
    human = cli(
        "export", "verify", str(output), "--manifest", str(manifest), "--public-key", s.vkey,
        "--identity", str(s.identity_file), home_dir=None,
    )  # fmt: skip
    assert human.code == 0
    assert "Verified: 40 record(s)" in human.out
    assert "customers-to-acme" in cli("export", "list").out
    assert "Acme Analytics" in cli("recipient", "list").out
    assert "paul" in cli("export", "spec", "list").out
    assert 'purpose = "churn analysis"' in cli("export", "spec", "show", "customers-to-acme").out
    shown = _json(cli("export", "spec", "show", "customers-to-acme", "--version", "1", "--json"))
    assert shown["approved_by"] == "paul"
    assert shown["text"] == s.spec_file.read_text()
    _refused(cli("export", "spec", "show", "nothing-here"), "no approved version")


# -- tampering at the destination ------------------------------------------------------------


def _plain(s: Setup, file: Path) -> list[bytes]:
    data = pyrage.decrypt(file.read_bytes(), [x25519.Identity.from_str(s.identity)])
    return data.splitlines(keepends=True)


def _reencrypt(s: Setup, file: Path, lines: list[bytes]) -> None:
    recipient = x25519.Identity.from_str(s.identity).to_public()
    file.write_bytes(pyrage.encrypt(b"".join(lines), [recipient]))


def _checks(result: Any) -> set[str]:
    assert result.code == 1, result.out + result.err
    return {d["check"] for d in json.loads(result.out)["discrepancies"]}


@pytest.fixture
def delivered(cli: Any, home: Path, tmp_path: Path, mongo: str) -> tuple[Setup, Path, Path]:
    s = prepare(cli, home, tmp_path, mongo)
    out = run_export(cli)
    return s, Path(out["output"]), Path(out["manifest"])


def test_a_record_added_is_caught(cli: Any, delivered: tuple[Setup, Path, Path]) -> None:
    s, file, manifest = delivered
    lines = _plain(s, file)
    extra = json.loads(lines[0])
    extra["_id"] = "f" * 64
    lines.append(json.dumps(extra, separators=(",", ":")).encode() + b"\n")
    _reencrypt(s, file, lines)
    assert {"output-digest", "plaintext-digest", "record-count", "fingerprint"} <= _checks(
        verify(cli, s, file, manifest)
    )


def test_a_record_dropped_is_caught(cli: Any, delivered: tuple[Setup, Path, Path]) -> None:
    s, file, manifest = delivered
    _reencrypt(s, file, _plain(s, file)[:-1])
    assert {"record-count", "fingerprint", "plaintext-digest"} <= _checks(
        verify(cli, s, file, manifest)
    )


def test_a_record_edited_is_caught(cli: Any, delivered: tuple[Setup, Path, Path]) -> None:
    s, file, manifest = delivered
    lines = _plain(s, file)
    record = json.loads(lines[5])
    record["country"] = "DE" if record["country"] != "DE" else "FR"
    lines[5] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    _reencrypt(s, file, lines)
    found = _checks(verify(cli, s, file, manifest))
    assert {"fingerprint", "plaintext-digest"} <= found
    assert "record-count" not in found


def test_a_field_outside_the_allow_list_is_caught(
    cli: Any, delivered: tuple[Setup, Path, Path]
) -> None:
    s, file, manifest = delivered
    lines = _plain(s, file)
    record = json.loads(lines[2])
    record["name"] = "Person 2"
    lines[2] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    _reencrypt(s, file, lines)
    result = verify(cli, s, file, manifest)
    assert "allow-list" in _checks(result)
    problems = json.loads(result.out)["discrepancies"]
    assert any("name" in d["message"] and record["_id"] in d["message"] for d in problems)


def test_a_line_that_is_not_the_encoding_is_caught(
    cli: Any, delivered: tuple[Setup, Path, Path]
) -> None:
    s, file, manifest = delivered
    lines = _plain(s, file)
    lines[1] = b"\xff\xfe not utf-8\n"
    lines[3] = lines[3].replace(b",", b", ", 1)  # valid JSON, not the canonical encoding
    _reencrypt(s, file, lines)
    result = verify(cli, s, file, manifest)
    messages = [d["message"] for d in json.loads(result.out)["discrepancies"]]
    assert "encoding" in _checks(result)
    assert any("line 2 is not valid UTF-8" in m for m in messages)
    assert any("line 4 is not in the canonical encoding" in m for m in messages)


def test_an_edited_manifest_is_caught(cli: Any, delivered: tuple[Setup, Path, Path]) -> None:
    s, file, manifest = delivered
    envelope = json.loads(manifest.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["output"]["records"] = 41
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    manifest.write_text(json.dumps(envelope))
    assert _checks(verify(cli, s, file, manifest)) == {"signature"}


def test_a_manifest_signed_by_another_key_is_caught(
    cli: Any, delivered: tuple[Setup, Path, Path], tmp_path: Path
) -> None:
    from affidavit.crypto.dsse import Envelope, sign_envelope
    from affidavit.crypto.signing import SigningKey

    s, file, manifest = delivered
    genuine = Envelope.from_json(manifest.read_text())
    forged = sign_envelope(
        genuine.payload, genuine.payload_type, SigningKey.generate(), genuine.signatures[0].keyid
    )
    manifest.write_text(forged.to_json())
    assert _checks(verify(cli, s, file, manifest)) == {"signature"}
    # and the genuine manifest checked with another ledger's key fails the same way
    manifest.write_text(genuine.to_json())
    other = tmp_path / "other-home"
    assert cli("init", home_dir=other).code == 0
    other_key = cli("ledger", "key", home_dir=other).out.strip().splitlines()[-1]
    assert _checks(verify(cli, s, file, manifest, vkey=other_key)) == {"signature"}
    assert verify(cli, s, file, manifest).code == 0


def test_output_re_encrypted_to_another_recipient_is_caught(
    cli: Any, delivered: tuple[Setup, Path, Path], tmp_path: Path
) -> None:
    s, file, manifest = delivered
    lines = _plain(s, file)
    mallory = x25519.Identity.generate()
    file.write_bytes(pyrage.encrypt(b"".join(lines), [mallory.to_public()]))
    assert {"decrypt", "output-digest"} <= _checks(verify(cli, s, file, manifest))
    # mallory, holding the new key, is not the recipient the manifest names
    key = tmp_path / "mallory.key"
    key.write_text(str(mallory) + "\n")
    assert {"recipient", "output-digest"} <= _checks(verify(cli, s, file, manifest, identity=key))


# -- bad input: exit 2, one line with a hint, nothing recorded, nothing delivered ------------


def ledger_size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def _refused(r: Any, words: str, *, hint: bool = True) -> None:
    """Exit 2 with a one-line error naming ``words`` (and a hint line), no traceback."""
    assert r.code == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert words in " ".join(r.err.split())
    assert "Traceback" not in r.err
    if hint:
        assert lines[-1].startswith("hint: ")


def test_a_key_that_is_not_an_age_recipient_is_refused(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    before = ledger_size(home)
    challenge = tmp_path / "c.age"
    for key in ("age1notakey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", "AGE-SECRET-KEY-1QQQ"):
        r = cli(
            "recipient",
            "add",
            "acme",
            "--org",
            "Acme",
            "--contact",
            "dpo@acme.test",
            "--public-key",
            key,
            "--challenge-out",
            str(challenge),
        )
        _refused(r, "not an age X25519 recipient")
    assert ledger_size(home) == before
    assert not challenge.exists()
    assert _json(cli("recipient", "list", "--json"))["recipients"] == []


def test_a_wrong_challenge_answer_proves_nothing(cli: Any, home: Path, tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    challenge = tmp_path / "c.age"
    _json(
        cli(
            "recipient",
            "add",
            "acme",
            "--org",
            "Acme",
            "--contact",
            "dpo@acme.test",
            "--public-key",
            str(identity.to_public()),
            "--challenge-out",
            str(challenge),
            "--json",
        )
    )
    before = ledger_size(home)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("affidavit-recipient-challenge:" + "0" * 64)
    _refused(cli("recipient", "verify", "acme", "--response", str(wrong)), "not proven")
    assert ledger_size(home) == before
    assert events(home, "recipient.verified") == []
    listed = _json(cli("recipient", "list", "--json"))["recipients"]
    assert listed[0]["verified"] is False
    # an existing challenge file is never overwritten
    r = cli(
        "recipient",
        "add",
        "beta",
        "--org",
        "Beta",
        "--contact",
        "x@beta.test",
        "--public-key",
        str(identity.to_public()),
        "--challenge-out",
        str(challenge),
    )
    _refused(r, "already exists")
    assert ledger_size(home) == before


def test_the_proposer_cannot_approve_and_an_unapproved_spec_does_not_run(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    second = s.spec_file.read_text().replace("churn analysis", "churn analysis, v2")
    s.spec_file.write_text(second)
    assert (
        _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))[
            "version"
        ]
        == 2
    )
    before = ledger_size(home)
    _refused(
        cli("--actor", "Olga", "export", "spec", "approve", "customers-to-acme", "2"),
        "cannot also approve",
    )
    _refused(cli("export", "run", "customers-to-acme", "--version", "2"), "is not approved")
    assert ledger_size(home) == before
    assert list(s.dest.iterdir()) == []
    assert events(home, "export.requested") == []


def test_a_spec_whose_contract_does_not_parse_is_refused(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    assert (
        cli(
            "source",
            "add",
            "shop",
            "--engine",
            "mongodb",
            "--uri",
            mongo,
            "--classification",
            "internal",
        ).code
        == 0
    )
    before = ledger_size(home)
    bad = tmp_path / "bad.toml"
    cases = {
        "[contract.schema]\ntype = 12\n": "JSON Schema is not valid",
        '[contract]\nunique = ["name"]\n': "do not leave",
        "[contract\n": "not valid TOML",
    }
    for extra, words in cases.items():
        bad.write_text(SPEC.format(dest=tmp_path).split("[contract]")[0] + extra)
        _refused(cli("export", "spec", "add", str(bad)), words)
    bad.write_text(SPEC.format(dest=tmp_path).replace('_id = "pseudonymise"\n', ""))
    _refused(cli("export", "spec", "add", str(bad)), "must list _id")
    bad.write_text(SPEC.format(dest=tmp_path).replace('"redact"', '"shred"'))
    _refused(cli("export", "spec", "add", str(bad)), "unknown transform")
    assert ledger_size(home) == before


def test_a_destination_that_holds_the_file_is_refused(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    existing = s.dest / "out.jsonl.age"
    existing.write_bytes(b"someone else's file")
    before = ledger_size(home)
    _refused(
        cli("export", "run", "customers-to-acme", "--output", "out.jsonl.age"), "already exists"
    )
    assert existing.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in s.dest.iterdir()) == ["out.jsonl.age"]
    assert ledger_size(home) == before
    # the default name is taken by the first run: the second of the same version and backup
    # is refused the same way
    run_export(cli)
    _refused(cli("export", "run", "customers-to-acme"), "already exists")


def test_restricted_data_needs_a_dpa_and_a_verified_recipient(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, classification="restricted")
    before = ledger_size(home)
    _refused(cli("export", "run", "customers-to-acme"), "data-processing agreement")
    assert ledger_size(home) == before
    assert list(s.dest.iterdir()) == []
    # a recipient with a DPA, but whose challenge is not answered yet
    identity = x25519.Identity.generate()
    _json(
        cli(
            "recipient",
            "add",
            "acme-eu",
            "--org",
            "Acme EU",
            "--contact",
            "dpo@acme.test",
            "--public-key",
            str(identity.to_public()),
            "--dpa",
            "DPA-2026-17",
            "--challenge-out",
            str(tmp_path / "eu.age"),
            "--json",
        )
    )
    s.spec_file.write_text(s.spec_file.read_text().replace('"acme"', '"acme-eu"'))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2", "--json"))
    _refused(cli("export", "run", "customers-to-acme"), "has not proven possession")
    answer = tmp_path / "eu.txt"
    answer.write_bytes(pyrage.decrypt((tmp_path / "eu.age").read_bytes(), [identity]))
    _json(cli("recipient", "verify", "acme-eu", "--response", str(answer), "--json"))
    out = run_export(cli)
    assert out["predicate"]["recipient"]["dpa"] == "DPA-2026-17"
    assert out["predicate"]["input"]["classification"] == "restricted"


def test_a_dataset_classified_restricted_after_its_backup_needs_a_dpa_too(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, classification="internal")
    classify = ("dataset", "classify", f"shop/{DATASET}", "restricted", "--reason", "PII")
    assert cli(*classify).code == 0, "the dataset could not be classified"
    before = ledger_size(home)
    _refused(cli("export", "run", "customers-to-acme"), "data-processing agreement")
    assert ledger_size(home) == before
    assert list(s.dest.iterdir()) == []


def test_an_unknown_field_in_the_allow_list_fails_the_run_and_delivers_nothing(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    spec = SPEC.replace('country = "keep"', 'country = "keep"\nemial = "keep"')
    s = prepare(cli, home, tmp_path, mongo, spec=spec)
    _refused(cli("export", "run", "customers-to-acme"), "no record of shop.customers holds: emial")
    assert list(s.dest.iterdir()) == []
    failed = events(home, "export.failed")
    assert len(failed) == 1
    assert "emial" in failed[0]["details"]["error"]
    assert [e["status"] for e in _json(cli("export", "list", "--json"))["exports"]] == ["failed"]


# -- the contract ------------------------------------------------------------------------------


def test_contract_violations_block_the_export_unless_the_spec_tolerates_them(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    strict = SPEC.replace('enum = ["FR", "DE", "NL"]', 'enum = ["FR", "DE"]')
    s = prepare(cli, home, tmp_path, mongo, spec=strict)
    out = run_export(cli, code=1)
    assert out["ok"] is False
    assert out["contract"]["failed_records"] == 13  # every third of 40 customers is NL
    assert all(v["rule"] == "schema" and v["key"] for v in out["contract"]["listed"])
    assert list(s.dest.iterdir()) == []
    blocked = events(home, "export.blocked")
    assert blocked[0]["details"]["contract"]["violations"] == 13
    r = cli("export", "run", "customers-to-acme")
    assert r.code == 1
    assert "blocked" in r.out
    # version 2 tolerates up to 13 failing records: those are excluded and counted
    s.spec_file.write_text(
        s.spec_file.read_text().replace("max_violations = 0", "max_violations = 13")
    )
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2", "--json"))
    out = run_export(cli)
    assert out["predicate"]["records"]["out"] == 27
    assert out["predicate"]["records"]["excluded"] == {"contract": 13}
    assert out["predicate"]["contract"]["result"]["failed_records"] == 13
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out


# -- the run is a gated operation ------------------------------------------------------------

CLIENT = ClientInfo(address="198.51.100.7", agent="test")
PW = "a long passphrase 42"


def _people(app: App, secrets: dict[str, str] | None = None) -> tuple[Principal, Principal]:
    """alice (the only administrator), olga (operator) and paul (approver), TOTP enrolled;
    returns olga's and paul's fresh logins (their TOTP secrets into ``secrets``). Times lie in
    the recent past so that every MFA check is still fresh when the real clock judges it."""
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
    for name, role in (("olga", Role.OPERATOR), ("paul", Role.APPROVER)):
        idn.create_account(app, alice, name, password=PW, now=t(1))
        roles.grant_role(app, alice, name, role, now=t(1))  # alice alone: waived
        login = idn.login(app, name, PW, client=CLIENT, now=t(2))
        secret = idn.begin_totp(app, login.principal, name, now=t(2)).secret
        idn.confirm_totp(app, login.principal, name, totp.code_at(secret, t(2)), now=t(2))
        if secrets is not None:
            secrets[name] = secret
        fresh[name] = idn.login(
            app, name, PW, totp.code_at(secret, t(3)), client=CLIENT, now=t(3)
        ).principal
    return fresh["olga"], fresh["paul"]


def test_an_export_waits_for_another_person_then_runs_once(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    olga, paul = _people(app)
    with app.acting_as(olga), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme", reason="quarterly churn study")
    request: dict[str, Any] = pending.value.request
    assert request["operation"] == GatedOperation.EXPORT_RUN.value
    assert request["params"]["backup_id"] == s.backup_id
    assert request["rule"]["role"] == "approver"
    assert request["eligible"] == ["paul"]
    assert list(s.dest.iterdir()) == []  # nothing ran
    assert events(home, "export.requested") == []
    with pytest.raises(AccessDenied):  # the requester never approves
        requests.approve(app, olga, request["id"])
    with pytest.raises(AccessDenied):  # nor executes before the approval
        gated.execute(app, olga, request["id"])
    assert list(s.dest.iterdir()) == []
    approved = requests.approve(app, paul, request["id"], note="purpose checked")
    assert approved.state(datetime.now(UTC)) is RequestState.APPROVED
    done = gated.execute(app, olga, request["id"])
    assert done.request.state(datetime.now(UTC)) is RequestState.EXECUTED
    result = done.result
    assert result["ok"] is True
    standing = {"standing": "approved", "request": request["id"]}
    assert result["predicate"]["approvals"]["run"] == standing
    assert result["predicate"]["approvals"]["spec"]["approved_by"] == "paul"
    completed = events(home, "export.completed")
    assert len(completed) == 1
    assert completed[0]["actor"] == "olga"
    assert completed[0]["details"]["approval"] == standing
    assert [e["subject"] for e in events(home, "request.executed")] == [f"request:{request['id']}"]
    checked = verify(cli, s, Path(result["output"]), Path(result["manifest"]))
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["ok"] is True
    with pytest.raises(AccessDenied):  # executed once: a replay is refused
        gated.execute(app, olga, request["id"])
    assert len(events(home, "export.completed")) == 1
    controls = export_controls(cli)
    assert {c["status"] for c in controls.values()} == {"pass"}, controls
    assert request["id"] in controls["export.approved"]["message"]


# -- consent ---------------------------------------------------------------------------------


def _consent_spec(path: Path) -> str:
    return SPEC.replace('legal_basis = "legitimate_interests"', 'legal_basis = "consent"').replace(
        "[input]", f'[consent]\nfile = "{path}"\nsubject_field = "email"\n\n[input]'
    )


def _consent(subject: Any, purpose: str = "churn analysis", **kw: Any) -> str:
    line = {"subject": subject, "purpose": purpose, "valid_from": "2020-01-01T00:00:00Z"}
    line.update(kw)
    return json.dumps(line)


def test_records_without_valid_consent_are_excluded_and_counted(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    consents = tmp_path / "consents.jsonl"
    lines = [_consent(f"person{n}@example.com") for n in range(0, 20)]  # 0..19 consent
    lines.append(_consent("person20@example.com", valid_to="2021-01-01T00:00:00Z"))  # expired
    lines.append(_consent("person21@example.com", valid_from="2999-01-01T00:00:00Z"))  # later
    lines.append(_consent("person22@example.com", purpose="marketing"))  # another purpose
    lines.append("")  # blank lines are allowed
    consents.write_text("\n".join(lines) + "\n")
    s = prepare(cli, home, tmp_path, mongo, spec=_consent_spec(consents))
    out = run_export(cli)
    records = out["predicate"]["records"]
    assert records["in"] == 40
    assert records["out"] == 20
    assert records["excluded"] == {"consent_not_valid": 2, "no_consent": 18}
    consent = out["predicate"]["consent"]
    assert consent["lines"] == 23
    assert consent["subject_field"] == "email"
    assert (
        "consent for 'churn analysis' checked" in export_controls(cli)["export.consent"]["message"]
    )
    assert verify(cli, s, Path(out["output"]), Path(out["manifest"])).code == 0


def test_a_consent_file_with_a_malformed_line_is_refused_by_line_number(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    consents = tmp_path / "consents.jsonl"
    consents.write_text(_consent("person1@example.com") + "\n")
    s = prepare(cli, home, tmp_path, mongo, spec=_consent_spec(consents))
    before = ledger_size(home)
    cases = {
        "not json at all": "line 2: not a JSON object",
        json.dumps({"subject": "x", "purpose": "p"}): "line 2: valid_from must be",
        _consent("x", valid_to="2019-01-01T00:00:00Z"): "line 2: valid_to is not after",
        _consent(True): "line 2: subject must be",
        _consent("x", valid_from="2020-01-01T00:00:00"): "line 2: valid_from needs a time zone",
    }
    for bad, words in cases.items():
        consents.write_text(_consent("person1@example.com") + "\n" + bad + "\n")
        _refused(cli("export", "run", "customers-to-acme"), words)
    assert ledger_size(home) == before
    assert list(s.dest.iterdir()) == []


def test_a_consent_list_changed_after_approval_does_not_run(
    cli: Any, app: App, home: Path, tmp_path: Path, mongo: str
) -> None:
    consents = tmp_path / "consents.jsonl"
    consents.write_text(_consent("person1@example.com") + "\n")
    s = prepare(cli, home, tmp_path, mongo, spec=_consent_spec(consents))
    olga, paul = _people(app)
    with app.acting_as(olga), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme")
    request_id = pending.value.request["id"]
    requests.approve(app, paul, request_id)
    consents.write_text(_consent("person1@example.com") + "\n" + _consent("person2@example.com"))
    with pytest.raises(AccessDenied, match="approval was given for another"):
        gated.execute(app, olga, request_id)
    assert list(s.dest.iterdir()) == []


def test_export_run_as_an_account_through_the_cli_becomes_a_request(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    secrets: dict[str, str] = {}
    olga, paul = _people(app, secrets)
    password = tmp_path / "olga.pw"
    password.write_text(PW)
    password.chmod(0o600)
    code = totp.code_at(secrets["olga"], datetime.now(UTC))
    r = cli(
        "export", "run", "customers-to-acme", "--reason", "study",
        "--as", "olga", "--as-password-file", str(password), "--as-code", code, "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    pending = json.loads(r.out)
    assert pending["state"] == "pending"
    assert pending["request"]["reason"] == "study"
    assert pending["request"]["requested_by"] == "olga"
    assert list(s.dest.iterdir()) == []
    requests.approve(app, paul, pending["request"]["id"])
    done = gated.execute(app, olga, pending["request"]["id"])
    assert done.result["ok"] is True
    assert Path(done.result["output"]).exists()


def test_catalog_edits_neither_approve_a_spec_nor_verify_a_recipient(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    s.spec_file.write_text(s.spec_file.read_text().replace("churn analysis", "anything"))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    identity = x25519.Identity.generate()
    args = ["recipient", "add", "mallory", "--org", "M", "--contact", "m@m.test"]
    args += ["--public-key", str(identity.to_public()), "--challenge-out", str(tmp_path / "m.age")]
    _json(cli(*args, "--json"))
    with sqlite3.connect(home / "catalog.sqlite") as db:  # behind affidavit's back
        db.execute(
            "UPDATE export_specs SET approved_by = 'paul', "
            "approved_at = '2026-01-01 00:00:00.000000' WHERE version = 2"
        )
        db.execute(
            "UPDATE export_recipients SET verified_at = '2026-01-01', challenge_sha256 = NULL "
            "WHERE name = 'mallory'"
        )
    _refused(
        cli("export", "run", "customers-to-acme", "--version", "2"),
        "records no approval of version 2",
    )
    s.spec_file.write_text(s.spec_file.read_text().replace('"acme"', '"mallory"'))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "3", "--json"))
    _refused(cli("export", "run", "customers-to-acme"), "has not proven possession")
    assert list(s.dest.iterdir()) == []
    assert events(home, "export.requested") == []


def test_verify_refuses_keys_and_identities_it_cannot_read(
    cli: Any, delivered: tuple[Setup, Path, Path], tmp_path: Path
) -> None:
    s, file, manifest = delivered
    not_identity = tmp_path / "public.txt"
    not_identity.write_text(str(x25519.Identity.from_str(s.identity).to_public()) + "\n")
    _refused(verify(cli, s, file, manifest, identity=not_identity), "does not hold an age")
    _refused(verify(cli, s, file, manifest, vkey="nobody+0000+AAAA"), "verifier key is not valid")
    missing = tmp_path / "gone.jsonl.age"
    _refused(verify(cli, s, missing, manifest), "does not exist", hint=False)
    key_file = tmp_path / "ledger.vkey"
    key_file.write_text(s.vkey + "\n")
    assert verify(cli, s, file, manifest, vkey=str(key_file)).code == 0


def test_each_recipient_gets_its_own_pseudonyms(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    first = run_export(cli)
    beta = add_recipient(cli, tmp_path, "beta")
    s.spec_file.write_text(s.spec_file.read_text().replace('"acme"', '"beta"'))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2", "--json"))
    second = run_export(cli)
    acme = [json.loads(x) for x in _plain(s, Path(first["output"]))]
    data = pyrage.decrypt(Path(second["output"]).read_bytes(), [x25519.Identity.from_str(beta)])
    others = [json.loads(x) for x in data.splitlines()]
    assert len(acme) == len(others) == 40
    for a, b in zip(acme, others, strict=True):  # the same subjects, in the same order
        assert a["_id"] != b["_id"]
        assert (a["country"], a["age"], a["email"]) == (b["country"], b["age"], b["email"])
    assert len({r["_id"] for r in acme}) == 40  # distinct subjects stay distinct
    assert (
        first["predicate"]["output"]["fingerprint"] != second["predicate"]["output"]["fingerprint"]
    )
    # the first recipient's identity does not open the second recipient's export
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(Path(second["output"]).read_bytes(), [x25519.Identity.from_str(s.identity)])


# -- CSV ------------------------------------------------------------------------------------


def _csv_rows(s: Setup, file: Path) -> list[list[str]]:
    import csv
    import io

    text = b"".join(_plain(s, file)).decode()
    return list(csv.reader(io.StringIO(text, newline="")))


def _csv_reencrypt(s: Setup, file: Path, rows: list[list[str]]) -> None:
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    _reencrypt(s, file, [out.getvalue().encode()])


@pytest.fixture
def delivered_csv(cli: Any, home: Path, tmp_path: Path, mongo: str) -> tuple[Setup, Path, Path]:
    spec = SPEC.replace('destination = "{dest}"', 'destination = "{dest}"\nformat = "csv"')
    s = prepare(cli, home, tmp_path, mongo, spec=spec)
    out = run_export(cli)
    assert out["output"].endswith(".csv.age")
    assert out["predicate"]["output"]["format"] == "csv"
    return s, Path(out["output"]), Path(out["manifest"])


def test_a_csv_export_is_delivered_and_verified(
    cli: Any, delivered_csv: tuple[Setup, Path, Path]
) -> None:
    s, file, manifest = delivered_csv
    rows = _csv_rows(s, file)
    assert rows[0] == ["_id", "email", "birth", "age", "country", "notes"]
    assert len(rows) == 41
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["country"] == "FR"
    assert first["notes"] == "null"  # redacted: JSON null, not a missing cell
    assert first["birth"] == '{"$numberInt":"1960"}'
    assert first["age"] == "20..30"
    assert verify(cli, s, file, manifest).code == 0


def test_csv_tampering_is_caught(cli: Any, delivered_csv: tuple[Setup, Path, Path]) -> None:
    s, file, manifest = delivered_csv
    genuine = file.read_bytes()
    rows = _csv_rows(s, file)
    edited = [list(r) for r in rows]
    edited[3][4] = "DE" if edited[3][4] != "DE" else "NL"
    _csv_reencrypt(s, file, edited)
    assert {"fingerprint", "plaintext-digest"} <= _checks(verify(cli, s, file, manifest))
    wider = [[*r, "name" if n == 0 else f"Person {n}"] for n, r in enumerate(rows)]
    _csv_reencrypt(s, file, wider)
    result = verify(cli, s, file, manifest)
    assert "encoding" in _checks(result)
    assert "not the allow-list" in result.out
    _csv_reencrypt(s, file, rows[:-1])
    assert {"record-count", "fingerprint"} <= _checks(verify(cli, s, file, manifest))
    # the same records, quoted where no quote is needed: not the canonical encoding
    file.write_bytes(genuine)
    lines = _plain(s, file)
    lines[1] = lines[1].replace(b",FR,", b',"FR",').replace(b",DE,", b',"DE",')
    lines[1] = lines[1].replace(b",NL,", b',"NL",')
    _reencrypt(s, file, lines)
    result = verify(cli, s, file, manifest)
    assert "not the canonical csv encoding" in result.out


def test_a_key_rotation_keeps_the_recipients_pseudonyms(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    """``keys rotate`` re-wraps every recipient's pseudonymisation key under the new KEK
    version before it retires the old one: the key (and so every pseudonym) is the same
    after the rotation, and the rotation's event names the recipients re-wrapped."""
    from affidavit.config import load_settings
    from affidavit.services.context import open_app
    from affidavit.services.exports import recipients

    add_recipient(cli, tmp_path)
    with open_app(load_settings(home=home)) as app:
        before = recipients.pseudonym_key(app, "acme")
    rotated = cli("keys", "rotate", "--json")
    assert rotated.code == 0, rotated.err
    result = json.loads(rotated.out)
    assert result["rewrapped_recipients"] == 1
    assert result["old_version"] in result["retired"]
    with open_app(load_settings(home=home)) as app:
        assert recipients.pseudonym_key(app, "acme") == before
    [event] = events(home, "keys.rotated")
    assert event["details"]["rewrapped_recipients"] == ["acme"]


KILLED_RUN = """
import os, sys
from pathlib import Path
from affidavit.config import load_settings
from affidavit.services.context import open_app
from affidavit.services.exports import run

def die(app, plan, export, allowed, partial, **_):
    partial.write_bytes(b"age-encryption.org/v1 partial")  # as far as it got
    os.kill(os.getpid(), 9)  # killed outright: no clean-up runs

run._work = die
with open_app(load_settings(home=Path(sys.argv[1]))) as app:
    run.run_export(app, "customers-to-acme")
"""


def test_a_killed_export_is_recorded_abandoned_and_leaves_no_partial(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """A run killed (SIGKILL) after it began writing: the next ``export list`` finds its
    process dead, records ``export.abandoned`` (the row failed, with why) and removes the
    hidden partial output; the destination holds nothing of it."""
    import subprocess
    import sys

    s = prepare(cli, home, tmp_path, mongo)
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(home)], capture_output=True, timeout=300,
        check=False, env={**os.environ, "AFFIDAVIT_ACTOR": "tester@example.com"},
    )  # fmt: skip
    assert done.returncode == -9, done.stderr.decode()
    [partial] = list(s.dest.glob(".*.partial-*"))
    listed = _json(cli("export", "list", "--json"))["exports"]
    [row] = [r for r in listed if r["spec"] == "customers-to-acme"]
    assert row["status"] == "failed"
    assert row["error"].startswith("abandoned: process ")
    assert not partial.exists()
    assert list(s.dest.iterdir()) == []
    [event] = events(home, "export.abandoned")
    assert event["details"]["partial_removed"] is True
    assert event["subject"] == f"export:{row['id']}"
    again = _json(cli("export", "list", "--json"))["exports"]  # reclaimed once
    assert len(events(home, "export.abandoned")) == 1
    assert again == listed
