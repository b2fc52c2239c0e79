"""An ingested mongodump's data artifacts are tagged with the datasets the manifest signs,
whatever folder level the user points at and however the collection name is escaped; a
verification of it re-fingerprints every signed dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bson
import pytest

pytestmark = pytest.mark.e2e


def dump_db(folder: Path, coll_file: str, coll_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{coll_file}.bson").write_bytes(
        b"".join(bson.encode({"_id": i, "v": i}) for i in range(5))
    )
    meta = {"options": {}, "indexes": [], "uuid": "", "collectionName": coll_name}
    (folder / f"{coll_file}.metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("level", ["dump", "db"])
def test_ingest_tags_artifacts_with_signed_datasets(
    cli: Any, home: Path, tmp_path: Path, level: str
) -> None:
    assert cli("vault", "add", "v", "--url", f"file://{tmp_path / 'vault'}").code == 0
    dump_db(tmp_path / "dump" / "shop", "we%24ird", "we$ird")
    target = tmp_path / "dump" if level == "dump" else tmp_path / "dump" / "shop"
    r = cli("backup", "ingest", str(target), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    (dataset,) = out["datasets"]
    assert dataset["records"] == 5
    name = dataset["name"]
    assert name.endswith("we$ird")
    shown = json.loads(cli("backup", "show", out["backup_id"], "--json").out)
    data = [a for a in shown["artifacts"] if a["role"] == "data"]
    assert len(data) == 1
    v = cli("verify", out["backup_id"], "--json")
    assert v.code == 0, v.out
    assert name in json.loads(v.out)["coverage"]["datasets_checked"]
