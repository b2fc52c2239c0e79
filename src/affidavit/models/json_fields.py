"""Strict reading of the JSON objects a key signed (the predicates of attestations).

The value types of :mod:`affidavit.models.manifest` and :mod:`affidavit.models.predicates`
read their objects through :class:`Fields` and check their values with the ``check_*``
functions here: a missing member, a member nobody reads, a wrong type (``true`` where an
integer goes, ``1`` where ``true`` goes, ``1.5`` where an integer goes), an integer outside
0..2**53 - 1, a digest that is not 64 lowercase hex digits, or a time that is not in the form
affidavit writes raises :class:`PredicateError`, which names the member's path. No other
exception escapes, whatever the input.

Free-form members (a verification's coverage, a drill's probes, a finding's details) are
checked to be JSON and kept deeply frozen (:func:`frozen_json`): mappings become read-only,
lists become tuples; :func:`thawed_json` gives the plain JSON back.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Collection, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from affidavit.errors import FormatError

__all__ = [
    "MAX_INTEGER",
    "Fields",
    "PredicateError",
    "check_flag",
    "check_integer",
    "check_number",
    "check_optional_text",
    "check_sha256",
    "check_text",
    "check_time",
    "frozen_json",
    "thawed_json",
]

MAX_INTEGER = 2**53 - 1
"""The largest integer RFC 8785 canonical JSON represents exactly."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_DEPTH = 64  # nesting of a free-form member: far beyond what affidavit writes
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlevel = 2


class PredicateError(FormatError):
    """A signed predicate is not what its type says: a member missing, unknown, of the wrong
    type or out of range. The message names the member's path."""

    default_hint = (
        "the attestation was not written by this version of affidavit; "
        "if its signature verifies, the ledger key signed something it should not have"
    )


def describe(value: object) -> str:
    """``value`` as a message shows it: its JSON kind and a short rendering."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    try:
        return _SHOW.repr(value)
    except Exception:  # a hostile object's __repr__
        return f"a {type(value).__name__}"


def check_text(value: object, where: str, *, empty: bool = False) -> str:
    """``value`` when it is a string (non-empty unless ``empty``) that UTF-8 can encode."""
    if not isinstance(value, str):
        raise PredicateError(f"{where} must be a string, not {describe(value)}")
    if not value and not empty:
        raise PredicateError(f"{where} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PredicateError(f"{where} holds a lone surrogate (not UTF-8 text)") from None
    return value


def check_optional_text(value: object, where: str, *, empty: bool = False) -> str | None:
    """``value`` when it is null or a string as :func:`check_text` accepts it."""
    return None if value is None else check_text(value, where, empty=empty)


def check_choice(value: object, where: str, choices: Collection[str]) -> str:
    """``value`` when it is one of ``choices``."""
    text = check_text(value, where, empty=True)
    if text not in choices:
        allowed = ", ".join(repr(c) for c in sorted(choices))
        raise PredicateError(f"{where} must be one of {allowed}, not {describe(value)}")
    return text


def check_integer(value: object, where: str, *, minimum: int = 0) -> int:
    """``value`` when it is an integer (not a boolean) within ``minimum``..2**53 - 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise PredicateError(f"{where} must be an integer, not {describe(value)}")
    if not minimum <= value <= MAX_INTEGER:
        raise PredicateError(
            f"{where} must be an integer from {minimum} to {MAX_INTEGER}, not {describe(value)}"
        )
    return value


def check_number(value: object, where: str, *, minimum: float = 0.0) -> float:
    """``value`` when it is a finite number (not a boolean) >= ``minimum``; kept as given,
    so that an integer stays an integer."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PredicateError(f"{where} must be a number, not {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PredicateError(f"{where} must be a finite number, not {describe(value)}")
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        raise PredicateError(f"{where} is an integer beyond 2**53 - 1")
    if value < minimum:
        raise PredicateError(f"{where} must be at least {minimum:g}, not {describe(value)}")
    return value


def check_flag(value: object, where: str) -> bool:
    """``value`` when it is ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise PredicateError(f"{where} must be true or false, not {describe(value)}")
    return value


def check_sha256(value: object, where: str) -> str:
    """``value`` when it is a SHA-256 digest: 64 lowercase hex digits."""
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise PredicateError(
            f"{where} must be a SHA-256 digest (64 lowercase hex digits), not {describe(value)}"
        )
    return value


