"""The segments of every artifact of a backup on one pool (issue 18, session 10): a
verification's artifacts are pipelined, the next one's segments under way while the one
before is merged and finished. A backup of several collections gives the very same result
on 1, 2 and 3 workers; a segment flipped in the second data artifact is named, and only it,
while the artifacts before and after it are intact; and a file swapped between the
pipeline's open and the verification's own is not taken on the pipeline's word."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any, BinaryIO

import bson
import pytest

from affidavit.ledger.attestation import Statement
from affidavit.models.manifest import BackupManifest
from affidavit.services import segment_tables
from affidavit.services.verify import segments as segments_module
from affidavit.vaults.file import FileVault

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject

SEGMENT = 128 * 1024
COLLECTIONS = ("alpha", "beta", "gamma")
# what differs from run to run whatever was read
_VARYING = {
    "id",
    "seconds",
    "started_at",
    "finished_at",
    "recorded_at",
    "vouched_by",
    "vouched_by_action",
}


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_tables, "SEGMENT_SIZE", SEGMENT)


def _documents(seed: int, count: int) -> bytes:
    docs = []
    for i in range(count):
        size = 200_000 if i % 61 == 30 else (i * 37 + seed) % 900
        docs.append(bson.encode({"_id": f"{seed}-{i}", "n": i, "pad": "y" * size}))
    return b"".join(docs)


@pytest.fixture
def ingested(cli: Any, tmp_path: Path) -> dict[str, Any]:
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    for n, name in enumerate(COLLECTIONS):
        (folder / f"{name}.bson").write_bytes(_documents(n, 900 + 400 * n))
        (folder / f"{name}.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [], "collectionName": name})
        )
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    out["vault"] = vault
    return out


def _manifest(home: Path, backup_id: str) -> BackupManifest:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select manifest from backups where id = ?", (backup_id,)).fetchone()
    return BackupManifest.from_predicate(Statement.from_json(bytes(raw)).predicate)


def _data(manifest: BackupManifest, name: str) -> Any:
    (art,) = [a for a in manifest.artifacts if a.path.endswith(f"{name}.bson.age")]
    return art


def _verify(cli: Any, backup_id: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", backup_id, "--json", *args)
    assert "Traceback" not in r.err
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _same(out: dict[str, Any]) -> dict[str, Any]:
    """What a run found and checked (its coverage without the deep run that vouched it)."""
    same = {k: v for k, v in out.items() if k not in _VARYING}
    same["coverage"] = {
        k: v for k, v in out["coverage"].items() if k not in {"vouched_by", "vouched_by_action"}
    }
    return same


def _flip(home: Path, ingested: dict[str, Any], name: str, k: int) -> tuple[Any, Path, int]:
    """Flip a bit in the middle of segment ``k`` of collection ``name``'s data artifact."""
    art = _data(_manifest(home, ingested["backup_id"]), name)
    path = ingested["vault"] / art.path
    row = art.segments.segments[k]
    raw = bytearray(path.read_bytes())
    raw[row.offset + row.size // 2] ^= 0x10
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(raw))
    return art, path, k


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each artifact the verification reached was taken from the pipeline."""
    taken: list[bool] = []
    real_claim = segments_module.Pipeline.claim

    def claim(self: Any, n: int, use: Any, fd: int) -> Any:
        got = real_claim(self, n, use, fd)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(segments_module.Pipeline, "claim", claim)
    return taken


def test_several_collections_verify_alike_on_1_2_and_3_workers(
    cli: Any, home: Path, ingested: dict[str, Any], claims: list[bool]
) -> None:
    backup_id = ingested["backup_id"]
    manifest = _manifest(home, backup_id)
    assert len(manifest.artifacts) == 3 * len(COLLECTIONS)
    data = [_data(manifest, name) for name in COLLECTIONS]
    assert all(len(a.segments.segments) >= 4 for a in data)  # several segments each
    deep: dict[str, dict[str, Any]] = {}
    fast: dict[str, dict[str, Any]] = {}
    for workers in ("1", "2", "3"):
        code, out = _verify(cli, backup_id, "--workers", workers, "--deep")
        assert code == 0 and out["ok"] is True and out["mode"] == "deep", out["findings"]
        deep[workers] = out
        code, out = _verify(cli, backup_id, "--workers", workers)
        assert code == 0 and out["ok"] is True and out["mode"] == "fast", out["findings"]
        fast[workers] = out
    assert claims == [True] * 9 * 6  # every artifact of every run from the pipeline
    for runs in (deep, fast):
        assert _same(runs["1"]) == _same(runs["2"]) == _same(runs["3"])
    assert deep["1"]["coverage"]["datasets_checked"] == [f"shop.{n}" for n in COLLECTIONS]
    assert cli("ledger", "verify").code == 0


@pytest.mark.parametrize("workers", ["1", "2", "3"])
def test_a_flipped_segment_of_the_second_artifact_is_named_alone(
    cli: Any, home: Path, ingested: dict[str, Any], workers: str
) -> None:
    backup_id = ingested["backup_id"]
    code, intact = _verify(cli, backup_id, "--workers", workers)  # deep: vouches a fast one
    assert code == 0 and intact["mode"] == "deep"
    art, _, k = _flip(home, ingested, "beta", 2)
    for args in ((), ("--deep",)):
        code, out = _verify(cli, backup_id, "--workers", workers, *args)
        assert code == 1 and out["ok"] is False
        assert {f["subject"] for f in out["findings"]} == {art.path}, out["findings"]
        (found,) = [f for f in out["findings"] if f["code"] == "segment-mismatch"]
        assert [s["segment"] for s in found["details"]["segments"]] == [k]
        assert found["details"]["segments"][0]["expected"] == art.segments.segments[k].sha256
        codes = {f["code"] for f in out["findings"]}
        assert {"artifact-hash-mismatch", "artifact-undecryptable"} <= codes


def test_a_file_swapped_after_the_pipeline_opened_it_is_read_again(
    cli: Any,
    home: Path,
    ingested: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    claims: list[bool],
) -> None:
    """The pipeline opens the intact copy of an artifact, the verification then the tampered
    file at its path (a swap in between): the pipeline's segments are dropped (another
    inode), and the file the verification opened is the one checked."""
    backup_id = ingested["backup_id"]
    manifest = _manifest(home, backup_id)
    intact = tmp_path / "intact-copy"
    shutil.copyfile(ingested["vault"] / _data(manifest, "beta").path, intact)
    art, _, k = _flip(home, ingested, "beta", 3)
    real_open = FileVault.open
    fed: list[str] = []

    def swapped(self: FileVault, path: str) -> BinaryIO:
        if path == art.path and threading.current_thread().name == "affidavit-pipeline":
            fed.append(path)
            return intact.open("rb")
        return real_open(self, path)

    monkeypatch.setattr(FileVault, "open", swapped)
    code, out = _verify(cli, backup_id, "--workers", "2", "--deep")
    assert fed == [art.path]  # the pipeline did read the intact copy
    assert claims.count(False) == 1 and len(claims) == 9  # only that artifact was refused
    assert code == 1 and {f["subject"] for f in out["findings"]} == {art.path}
    (found,) = [f for f in out["findings"] if f["code"] == "segment-mismatch"]
    assert [s["segment"] for s in found["details"]["segments"]] == [k]
