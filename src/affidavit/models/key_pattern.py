"""A Redis key pattern (``[input] key_pattern``, ``[consent] key_pattern``; docs/exports.md
"A Redis input"): the glob of Redis's ``KEYS`` and ``SCAN MATCH``, matched here, in Python,
on the raw key bytes with the semantics of Redis's own ``stringmatchlen`` (``util.c``):

- ``*`` any run of bytes (also none), ``?`` exactly one byte;
- ``[abc]`` one byte of the set, ``[^abc]`` one byte not in it, ``[a-z]`` a range (its ends
  in either order), ``\\x`` inside brackets the byte ``x``; an unclosed ``[`` takes the rest
  of the pattern as its set, as Redis does;
- ``\\x`` the byte ``x`` itself (a trailing ``\\`` is a literal backslash);
- bytes compare as C ``char`` (signed), as in Redis: a range over bytes >= 0x80 means what it
  means there;
- ``*`` alone matches every key, the empty key too (Redis skips the matcher for it).

``tests/integration/test_key_pattern_redis.py`` checks this matcher against a real
``redis-server``'s ``KEYS`` for the same patterns. A pattern is checked once when the spec is
parsed: non-empty, at most :data:`MAX_PATTERN_BYTES` bytes of UTF-8, no NUL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from affidavit.errors import InputError

MAX_PATTERN_BYTES: Final = 256
"""A pattern's length, at most (Redis's matcher recurses once per ``*``: this bounds it)."""
_STAR, _QUESTION, _OPEN, _CLOSE, _NOT, _ESCAPE, _DASH = b"*?[]^\\-"


def _char(byte: int) -> int:
    """A byte as C's signed ``char`` (x86, where Redis compares ranges)."""
    return byte - 256 if byte >= 128 else byte


def _at(data: bytes, i: int) -> int:
    """``data[i]``, or 0 past the end (Redis's strings end with a NUL)."""
    return data[i] if i < len(data) else 0


def _matches(pattern: bytes, key: bytes) -> bool:
    """Whether ``key`` matches ``pattern``; ``*`` alone matches every key, the empty one too
    (``KEYS`` and ``SCAN`` do not call the matcher for it)."""
    return pattern == b"*" or _match(pattern, 0, key, 0, [False])


def _match(pattern: bytes, p: int, key: bytes, s: int, skip: list[bool]) -> bool:
    """``stringmatchlen_impl`` of Redis, with positions instead of pointers (``skip`` is its
    ``skipLongerMatches``)."""
    n, m = len(pattern), len(key)
    while p < n and s < m:
        c = pattern[p]
        if c == _STAR:
            while p + 1 < n and pattern[p + 1] == _STAR:
                p += 1
            if n - p == 1:
                return True
            while s < m:
                if _match(pattern, p + 1, key, s, skip):
                    return True
                if skip[0]:
                    return False
                s += 1
            skip[0] = True
            return False
        if c == _QUESTION:
            s += 1
        elif c == _OPEN:
            matched, p = _bracket(pattern, p + 1, key[s])
            if not matched:
                return False
            s += 1
        else:
            if c == _ESCAPE and n - p >= 2:
                p += 1
            if pattern[p] != key[s]:
                return False
            s += 1
        p += 1
        if s == m:
            while p < n and pattern[p] == _STAR:
                p += 1
            break
    return p == n and s == m


def _bracket(pattern: bytes, p: int, byte: int) -> tuple[bool, int]:
    """Whether ``byte`` is in the set that starts at ``p`` (just after ``[``), and the
    position of its ``]`` (or of its last byte, when it is not closed)."""
    n = len(pattern)
    negate = _at(pattern, p) == _NOT
    if negate:
        p += 1
    matched = False
    while True:
        here = _at(pattern, p)
        if here == _ESCAPE and n - p >= 2:
            p += 1
            if pattern[p] == byte:
                matched = True
        elif here == _CLOSE and p < n:
            break
        elif p >= n:
            p -= 1
            break
        elif n - p >= 3 and pattern[p + 1] == _DASH:
            start, end = _char(pattern[p]), _char(pattern[p + 2])
            if start > end:
                start, end = end, start
            p += 2
            if start <= _char(byte) <= end:
                matched = True
        elif here == byte:
            matched = True
        p += 1
    return matched != negate, p


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A checked Redis glob (see the module docstring); :meth:`match` tests one key."""

    text: str

    @classmethod
    def parse(cls, raw: object, *, what: str = "key_pattern") -> KeyPattern:
        """The pattern of a spec's TOML value; raises :class:`InputError` (exit 2)."""
        if not isinstance(raw, str) or not raw:
            raise InputError(
                f"{what} must be a non-empty string (a Redis glob such as 'customer:*')",
                hint="Redis glob: * ? [abc] [^a-z] and \\ escapes (docs/exports.md)",
            )
        encoded = raw.encode("utf-8")
        if len(encoded) > MAX_PATTERN_BYTES or "\x00" in raw:
            raise InputError(
                f"{what} {raw[:40]!r} is longer than {MAX_PATTERN_BYTES} bytes or holds a NUL",
                hint="a shorter glob; Redis keys are matched byte by byte",
            )
        return cls(raw)

    @property
    def pattern(self) -> bytes:
        """The pattern's bytes (UTF-8)."""
        return self.text.encode("utf-8")

    def match(self, key: bytes) -> bool:
        """Whether ``key`` matches, as ``KEYS``/``SCAN MATCH`` of Redis decide it."""
        return _matches(self.pattern, key)

    def matcher(self) -> _Matcher:
        """A matcher that encodes the pattern once (for many keys)."""
        return _Matcher(self.pattern)


class _Matcher:
    """:meth:`KeyPattern.match` with the pattern's bytes kept."""

    __slots__ = ("_pattern",)

    def __init__(self, pattern: bytes) -> None:
        self._pattern = pattern

    def __call__(self, key: bytes) -> bool:
        return _matches(self._pattern, key)