def check_time(value: object, where: str) -> datetime:
    """A time as a predicate holds it: the ISO 8601 text that :meth:`datetime.isoformat`
    writes for a time with a UTC offset, and nothing else (so that it is written back
    byte for byte)."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise PredicateError(f"{where} must have a UTC offset")
        return value
    text = check_text(value, where)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PredicateError(f"{where} is not an ISO 8601 time: {describe(value)}") from None
    if when.utcoffset() is None:
        raise PredicateError(f"{where} has no UTC offset: {describe(value)}")
    if when.isoformat() != text:
        raise PredicateError(
            f"{where} is not written as affidavit writes times "
            f"(YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM): {describe(value)}"
        )
    return when


def frozen_json(value: object, where: str, *, _depth: int = 0) -> Any:
    """``value`` checked to be JSON (objects with string keys, lists, strings, integers
    within 2**53 - 1, finite numbers, booleans, null) and deeply frozen: objects as
    read-only mappings, lists as tuples."""
    if _depth > _MAX_DEPTH:
        raise PredicateError(f"{where} is nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, where, empty=True)
    if isinstance(value, int | float):
        return check_number(value, where, minimum=-math.inf)
    if isinstance(value, list | tuple):
        return tuple(
            frozen_json(item, f"{where}[{n}]", _depth=_depth + 1) for n, item in enumerate(value)
        )
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = check_text(key, f"a member name of {where}", empty=True)
            out[name] = frozen_json(item, f"{where}.{name}", _depth=_depth + 1)
        return MappingProxyType(out)
    raise PredicateError(f"{where} is not JSON: {describe(value)}")


def thawed_json(value: Any) -> Any:
    """The plain JSON (dicts and lists) of a value :func:`frozen_json` froze."""
    if isinstance(value, Mapping):
        return {key: thawed_json(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thawed_json(item) for item in value]
    return value


class Fields:
    """One JSON object being read into a value type.

    Each member is read once, by name; :meth:`done` refuses the members nobody read, so an
    object with a member its type does not know is refused rather than silently trimmed.
    """

    __slots__ = ("_seen", "_value", "where")

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, Mapping):
            raise PredicateError(f"{where} must be an object, not {describe(value)}")
        self._value: Mapping[Any, Any] = value
        self._seen: set[str] = set()
        self.where = where

    def path(self, key: str) -> str:
        """The path of member ``key`` in messages."""
        return f"{self.where}.{key}"

    def has(self, key: str) -> bool:
        """Whether the object has member ``key``."""
        return key in self._value

    def raw(self, key: str) -> object:
        """Member ``key`` as it is (it must be present)."""
        if key not in self._value:
            raise PredicateError(f"{self.path(key)} is missing")
        self._seen.add(key)
        return self._value[key]

    def text(self, key: str, *, empty: bool = False) -> str:
        """A string member (non-empty unless ``empty``)."""
        return check_text(self.raw(key), self.path(key), empty=empty)

    def optional_text(self, key: str, *, empty: bool = False) -> str | None:
        """A member that is null or a string."""
        return check_optional_text(self.raw(key), self.path(key), empty=empty)

    def choice(self, key: str, choices: Collection[str]) -> str:
        """A string member that is one of ``choices``."""
        return check_choice(self.raw(key), self.path(key), choices)

    def integer(self, key: str, *, minimum: int = 0) -> int:
        """An integer member within ``minimum``..2**53 - 1."""
        return check_integer(self.raw(key), self.path(key), minimum=minimum)

    def optional_integer(self, key: str, *, minimum: int = 0) -> int | None:
        """A member that is null or an integer within ``minimum``..2**53 - 1."""
        value = self.raw(key)
        return None if value is None else check_integer(value, self.path(key), minimum=minimum)

    def number(self, key: str, *, minimum: float = 0.0) -> float:
        """A finite number member >= ``minimum`` (an integer stays an integer)."""
        return check_number(self.raw(key), self.path(key), minimum=minimum)

    def flag(self, key: str) -> bool:
        """A ``true``/``false`` member."""
        return check_flag(self.raw(key), self.path(key))

    def sha256(self, key: str) -> str:
        """A SHA-256 hex digest member."""
        return check_sha256(self.raw(key), self.path(key))

    def optional_sha256(self, key: str) -> str | None:
        """A member that is null or a SHA-256 hex digest."""
        value = self.raw(key)
        return None if value is None else check_sha256(value, self.path(key))

    def time(self, key: str) -> datetime:
        """A time member (:func:`check_time`)."""
        return check_time(self.raw(key), self.path(key))

    def optional_object(self, key: str) -> Fields | None:
        """A member that is null or an object."""
        value = self.raw(key)
        return None if value is None else Fields(value, self.path(key))

    def items(self, key: str) -> list[tuple[object, str]]:
        """The items of a list member, each with its path."""
        value = self.raw(key)
        if not isinstance(value, list | tuple):
            raise PredicateError(f"{self.path(key)} must be a list, not {describe(value)}")
        return [(item, f"{self.path(key)}[{n}]") for n, item in enumerate(value)]

    def json(self, key: str) -> Any:
        """A free-form JSON member, deeply frozen (:func:`frozen_json`)."""
        return frozen_json(self.raw(key), self.path(key))

    def json_object(self, key: str) -> Mapping[str, Any]:
        """A free-form JSON object member, deeply frozen."""
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise PredicateError(f"{self.path(key)} must be an object, not {describe(value)}")
        frozen: Mapping[str, Any] = frozen_json(value, self.path(key))
        return frozen

    def optional_json_object(self, key: str) -> Mapping[str, Any] | None:
        """A member that is null or a free-form JSON object, deeply frozen."""
        return None if self.raw(key) is None else self.json_object(key)

    def done(self) -> None:
        """Refuse the members nobody read."""
        unknown = [key for key in self._value if key not in self._seen]
        if unknown:
            names = ", ".join(describe(key) for key in sorted(unknown, key=str)[:5])
            raise PredicateError(f"{self.where} has members its type does not know: {names}")
