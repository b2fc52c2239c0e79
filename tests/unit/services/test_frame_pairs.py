"""``frame_pairs`` (the framing of a segment's or a range's documents from a view of a
reused buffer, issue 18): the pairs and end of ``frame_exact_pairs`` over bytes, and for a
document the compiled framing leaves to the Python reader (no ``_id``: a defect) the same
``FormatError``, not an ``AttributeError`` of the view."""

from __future__ import annotations

import bson
import pytest

from affidavit.errors import FormatError
from affidavit.fingerprint.model import record_tag
from affidavit.formats.bson_codec import frame_exact_pairs
from affidavit.services.verify.segments import frame_pairs


def test_a_view_frames_as_bytes() -> None:
    docs = b"".join(bson.encode({"_id": i, "x": "y" * i}) for i in range(50))
    docs += bson.encode({"a": 1, "_id": 5})  # _id not first
    pairs, _, stop = frame_exact_pairs(docs, record_tag("exact"), keys=False)
    buffer = bytearray(docs + b"\x00" * 100)  # a reused buffer, larger than the range
    assert frame_pairs(memoryview(buffer)[: len(docs)]) == (pairs, stop)


def test_a_defect_in_a_view_is_a_format_error() -> None:
    docs = bson.encode({"_id": 1}) + bson.encode({"no_id": 1})
    with pytest.raises(FormatError) as expected:
        frame_exact_pairs(docs, record_tag("exact"), keys=False)
    with pytest.raises(FormatError) as got:
        frame_pairs(memoryview(bytearray(docs)))
    assert got.value.message == expected.value.message
