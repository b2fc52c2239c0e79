"""Reading a stored ledger entry back as its event, cheaply.

Kept apart from :mod:`affidavit.services.policy_vouch` (which re-exports it) so that a
service that only reads events, such as a verification looking for the deep run that vouches
for a fast one, does not load the policy facts with it (start-up, docs/performance.md)."""

from __future__ import annotations

import json

from affidavit.models.ledger import Event


def parse_entry(entry: bytes) -> Event | None:
    """The event an entry holds, or None. Unlike :meth:`Event.from_canonical` this does not
    re-encode the entry to prove it canonical (two thirds of the time): an entry the signed
    checkpoints cover is byte for byte what affidavit wrote, and ``ledger verify``, which
    ``ledger.integrity`` runs in the same check, proves that coverage."""
    try:
        obj = json.loads(entry)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # 100,000 nested '['
        return None
    if not isinstance(obj, dict):
        return None
    seq, details = obj.get("seq"), obj.get("details")
    fields = [obj.get(k) for k in ("time", "actor", "action", "subject")]
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(details, dict):
        return None
    if not all(isinstance(f, str) for f in fields):
        return None
    time, actor, action, subject = (str(f) for f in fields)
    return Event(seq=seq, time=time, actor=actor, action=action, subject=subject, details=details)
