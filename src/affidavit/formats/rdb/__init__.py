"""Reader of Redis RDB files (``dump.rdb``, ``redis-cli --rdb`` output), versions 1 to 12.

Datasets are the logical databases that hold at least one key, ``db0``, ``db1``, ... sorted by
number. :meth:`RdbReader.records` yields one :class:`~affidavit.models.records.RedisRecord`
per key, shaped exactly as a live ``SCAN`` read by :mod:`affidavit.engines.redis` shapes it,
so that the fingerprint of a file equals the fingerprint of the server that loads it.

What is read, byte by byte, is described in ``docs/formats/rdb.md``. In short:

* every opcode: AUX, RESIZEDB, EXPIRETIME (seconds), EXPIRETIME_MS, SELECTDB, IDLE, FREQ,
  FUNCTION (7.0 pre-GA) and FUNCTION2, SLOT_INFO, EOF; every string encoding (length, int8/16/
  32, LZF); every value type and encoding: string; list (linked, ziplist, quicklist,
  quicklist 2 with listpacks); set (plain, intset, listpack); zset (plain, zset2, ziplist,
  listpack); hash (plain, zipmap, ziplist, listpack, and the field-expiry hashes of RDB 12);
  stream (listpacks 1, 2 and 3, consumer groups parsed and skipped);
* refused with :class:`~affidavit.errors.FormatError` (exit 2): wrong magic, Valkey files,
  versions above 12, module values and module auxiliary data (module state that affidavit
  cannot interpret, and that a stock ``redis-server`` cannot load either), a CRC-64 mismatch,
  malformed or truncated data (the message names the byte offset), trailing bytes.

Load semantics follow ``redis-server`` as a master: a key whose expiry lies before the reader's
reference time (``as_of_ms``, default: the wall clock when the reader is made) is dropped, as
is an empty list/set/zset/hash (Redis skips those on load). Pass ``as_of_ms`` = the capture
time of a backup to make its fingerprint independent of when the file is read.

Hash field expiry (Redis 7.4+, RDB 12): a field whose expiry lies before ``as_of_ms`` is
dropped (Redis does so on load); a live field with an expiry is folded into its value as the
deterministic CBOR array ``["hpexpireat", expire_at_ms, value]`` (see
:func:`fold_field_expiry`), so that a changed or lost field TTL changes the fingerprint.
Functions, Lua scripts, AUX fields, LRU/LFU hints and stream consumer groups are not records:
they are parsed (for framing) and not fingerprinted.

Two paths read the records. The general path (:mod:`.parser`) reads every opcode and encoding
in Python. For fingerprints, :meth:`RdbReader.iter_pairs` first offers the input buffer to the
compiled module ``_native`` (``_native.c``, built by ``pip install -e .``), which parses the
common records, writes their canonical records and hashes them in one step, and hands
anything else (another opcode or encoding, damage) to the general path record by record; the
pairs are the same whichever path read a record. Without it, or with
``AFFIDAVIT_PURE_PYTHON=1``, the same pairs come from the general path through the encoder and
``RecordHasher``. A reader made with ``feed`` reads a file that is still being written (a
spool filling from a server), with the same checks and results as for the complete file.

The modules, by concern:

- :mod:`.input`: the byte source (buffered reads, bounds, the running CRC-64), for a complete
  file and for one still being written;
- :mod:`.encodings`: the compact encodings inside strings (LZF, ziplist, listpack, intset,
  zipmap, stream listpack nodes);
- :mod:`.parser`: the record parser (header, opcodes, value types, trailer);
- :mod:`.reader`: :class:`RdbReader` and the choice between the compiled and the general path.

This module loads the compiled module once (:data:`_NATIVE`, which :mod:`.reader` reads at
each pass, so that setting it to None switches the pure-Python path on) and re-exports the
names the rest of affidavit uses.
"""

from __future__ import annotations

from types import ModuleType

from affidavit.formats.rdb.encodings import (
    Element,
    lzf_decompress,
    parse_intset,
    parse_listpack,
    parse_ziplist,
    parse_zipmap,
)
from affidavit.formats.rdb.input import crc64
from affidavit.formats.rdb.parser import MAX_VERSION, MIN_VERSION, fold_field_expiry
from affidavit.formats.rdb.reader import Encoder, RdbReader
from affidavit.native import load_native

__all__ = [
    "MAX_VERSION",
    "MIN_VERSION",
    "Element",
    "Encoder",
    "RdbReader",
    "crc64",
    "fold_field_expiry",
    "lzf_decompress",
    "parse_intset",
    "parse_listpack",
    "parse_ziplist",
    "parse_zipmap",
]


def _load_native() -> ModuleType | None:
    """The compiled fast path (``_native.c``), or None when it is not built or when the
    environment sets ``AFFIDAVIT_PURE_PYTHON=1`` (the general path gives the same results;
    the switch exists to compare them and to rule the extension out)."""
    return load_native("affidavit.formats.rdb._native")


#: the compiled module of :meth:`RdbReader.iter_pairs`, or None (see :func:`_load_native`);
#: :mod:`.reader` reads it here at each pass
_NATIVE: ModuleType | None = _load_native()
