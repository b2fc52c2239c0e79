"""Nested allowed paths as CSV and Parquet columns (issue 17): a record written and read back
is the same record (nested documents rebuilt from the dotted columns), written again it gives
the same bytes, its logical fingerprint is the JSON lines' one; a path through an array is
refused; a column outside the allow-list is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.errors import InputError
from affidavit.formats.bson_codec.extjson_fast import logical_record_of
from affidavit.models.export import OutputFormat
from affidavit.services.exports.encodings import Encoder, StrayColumns, read_records

FIELDS = ["_id", "address.city", "address.zip", "profile.contact.email", "country"]


def _write(
    path: Path, fmt: OutputFormat, records: list[dict[str, Any]], fields: list[str]
) -> bytes:
    encoder = Encoder(fmt, fields)
    data = encoder.header() + b"".join(encoder.encode(r) for r in records) + encoder.finish()
    path.write_bytes(data)
    return data


def _read(path: Path, fmt: OutputFormat, fields: list[str]) -> list[Any]:
    return [record for _, record in read_records(path, fmt, fields)]


RECORDS: list[dict[str, Any]] = [
    {"_id": 1, "address": {"zip": "***01", "city": "Paris"}, "country": "FR"},
    {"_id": 2, "address": {"city": None}, "profile": {"contact": {"email": "ab" * 32}}},
    {"_id": 3, "country": "42"},  # a string that reads as JSON
    {"_id": 4, "address": {"city": {"name": "Lyon", "n": [1, 2]}}},  # a leaf kept whole
    {"_id": 5, "address": {"city": ""}, "country": None},
]


@pytest.mark.parametrize("fmt", [OutputFormat.CSV, OutputFormat.PARQUET])
def test_nested_records_round_trip(tmp_path: Path, fmt: OutputFormat) -> None:
    path = tmp_path / "out"
    data = _write(path, fmt, RECORDS, FIELDS)
    back = _read(path, fmt, FIELDS)
    assert back == RECORDS  # dict equality: member order aside
    # the column order rebuilds address's members as city, then zip
    assert list(back[0]["address"]) == ["city", "zip"]
    assert [logical_record_of(r) for r in back] == [logical_record_of(r) for r in RECORDS]
    assert _write(tmp_path / "again", fmt, back, FIELDS) == data


def test_csv_columns_are_named_by_the_path(tmp_path: Path) -> None:
    data = _write(tmp_path / "out", OutputFormat.CSV, RECORDS[:1], FIELDS)
    assert data.splitlines()[0] == b"_id,address.city,address.zip,profile.contact.email,country"
    assert data.splitlines()[1] == b"1,Paris,***01,,FR"


@pytest.mark.parametrize("fmt", [OutputFormat.CSV, OutputFormat.PARQUET])
def test_a_path_through_an_array_is_refused(tmp_path: Path, fmt: OutputFormat) -> None:
    encoder = Encoder(fmt, ["_id", "orders.sku"])
    with pytest.raises(InputError) as caught:
        encoder.encode({"_id": 1, "orders": [{"sku": "x"}]})
    assert "orders is an array" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize("fmt", [OutputFormat.CSV, OutputFormat.PARQUET])
def test_a_column_outside_the_allow_list_is_named(tmp_path: Path, fmt: OutputFormat) -> None:
    path = tmp_path / "out"
    records = [{**r, "address": {**r.get("address", {}), "street": "x"}} for r in RECORDS]
    _write(path, fmt, records, [*FIELDS, "address.street"])
    found = _read(path, fmt, FIELDS)
    assert len(found) == 1
    assert isinstance(found[0], StrayColumns)
    assert found[0].stray == ("address.street",)
    assert "not the allow-list" in found[0].message


def test_a_csv_header_with_a_column_inside_another_is_refused_row_by_row(tmp_path: Path) -> None:
    # the reader rebuilds documents only under the allow-list's own columns: a cell of a
    # parent path holding a value, then a child path, cannot both be placed
    path = tmp_path / "out"
    path.write_bytes(b"_id,a,a.b\r\n1,x,y\r\n")
    found = _read(path, OutputFormat.CSV, ["_id", "a", "a.b"])
    assert "lies inside the value" in found[0].message


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.dictionaries(st.sampled_from(["$numberInt"]), st.just("7"), min_size=1),
    st.lists(st.integers(-3, 3), max_size=2),
)


@st.composite
def _records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"_id": draw(st.integers(0, 10**6))}
    for path in FIELDS[1:]:
        if draw(st.booleans()):
            node = record
            parts = path.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = draw(_leaf)
    return record


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(_records(), max_size=5))
def test_any_minimised_nested_records_round_trip(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    for fmt in (OutputFormat.CSV, OutputFormat.PARQUET):
        path = tmp_path / f"out-{fmt.value}"
        data = _write(path, fmt, records, FIELDS)
        back = _read(path, fmt, FIELDS)
        assert back == records
        assert _write(tmp_path / "again", fmt, back, FIELDS) == data
