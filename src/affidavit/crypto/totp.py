"""Time-based one-time passwords (RFC 6238, ``pyotp``): 6 digits, 30-second steps, HMAC-SHA1
(what every authenticator app implements), secrets of 160 bits in base32.

:func:`verify_totp` accepts the current step and one on either side (clock drift) and returns
the time step that matched, so that the caller can refuse a replay: a code whose step is the
same as, or older than, the last one it accepted for that account.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Final

import pyotp

ISSUER: Final = "affidavit"
DIGITS: Final = 6
STEP_SECONDS: Final = 30
WINDOW: Final = 1  # steps accepted on either side of the current one


def new_totp_secret() -> str:
    """A new random secret: 32 base32 characters (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32(32)


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)


def provisioning_uri(secret: str, *, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER`` URI an authenticator
    app reads (from a QR code or typed in)."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def time_step(at: datetime) -> int:
    """The RFC 6238 time step (counter) of the moment ``at``."""
    return int(at.timestamp()) // STEP_SECONDS


def code_at(secret: str, at: datetime) -> str:
    """The code of the step of ``at`` (for tests and for showing the current code)."""
    return _totp(secret).generate_otp(time_step(at))


def looks_like_totp(code: str) -> bool:
    """Whether ``code`` has the shape of a TOTP code (six digits, spaces aside)."""
    digits = code.replace(" ", "")
    return len(digits) == DIGITS and digits.isascii() and digits.isdigit()


def verify_totp(secret: str, code: str, *, at: datetime, window: int = WINDOW) -> int | None:
    """The time step whose code ``code`` is, looking ``window`` steps either side of the step
    of ``at``; None when it is none of them (or not six digits). Every candidate is compared
    in constant time, and all of them are compared."""
    if not looks_like_totp(code):
        return None
    given = code.replace(" ", "").encode()
    totp = _totp(secret)
    now = time_step(at)
    matched = None
    for step in range(now - window, now + window + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), given):
            matched = step  # the newest matching step wins (a refused replay stays refused)
    return matched
