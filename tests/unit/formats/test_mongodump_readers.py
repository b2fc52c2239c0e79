"""The genuine mongodump files under ../shared/formats read as GROUND_TRUTH.json says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bson
import pytest

from affidavit.constants import ExitCode
from affidavit.errors import FormatError, NotFound
from affidavit.formats.bson_codec import (
    exact_record,
    logical_record_from_bson,
    logical_record_from_extjson,
)
from affidavit.formats.extjson import ExtJsonLinesReader
from affidavit.formats.mongodump import BsonFileReader, MongodumpDirReader
from affidavit.formats.mongodump_archive import ArchiveReader

FORMATS = Path(__file__).resolve().parents[3].parent / "shared" / "formats"
MONGODUMP = FORMATS / "mongodump" / "mongo-tools"
TESTDATA = MONGODUMP / "mongorestore" / "testdata"


def _ground_truth() -> dict[str, dict[str, Any]]:
    path = FORMATS / "GROUND_TRUTH.json"
    if not path.is_file():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


GT = _ground_truth()
BSON_FILES = sorted(k for k, v in GT.items() if v.get("kind") in ("bson", "bson-gzip"))
ARCHIVES = sorted(k for k, v in GT.items() if v.get("kind") == "mongodump-archive")

needs_shared = pytest.mark.skipif(
    not GT, reason=f"{FORMATS} is absent: the genuine sample files come with the shared folder"
)


@needs_shared
@pytest.mark.parametrize("rel", BSON_FILES)
def test_bson_file_count_matches_ground_truth(rel: str) -> None:
    truth = GT[rel]
    reader = BsonFileReader(FORMATS / rel)
    assert BsonFileReader.sniff(FORMATS / rel)
    (dataset,) = reader.datasets()
    seen = 0
    if "decode_error" in truth:
        with pytest.raises(FormatError) as info:
            for _ in reader.records(dataset):
                seen += 1
        assert info.value.exit_code == ExitCode.BAD_INPUT
        assert "byte offset" in info.value.message and str(FORMATS / rel) in info.value.message
        assert seen == truth["doc_count"]  # the documents before the defect were all read
    else:
        docs = list(reader.records(dataset))
        assert len(docs) == truth["doc_count"]
        raw = (FORMATS / rel).read_bytes()
        if truth["kind"] == "bson":  # the independent oracle agrees, document by document
            oracle = [bson.encode(d) for d in bson.decode_file_iter((FORMATS / rel).open("rb"))]
            assert len(oracle) == len(docs)
            assert b"".join(docs) == raw


@needs_shared
def test_dataset_names_follow_the_mongodump_layout() -> None:
    in_db = BsonFileReader(TESTDATA / "aws_test_db" / "c1.bson")
    assert in_db.datasets() == ["aws_test_db.c1"]
    loose = BsonFileReader(TESTDATA / "auth_version_3.bson")  # no sibling metadata
    assert loose.datasets() == ["auth_version_3"]
    special = BsonFileReader(TESTDATA / "specialcharacter" / "db1" / "caf%C3%A9s.bson")
    assert special.datasets() == ["db1.cafés"]
    long_dir = TESTDATA / "longcollectionname" / "db1"
    (long_file,) = long_dir.glob("*.bson")
    assert BsonFileReader(long_file).datasets() == [
        "db1.aVery"
        + "Very" * 43
        + "LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters"
    ]
    with pytest.raises(NotFound):
        list(in_db.records("other.c1"))


DIRS = {
    "oplogdump": {"db1.c1": 5},
    "collMod_ttl_index": {"mongodump_test_db.coll1": 10},
    "prelude_test/prelude_gzip": {"test.foo": 1},
    "prelude_test/prelude_top_level": {"test.foo": 1},
    "usersdump": {},
    "timeseries_tests/ts_dump_with_oplog": {
        "config.external_validation_keys": 0,
        "config.tenantMigrationDonors": 0,
        "config.tenantMigrationRecipients": 0,
    },
    "duplicate_index_key": {"indextest.duplicate_index_key": 0},
    "specialcharacter": {"db1.cafés": 1},
}


@needs_shared
@pytest.mark.parametrize(("rel", "expected"), sorted(DIRS.items()))
def test_mongodump_dir_datasets_and_counts(rel: str, expected: dict[str, int]) -> None:
    reader = MongodumpDirReader(TESTDATA / rel)
    assert MongodumpDirReader.sniff(TESTDATA / rel)
    assert reader.datasets() == sorted(expected)
    assert {d: sum(1 for _ in reader.records(d)) for d in reader.datasets()} == expected


@needs_shared
def test_mongodump_dir_includes_system_collections_on_request() -> None:
    reader = MongodumpDirReader(TESTDATA / "timeseries_tests" / "ts_dump", include_system=True)
    counts = {d: sum(1 for _ in reader.records(d)) for d in reader.datasets()}
    assert counts == {
        "admin.system.version": 1,
        "admin.system.views": 0,
        "timeseries_test.system.buckets.foo_ts": 10,
    }


@needs_shared
def test_legacy_dump_system_indexes_is_not_a_dataset() -> None:
    legacy = MONGODUMP / "test" / "legacy42" / "jstests" / "tool" / "data" / "dumprestore6"
    reader = MongodumpDirReader(legacy, include_system=True)
    assert reader.datasets() == ["dumprestore6.foo"]
    qa = MONGODUMP / "test" / "qa-tests" / "jstests" / "restore" / "testdata" / "dump_with_oplog"
    reader = MongodumpDirReader(qa, include_system=True)
    assert reader.datasets() == ["test.data"]  # oplog.bson and system.indexes.bson skipped
    assert sum(1 for _ in reader.records("test.data")) == 10


@needs_shared
@pytest.mark.parametrize("rel", ARCHIVES)
def test_archive_counts_per_namespace_match_ground_truth(rel: str) -> None:
    truth = GT[rel]["namespaces"]
    path = FORMATS / rel
    assert ArchiveReader.sniff(path)
    everything = ArchiveReader(path, include_system=True, include_oplog=True)
    expected = {ns: v["docs"] for ns, v in truth.items()}
    assert sorted(everything.datasets()) == sorted(expected)
    per_dataset = {d: sum(1 for _ in everything.records(d)) for d in everything.datasets()}
    assert per_dataset == expected
    one_pass: dict[str, int] = {}
    for ns, doc in everything.iter_all():
        assert bson.decode(doc) is not None
        one_pass[ns] = one_pass.get(ns, 0) + 1
    assert one_pass == {k: v for k, v in expected.items() if v}
    default = ArchiveReader(path)
    assert default.datasets() == sorted(
        ns for ns in expected if not ns.startswith(".") and ".system." not in ns
    )


@needs_shared
def test_archive_crc_is_the_one_mongodump_recorded(tmp_path: Path) -> None:
    """The genuine CRCs verify (reading succeeds above); one flipped document byte that keeps
    the framing valid is caught by the namespace's CRC-64."""
    raw = bytearray((TESTDATA / "test.bar.archive").read_bytes())
    at = raw.index(b"\x02foo\x00\x04\x00\x00\x00bar\x00") + 9
    raw[at] = ord("c")  # "bar" -> "car": still well-formed BSON
    tampered = tmp_path / "tampered.archive"
    tampered.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"CRC mismatch for namespace test\.bar"):
        list(ArchiveReader(tampered).records("test.bar"))
    assert len(list(ArchiveReader(tampered, verify_crc=False).records("test.bar"))) == 1


