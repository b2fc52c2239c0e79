"""Password hashing (argon2id, ``argon2-cffi``) and the password policy.

Hashes are PHC strings (``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>``) with the library's
default parameters, RFC 9106's second recommended choice (64 MiB, 3 passes, 4 lanes, 16-byte
salt, 32-byte tag). :func:`needs_rehash` tells when a stored hash was made with weaker
parameters than today's, so that the next successful login replaces it.

The policy (:func:`password_problems`) follows NIST SP 800-63B §5.1.1.2: a minimum length (12)
instead of composition rules, a maximum (1024, so that hashing cannot be made expensive), not
the account name, and not one of the most common passwords.
"""

from __future__ import annotations

from functools import cache
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH: Final = 12
MAX_LENGTH: Final = 1024

_HASHER: Final = PasswordHasher()

# the most common passwords of breach corpora that are 12 characters or longer (shorter
# ones fail the length rule already), compared case-insensitively
_COMMON: Final = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789123",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "qwertyuiopasdfghjkl",
        "qwertyuiop12",
        "qwerty123456",
        "qwertyuiop123",
        "password1234",
        "password12345",
        "password123456",
        "passwordpassword",
        "iloveyou1234",
        "abcdefghijkl",
        "abc123456789",
        "administrator",
        "administrator1",
        "adminadmin123",
        "letmein12345",
        "welcome12345",
        "welcome123456",
        "changeme1234",
        "trustno1trustno1",
        "111111111111",
        "000000000000",
        "aaaaaaaaaaaa",
        "123123123123",
        "987654321987",
        "zaq12wsxcde3",
        "baseball1234",
        "football1234",
        "sunshine1234",
        "princess1234",
        "superman1234",
        "monkey123456",
        "dragon123456",
        "correcthorsebatterystaple",
        "affidavit123",
        "affidavit1234",
    }
)


def hash_password(password: str) -> str:
    """The argon2id PHC string of ``password`` (a new random salt each time)."""
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored hash. A hash that does not parse verifies
    nothing (False), as does a password over :data:`MAX_LENGTH`."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than today's defaults."""
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


@cache
def _dummy_hash() -> str:
    return hash_password("affidavit: no such account, the same work")


def spend_verification(password: str) -> None:
    """Do the work of one verification and refuse: for a name that does not exist or has no
    password, so that a refusal takes as long whether or not the name exists."""
    verify_password(_dummy_hash(), password)


def password_problems(password: str, *, account: str) -> list[str]:
    """Every way ``password`` breaks the policy for the account named ``account``
    (empty: acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"it is shorter than {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"it is longer than {MAX_LENGTH} characters")
    folded = password.strip().casefold()
    if folded and account and account.casefold() in folded:
        problems.append("it contains the account name")
    if folded in _COMMON:
        problems.append("it is one of the most common passwords")
    elif len(set(folded)) <= 2 and len(folded) >= 1:
        problems.append("it repeats one or two characters")
    return problems
