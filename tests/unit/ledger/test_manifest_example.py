"""The worked example of docs/formats/manifest.md, recomputed from the page itself: the page's
predicate, key and expected values are parsed out of it, so neither can drift from the code
(and the manifest's bytes stay pinned: a change to canonicalisation, PAE or signing fails
here)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

from affidavit.crypto.dsse import pae
from affidavit.crypto.note import NoteSigner, NoteVerifier
from affidavit.crypto.signing import SigningKey
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    attest,
    verify_attestation,
)

PAGE = Path(__file__).resolve().parents[3] / "docs" / "formats" / "manifest.md"


def _block(text: str, tag: str) -> str:
    found = re.search(rf"```{tag}\n(.*?)```", text, re.S)
    assert found is not None, f"no ```{tag} block in {PAGE}"
    return found.group(1)


def test_the_worked_example_recomputes() -> None:
    text = PAGE.read_text(encoding="utf-8")
    seed_hex = re.search(r"Ed25519 seed `([0-9a-f]{64})`", text)
    origin = re.search(r"origin `([^`]+)`, so the verifier key", text)
    assert seed_hex is not None and origin is not None
    predicate = json.loads(_block(text, "json"))
    expected = dict(
        line.split(None, 1) if not line.startswith("payload bytes") else ("payload", line[13:])
        for line in _block(text, "expected").strip().splitlines()
    )
    key = SigningKey(bytes.fromhex(seed_hex.group(1)))
    signer = NoteSigner(origin.group(1), key)
    assert signer.verifier().vkey() == _block(text, "vkey").strip()
    keyid = f"{signer.key_id:08x}"
    assert keyid == expected["keyid"].strip()

    subjects = tuple(Subject(name=a["path"], sha256=a["sha256"]) for a in predicate["artifacts"])
    statement = Statement(
        subjects=subjects, predicate_type=BACKUP_PREDICATE_TYPE, predicate=predicate
    )
    payload = statement.to_json()
    assert len(payload) == int(expected["payload"])
    assert hashlib.sha256(payload).hexdigest() == expected["manifest_sha256"].strip()
    signing_input = pae(IN_TOTO_PAYLOAD_TYPE, payload)
    assert hashlib.sha256(signing_input).hexdigest() == expected["pae_sha256"].strip()
    envelope = attest(statement, key, keyid)
    assert base64.b64encode(envelope.signatures[0].sig).decode() == expected["signature"].strip()
    digest = hashlib.sha256(envelope.to_json().encode()).hexdigest()
    assert digest == expected["envelope_sha256"].strip()

    # and a verifier holding only the printed vkey accepts it
    verifier = NoteVerifier.from_vkey(_block(text, "vkey").strip())
    assert verifier.key_id == signer.key_id
    again = verify_attestation(
        envelope, {keyid: key.public_key}, predicate_type=BACKUP_PREDICATE_TYPE
    )
    assert dict(again.predicate) == predicate
