"""Canonical record forms of BSON documents: the ``exact`` and the ``logical`` profile.

The modules, by concern:

- :mod:`.exact`: the ``exact`` codec (key = the raw ``_id`` element, value = the raw document),
  for one document and, through the compiled module ``_native``, for whole framed buffers;
- :mod:`.check`: the full check (every document decoded by pymongo, the compiled validator
  deciding only how much of that work pymongo does) and the checked ``exact`` codec;
- :mod:`.values`: the logical value model, its CBOR tags and its deterministic encoding;
- :mod:`.logical_bson`: the ``logical`` codec from raw BSON, and from values pymongo decoded;
- :mod:`.logical_extjson`: the ``logical`` codec from Extended JSON v2 lines;
- :mod:`.wire`: the BSON layout that the codecs walk, and the malformed-document error;
- :mod:`.file_ranges`: the length-prefix walk that cuts a ``.bson`` file into ranges.

This module loads the compiled module once (:data:`_NATIVE`, which the modules read at each
call, so that setting it to None switches the pure-Python path on) and re-exports the names
the rest of affidavit uses.
"""

from __future__ import annotations

from types import ModuleType

from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE
from affidavit.formats.bson_codec.check import CHECK_OPTIONS, check_documents, exact_record_checked
from affidavit.formats.bson_codec.exact import (
    exact_keys,
    exact_pairs_framed,
    exact_record,
    frame_exact_keys,
    frame_exact_pairs,
    frame_exact_view,
)
from affidavit.formats.bson_codec.logical_bson import (
    logical_encode,
    logical_record_from_bson,
    logical_value,
)
from affidavit.formats.bson_codec.logical_extjson import logical_record_from_extjson
from affidavit.formats.bson_codec.values import MAX_NESTING
from affidavit.native import load_native

__all__ = [
    "CHECK_OPTIONS",
    "MAX_NESTING",
    "check_documents",
    "exact_keys",
    "exact_pairs_framed",
    "exact_record",
    "exact_record_checked",
    "frame_exact_keys",
    "frame_exact_pairs",
    "frame_exact_view",
    "logical_encode",
    "logical_record_from_bson",
    "logical_record_from_extjson",
    "logical_value",
]

#: the name benchmarks/bench_bson_check.py imports
_CHECK_OPTIONS = CHECK_OPTIONS


def _load_native() -> ModuleType | None:
    """The compiled fast path (``_native.c``), or None when it is not built, when its limits
    are not this package's, or when the environment sets ``AFFIDAVIT_PURE_PYTHON=1`` (the
    pure-Python path gives the same results; the switch exists to compare them and to rule
    the extension out)."""
    native = load_native("affidavit.formats.bson_codec._native")
    if native is not None and native.MAX_DOCUMENT != MAX_BSON_DOCUMENT_SIZE:  # pragma: no cover
        return None  # a stale build
    return native


#: the compiled module of :func:`~.exact.frame_exact_pairs`, :func:`~.exact.exact_pairs_framed`,
#: :func:`~.check.check_documents` and :func:`~.file_ranges.bson_file_ranges`, or None (see
#: :func:`_load_native`); each reads it here at each call
_NATIVE: ModuleType | None = _load_native()
