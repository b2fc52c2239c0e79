"""Records as they come out of a reader, before canonical encoding."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Profile = Literal["exact", "logical"]
PROFILES: tuple[Profile, ...] = ("exact", "logical")


class RecordEncoding(StrEnum):
    """How a reader's raw records are encoded; selects the codec that canonicalises them."""

    BSON = "bson"  # one raw BSON document per record (MongoDB live, mongodump files)
    EXTJSON = "extjson"  # one MongoDB canonical Extended JSON v2 document per line
    REDIS = "redis"  # RedisRecord values (live SCAN, RDB files)


RedisType = Literal["string", "list", "set", "zset", "hash", "stream"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisRecord:
    """One Redis key with its typed value and absolute expiry.

    ``value`` by type: string -> bytes; list -> tuple[bytes, ...] (in order); set ->
    frozenset[bytes]; zset -> tuple[(member bytes, score float)] in any order; hash ->
    tuple[(field bytes, value bytes)] in any order; stream -> tuple[(id bytes, tuple[(field,
    value)])] in id order. ``expire_at_ms`` is the absolute Unix time in milliseconds, or None.
    """

    key: bytes
    type: RedisType
    value: object
    expire_at_ms: int | None = None
