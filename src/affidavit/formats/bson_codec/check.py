"""The full check of BSON documents: every document decoded in full by pymongo's decoder
(``docs/verification.md``, *The full check*), as ``--check-bson``, ingest and verify need it.

:func:`check_documents` checks a framed batch in one call: the compiled validator
(``_native.validate``) walks it first and accepts only documents pymongo accepts too, so
pymongo decodes only what the validator leaves; the verdict and every message are pymongo's.
:func:`exact_record_checked` is the ``exact`` codec after that check, one document at a time.
"""

from __future__ import annotations

import gc
from typing import Any, Final

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON

from affidavit.errors import FormatError
from affidavit.formats import bson_codec
from affidavit.formats.bson_codec.exact import exact_record
from affidavit.formats.bson_codec.wire import INT32, MIN_DOC

#: full-depth decoding that accepts every representable datetime (years < 1 or > 9999 too):
#: DATETIME_AUTO makes ``DatetimeMS`` only outside ``datetime``'s range (it accepts every
#: int64 as DATETIME_MS does) and decodes faster; the check keeps no value
CHECK_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def exact_record_checked(raw_doc: bytes) -> tuple[bytes, bytes]:
    """:func:`exact_record` after a full BSON decode of the document (the check a reader does
    with ``validate="full"``). Fingerprinting runs this in its worker processes so that the
    deep check is spread over the cores while the reader only frames documents."""
    try:
        bson.decode(raw_doc, CHECK_OPTIONS)
    except (InvalidBSON, ValueError, OverflowError) as exc:
        raise FormatError(f"malformed BSON document ({exc})") from exc
    return exact_record(raw_doc)


#: pymongo's C decoder: the reference whose acceptance ``_native.validate``'s is a subset of
_PYMONGO_C: Final = bson.has_c()
#: ``_native.validate``'s own nesting limit (MongoDB's)
_VALIDATE_MAX_DEPTH: Final = 100
#: Python frames kept free for the Python calls pymongo's decoder makes (ObjectId, DBRef,
#: Decimal128.from_bid, ...) on top of its recursion units (see :func:`_validate_depth`)
_RECURSION_MARGIN: Final = 64


def check_documents(buffer: bytes | memoryview, starts: list[int] | None) -> None:
    """Decode every document of a framed batch in full (the check of
    :func:`exact_record_checked`), in one C call for the whole batch. Raises the
    ``FormatError`` :func:`exact_record_checked` raises for the first malformed document.
    ``starts`` (the documents' offsets) may be None: they are then found by framing the
    batch again, when a document is malformed.

    The compiled validator (``_native.validate``, GIL released) walks the documents first
    and stops at the first one it does not accept. It accepts only documents that pymongo's
    decoder accepts too (see ``_native.c``), so pymongo decodes only the rest of the batch,
    from that document on, and its verdict and messages are exactly what they were. Without
    it (not built, ``AFFIDAVIT_PURE_PYTHON=1``, or pymongo without its C decoder) pymongo
    decodes the whole batch."""
    native = bson_codec._NATIVE
    if native is not None and _PYMONGO_C:
        stop = native.validate(buffer, 0, _validate_depth())
        if stop == len(buffer):
            return
        if stop:
            buffer, starts = _rest_of_batch(buffer, starts, stop)
    collecting = gc.isenabled()
    gc.disable()  # thousands of fresh dicts without cycles: a collection would only rescan
    try:
        bson.decode_all(buffer, CHECK_OPTIONS)
        return
    except (InvalidBSON, ValueError, OverflowError):
        pass  # found below, document by document, with the exact message
    finally:
        if collecting:
            gc.enable()
    if starts is None:
        starts = _frame_starts(buffer)
    ends = starts[1:]
    ends.append(len(buffer))
    for a, b in zip(starts, ends, strict=True):
        try:
            bson.decode(bytes(buffer[a:b]), CHECK_OPTIONS)
        except (InvalidBSON, ValueError, OverflowError) as exc:
            raise FormatError(f"malformed BSON document ({exc})") from exc
    raise FormatError("malformed BSON document batch")  # pragma: no cover - decode_all only


def _rest_of_batch(
    buffer: bytes | memoryview, starts: list[int] | None, stop: int
) -> tuple[bytes | memoryview, list[int] | None]:
    """The part of a batch that :func:`check_documents` leaves to pymongo once the compiled
    validator has accepted every document before ``stop``: ``(buffer[stop:], its starts)``,
    or the whole batch unchanged when cutting it could change a word of the outcome (the
    documents before ``stop`` are not the batch's framing, or ``starts`` disagrees with it).
    pymongo decodes each document before ``stop`` without an error, so it reports the same
    first defect, with the same message, from either. Runs only when a batch has a document
    the validator does not accept."""
    framed = _frame_starts(buffer)  # the length prefixes, which the validator followed too
    try:
        i = framed.index(stop)
    except ValueError:
        return buffer, starts
    if starts is not None and starts[: i + 1] != framed[: i + 1]:
        return buffer, starts
    rest_starts = (framed if starts is None else starts)[i:]
    return memoryview(buffer)[stop:], [a - stop for a in rest_starts]


def _validate_depth() -> int:
    """The nesting depth ``_native.validate`` may accept from here: its own limit, and no
    more than pymongo could decode from this call stack. pymongo's C decoder spends the
    interpreter's recursion budget (``Py_EnterRecursiveCall``: one unit per embedded
    document and one per array element, so at most 2 per level and 1 for the top-level
    document), which on Python 3.11 the Python frames below this one share: a document that
    pymongo would refuse with "maximum recursion depth exceeded" is never accepted."""
    import sys

    frame: Any = sys._getframe()  # a FrameType, then its callers' down to None
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    budget = sys.getrecursionlimit() - depth - _RECURSION_MARGIN
    return max(0, min(_VALIDATE_MAX_DEPTH, (budget - 1) // 2))


def _frame_starts(buffer: bytes | memoryview) -> list[int]:
    """The offsets of the documents of a framed batch (length prefixes only)."""
    starts: list[int] = []
    pos, end = 0, len(buffer)
    while pos + 4 <= end:
        (length,) = INT32.unpack_from(buffer, pos)
        if length < MIN_DOC:
            break
        starts.append(pos)
        pos += length
    return starts
