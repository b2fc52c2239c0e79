"""Keyed pseudonyms and recipient keys: deterministic per (key, recipient, field, value),
different for every recipient and every key; age recipients and identities checked."""

from __future__ import annotations

import pytest
from pyrage import x25519

from affidavit.crypto.pseudonyms import (
    challenge_matches,
    check_age_recipient,
    identity_recipient,
    new_challenge,
    new_pseudonym_key,
    pseudonym,
)
from affidavit.errors import InputError


def test_the_same_subject_gets_other_tokens_for_other_recipients_and_keys() -> None:
    key, other = new_pseudonym_key(), new_pseudonym_key()
    value = b'"person7@example.com"'
    token = pseudonym(key, "acme", "email", value)
    assert token == pseudonym(key, "acme", "email", value)  # deterministic: joins still work
    assert len(token) == 64
    assert token != pseudonym(key, "beta", "email", value)  # another recipient
    assert token != pseudonym(other, "acme", "email", value)  # another key
    assert token != pseudonym(key, "acme", "contact", value)  # another field
    assert token != pseudonym(key, "acme", "email", b'"person8@example.com"')
    # the separator keeps (context, field) pairs apart
    assert pseudonym(key, "a", "bc", value) != pseudonym(key, "ab", "c", value)
    with pytest.raises(ValueError, match="32 bytes"):
        pseudonym(b"short", "acme", "email", value)


def test_only_age_x25519_recipients_are_accepted() -> None:
    identity = x25519.Identity.generate()
    key = str(identity.to_public())
    assert check_age_recipient(f"  {key}\n") == key
    for bad in ("", "age1", key[:-1] + ("q" if key[-1] != "q" else "p"), str(identity)):
        with pytest.raises(InputError, match="not an age X25519 recipient"):
            check_age_recipient(bad)
    assert identity_recipient(f"# created: today\n# public key: {key}\n{identity}\n") == key
    with pytest.raises(InputError, match="exactly one"):
        identity_recipient(f"{identity}\n{x25519.Identity.generate()}\n")
    with pytest.raises(InputError, match="does not hold an age X25519 identity"):
        identity_recipient(key)


def test_a_challenge_is_answered_only_by_its_own_text() -> None:
    text, digest = new_challenge()
    other, _ = new_challenge()
    assert text != other
    assert challenge_matches(text, digest)
    assert challenge_matches(f"{text}\n", digest)  # what `age -d` prints, with a newline
    assert not challenge_matches(other, digest)
    assert not challenge_matches("", digest)
