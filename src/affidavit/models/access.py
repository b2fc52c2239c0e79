"""Access-log entries: who asked for what, from where, and what came of it.

One :class:`AccessEntry` per API request (allowed, denied, failed or in error, failed logins
included) and per read of a backup, attestation, evidence package or ledger proof. Its
canonical bytes (RFC 8785 JSON, ``docs/formats/access-log.md``) are a leaf of the access
log's own Merkle tree, kept beside the ledger's and signed by the same key under another
origin.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from affidavit.errors import FormatError

__all__ = [
    "ACCESS_ENTRY_MEMBERS",
    "MAX_TEXT",
    "MAX_USER_AGENT",
    "AccessEntry",
    "Device",
    "DeviceType",
    "Outcome",
]

MAX_TEXT = 512
"""Longest identity, route, subject or auth method kept (longer text is cut by the caller)."""
MAX_USER_AGENT = 1024
"""Longest user agent kept."""
ACCESS_ENTRY_MEMBERS = frozenset(
    {
        "auth_method",
        "client_ip",
        "device",
        "identity",
        "latency_us",
        "method",
        "outcome",
        "route",
        "seq",
        "status",
        "subject",
        "time",
        "user_agent",
    }
)
_DEVICE_MEMBERS = frozenset({"browser", "os", "type"})
_MAX_SAFE_INT = 2**53 - 1
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_METHOD = re.compile(r"[A-Z][A-Z-]{0,15}")
# RFC 8785 prints these values exactly as the C json encoder does (strings without lone
# surrogates, integers in the safe range, null; fixed ASCII member names), so the fast
# encoder is the canonical one here: tests hold the two equal
_encode = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, sort_keys=True, separators=(",", ":")
).encode


class Outcome(StrEnum):
    """What came of a request."""

    ALLOWED = "allowed"  # authorised and served
    DENIED = "denied"  # authenticated (or not) but not permitted: 401/403, CSRF, approval
    FAILED = "failed"  # an authentication that failed: wrong password, TOTP, token, lockout
    ERROR = "error"  # the request was permitted but the server could not serve it


class DeviceType(StrEnum):
    """The kind of device a user agent names (from the user-agent parser)."""

    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"
    BOT = "bot"  # a crawler or monitor
    CLIENT = "client"  # a program: the affidavit CLI, curl, an HTTP library
    UNKNOWN = "unknown"


def _text(value: Any, what: str, limit: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise FormatError(f"access entry {what} must be a string")
    if len(value) > limit:
        raise FormatError(f"access entry {what} is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(f"access entry {what} is not valid Unicode") from exc


def _integer(value: Any, what: str, *, low: int = 0, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"access entry {what} must be an integer")
    if not low <= value <= _MAX_SAFE_INT:
        raise FormatError(f"access entry {what} {value} is out of range")


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """The device behind a user agent: its kind, operating system and browser (or client
    program), as the user-agent parser names them; None where it could not tell."""

    type: DeviceType = DeviceType.UNKNOWN
    os: str | None = None
    browser: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _enum(DeviceType, self.type, "device type"))
        _text(self.os, "device os", MAX_TEXT, optional=True)
        _text(self.browser, "device browser", MAX_TEXT, optional=True)

    def to_json(self) -> dict[str, Any]:
        """``{"browser", "os", "type"}`` (always all three; null when unknown)."""
        return {"browser": self.browser, "os": self.os, "type": self.type.value}


_E = TypeVar("_E", bound=StrEnum)


def _enum(kind: type[_E], value: Any, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise FormatError(f"access entry {what} {str(value)[:40]!r} is not one of "
                          f"{', '.join(k.value for k in kind)}") from None  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessEntry:
    """One access: when, who (and how they authenticated), from where, what (method, route
    template, subject) and what came of it (outcome, HTTP status, latency).

    ``seq`` is None until the entry is recorded (``services.access_log.record`` numbers it).
    ``identity`` is the account name, ``anonymous``, or for a failed login the name that was
    tried. ``route`` is the route template (``/api/v1/backups/{backup_id}``), never the raw
    path; ``subject`` names what was touched (``backup:ID``). ``latency_us`` is in
    microseconds (an integer: canonical entries hold no floats)."""

    time: str
    identity: str
    auth_method: str
    method: str
    route: str
    outcome: Outcome
    seq: int | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    device: Device = field(default_factory=Device)
    subject: str | None = None
    status: int | None = None
    latency_us: int = 0

    def __post_init__(self) -> None:
        _integer(self.seq, "seq", optional=True)
        if not isinstance(self.time, str) or not _TIME.fullmatch(self.time):
            raise FormatError(
                "access entry time must be RFC 3339 UTC with microseconds "
                "(2026-11-28T07:13:09.123456Z)"
            )
        _text(self.identity, "identity", MAX_TEXT)
        if not self.identity:
            raise FormatError("access entry identity is empty (use 'anonymous')")
        _text(self.auth_method, "auth method", MAX_TEXT)
        if not isinstance(self.method, str) or not _METHOD.fullmatch(self.method):
            raise FormatError("access entry method must be an upper-case token (GET, READ)")
        _text(self.route, "route", MAX_TEXT)
        object.__setattr__(self, "outcome", _enum(Outcome, self.outcome, "outcome"))
        _text(self.client_ip, "client address", MAX_TEXT, optional=True)
        _text(self.user_agent, "user agent", MAX_USER_AGENT, optional=True)
        if not isinstance(self.device, Device):
            raise FormatError("access entry device must be a Device")
        _text(self.subject, "subject", MAX_TEXT, optional=True)
        _integer(self.status, "status", low=100, optional=True)
        if self.status is not None and self.status > 999:
            raise FormatError(f"access entry status {self.status} is not an HTTP status")
        _integer(self.latency_us, "latency")

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object with every member (null where unknown)."""
        return {
            "auth_method": self.auth_method,
            "client_ip": self.client_ip,
            "device": self.device.to_json(),
            "identity": self.identity,
            "latency_us": self.latency_us,
            "method": self.method,
            "outcome": self.outcome.value,
            "route": self.route,
            "seq": self.seq,
            "status": self.status,
            "subject": self.subject,
            "time": self.time,
            "user_agent": self.user_agent,
        }

    @property
    def action(self) -> str:
        """``METHOD route``: the query copy kept in the catalog's ``action`` column."""
        return f"{self.method} {self.route}"

    def canonical(self) -> bytes:
        """The RFC 8785 canonical JSON bytes that the access log's Merkle leaf hashes."""
        if self.seq is None:
            raise FormatError("an access entry has no canonical form before it is numbered")
        return _encode(self.to_json()).encode("utf-8")

    @classmethod
    def from_canonical(cls, entry: bytes) -> AccessEntry:
        """Parse stored entry bytes; raise :class:`FormatError` unless they are a valid
        access entry in canonical form (entries are untrusted input)."""
        try:
            obj = json.loads(entry)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"access entry is not JSON: {exc}") from None
        except RecursionError:
            raise FormatError("access entry is nested too deeply") from None
        if not isinstance(obj, dict) or set(obj) != ACCESS_ENTRY_MEMBERS:
            raise FormatError("access entry does not have exactly the access-entry members")
        device = obj["device"]
        if not isinstance(device, dict) or set(device) != _DEVICE_MEMBERS:
            raise FormatError("access entry device must be {browser, os, type}")
        if obj["seq"] is None:
            raise FormatError("a recorded access entry has a seq")
        parsed = cls(
            seq=obj["seq"],
            time=obj["time"],
            identity=obj["identity"],
            auth_method=obj["auth_method"],
            method=obj["method"],
            route=obj["route"],
            outcome=obj["outcome"],
            client_ip=obj["client_ip"],
            user_agent=obj["user_agent"],
            device=Device(type=device["type"], os=device["os"], browser=device["browser"]),
            subject=obj["subject"],
            status=obj["status"],
            latency_us=obj["latency_us"],
        )
        if parsed.canonical() != entry:
            raise FormatError("access entry is not in RFC 8785 canonical form")
        return parsed
