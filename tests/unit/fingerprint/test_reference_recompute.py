"""The hand recomputation printed in docs/formats/fingerprint.md agrees with affidavit."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.fingerprint.accumulator import Accumulator

DOC = Path(__file__).resolve().parents[3] / "docs" / "formats" / "fingerprint.md"


def reference(
    records: Iterable[tuple[bytes, bytes]], profile: str = "exact", bits: int = 12
) -> str:
    tag = b"affidavit/record/v1/" + profile.encode() + b"\0"
    pairs = sorted(
        hashlib.sha256(k).digest()
        + hashlib.sha256(tag + struct.pack(">I", len(k)) + k + v).digest()
        for k, v in records
    )
    buckets: list[list[bytes]] = [[] for _ in range(1 << bits)]
    for p in pairs:
        buckets[int.from_bytes(p[:4], "big") >> (32 - bits)].append(p)
    level = [hashlib.sha256(b"\0" + hashlib.sha256(b"".join(b)).digest()).digest() for b in buckets]
    while len(level) > 1:
        level = [
            hashlib.sha256(b"\1" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    return f"afp1:{profile}:b{bits}:n{len(pairs)}:{level[0].hex()}"


def test_the_doc_prints_this_reference() -> None:
    text = DOC.read_text()
    assert 'tag = b"affidavit/record/v1/" + profile.encode() + b"\\0"' in text
    assert re.search(r"int.from_bytes\(p\[:4\], \"big\"\) >> \(32 - bits\)", text)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.binary(min_size=1, max_size=20), st.binary(max_size=50), max_size=40),
    st.sampled_from(["exact", "logical"]),
    st.sampled_from([0, 1, 4, 12]),
)
def test_affidavit_matches_the_reference(
    records: dict[bytes, bytes], profile: str, bits: int
) -> None:
    acc = Accumulator(profile, bucket_bits=bits, buffer_records=7)  # type: ignore[arg-type]
    acc.add_records(records.items())
    assert acc.finish()[0].text == reference(records.items(), profile, bits)
