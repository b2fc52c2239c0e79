"""Showing record keys to people: the raw key bytes of an index, decoded where possible."""

from __future__ import annotations

import struct

import bson
import cbor2
from bson.codec_options import CodecOptions
from bson.json_util import RELAXED_JSON_OPTIONS, dumps

_OPTIONS: CodecOptions[dict[str, object]] = CodecOptions(
    datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)


def describe_key(encoding: str, profile: str, key: bytes, *, truncated: bool = False) -> str:
    """A readable form of ``key``: MongoDB ``_id`` values as relaxed Extended JSON, Redis keys
    as text when they are UTF-8, else hex. Never raises."""
    suffix = "…(truncated)" if truncated else ""
    try:
        if encoding in ("bson", "extjson") and profile == "exact" and not truncated:
            doc = bson.decode(struct.pack("<i", len(key) + 5) + key + b"\x00", _OPTIONS)
            return dumps(doc.get("_id"), json_options=RELAXED_JSON_OPTIONS)
        if encoding in ("bson", "extjson") and profile == "logical" and not truncated:
            return repr(cbor2.loads(key))
        if encoding == "redis":
            return key.decode("utf-8") + suffix
    except Exception:  # noqa: S110 - a key we cannot decode is shown as hex
        pass
    return "0x" + key.hex() + suffix
