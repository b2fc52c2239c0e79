"""The HMAC pseudonym of :func:`affidavit.crypto.pseudonyms.pseudonym`, keyed once per
recipient and field: the HMAC state after the key and the ``context || 0x00 || field ||
0x00`` prefix is computed once and copied for every value (the same tokens, without setting
up the key for each record of an export)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from affidavit.crypto.pseudonyms import PSEUDONYM_KEY_BYTES

__all__ = ["field_pseudonymiser"]


def field_pseudonymiser(key: bytes, context: str, field: str) -> Callable[[bytes], str]:
    """``value -> pseudonym(key, context, field, value)``."""
    if len(key) != PSEUDONYM_KEY_BYTES:
        raise ValueError("a pseudonymisation key is 32 bytes")
    prefix = context.encode("utf-8") + b"\x00" + field.encode("utf-8") + b"\x00"
    base = hmac.new(key, prefix, hashlib.sha256)

    def token(value: bytes) -> str:
        state = base.copy()
        state.update(value)
        return state.hexdigest()

    return token
