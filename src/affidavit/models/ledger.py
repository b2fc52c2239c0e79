"""Ledger events and their canonical encoding (RFC 8785 JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import rfc8785

from affidavit.errors import FormatError

_FIELDS = ("seq", "time", "actor", "action", "subject", "details", "client")


def rfc3339_utc(moment: datetime) -> str:
    """``2026-11-28T07:13:09.123456Z``: RFC 3339, UTC, always with microseconds."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """Where an action came from, where known."""

    address: str | None = None
    agent: str | None = None

    def to_json(self) -> dict[str, str]:
        """Only the known fields."""
        out = {}
        if self.address:
            out["address"] = self.address
        if self.agent:
            out["agent"] = self.agent
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One ledger entry: who did what to which subject, when, from where.

    ``details`` holds JSON values only (str, int, bool, None, lists, string-keyed maps);
    floats are allowed but discouraged because RFC 8785 prints them in ES6 form.
    """

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)
    client: ClientInfo = field(default_factory=ClientInfo)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": dict(self.details),
            "client": self.client.to_json(),
        }

    def canonical(self) -> bytes:
        """The RFC 8785 canonical JSON bytes that the Merkle leaf hashes."""
        return bytes(rfc8785.dumps(self.to_json()))

    @classmethod
    def from_canonical(cls, entry: bytes) -> Event:
        """Parse stored entry bytes; raise :class:`FormatError` when they are not a valid,
        canonical event (also when they nest too deeply to be parsed or re-encoded: the
        entries are untrusted, and a hostile one may hold 100,000 nested arrays)."""
        try:
            return cls._from_canonical(entry)
        except RecursionError:
            raise FormatError("ledger entry is nested too deeply to be an event") from None

    @classmethod
    def _from_canonical(cls, entry: bytes) -> Event:
        try:
            obj = json.loads(entry)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"ledger entry is not JSON: {exc}") from None
        if not isinstance(obj, dict) or set(obj) != set(_FIELDS):
            raise FormatError("ledger entry does not have exactly the event fields")
        client = obj["client"]
        ok = (
            isinstance(obj["seq"], int)
            and not isinstance(obj["seq"], bool)
            and all(isinstance(obj[k], str) for k in ("time", "actor", "action", "subject"))
            and isinstance(obj["details"], dict)
            and isinstance(client, dict)
            and set(client) <= {"address", "agent"}
        )
        if not ok:
            raise FormatError("ledger entry has a field of the wrong type")
        event = cls(
            seq=obj["seq"],
            time=obj["time"],
            actor=obj["actor"],
            action=obj["action"],
            subject=obj["subject"],
            details=obj["details"],
            client=ClientInfo(address=client.get("address"), agent=client.get("agent")),
        )
        if event.canonical() != entry:
            raise FormatError("ledger entry is not in RFC 8785 canonical form")
        return event


KEY_CREATED: Final = "ledger.key_created"
"""The action of seq 0 of every ledger: the creation of the key that signs it."""


def creation_problem(
    first: Event | bytes | None, vkey: str
) -> tuple[Literal["not-created", "other-key"], str] | None:
    """Why a ledger whose seq 0 is ``first`` (the event, its canonical entry, or None for an
    empty ledger) was not begun by the key ``vkey``: ``("not-created", what seq 0 is instead)``
    (``nothing``, ``not an event`` or its action quoted) or ``("other-key", the key that
    created it, quoted)``; None when it was. The one check behind the signer's refusal, the
    recovery's and ``ledger verify``'s ``key-not-creator`` finding."""
    event = first
    if isinstance(first, bytes):
        try:
            event = Event.from_canonical(first)
        except FormatError:
            return "not-created", "not an event"
    if event is None:
        return "not-created", "nothing"
    assert isinstance(event, Event)
    if event.action != KEY_CREATED or event.seq != 0:
        return "not-created", repr(event.action)
    created = event.details.get("vkey")
    if created != vkey:
        return "other-key", repr(created)
    return None
