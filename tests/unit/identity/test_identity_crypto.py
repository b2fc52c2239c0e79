"""The crypto of identities: argon2id passwords, RFC 6238 TOTP with replay-safe steps,
bearer secrets and recovery codes (real argon2-cffi and pyotp, fixed clocks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher

from affidavit.crypto import passwords, tokens, totp

RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of RFC 6238's "12345678901234567890"


def test_argon2id_round_trip_and_wrong_password() -> None:
    stored = passwords.hash_password("a long enough passphrase")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify_password(stored, "a long enough passphrase")
    assert not passwords.verify_password(stored, "a long enough passphrasE")
    assert not passwords.verify_password(stored, "")
    assert passwords.hash_password("a long enough passphrase") != stored  # a new salt
    assert not passwords.needs_rehash(stored)


def test_hashes_that_do_not_parse_or_are_weaker_are_handled() -> None:
    assert not passwords.verify_password("not a hash", "anything")
    assert not passwords.verify_password("$argon2id$v=19$m=1,t=1,p=1$AAAA$BBBB", "x")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
    assert passwords.verify_password(weak, "pw")
    assert passwords.needs_rehash(weak)
    assert passwords.needs_rehash("garbage")
    stored = passwords.hash_password("a long enough passphrase")
    assert not passwords.verify_password(stored, "x" * (passwords.MAX_LENGTH + 1))


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "shorter than 12"),
        ("alice-is-the-best", "contains the account name"),
        ("Password1234", "most common"),
        ("aaaaaaaaaaaaaaaa", "repeats"),
        ("x" * 1025, "longer than 1024"),
    ],
)
def test_the_password_policy_refuses(password: str, problem: str) -> None:
    found = passwords.password_problems(password, account="alice")
    assert any(problem in p for p in found), found


def test_the_password_policy_accepts_a_passphrase() -> None:
    assert passwords.password_problems("correct horse battery", account="alice") == []


def test_totp_matches_rfc_6238() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (the last six digits with six digits)
    at = datetime.fromtimestamp(59, UTC)
    assert totp.code_at(RFC_SECRET, at) == "287082"
    assert totp.verify_totp(RFC_SECRET, "287082", at=at) == 1
    at = datetime.fromtimestamp(1111111109, UTC)
    assert totp.code_at(RFC_SECRET, at) == "081804"  # 07081804


def test_totp_window_is_one_step_either_side_and_returns_the_step() -> None:
    secret = totp.new_totp_secret()
    now = datetime(2026, 12, 1, 12, 0, 10, tzinfo=UTC)
    step = totp.time_step(now)
    reference = pyotp.TOTP(secret)  # the library's own codes, at fixed times
    for offset in (-1, 0, 1):
        code = reference.at(now + timedelta(seconds=30 * offset))
        assert totp.verify_totp(secret, code, at=now) == step + offset
    for offset in (-2, 2):
        code = reference.at(now + timedelta(seconds=30 * offset))
        assert totp.verify_totp(secret, code, at=now) is None


def test_a_replay_is_visible_in_the_returned_step() -> None:
    """The same code, or an older accepted one, comes back with a step that is not newer than
    the last accepted one: the caller refuses it."""
    secret = totp.new_totp_secret()
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    code = totp.code_at(secret, now)
    first = totp.verify_totp(secret, code, at=now)
    again = totp.verify_totp(secret, code, at=now + timedelta(seconds=20))
    assert first is not None
    assert again == first  # same step: a replay
    older = totp.verify_totp(secret, code, at=now + timedelta(seconds=30))
    assert older is not None
    assert older <= first


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x", "١٢٣٤٥٦"])
def test_codes_of_the_wrong_shape_match_nothing(code: str) -> None:
    assert totp.verify_totp(RFC_SECRET, code, at=datetime.fromtimestamp(59, UTC)) is None


def test_provisioning_uri_names_the_issuer_and_account() -> None:
    uri = totp.provisioning_uri(RFC_SECRET, account="alice")
    assert uri.startswith("otpauth://totp/affidavit:alice?")
    assert f"secret={RFC_SECRET}" in uri
    assert "issuer=affidavit" in uri
    assert len(totp.new_totp_secret()) == 32


def test_bearer_secrets_carry_their_id_and_are_stored_as_digests() -> None:
    record = tokens.new_id()
    secret = tokens.new_bearer_secret(tokens.TOKEN_PREFIX, record)
    assert secret.startswith(f"afv_{record}_")
    assert len(secret) == 4 + 16 + 1 + 43
    assert tokens.bearer_id(secret, tokens.TOKEN_PREFIX) == record
    assert tokens.bearer_id(secret, tokens.SESSION_PREFIX) is None
    for bad in ("", "afv_", "afv_xyz_abc", f"afv_{record}", "afv_ABCDEF0123456789_x"):
        assert tokens.bearer_id(bad, tokens.TOKEN_PREFIX) is None
    digest = tokens.secret_digest(secret)
    assert len(digest) == 64
    assert secret not in digest
    assert tokens.same_digest(digest, tokens.secret_digest(secret))
    assert not tokens.same_digest(digest, tokens.secret_digest(secret + "x"))


def test_recovery_codes_are_ten_one_time_codes_stored_as_digests() -> None:
    codes = tokens.new_recovery_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert len(code) == 19
        assert code.count("-") == 3
    digest = tokens.recovery_code_digest(codes[0])
    assert digest is not None
    # typed in lower case, without dashes, with spaces: the same code
    assert tokens.recovery_code_digest(codes[0].lower().replace("-", " ")) == digest
    assert tokens.recovery_code_digest(codes[1]) != digest
    assert tokens.recovery_code_digest("123456") is None
    assert tokens.recovery_code_digest("0000-0000-0000-0000") is None  # 0 is not in the set
