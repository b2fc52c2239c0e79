"""Message authentication for outgoing notifications: the HMAC-SHA-256 signature a webhook
receiver checks (``X-Affidavit-Signature: sha256=<hex>``, over the exact body bytes), so that
it can tell affidavit's reminders from anyone else's POSTs."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="


def hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """HMAC-SHA-256 of ``message`` under ``key``, as lower-case hex."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_header(key: bytes, body: bytes) -> str:
    """The value of the signature header for ``body``: ``sha256=<hex>``."""
    return SIGNATURE_PREFIX + hmac_sha256_hex(key, body)


def signature_matches(key: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``key`` (constant time)."""
    return hmac.compare_digest(signature_header(key, body).encode(), header.strip().encode())
