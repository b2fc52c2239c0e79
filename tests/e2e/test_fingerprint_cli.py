"""`affidavit fingerprint` and `affidavit diff` as a user runs them."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import bson
import pytest

pytestmark = pytest.mark.e2e


def write_bson(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(bson.encode(d) for d in docs))
    return path


DOCS = [{"_id": i, "name": f"n{i}", "v": [i, {"x": i * 2}]} for i in range(50)]


def test_fingerprint_json_shape_and_diff_naming_keys(cli: Any, tmp_path: Path) -> None:
    a = write_bson(tmp_path / "a" / "coll.bson", DOCS)
    changed = [dict(d) for d in DOCS if d["_id"] != 3]
    changed[10]["name"] = "tampered"
    b = write_bson(tmp_path / "b" / "coll.bson", [*changed, {"_id": 999}])
    r = cli("fingerprint", str(a), "--json", "--out", str(tmp_path / "a.afpidx"))
    assert r.code == 0, r.err
    out = json.loads(r.out)
    (ds,) = out["datasets"]
    assert {"name", "records", "profile", "fingerprint"} <= set(ds)
    assert ds["records"] == 50
    assert ds["fingerprint"].startswith("afp1:exact:b12:n50:")
    assert cli("fingerprint", str(b), "--out", str(tmp_path / "b.afpidx")).code == 0

    r = cli("diff", str(tmp_path / "a.afpidx"), str(tmp_path / "a.afpidx"), "--json")
    assert r.code == 0
    assert json.loads(r.out)["equal"] is True
    r = cli("diff", str(tmp_path / "a.afpidx"), str(tmp_path / "b.afpidx"), "--json")
    assert r.code == 1
    report = json.loads(r.out)
    assert report["counts"] == {"missing": 1, "extra": 1, "changed": 1, "duplicate": 0}
    assert {(d["change"], d["key"]) for d in report["differences"]} == {
        ("missing", "3"),
        ("extra", "999"),
        ("changed", str(changed[10]["_id"])),
    }
    r = cli("diff", str(tmp_path / "a.afpidx"), str(tmp_path / "b.afpidx"), "--limit", "1")
    assert r.code == 1
    assert "missing 1, extra 1, changed 1" in r.out


def test_logical_profile_matches_extended_json_through_the_cli(cli: Any, tmp_path: Path) -> None:
    a = write_bson(tmp_path / "shop" / "coll.bson", DOCS)
    lines = "".join(
        bson.json_util.dumps(d, json_options=bson.json_util.CANONICAL_JSON_OPTIONS) + "\n"
        for d in DOCS
    )
    (tmp_path / "coll.json").write_text(lines)
    fa = json.loads(cli("fingerprint", str(a), "--profile", "logical", "--json").out)["datasets"][0]
    fb = json.loads(
        cli("fingerprint", str(tmp_path / "coll.json"), "--profile", "logical", "--json").out
    )["datasets"][0]
    assert fa["fingerprint"] == fb["fingerprint"]
    r = cli("fingerprint", str(tmp_path / "coll.json"), "--profile", "exact")
    assert r.code == 2
    assert "logical" in r.err


def hostile(tmp_path: Path) -> dict[str, Path]:
    good = bson.encode({"_id": 1, "x": "y"})
    files = {
        "truncated": good + good[:-3],
        "lying-length-prefix": struct.pack("<i", 1 << 30) + good[4:],
        "negative-length": struct.pack("<i", -5) + good[4:],
        "gzip-garbage": b"\x1f\x8b\x08\x00" + b"\x00garbage" * 10,
        "truncated-gzip": gzip.compress(good * 100)[:-20],
    }
    out = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.bson"
        path.write_bytes(data)
        out[name] = path
    archive = tmp_path / "bad-magic.archive"
    archive.write_bytes(b"\x00\x01\x02\x03" + good)
    out["bad-magic-archive"] = archive
    return out


@pytest.mark.parametrize(
    "name",
    [
        "truncated",
        "lying-length-prefix",
        "negative-length",
        "gzip-garbage",
        "truncated-gzip",
        "bad-magic-archive",
    ],
)
def test_hostile_files_exit_2_with_one_line(cli: Any, tmp_path: Path, name: str) -> None:
    path = hostile(tmp_path)[name]
    fmt = ["--format", "mongodump-archive"] if name.endswith("archive") else ["--format", "bson"]
    r = cli("fingerprint", str(path), *fmt, "--out", str(tmp_path / "x.afpidx"))
    assert r.code == 2, (r.out, r.err)
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "x.afpidx").exists()  # no half-written index
    assert not list(tmp_path.glob(".x.afpidx.partial"))


def test_bad_index_files_exit_2(cli: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an index" * 10)
    r = cli("diff", str(junk), str(junk))
    assert r.code == 2
    assert "not a fingerprint index" in r.err


def test_tampered_index_is_refused_by_diff(cli: Any, tmp_path: Path) -> None:
    a = write_bson(tmp_path / "a.bson", DOCS)
    assert cli("fingerprint", str(a), "--out", str(tmp_path / "a.afpidx")).code == 0
    data = bytearray((tmp_path / "a.afpidx").read_bytes())
    data[40] ^= 0xFF
    (tmp_path / "b.afpidx").write_bytes(bytes(data))
    r = cli("diff", str(tmp_path / "a.afpidx"), str(tmp_path / "b.afpidx"))
    assert r.code == 2
    assert "altered" in r.err


def test_unknown_target_and_format(cli: Any, tmp_path: Path) -> None:
    r = cli("fingerprint", "no-such-source")
    assert r.code == 2
    assert "no source" in r.err
    (tmp_path / "x.bin").write_bytes(b"\x00" * 10)
    r = cli("fingerprint", str(tmp_path / "x.bin"))
    assert r.code == 2
    assert "--format" in r.err
    r = cli("fingerprint", str(tmp_path / "x.bin"), "--format", "parquet")
    assert r.code == 2


def test_genuine_mongodump_samples(cli: Any, shared_formats: Path) -> None:
    path = shared_formats / "mongodump" / "mongo-tools" / "bsondump" / "testdata" / "sample.bson"
    r = cli("fingerprint", str(path), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["datasets"][0]["records"] == len(
        list(bson.decode_file_iter(path.open("rb")))
    )
    broken = (
        shared_formats / "mongodump" / "mongo-tools" / "bsondump" / "testdata" / "partial_file.bson"
    )
    r = cli("fingerprint", str(broken))
    assert r.code == 2
    assert "partial_file.bson" in r.err


def test_check_bson_decodes_every_document(cli: Any, tmp_path: Path) -> None:
    doc = bytearray(bson.encode({"_id": 1, "x": 7}))
    doc[doc.index(b"x\x00") - 1] = 0x7A  # an element type BSON does not define, framing intact
    path = tmp_path / "odd.bson"
    path.write_bytes(bytes(doc))
    plain = cli("fingerprint", str(path), "--format", "bson", "--json")
    assert plain.code == 0, plain.err  # the bytes are fingerprinted as they are
    checked = cli("fingerprint", str(path), "--format", "bson", "--check-bson")
    assert checked.code == 2
    assert "malformed BSON" in checked.err
