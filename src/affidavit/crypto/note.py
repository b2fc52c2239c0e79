"""C2SP signed-note v1.0.0 with Ed25519 (signature type ``0x01``).

A signed note is UTF-8 text ending in a newline, one blank line, then signature lines::

    <text line>\\n ...
    \\n
    — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\\n ...

The signed message is the text including its final newline, without the blank line. The key
ID is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` read as a big-endian integer, and a
verifier key ("vkey") is ``<name>+<8 hex key ID>+base64(0x01 || public key)``.

:func:`open_note` follows the spec's rules: signatures by unknown (name, key ID) pairs are
ignored, every signature by a known key must verify, and at least one must.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from affidavit.crypto.digest import sha256
from affidavit.crypto.signing import PUBLIC_KEY_SIZE, SigningKey, VerifyingKey
from affidavit.errors import FormatError, IntegrityError

__all__ = [
    "ED25519_TYPE",
    "MAX_SIGNATURES",
    "NoteSigner",
    "NoteVerifier",
    "SignatureInfo",
    "check_key_name",
    "key_id_for",
    "open_note",
    "sign_note",
]

ED25519_TYPE = 0x01
"""Signature-type byte of plain Ed25519 note signatures."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the spec requires accepting at least 16)."""

_SIG_PREFIX = "\u2014 "  # EM DASH, space
_KEY_ID_SIZE = 4
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def check_key_name(name: str) -> None:
    """Raise :class:`FormatError` unless ``name`` is a valid key name.

    A key name is non-empty UTF-8 without spaces, ``+`` or control characters.
    """
    if (
        not name
        or " " in name
        or "+" in name
        or "\n" in name
        or _CONTROL.search(name)
        or "\u2014" in name
    ):
        raise FormatError(f"invalid note key name {name!r}", hint="no spaces, '+' or controls")


