"""Hostile Parquet files fed to the reader an export's verifier uses
(:func:`affidavit.formats.parquet_records.read_rows`, real pyarrow): a valid export's bytes
flipped and truncated (seeded, 600 variants), a footer claiming 2 GiB, nested, dictionary,
large-string and integer columns, column names carrying control characters, an empty file.
Each must end as :class:`~affidavit.errors.FormatError` (the verifier's ``encoding``
finding, exit 1), never another exception (a traceback), and its message must be one
printable line of bounded length: pyarrow quotes the file's own bytes in some messages
(``don't know what type: \\x0f\\n``), which reached the report and the terminal as they were.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from affidavit.errors import FormatError
from affidavit.formats.parquet_records import ParquetRows, read_rows

FIELDS = ["_id", "email", "notes"]


def _valid() -> bytes:
    writer = ParquetRows(FIELDS)
    rows = (
        writer.add([str(i), f"user{i}@example.org", None if i % 3 else "n" * i]) for i in range(300)
    )
    return b"".join(rows) + writer.finish()


def _written(table: pa.Table, **options: object) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, **options)
    return out.getvalue()


def _outcome(path: Path, data: bytes) -> str:
    """ "ok" (read whole) or the FormatError's message; anything else propagates."""
    path.write_bytes(data)
    try:
        for _ in read_rows(path, FIELDS):
            pass
    except FormatError as exc:
        return exc.message
    return "ok"


def _one_printable_line(message: str) -> bool:
    return message.isprintable() and len(message) <= 400


def test_flipped_and_truncated_exports_are_format_errors_on_one_line(tmp_path: Path) -> None:
    data = _valid()
    assert _outcome(tmp_path / "good.parquet", data) == "ok"
    rng = random.Random(20261205)
    refused = 0
    for n in range(600):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        if n % 5 == 0:
            mutated = mutated[: rng.randrange(len(mutated))]
        message = _outcome(tmp_path / f"m{n}.parquet", bytes(mutated))
        if message != "ok":
            refused += 1
            assert message.startswith(("not a readable Parquet", "the Parquet columns"))
            assert _one_printable_line(message), repr(message)
    assert refused > 300  # most variants are caught here (the rest by the digest checks)


@pytest.mark.parametrize(
    "defect",
    ["footer-2gib", "nested", "dictionary", "large-string", "integers", "control-names",
     "empty", "magic-only", "many-columns"],
)  # fmt: skip
def test_crafted_parquet_files_are_format_errors_on_one_line(tmp_path: Path, defect: str) -> None:
    valid = _valid()
    crafted = {
        "footer-2gib": lambda: valid[:-8] + (2**31 - 1).to_bytes(4, "little") + b"PAR1",
        "nested": lambda: _written(
            pa.table({"_id": pa.array([{"a": {"b": [1]}}]), "email": ["x"], "notes": ["y"]})
        ),
        "dictionary": lambda: _written(
            pa.table({f: pa.array(["a", "b"]).dictionary_encode() for f in FIELDS}),
            store_schema=True,
        ),
        "large-string": lambda: _written(
            pa.table({f: pa.array(["a"], pa.large_string()) for f in FIELDS}), store_schema=True
        ),
        "integers": lambda: _written(pa.table({f: pa.array([1, 2], pa.int64()) for f in FIELDS})),
        "control-names": lambda: _written(
            pa.table({f"\x1b[2J\n{f}" + "x" * 5000: pa.array(["a"]) for f in FIELDS})
        ),
        "empty": lambda: b"",
        "magic-only": lambda: b"PAR1PAR1",
        "many-columns": lambda: _written(pa.table({f"c{i}": pa.array(["a"]) for i in range(3000)})),
    }[defect]()
    message = _outcome(tmp_path / "crafted.parquet", crafted)
    assert message != "ok"
    assert _one_printable_line(message), repr(message)
