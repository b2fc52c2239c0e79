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
from affidavit.crypto.segments import geometry
from affidavit.crypto.signing import SigningKey
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    attest,
    verify_attestation,
)
from affidavit.models.manifest import BackupManifest

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


def test_the_worked_examples_segment_table_tiles_its_artifact() -> None:
    """The example's table reads as a manifest's member, writes back to the same JSON, and
    lies exactly where the page's geometry puts it at the header size the page states."""
    text = PAGE.read_text(encoding="utf-8")
    predicate = json.loads(_block(text, "json"))
    manifest = BackupManifest.from_predicate(predicate)
    assert manifest.to_predicate() == predicate
    header = re.search(r"age header and nonce take `(\d+)`", text)
    assert header is not None
    tables = [a for a in manifest.artifacts if a.segments is not None]
    assert len(tables) == 1 and len(manifest.artifacts) == 2  # both forms side by side
    (art,) = tables
    assert art.segments is not None and art.plain_size is not None
    assert (
        art.segments.tiling_issues(
            size=art.size, plain_size=art.plain_size, payload_offset=int(header.group(1))
        )
        == []
    )
    places = geometry(
        payload_offset=int(header.group(1)),
        plain_size=art.plain_size,
        segment_size=art.segments.segment_size,
    )
    assert [(s.offset, s.size, s.plain_offset, s.plain_size) for s in art.segments.segments] == [
        (p.offset, p.size, p.plain_offset, p.plain_size) for p in places
    ]
