"""Recipients of governed exports: who they are, the age X25519 key exports are encrypted
to, and the proof that they hold its identity.

``add_recipient`` records the recipient (``recipient.added``) with a fresh pseudonymisation
key (wrapped by the keystore's KEK, bound to ``recipient:<name>``: the same subject gets
other pseudonyms for every recipient) and writes a challenge: a random text encrypted to the
recipient's key. The recipient decrypts it (``age -d -i KEY challenge.age``) and sends the
text back; ``verify_recipient`` compares it with the digest it kept and records
``recipient.verified``. Exports go only to a recipient whose newest ``recipient.verified``
event names its current key: the ledger vouches, not the catalog row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from affidavit.catalog.exports import WrappedKey
from affidavit.catalog.store import UnitOfWork
from affidavit.crypto.age import encrypt_chunks
from affidavit.crypto.pseudonyms import (
    challenge_matches,
    check_age_recipient,
    new_challenge,
    new_pseudonym_key,
)
from affidavit.errors import AccessDenied, InputError
from affidavit.keystores.base import WrappedSecret
from affidavit.models.export import Recipient
from affidavit.services.context import App
from affidavit.services.exports.files import read_text, refuse_existing, remove_quietly, write_new
from affidavit.services.keys import keystore_for
from affidavit.services.policy_vouch import read_events

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MAX_TEXT: Final = 200
VERIFIED_ACTION: Final = "recipient.verified"


def _context(name: str) -> bytes:
    return f"recipient:{name}".encode()


def _clean(value: str, what: str, *, optional: bool = False) -> str | None:
    text = " ".join(value.split()) if value else ""
    if not text:
        if optional:
            return None
        raise InputError(f"the recipient needs {what}")
    if len(text) > _MAX_TEXT:
        raise InputError(f"{what} holds at most {_MAX_TEXT} characters")
    return text


def _challenge(public_key: str) -> tuple[bytes, str]:
    text, digest = new_challenge()
    return b"".join(encrypt_chunks([text.encode("ascii")], public_key)), digest


def add_recipient(
    app: App,
    name: str,
    *,
    organisation: str,
    contact: str,
    public_key: str,
    dpa: str | None,
    challenge_path: Path,
) -> Recipient:
    """Record a new recipient and write its challenge to ``challenge_path`` (which must not
    exist). Raises :class:`InputError` for a name, key or path it cannot take; nothing is
    recorded or written then."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"recipient name {name[:80]!r} is not valid",
            hint="lowercase letters, digits, '.', '_' and '-', at most 63 characters",
        )
    org = _clean(organisation, "an organisation (--org)")
    who = _clean(contact, "a contact (--contact)")
    agreement = _clean(dpa or "", "a DPA reference (--dpa)", optional=True)
    key = check_age_recipient(public_key)
    refuse_existing(challenge_path, "the challenge file")
    sealed, digest = _challenge(key)
    wrapped = keystore_for(app.settings).wrap(new_pseudonym_key(), context=_context(name))
    at = datetime.now(UTC)
    written = False
    try:
        with app.change() as change:
            assert org is not None
            assert who is not None
            recipient = Recipient(
                name=name,
                organisation=org,
                contact=who,
                public_key=key,
                dpa=agreement,
                added_by=change.actor,
                added_at=at,
                challenge_sha256=digest,
            )
            change.uow.exports.add_recipient(
                recipient,
                WrappedKey(
                    kek_id=wrapped.kek_id,
                    kek_version=wrapped.version,
                    ciphertext=wrapped.ciphertext,
                ),
            )
            change.record(
                "recipient.added",
                f"recipient:{name}",
                {
                    "organisation": org,
                    "contact": who,
                    "public_key": key,
                    "dpa": agreement,
                    "challenge_sha256": digest,
                    "kek_id": wrapped.kek_id,
                    "kek_version": wrapped.version,
                },
            )
            write_new(challenge_path, sealed, "the challenge file")
            written = True
    except BaseException:
        if written:  # the change did not commit: no challenge without its recipient
            remove_quietly(challenge_path)
        raise
    return recipient


def verify_recipient(app: App, name: str, response_path: Path) -> Recipient:
    """Check the recipient's answer to its challenge; on success record
    ``recipient.verified``. A wrong answer raises :class:`AccessDenied` (exit 2) and records
    nothing."""
    response = read_text(response_path, "the challenge response", limit=4096)
    with app.change() as change:
        exports = change.uow.exports
        recipient = exports.recipient(name)
        if recipient.challenge_sha256 is None:
            raise InputError(
                f"recipient {name} has no open challenge (already verified)",
                hint="`affidavit recipient list` shows who is verified",
            )
        if not challenge_matches(response, recipient.challenge_sha256):
            raise AccessDenied(
                f"the response does not answer recipient {name}'s challenge: key possession "
                "is not proven",
                hint="the recipient decrypts the challenge file with `age -d -i KEY FILE` "
                "and returns what it prints",
            )
        at = datetime.now(UTC)
        event = change.record(
            VERIFIED_ACTION,
            f"recipient:{name}",
            {
                "public_key": recipient.public_key,
                "challenge_sha256": recipient.challenge_sha256,
                "at": at.isoformat(),
            },
        )
        exports.mark_verified(name, at=at, seq=event.seq)
        return exports.recipient(name)


def list_recipients(app: App) -> list[Recipient]:
    """Every recipient, by name."""
    with app.read() as uow:
        return uow.exports.recipients()


def vouched_key(uow: UnitOfWork, name: str) -> str | None:
    """The key the newest ``recipient.verified`` event of recipient ``name`` proves, or
    None."""
    newest: str | None = None
    for event in read_events(uow.ledger, VERIFIED_ACTION):
        key = event.details.get("public_key")
        if event.subject == f"recipient:{name}" and isinstance(key, str):
            newest = key
    return newest


def pseudonym_keys_to_rewrap(app: App, kek_id: str) -> dict[str, bytes]:
    """For a rotation of the key ``kek_id``: every recipient's pseudonymisation key it
    wraps, unwrapped (by recipient name). Raises before anything changes when one does not
    unwrap."""
    keystore = keystore_for(app.settings)
    with app.read() as uow:
        stored = uow.exports.pseudonym_keys_wrapped_by(kek_id)
    return {
        name: keystore.unwrap(
            WrappedSecret(kek_id=key.kek_id, version=key.kek_version, ciphertext=key.ciphertext),
            context=_context(name),
        )
        for name, key in stored.items()
    }


def rewrap_pseudonym_keys(app: App, uow: UnitOfWork, keys: Mapping[str, bytes]) -> list[str]:
    """Wrap ``keys`` (:func:`pseudonym_keys_to_rewrap`) under the keystore's current version,
    in ``uow`` (the rotation's transaction); the recipients' names."""
    keystore = keystore_for(app.settings)
    for name, key in keys.items():
        wrapped = keystore.wrap(key, context=_context(name))
        uow.exports.rewrap_pseudonym_key(
            name,
            WrappedKey(
                kek_id=wrapped.kek_id, kek_version=wrapped.version, ciphertext=wrapped.ciphertext
            ),
        )
    return sorted(keys)


def pseudonym_key(app: App, name: str) -> bytes:
    """The recipient's pseudonymisation key, unwrapped by the keystore."""
    with app.read() as uow:
        stored = uow.exports.pseudonym_key(name)
    return keystore_for(app.settings).unwrap(
        WrappedSecret(
            kek_id=stored.kek_id, version=stored.kek_version, ciphertext=stored.ciphertext
        ),
        context=_context(name),
    )