@needs_shared
def test_sample_bson_equals_its_canonical_json_from_bsondump() -> None:
    """sample.bson and sample.json (written by bsondump in canonical mode) are one content."""
    testdata = MONGODUMP / "bsondump" / "testdata"
    bson_reader = BsonFileReader(testdata / "sample.bson")
    json_reader = ExtJsonLinesReader(testdata / "sample.json")
    from_bson = sorted(logical_record_from_bson(d) for d in bson_reader.records("sample"))
    from_json = sorted(logical_record_from_extjson(line) for line in json_reader.records("sample"))
    assert from_bson == from_json
    assert len(from_bson) == 4


@needs_shared
def test_every_genuine_document_has_exact_and_logical_records() -> None:
    """Every readable genuine document: exact key is its raw _id element; logical succeeds,
    or fails with FormatError only for the 501-level nesting bomb."""
    for rel in BSON_FILES:
        if "decode_error" in GT[rel]:
            continue
        reader = BsonFileReader(FORMATS / rel)
        for doc in reader.records(reader.datasets()[0]):
            decoded = bson.decode(doc)
            if "_id" not in decoded:
                with pytest.raises(FormatError):
                    exact_record(doc)
                continue
            key, value = exact_record(doc)
            assert value == doc and key[1:5] == b"_id\x00"
            assert (
                bson.decode(b"".join([(len(key) + 5).to_bytes(4, "little"), key, b"\0"]))["_id"]
                == decoded["_id"]
            )
            if rel.endswith("deep_nested.bson"):
                with pytest.raises(FormatError, match="nested deeper than 100"):
                    logical_record_from_bson(doc)
            else:
                logical_record_from_bson(doc)
