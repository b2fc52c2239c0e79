"""The export key pattern (affidavit.models.key_pattern) selects exactly the keys a real
redis-server's own ``KEYS`` and ``SCAN MATCH`` select for the same pattern: hand-picked edge
cases (escapes, ranges both ways, unclosed brackets, bytes >= 0x80, the empty key) and a
seeded batch of random patterns over a hostile alphabet."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from affidavit.errors import InputError
from affidavit.models.key_pattern import MAX_PATTERN_BYTES, KeyPattern
from affidavit.scratch.redis_server import RedisScratch

pytestmark = pytest.mark.integration

KEYS = [
    b"",
    b"a",
    b"ab",
    b"ba",
    b"abc",
    b"customer:1",
    b"customer:12",
    b"customer:",
    b"customers",
    b"cust[1]",
    b"a*b",
    b"axb",
    b"a\\b",
    b"a?b",
    b"-",
    b"]",
    b"^",
    b"[",
    b"\\",
    "h\u00e9llo".encode(),
    b"h\xe9llo",  # not UTF-8
    b"h\xffllo",
    b"x\x00y",
    b"**",
]
EDGE_PATTERNS = [
    "*",
    "**",
    "customer:*",
    "customer:?",
    "customer:??",
    "*:1*",
    "[a-c]*",
    "[c-a]*",
    "[^a]*",
    "[^a-b]",
    "[abc",
    "[",
    "[^",
    "\\",
    "a\\*b",
    "a\\\\b",
    "a\\?b",
    "*\\",
    "[\\]]",
    "[]]",
    "[a-]",
    "[-a]",
    "h?llo",
    "h??llo",
    "h[\u00e9]llo",
    "h[^a-z]*llo",
    "x?y",
    "cust\\[1\\]",
    "cust[[]1]",
    "?",
    "",
]


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    with RedisScratch(replica_sync_delay=0) as scratch:
        client = redis.Redis.from_url(scratch.uri)
        for key in KEYS:
            client.set(key, b"v")
        yield client
        client.close()


def _ours(pattern: str, keys: list[bytes]) -> set[bytes]:
    match = KeyPattern(pattern).matcher()  # "" is refused by parse, not by the matcher
    return {k for k in keys if match(k)}


def _keys(client: redis.Redis, pattern: str) -> set[bytes]:
    return set(client.keys(pattern.encode("utf-8")))


def _scan(client: redis.Redis, pattern: str) -> set[bytes]:
    return set(client.scan_iter(match=pattern.encode("utf-8"), count=1000))


@pytest.mark.parametrize("pattern", EDGE_PATTERNS)
def test_an_edge_pattern_selects_what_keys_and_scan_select(
    server: redis.Redis, pattern: str
) -> None:
    expected = _keys(server, pattern)
    assert _ours(pattern, KEYS) == expected, pattern
    assert _scan(server, pattern) == expected


def test_random_patterns_select_what_keys_selects(server: redis.Redis) -> None:
    rng = random.Random(17)
    alphabet = "ab-]^*?[\\"
    keys = sorted({"".join(rng.choice("ab-]^*[\\") for _ in range(rng.randint(0, 5))).encode()
                   for _ in range(150)})  # fmt: skip
    db = server.connection_pool.connection_kwargs.get("db", 0)
    other = redis.Redis(
        host=server.connection_pool.connection_kwargs["host"],
        port=server.connection_pool.connection_kwargs["port"],
        db=int(db) + 1,
    )
    try:
        for key in keys:
            other.set(key, b"v")
        disagreements = []
        for _ in range(400):
            pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
            expected = set(other.keys(pattern.encode()))
            if _ours(pattern, keys) != expected:
                disagreements.append(pattern)
        assert disagreements == []
    finally:
        other.flushdb()
        other.close()


def test_a_pattern_that_cannot_be_a_key_pattern_is_bad_input() -> None:
    for bad in ("", 7, None, "a\x00b", "x" * (MAX_PATTERN_BYTES + 1)):
        with pytest.raises(InputError) as caught:
            KeyPattern.parse(bad)
        assert caught.value.hint
    assert KeyPattern.parse("customer:*").text == "customer:*"