def key_id_for(name: str, key: VerifyingKey) -> int:
    """Return the key ID ``SHA-256(name || 0x0A || 0x01 || pubkey)[:4]`` as a big-endian int."""
    digest = sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + key.public_bytes())
    return int.from_bytes(digest[:_KEY_ID_SIZE], "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteVerifier:
    """A known Ed25519 note key: name, key ID and public key (the ID must match the key).

    Usually built with :meth:`from_vkey` or :meth:`for_key`.
    """

    name: str
    key_id: int
    key: VerifyingKey

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.key_id != key_id_for(self.name, self.key):
            raise FormatError(
                f"key ID {self.key_id:08x} does not belong to key {self.name!r}",
                hint="copy the verifier key again; it may be truncated or altered",
            )

    @classmethod
    def for_key(cls, name: str, key: VerifyingKey) -> NoteVerifier:
        """Build the verifier of ``key`` under ``name``, computing its key ID."""
        check_key_name(name)
        return cls(name=name, key_id=key_id_for(name, key), key=key)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<8 hex key ID>+base64(0x01 || 32-byte pubkey)``.

        Raises :class:`FormatError` for a bad name, key ID, encoding, type byte or length, or
        when the key ID does not match the key.
        """
        parts = vkey.split("+", 2)  # the base64 part may itself contain "+"
        if len(parts) != 3:
            raise FormatError("a verifier key is <name>+<hex key ID>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        if not _HEX8.fullmatch(hex_id):
            raise FormatError(f"verifier key {name!r}: key ID must be 8 hex digits")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FormatError(f"verifier key {name!r}: bad base64") from exc
        if not raw or raw[0] != ED25519_TYPE:
            kind = f"0x{raw[0]:02x}" if raw else "missing"
            raise FormatError(
                f"verifier key {name!r}: unsupported signature type {kind}",
                hint="only Ed25519 (type 0x01) note keys are supported",
            )
        if len(raw) != 1 + PUBLIC_KEY_SIZE:
            raise FormatError(f"verifier key {name!r}: an Ed25519 key is {PUBLIC_KEY_SIZE} bytes")
        return cls(name=name, key_id=int(hex_id, 16), key=VerifyingKey(raw[1:]))

    def vkey(self) -> str:
        """Return this key in vkey form."""
        b64 = base64.b64encode(bytes([ED25519_TYPE]) + self.key.public_bytes()).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{b64}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's signature of ``message``."""
        return self.key.verify(message, signature)


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """An Ed25519 note signing key under a name."""

    name: str
    key: SigningKey = field(repr=False)
    # SHA-256 of the name and public key, computed once (a checkpoint is signed per change)
    _key_id: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        object.__setattr__(self, "_key_id", key_id_for(self.name, self.key.public_key))

    @property
    def key_id(self) -> int:
        """The key ID of this signer."""
        return self._key_id

    def verifier(self) -> NoteVerifier:
        """Return the matching :class:`NoteVerifier`."""
        return NoteVerifier(name=self.name, key_id=self.key_id, key=self.key.public_key)

    def signature_line(self, text: str) -> str:
        """Return the signature line (with newline) of this key over ``text``."""
        signature = self.key.sign(text.encode("utf-8"))
        blob = self.key_id.to_bytes(_KEY_ID_SIZE, "big") + signature
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureInfo:
    """One verified signature of a note."""

    name: str
    key_id: int
    signature: bytes = field(repr=False)


def _check_utf8_text(note: str) -> None:
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise FormatError("note is not valid UTF-8") from exc
    if _CONTROL.search(note):
        raise FormatError("note contains control characters other than newline")


def _check_text(text: str) -> None:
    _check_utf8_text(text)
    if not text.endswith("\n"):
        raise FormatError("note text must end with a newline")
    if text.startswith("\n") or "\n\n" in text:
        raise FormatError("note text must not contain blank lines")


def sign_note(text: str, signers: Iterable[NoteSigner]) -> str:
    """Sign ``text`` with every signer and return the signed note.

    ``text`` must be UTF-8, end with a newline, contain no blank line and no control characters
    other than newline; raises :class:`FormatError` otherwise, or when no signer is given.
    """
    _check_text(text)
    lines = [signer.signature_line(text) for signer in signers]
    if not lines:
        raise FormatError("a signed note needs at least one signer")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    return text + "\n" + "".join(lines)


def _parse_signature_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise FormatError("malformed note: a signature line must start with an em dash and space")
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise FormatError("malformed note: signature line without a signature")
    check_key_name(name)
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"malformed note: bad base64 in the signature of {name!r}") from exc
    if len(blob) <= _KEY_ID_SIZE:
        raise FormatError(f"malformed note: signature of {name!r} is too short")
    return name, int.from_bytes(blob[:_KEY_ID_SIZE], "big"), blob[_KEY_ID_SIZE:]


def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> tuple[str, list[SignatureInfo]]:
    """Verify a signed note and return its text and its verified signatures.

    The text is separated from the signatures at the last blank line. Signatures whose
    (name, key ID) matches no verifier are ignored; a key that signed more than once is listed
    once. Raises :class:`FormatError` for a malformed note and :class:`IntegrityError` when a
    known key's signature fails or no known key signed the note.
    """
    known: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        slot = (verifier.name, verifier.key_id)
        if slot in known and known[slot].key != verifier.key:
            raise FormatError(f"two different keys share name {verifier.name!r} and key ID")
        known[slot] = verifier
    _check_utf8_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise FormatError("malformed note: no blank line before the signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise FormatError("malformed note: the signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    message = text.encode("utf-8")
    verified: list[SignatureInfo] = []
    seen: set[tuple[str, int]] = set()
    for line in lines:
        name, key_id, signature = _parse_signature_line(line)
        known_key = known.get((name, key_id))
        if known_key is None:
            continue
        if not known_key.verify(message, signature):
            raise IntegrityError(
                f"signature by {name!r} ({key_id:08x}) does not verify",
                hint="the note was altered or signed by another key with the same name",
            )
        if (name, key_id) not in seen:
            seen.add((name, key_id))
            verified.append(SignatureInfo(name=name, key_id=key_id, signature=signature))
    if not verified:
        raise IntegrityError(
            "the note carries no signature by a known key",
            hint="check that the verifier key (vkey) is the right one for this note",
        )
    return text, verified
