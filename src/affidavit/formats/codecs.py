"""The registry of record codecs: which function turns a reader's raw records into canonical
``(key, value)`` bytes, by the reader's :class:`~affidavit.models.records.RecordEncoding` and
the fingerprint :data:`~affidavit.models.records.Profile`.

A codec's module is imported on first use (:meth:`CodecRef.load`), so that importing the
registry costs nothing and a run that reads Redis never imports the BSON codecs. The entries
name their modules as text because the layer rules (``tests/unit/test_layers.py``) keep one
format module from importing another; the tests check that every entry loads the function
its module exports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from affidavit.errors import InputError
from affidavit.models.records import PROFILES, Profile, RecordEncoding

#: a record codec: one raw record (as its reader yields it) -> ``(key bytes, value bytes)``
Codec = Callable[[Any], tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class CodecRef:
    """A codec function by its module and name under ``affidavit.formats``."""

    module: str
    name: str

    def load(self) -> Codec:
        """The codec function (its module is imported on the first call)."""
        fn: Codec = getattr(importlib.import_module(f"affidavit.formats.{self.module}"), self.name)
        return fn


#: every defined (encoding, profile) pair; a pair that is absent has no codec
CODECS: Final[Mapping[tuple[RecordEncoding, Profile], CodecRef]] = MappingProxyType(
    {
        # readers only frame BSON documents; the exact codec checks each in full
        (RecordEncoding.BSON, "exact"): CodecRef("bson_codec", "exact_record_checked"),
        (RecordEncoding.BSON, "logical"): CodecRef("bson_codec", "logical_record_from_bson"),
        (RecordEncoding.EXTJSON, "logical"): CodecRef("bson_codec", "logical_record_from_extjson"),
        # Redis has one representation of a value: both profiles are the same form
        (RecordEncoding.REDIS, "exact"): CodecRef("redis_codec", "encode_redis_record"),
        (RecordEncoding.REDIS, "logical"): CodecRef("redis_codec", "encode_redis_record"),
    }
)


def codec_for(encoding: RecordEncoding, profile: Profile) -> Codec:
    """The codec of ``encoding`` records under ``profile``. Raises ``InputError`` for an
    unknown profile, or a profile not defined for the encoding (Extended JSON has no
    ``exact`` form: it carries no raw BSON)."""
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}", hint="use exact or logical")
    ref = CODECS.get((encoding, profile))
    if ref is None:
        raise InputError(
            f"the {profile} profile is not defined for {encoding} records",
            hint="Extended JSON carries no raw BSON: use --profile logical",
        )
    return ref.load()
