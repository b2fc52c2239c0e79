"""C2SP signed notes: the published vectors, then attacks on notes and verifier keys."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from affidavit.crypto.note import (
    MAX_SIGNATURES,
    NoteSigner,
    NoteVerifier,
    key_id_for,
    open_note,
    sign_note,
)
from affidavit.crypto.signing import SigningKey, VerifyingKey
from affidavit.errors import FormatError, IntegrityError

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "merkle"
ABSENT = pytest.mark.skip(reason=f"../shared/vectors/merkle not present: {VECTORS}")


@cache
def _checkpoints() -> dict[str, Any]:
    path = VECTORS / "checkpoints.json"
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _vector(vector_id: str) -> dict[str, Any]:
    return next(v for v in _checkpoints()["vectors"] if v["id"] == vector_id)


def _cases(key: str) -> list[Any]:
    if not _checkpoints():
        return [pytest.param(None, id="absent", marks=ABSENT)]
    return [pytest.param(v, id=v["id"]) for v in _checkpoints()[key]]


def _signature_cases() -> list[Any]:
    if not _checkpoints():
        return [pytest.param(None, None, id="absent", marks=ABSENT)]
    return [
        pytest.param(v, s, id=f"{v['id']}/{s['key_name']}")
        for v in _checkpoints()["vectors"]
        for s in v["signatures"]
    ]


def _is_plain_ed25519(signature: dict[str, Any]) -> bool:
    return str(signature["type"]).startswith("ed25519")


def _text_of(note: str) -> str:
    return note[: note.rindex("\n\n") + 1]


# --- vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("vector", "signature"), _signature_cases())
def test_vector_signature(vector: dict[str, Any], signature: dict[str, Any]) -> None:
    """Each published signature: Ed25519 ones verify; other types are not ours to verify."""
    kind = str(signature["type"])
    if _is_plain_ed25519(signature):
        verifier = NoteVerifier.from_vkey(signature["vkey"])
        assert verifier.name == signature["key_name"]
        assert f"{verifier.key_id:08x}" == signature["key_id_hex"]
        assert verifier.key.public_bytes().hex() == signature["public_key_hex"]
        assert verifier.vkey() == signature["vkey"]
        text, verified = open_note(vector["note"], [verifier])
        assert text == _text_of(vector["note"])
        assert [(s.name, f"{s.key_id:08x}") for s in verified] == [
            (signature["key_name"], signature["key_id_hex"])
        ]
        assert verified[0].signature.hex() == signature["signature_hex"]
    elif kind.startswith("ECDSA"):
        # Signature type 0x02: this verifier supports Ed25519 only and says so.
        with pytest.raises(FormatError, match="unsupported signature type 0x02"):
            NoteVerifier.from_vkey(signature["vkey"])
    elif kind.startswith("cosignature/v1"):
        # The witness publishes a 0x01 vkey, but signs as a 0x04 cosigner (another key ID):
        # as a plain note key it matches no signature line, so the note is not accepted.
        verifier = NoteVerifier.from_vkey(signature["vkey"])
        assert f"{verifier.key_id:08x}" != signature["key_id_hex"]
        with pytest.raises(IntegrityError, match="no signature by a known key"):
            open_note(vector["note"], [verifier])
    else:
        pytest.fail(f"unknown signature type {kind!r}")


@pytest.mark.parametrize("vector", _cases("vectors"))
def test_vector_note_with_all_its_keys(vector: dict[str, Any]) -> None:
    """All parseable keys together: unknown signatures are ignored, Ed25519 ones verify."""
    verifiers = [
        NoteVerifier.from_vkey(s["vkey"])
        for s in vector["signatures"]
        if not str(s["type"]).startswith("ECDSA")
    ]
    expected = {s["key_name"] for s in vector["signatures"] if _is_plain_ed25519(s)}
    if not expected:
        with pytest.raises(IntegrityError):
            open_note(vector["note"], verifiers)
        return
    text, verified = open_note(vector["note"], verifiers)
    assert text == _text_of(vector["note"])
    assert {s.name for s in verified} == expected


def _mutated(mutation_id: str) -> tuple[str, list[NoteVerifier]]:
    if mutation_id == "neg/sumdb_wrong_size":
        vector = _vector("sumdb_6476701")
        note = vector["note"].replace("\n6476701\n", "\n6476702\n", 1)
        return note, [NoteVerifier.from_vkey(vector["signatures"][0]["vkey"])]
    if mutation_id == "neg/localdev_5_with_bang":
        vector = _vector("x_mod_localdev_5")
        note = vector["note"].replace("go.sum database tree\n", "go.sum database tree!\n", 1)
        return note, [NoteVerifier.from_vkey(vector["signatures"][0]["vkey"])]
    if mutation_id == "neg/cosig_as_plain":
        vector = _vector("aw_ci3_witnessed")
        cosigner = next(s for s in vector["signatures"] if s["key_name"].endswith("floral-sky"))
        return vector["note"], [NoteVerifier.from_vkey(cosigner["vkey"])]
    pytest.fail(f"no implementation of negative mutation {mutation_id!r}")


@pytest.mark.parametrize("mutation", _cases("negative_mutations"))
def test_vector_negative_mutation(mutation: dict[str, Any]) -> None:
    assert mutation["expect_valid"] is False
    note, verifiers = _mutated(mutation["id"])
    assert note != _vector(mutation["base"])["note"] or mutation["id"] == "neg/cosig_as_plain"
    with pytest.raises(IntegrityError):
        open_note(note, verifiers)


@pytest.mark.skipif(not _checkpoints(), reason="../shared/vectors/merkle not present")
def test_c2sp_example_key_id() -> None:
    signature = _vector("c2sp_signed_note_example")["signatures"][0]
    key = VerifyingKey.from_public_bytes(bytes.fromhex(signature["public_key_hex"]))
    assert f"{key_id_for('example.com/foo', key):08x}" == "530d903a"


# --- our own notes -------------------------------------------------------------------------


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner("example.com/log", SigningKey.generate())


TEXT = "example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"


def test_sign_and_open_round_trip(signer: NoteSigner) -> None:
    note = sign_note(TEXT, [signer])
    assert note.startswith(TEXT + "\n\u2014 example.com/log ")
    text, verified = open_note(note, [signer.verifier()])
    assert text == TEXT
    assert [(s.name, s.key_id) for s in verified] == [(signer.name, signer.key_id)]


def test_vkey_round_trip(signer: NoteSigner) -> None:
    verifier = signer.verifier()
    assert NoteVerifier.from_vkey(verifier.vkey()) == verifier
    assert NoteVerifier.for_key(signer.name, signer.key.public_key) == verifier


def test_altered_text_is_rejected(signer: NoteSigner) -> None:
    note = sign_note(TEXT, [signer]).replace("\n3\n", "\n4\n", 1)
    with pytest.raises(IntegrityError, match="does not verify"):
        open_note(note, [signer.verifier()])


def test_unknown_key_only_is_rejected(signer: NoteSigner) -> None:
    note = sign_note(TEXT, [NoteSigner("someone.else", SigningKey.generate())])
    with pytest.raises(IntegrityError, match="no signature by a known key"):
        open_note(note, [signer.verifier()])


def test_no_verifiers_is_rejected(signer: NoteSigner) -> None:
    with pytest.raises(IntegrityError):
        open_note(sign_note(TEXT, [signer]), [])


def test_same_name_other_key_is_ignored_then_rejected(signer: NoteSigner) -> None:
    impostor = NoteSigner(signer.name, SigningKey.generate())
    with pytest.raises(IntegrityError, match="no signature by a known key"):
        open_note(sign_note(TEXT, [impostor]), [signer.verifier()])


def test_unknown_signatures_are_ignored(signer: NoteSigner) -> None:
    others = [NoteSigner(f"witness{i}", SigningKey.generate()) for i in range(20)]
    note = sign_note(TEXT, [*others, signer])
    _, verified = open_note(note, [signer.verifier()])
    assert [s.name for s in verified] == [signer.name]


def test_many_signatures_are_accepted(signer: NoteSigner) -> None:
    signers = [NoteSigner(f"w{i}", SigningKey.generate()) for i in range(16)]
    _, verified = open_note(sign_note(TEXT, signers), [s.verifier() for s in signers])
    assert len(verified) == 16


def test_too_many_signature_lines_are_malformed(signer: NoteSigner) -> None:
    line = sign_note(TEXT, [signer])[len(TEXT) + 1 :]
    note = TEXT + "\n" + line * (MAX_SIGNATURES + 1)
    with pytest.raises(FormatError):
        open_note(note, [signer.verifier()])


def test_bad_signature_by_known_key_fails_even_when_another_verifies(signer: NoteSigner) -> None:
    other = NoteSigner("other", SigningKey.generate())
    good = sign_note(TEXT, [signer])
    forged_line = other.signature_line("forged\n")
    with pytest.raises(IntegrityError, match="'other'"):
        open_note(good + forged_line, [signer.verifier(), other.verifier()])


def test_repeated_signature_counts_once(signer: NoteSigner) -> None:
    note = sign_note(TEXT, [signer, signer])
    _, verified = open_note(note, [signer.verifier()])
    assert len(verified) == 1


def test_text_is_split_at_the_last_blank_line(signer: NoteSigner) -> None:
    # sign_note refuses blank lines in text, but the format splits at the LAST blank line.
    text = "first\n\nsecond\n"
    note = text + "\n" + signer.signature_line(text)
    assert open_note(note, [signer.verifier()])[0] == text


@pytest.mark.parametrize(
    "defect",
    [
        "trailing_garbage",
        "trailing_garbage_line",
        "missing_blank_line",
        "missing_final_newline",
        "no_signatures",
        "signature_line_without_em_dash",
        "signature_line_with_hyphen",
        "signature_without_space",
        "signature_bad_base64",
        "signature_too_short",
        "control_character",
        "key_name_with_plus",
    ],
)
def test_malformed_note_is_rejected(signer: NoteSigner, defect: str) -> None:
    note = sign_note(TEXT, [signer])
    sig_line = note[len(TEXT) + 1 :]
    body = sig_line[len("\u2014 ") : -1]
    name, b64 = body.split(" ")
    mutated = {
        "trailing_garbage": note + "garbage",
        "trailing_garbage_line": note + "garbage\n",
        "missing_blank_line": TEXT + sig_line,
        "missing_final_newline": note[:-1],
        "no_signatures": TEXT + "\n",
        "signature_line_without_em_dash": TEXT + "\n" + body + "\n",
        "signature_line_with_hyphen": TEXT + "\n- " + body + "\n",
        "signature_without_space": TEXT + f"\n\u2014 {name}{b64}\n",
        "signature_bad_base64": TEXT + f"\n\u2014 {name} {b64[:-2]}!!\n",
        "signature_too_short": TEXT + f"\n\u2014 {name} {base64.b64encode(b'1234').decode()}\n",
        "control_character": note.replace("\n3\n", "\n3\t\n", 1),
        "key_name_with_plus": TEXT + f"\n\u2014 {name}+x {b64}\n",
    }[defect]
    with pytest.raises(FormatError):
        open_note(mutated, [signer.verifier()])


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("no final newline", id="no-newline"),
        pytest.param("a\n\nb\n", id="blank-line-inside"),
        pytest.param("\nb\n", id="leading-blank-line"),
        pytest.param("tab\there\n", id="control-character"),
        pytest.param("cr\r\n", id="carriage-return"),
        pytest.param("bad \udc80 surrogate\n", id="not-utf8"),
    ],
)
def test_sign_note_rejects_bad_text(signer: NoteSigner, text: str) -> None:
    with pytest.raises(FormatError):
        sign_note(text, [signer])


def test_sign_note_needs_a_signer() -> None:
    with pytest.raises(FormatError):
        sign_note(TEXT, [])


def test_unicode_text_is_signed_as_utf8(signer: NoteSigner) -> None:
    text = "caf\u00e9 \u2014 log\n"
    assert open_note(sign_note(text, [signer]), [signer.verifier()])[0] == text


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "new\nline", "tab\tname"])
def test_bad_key_names_are_rejected(name: str) -> None:
    with pytest.raises(FormatError):
        NoteSigner(name, SigningKey.generate())


def _vkey_parts(signer: NoteSigner) -> tuple[str, str, bytes]:
    name, hex_id, b64 = signer.verifier().vkey().split("+", 2)
    return name, hex_id, base64.b64decode(b64)


@pytest.mark.parametrize(
    "defect",
    [
        "missing_part",
        "extra_part",
        "bad_name",
        "empty_name",
        "wrong_key_id",
        "short_key_id",
        "non_hex_key_id",
        "wrong_type_byte",
        "no_type_byte",
        "short_key",
        "long_key",
        "bad_base64",
        "key_of_another_name",
    ],
)
def test_malformed_vkey_is_rejected(signer: NoteSigner, defect: str) -> None:
    name, hex_id, raw = _vkey_parts(signer)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    wrong_id = f"{(int(hex_id, 16) ^ 1):08x}"
    vkey = {
        "missing_part": f"{name}+{hex_id}",
        "extra_part": f"{name}+{hex_id}+{b64(raw)}+x",
        "bad_name": f"bad name+{hex_id}+{b64(raw)}",
        "empty_name": f"+{hex_id}+{b64(raw)}",
        "wrong_key_id": f"{name}+{wrong_id}+{b64(raw)}",
        "short_key_id": f"{name}+{hex_id[:6]}+{b64(raw)}",
        "non_hex_key_id": f"{name}+zzzzzzzz+{b64(raw)}",
        "wrong_type_byte": f"{name}+{hex_id}+{b64(bytes([2]) + raw[1:])}",
        "no_type_byte": f"{name}+{hex_id}+{b64(raw[1:])}",
        "short_key": f"{name}+{hex_id}+{b64(raw[:-1])}",
        "long_key": f"{name}+{hex_id}+{b64(raw + bytes(1))}",
        "bad_base64": f"{name}+{hex_id}+{b64(raw)[:-1]}*",
        "key_of_another_name": f"other.name+{hex_id}+{b64(raw)}",
    }[defect]
    with pytest.raises(FormatError):
        NoteVerifier.from_vkey(vkey)


def test_verifier_with_mismatched_key_id_cannot_exist(signer: NoteSigner) -> None:
    with pytest.raises(FormatError):
        NoteVerifier(name=signer.name, key_id=signer.key_id ^ 1, key=signer.key.public_key)


def test_vkey_whose_base64_contains_plus_round_trips() -> None:
    for seed in range(256):
        verifier = NoteSigner("log", SigningKey.from_private_bytes(bytes([seed]) * 32)).verifier()
        if "+" in verifier.vkey().split("+", 2)[2]:
            assert NoteVerifier.from_vkey(verifier.vkey()) == verifier
            return
    pytest.fail("no test key with '+' in its base64")
