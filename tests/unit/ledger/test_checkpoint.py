"""C2SP tlog-checkpoints: published checkpoints, then forged ones, each named after its defect."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from affidavit.crypto.note import NoteSigner, NoteVerifier, open_note, sign_note
from affidavit.crypto.signing import SigningKey
from affidavit.errors import FormatError, IntegrityError
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "merkle"
ABSENT = pytest.mark.skip(reason=f"../shared/vectors/merkle not present: {VECTORS}")


@cache
def _checkpoints() -> dict[str, Any]:
    path = VECTORS / "checkpoints.json"
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _checkpoint_cases() -> list[Any]:
    if not _checkpoints():
        return [pytest.param(None, id="absent", marks=ABSENT)]
    return [pytest.param(v, id=v["id"]) for v in _checkpoints()["vectors"] if "parsed" in v]


def _ed25519_log_signature(vector: dict[str, Any]) -> dict[str, Any] | None:
    first = vector["signatures"][0]  # the log's own signature comes first
    return first if str(first["type"]).startswith("ed25519") else None


@pytest.mark.parametrize("vector", _checkpoint_cases())
def test_vector_checkpoint_parses(vector: dict[str, Any]) -> None:
    note = vector["note"]
    text = note[: note.rindex("\n\n") + 1]
    checkpoint = Checkpoint.from_text(text)
    parsed = vector["parsed"]
    assert checkpoint.origin == parsed["origin"]
    assert checkpoint.size == parsed["tree_size"]
    assert checkpoint.root.hex() == parsed["root_hash_hex"]
    assert list(checkpoint.extensions) == parsed["extension_lines"]
    assert checkpoint.to_text() == text


@pytest.mark.parametrize("vector", _checkpoint_cases())
def test_vector_checkpoint_opens_with_its_log_key(vector: dict[str, Any]) -> None:
    signature = _ed25519_log_signature(vector)
    if signature is None:
        # The log signs with ECDSA (note type 0x02); only Ed25519 keys are accepted.
        with pytest.raises(FormatError, match="unsupported signature type"):
            NoteVerifier.from_vkey(vector["signatures"][0]["vkey"])
        return
    verifier = NoteVerifier.from_vkey(signature["vkey"])
    checkpoint = open_checkpoint(
        vector["note"], verifier, expected_origin=vector["parsed"]["origin"]
    )
    assert checkpoint.size == vector["parsed"]["tree_size"]
    with pytest.raises(IntegrityError):
        open_checkpoint(vector["note"], verifier, expected_origin="another.example/log")


@pytest.mark.skipif(not _checkpoints(), reason="../shared/vectors/merkle not present")
def test_vector_monkeys_5_to_8_is_consistent() -> None:
    vectors = {v["id"]: v for v in _checkpoints()["vectors"]}
    vkey = vectors["monkeys_5"]["signatures"][0]["vkey"]
    verifier = NoteVerifier.from_vkey(vkey)
    old = open_checkpoint(vectors["monkeys_5"]["note"], verifier, expected_origin="monkeys")
    new = open_checkpoint(vectors["monkeys_8"]["note"], verifier, expected_origin="monkeys")
    consistency = json.loads((VECTORS / "consistency_proofs.json").read_text(encoding="utf-8"))
    probe = next(v for v in consistency["vectors"] if v["id"] == "cons/witness/monkeys-5-to-8")
    proof = [bytes.fromhex(h) for h in probe["proof_hex"]]
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


# --- our own checkpoints -------------------------------------------------------------------

ORIGIN = "affidavit.example/ledger"
LEAVES = [merkle.leaf_hash(f"event {i}".encode()) for i in range(11)]
CHECKPOINT = Checkpoint(origin=ORIGIN, size=len(LEAVES), root=merkle.root(LEAVES))


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, SigningKey.from_private_bytes(b"\x11" * 32))


@pytest.fixture(scope="module")
def verifier(signer: NoteSigner) -> NoteVerifier:
    return NoteVerifier.from_vkey(signer.verifier().vkey())


def test_round_trip(signer: NoteSigner, verifier: NoteVerifier) -> None:
    note = sign_checkpoint(CHECKPOINT, signer)
    assert note.startswith(f"{ORIGIN}\n11\n{base64.b64encode(CHECKPOINT.root).decode()}\n\n")
    assert open_checkpoint(note, verifier, expected_origin=ORIGIN) == CHECKPOINT
    assert open_checkpoint(note, verifier) == CHECKPOINT


def test_round_trip_with_extensions(signer: NoteSigner, verifier: NoteVerifier) -> None:
    checkpoint = Checkpoint(
        origin=ORIGIN, size=0, root=merkle.EMPTY_ROOT, extensions=("ext one", "ext two")
    )
    assert checkpoint.to_text().endswith("\next one\next two\n")
    assert open_checkpoint(sign_checkpoint(checkpoint, signer), verifier) == checkpoint


def test_altered_root(signer: NoteSigner, verifier: NoteVerifier) -> None:
    note = sign_checkpoint(CHECKPOINT, signer)
    other = base64.b64encode(merkle.root(LEAVES[:-1])).decode()
    forged = note.replace(base64.b64encode(CHECKPOINT.root).decode(), other)
    with pytest.raises(IntegrityError):
        open_checkpoint(forged, verifier)


def test_altered_size(signer: NoteSigner, verifier: NoteVerifier) -> None:
    forged = sign_checkpoint(CHECKPOINT, signer).replace("\n11\n", "\n12\n", 1)
    with pytest.raises(IntegrityError):
        open_checkpoint(forged, verifier)


def test_resigned_with_a_different_key(signer: NoteSigner, verifier: NoteVerifier) -> None:
    forger = NoteSigner(ORIGIN, SigningKey.generate())
    forged = sign_checkpoint(
        Checkpoint(origin=ORIGIN, size=12, root=merkle.root([*LEAVES, LEAVES[0]])), forger
    )
    with pytest.raises(IntegrityError):
        open_checkpoint(forged, verifier)


def test_checkpoint_from_another_origin(signer: NoteSigner, verifier: NoteVerifier) -> None:
    other = Checkpoint(origin="other.example/ledger", size=CHECKPOINT.size, root=CHECKPOINT.root)
    note = sign_checkpoint(other, signer)
    with pytest.raises(IntegrityError, match="expected"):
        open_checkpoint(note, verifier, expected_origin=ORIGIN)


def test_signature_line_of_an_unknown_key_only(verifier: NoteVerifier) -> None:
    stranger = NoteSigner("stranger.example", SigningKey.generate())
    with pytest.raises(IntegrityError, match="no signature by a known key"):
        open_checkpoint(sign_checkpoint(CHECKPOINT, stranger), verifier)


def test_unknown_cosignature_is_ignored(signer: NoteSigner, verifier: NoteVerifier) -> None:
    witness = NoteSigner("witness.example", SigningKey.generate())
    note = sign_checkpoint(CHECKPOINT, signer) + witness.signature_line(CHECKPOINT.to_text())
    assert open_checkpoint(note, verifier) == CHECKPOINT


@pytest.mark.parametrize(
    "vkey",
    [
        pytest.param("affidavit.example/ledger", id="no-key-id"),
        pytest.param("affidavit.example/ledger+0000000+AAAA", id="short-key-id"),
        pytest.param("affidavit.example/ledger+00000000+" + "A" * 44, id="zero-type-byte"),
        pytest.param("affidavit example+00000000+AQ==", id="space-in-name"),
    ],
)
def test_malformed_vkey(vkey: str) -> None:
    with pytest.raises(FormatError):
        NoteVerifier.from_vkey(vkey)


def test_trailing_garbage(signer: NoteSigner, verifier: NoteVerifier) -> None:
    with pytest.raises(FormatError):
        open_checkpoint(sign_checkpoint(CHECKPOINT, signer) + "garbage", verifier)


def test_missing_blank_line(signer: NoteSigner, verifier: NoteVerifier) -> None:
    note = sign_checkpoint(CHECKPOINT, signer)
    with pytest.raises(FormatError):
        open_checkpoint(note.replace("\n\n", "\n", 1), verifier)


def test_signed_text_that_is_not_a_checkpoint(signer: NoteSigner, verifier: NoteVerifier) -> None:
    note = sign_note("just a note\n", [signer])
    assert open_note(note, [verifier])[0] == "just a note\n"
    with pytest.raises(FormatError):
        open_checkpoint(note, verifier)


ROOT_B64 = base64.b64encode(b"\x07" * 32).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"o\n1\n{ROOT_B64}", id="no-final-newline"),
        pytest.param("o\n1\n", id="missing-root"),
        pytest.param(f"\n1\n{ROOT_B64}\n", id="empty-origin"),
        pytest.param(f"o\n01\n{ROOT_B64}\n", id="leading-zero"),
        pytest.param(f"o\n-1\n{ROOT_B64}\n", id="negative-size"),
        pytest.param(f"o\n+1\n{ROOT_B64}\n", id="plus-sign"),
        pytest.param(f"o\n 1\n{ROOT_B64}\n", id="space-in-size"),
        pytest.param(f"o\n1.0\n{ROOT_B64}\n", id="decimal-point"),
        pytest.param(f"o\n\u0661\n{ROOT_B64}\n", id="non-ascii-digit"),
        pytest.param(f"o\n{2**64}\n{ROOT_B64}\n", id="size-over-uint64"),
        pytest.param(f"o\n{'9' * 5000}\n{ROOT_B64}\n", id="huge-size"),
        pytest.param(f"o\n\n{ROOT_B64}\n", id="empty-size"),
        pytest.param("o\n1\nAAAA\n", id="short-root"),
        pytest.param(f"o\n1\n{ROOT_B64[:-1]}\n", id="root-without-padding"),
        pytest.param(f"o\n1\n{ROOT_B64[:-2]}x=\n", id="non-canonical-root"),
        pytest.param(f"o\n1\n{ROOT_B64.replace('B', '-')}\n", id="url-safe-root"),
        pytest.param(f"o\n1\n{ROOT_B64}\n\n", id="empty-extension"),
        pytest.param(f"o\t\n1\n{ROOT_B64}\n", id="control-in-origin"),
    ],
)
def test_malformed_checkpoint_text(text: str) -> None:
    with pytest.raises(FormatError):
        Checkpoint.from_text(text)


def test_zero_size_and_spaces_in_origin_are_accepted() -> None:
    checkpoint = Checkpoint.from_text(f"go.sum database tree\n0\n{ROOT_B64}\n")
    assert checkpoint.size == 0
    assert checkpoint.origin == "go.sum database tree"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"origin": "", "size": 1, "root": b"\0" * 32}, id="empty-origin"),
        pytest.param({"origin": "o", "size": -1, "root": b"\0" * 32}, id="negative-size"),
        pytest.param({"origin": "o", "size": True, "root": b"\0" * 32}, id="bool-size"),
        pytest.param({"origin": "o", "size": 1, "root": b"\0" * 31}, id="short-root"),
        pytest.param({"origin": "a\nb", "size": 1, "root": b"\0" * 32}, id="newline-origin"),
        pytest.param(
            {"origin": "o", "size": 1, "root": b"\0" * 32, "extensions": ("",)}, id="empty-ext"
        ),
    ],
)
def test_invalid_checkpoint_cannot_be_built(fields: dict[str, Any]) -> None:
    with pytest.raises(FormatError):
        Checkpoint(**fields)
