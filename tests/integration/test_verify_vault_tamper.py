"""Tamper tests for the vault side of `affidavit verify` and `affidavit drill run` (issue 13):
an attacker with write access to the vault folder (or bucket) but without the keys. Hidden
and non-regular files in a backup's folder are reported, an artifact replaced by a symbolic
link, a folder or a FIFO is a failed verification naming it (never exit 3, never a hang), a
deleted manifest copy fails the drill as it fails verify, and a weakened lock (an artifact
made writable, a retention sidecar moved earlier or broken, an S3 Object Lock shortened or
turned to GOVERNANCE) is a finding. Each fixture is named after its defect."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        uri = ConnectionUri.parse(EngineName.MONGODB, server.uri)
        with engine_for_uri(EngineName.MONGODB, uri, password=None, timeout=5) as engine:
            engine.seed_sample(seed=13, scale=4)
        yield server.uri


def add_source(cli: Any, mongo: str) -> None:
    r = cli("source", "add", "orders", "--engine", "mongodb", "--uri", mongo,
            "--classification", "internal")  # fmt: skip
    assert r.code == 0, r.err


def run_backup(cli: Any) -> dict[str, Any]:
    r = cli("backup", "run", "orders", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    return out


@pytest.fixture
def backup(cli: Any, mongo: str, tmp_path: Path) -> dict[str, Any]:
    """One clean MongoDB backup in a folder vault: its JSON, its vault and its folder."""
    vault = tmp_path / "vault"
    add_source(cli, mongo)
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    out = run_backup(cli)
    out["vault"] = vault
    out["folder"] = vault / "orders" / out["backup_id"]
    assert out["folder"].is_dir()
    return out


@pytest.fixture
def s3_backup(cli: Any, mongo: str, s3_env: str) -> dict[str, Any]:
    """One clean MongoDB backup in an S3 Object Lock vault (moto): its JSON and its bucket."""
    bucket = f"vault-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    add_source(cli, mongo)
    r = cli("vault", "add", "s3v", "--url", f"s3://{bucket}/backups", "--region", "us-east-1")
    assert r.code == 0, r.err
    out = run_backup(cli)
    out["bucket"] = bucket
    out["prefix"] = f"backups/orders/{out['backup_id']}/"
    return out


def artifact(backup: dict[str, Any], suffix: str = "/customers.bson.age") -> str:
    (path,) = [a["path"] for a in backup["artifacts"] if a["path"].endswith(suffix)]
    return str(path)


def manifest_copy(backup: dict[str, Any]) -> str:
    (path,) = [a["path"] for a in backup["artifacts"] if a["role"] == "manifest"]
    return str(path)


def sidecar(file: Path) -> Path:
    return file.with_name(f".{file.name}.retention")


@contextlib.contextmanager
def no_hang(seconds: int = 120) -> Iterator[None]:
    """Fail (instead of blocking the suite forever) when the body does not return in time."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still blocked after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def verify(cli: Any, backup_id: str) -> tuple[int, dict[str, Any]]:
    with no_hang():
        r = cli("verify", backup_id, "--json")
    assert "Traceback" not in r.err
    assert r.out, (r.code, r.err)
    return r.code, json.loads(r.out)


def codes(out: dict[str, Any]) -> set[str]:
    return {f["code"] for f in out["findings"]}


def findings(out: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in out["findings"] if f["code"] == code]


def failed_with(cli: Any, backup_id: str, code: str) -> dict[str, Any]:
    """Verify: exit 1, recorded as a failed verification with ``code`` among its findings."""
    exit_code, out = verify(cli, backup_id)
    assert exit_code == 1, out
    assert out["ok"] is False
    assert code in codes(out), out["findings"]
    r = cli("verify", "list", backup_id, "--json")
    listed = json.loads(r.out)["verifications"]
    assert listed[0]["id"] == out["id"] and listed[0]["ok"] is False  # recorded, not exit 3
    return out


def actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [a for (a,) in db.execute("select action from ledger_entries order by seq")]


# --- 1. hidden and other unrecorded entries in a backup's folder ------------------------------


def test_hidden_file_in_the_backups_folder(cli: Any, backup: dict[str, Any]) -> None:
    (backup["folder"] / ".notes").write_bytes(b"exfiltrated or planted data")
    out = failed_with(cli, backup["backup_id"], "artifact-unexpected")
    (extra,) = findings(out, "artifact-unexpected")
    assert extra["subject"] == f"orders/{backup['backup_id']}/.notes"
    assert extra["details"]["kind"] == "hidden-file"
    assert codes(out) == {"artifact-unexpected"}


def test_hidden_files_named_like_the_vaults_own(cli: Any, backup: dict[str, Any]) -> None:
    """Reserved names count only as the vault writes them: a sidecar beside its artifact.
    A sidecar of nothing, an unfinished write, a hidden folder, a visible file and a hidden
    one deeper down are each reported with what they are; the genuine sidecars are not."""
    folder = backup["folder"]
    data = folder / artifact(backup).split("/", 2)[2]
    (folder / ".ghost.bson.age.retention").write_text('{"retain_until": "2099-01-01T00:00:00"}')
    (data.parent / f".{data.name}.a1b2c3d4.partial").write_bytes(b"half")
    (folder / ".stash").mkdir()
    (folder / ".stash" / ".deep").write_bytes(b"x")
    (folder / "visible.txt").write_bytes(b"x")
    base = f"orders/{backup['backup_id']}/"
    out = failed_with(cli, backup["backup_id"], "artifact-unexpected")
    kinds = {f["subject"]: f["details"]["kind"] for f in findings(out, "artifact-unexpected")}
    partial = base + str(data.relative_to(folder).parent / f".{data.name}.a1b2c3d4.partial")
    assert kinds == {
        base + ".ghost.bson.age.retention": "orphaned-retention-record",
        partial: "unfinished-write",
        base + ".stash": "folder",
        base + ".stash/.deep": "hidden-file",
        base + "visible.txt": "file",
    }
    assert codes(out) == {"artifact-unexpected"}


def test_special_files_and_links_in_the_backups_folder(cli: Any, backup: dict[str, Any]) -> None:
    folder = backup["folder"]
    os.mkfifo(folder / "pipe")  # never opened: it would block a reader
    (folder / "link").symlink_to("/etc/hostname")
    (folder / "empty").mkdir()
    out = failed_with(cli, backup["backup_id"], "artifact-unexpected")
    got = {
        f["subject"].rpartition("/")[2]: (f["details"]["kind"], f["details"]["detail"])
        for f in findings(out, "artifact-unexpected")
    }
    assert got == {
        "pipe": ("special-file", "FIFO"),
        "link": ("symbolic-link", "-> /etc/hostname"),
        "empty": ("folder", "no artifact"),
    }


def test_leftover_sidecar_of_a_deleted_artifact_is_not_a_second_finding(
    cli: Any, backup: dict[str, Any]
) -> None:
    path = backup["vault"] / artifact(backup)
    path.unlink()
    assert sidecar(path).exists()
    out = failed_with(cli, backup["backup_id"], "artifact-missing")
    assert codes(out) == {"artifact-missing"}


def test_backup_folder_replaced_by_a_symlink_to_a_faithful_copy(
    cli: Any, backup: dict[str, Any]
) -> None:
    """Every byte is still right, read through the link; the link itself is the finding."""
    folder = backup["folder"]
    copy = folder.with_name("elsewhere")
    shutil.copytree(folder, copy)  # modes kept: read-only artifacts, read-only sidecars
    shutil.rmtree(folder)
    folder.symlink_to(copy.name, target_is_directory=True)
    out = failed_with(cli, backup["backup_id"], "artifact-unexpected")
    (link,) = findings(out, "artifact-unexpected")
    assert link["subject"] == f"orders/{backup['backup_id']}"
    assert link["details"]["kind"] == "symbolic-link"
    assert codes(out) == {"artifact-unexpected"}


def test_hidden_and_marker_objects_in_an_s3_backups_prefix(
    cli: Any, s3_backup: dict[str, Any]
) -> None:
    code, clean = verify(cli, s3_backup["backup_id"])
    assert code == 0 and clean["findings"] == [], clean["findings"]
    s3 = boto3.client("s3")
    prefix = s3_backup["prefix"]
    s3.put_object(Bucket=s3_backup["bucket"], Key=prefix + ".hidden", Body=b"x")
    s3.put_object(Bucket=s3_backup["bucket"], Key=prefix + "stash/", Body=b"bytes in a marker")
    out = failed_with(cli, s3_backup["backup_id"], "artifact-unexpected")
    base = f"orders/{s3_backup['backup_id']}/"
    kinds = {f["subject"]: f["details"]["kind"] for f in findings(out, "artifact-unexpected")}
    assert kinds == {base + ".hidden": "file", base + "stash/": "folder"}


# --- 2. an artifact replaced by something that is not a file ---------------------------------


def test_artifact_replaced_by_a_symlink_to_a_faithful_copy(
    cli: Any, home: Path, backup: dict[str, Any], tmp_path: Path
) -> None:
    path = backup["vault"] / artifact(backup)
    genuine = tmp_path / "copy.bson.age"
    shutil.copyfile(path, genuine)
    path.unlink()
    path.symlink_to(genuine)
    out = failed_with(cli, backup["backup_id"], "artifact-not-a-file")
    (replaced,) = findings(out, "artifact-not-a-file")
    assert replaced["subject"] == artifact(backup)
    assert replaced["details"]["kind"] == "symbolic link"
    assert codes(out) == {"artifact-not-a-file"}  # the rest is intact
    assert "verification.could_not_run" not in actions(home)


def test_artifact_path_leading_outside_the_vault(
    cli: Any, backup: dict[str, Any], tmp_path: Path
) -> None:
    """The backup's folder swapped for a link out of the vault: every artifact is named."""
    folder = backup["folder"]
    outside = tmp_path / "outside"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    out = failed_with(cli, backup["backup_id"], "artifact-not-a-file")
    named = {f["subject"] for f in findings(out, "artifact-not-a-file")}
    assert named == {a["path"] for a in backup["artifacts"]}  # the manifest copy too
    (link,) = findings(out, "artifact-unexpected")
    assert link["subject"] == f"orders/{backup['backup_id']}"
    assert codes(out) == {"artifact-not-a-file", "artifact-unexpected"}


@pytest.mark.parametrize("defect", ["folder", "fifo"])
def test_artifact_replaced_by_a_folder_or_a_fifo(
    cli: Any, backup: dict[str, Any], defect: str
) -> None:
    path = backup["vault"] / artifact(backup)
    path.unlink()
    if defect == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)  # no writer: opening it for reading would block forever
    out = failed_with(cli, backup["backup_id"], "artifact-not-a-file")
    (replaced,) = findings(out, "artifact-not-a-file")
    assert replaced["subject"] == artifact(backup)
    assert replaced["details"]["kind"] == {"folder": "folder", "fifo": "FIFO"}[defect]
    assert codes(out) == {"artifact-not-a-file"}


def test_manifest_copy_replaced_by_a_fifo(cli: Any, backup: dict[str, Any]) -> None:
    path = backup["vault"] / manifest_copy(backup)
    path.unlink()
    os.mkfifo(path)
    out = failed_with(cli, backup["backup_id"], "artifact-not-a-file")
    (replaced,) = findings(out, "artifact-not-a-file")
    assert replaced["subject"] == manifest_copy(backup)
    assert codes(out) == {"artifact-not-a-file"}


# --- 3. the manifest copy deleted: drill and verify agree ------------------------------------


def drill(cli: Any, backup_id: str) -> tuple[int, dict[str, Any]]:
    with no_hang(300):
        r = cli("drill", "run", backup_id, "--json")
    assert "Traceback" not in r.err
    assert r.out, (r.code, r.err)
    return r.code, json.loads(r.out)


def test_manifest_copy_deleted_fails_the_drill_and_verify(cli: Any, backup: dict[str, Any]) -> None:
    (backup["vault"] / manifest_copy(backup)).unlink()
    code, out = drill(cli, backup["backup_id"])
    assert code == 1 and out["ok"] is False, out
    assert [f["code"] for f in out["findings"]] == ["manifest-copy-missing"]
    assert out["fingerprint_match"] is True  # the restore itself went through
    (missing,) = out["findings"]
    assert missing["subject"] == manifest_copy(backup)
    checked = failed_with(cli, backup["backup_id"], "manifest-copy-missing")
    assert codes(checked) == {"manifest-copy-missing"}


def test_manifest_copy_edited_fails_the_drill(cli: Any, backup: dict[str, Any]) -> None:
    path = backup["vault"] / manifest_copy(backup)
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"payloadType"', '"payloadType" '))
    path.chmod(0o444)
    code, out = drill(cli, backup["backup_id"])
    assert code == 1 and [f["code"] for f in out["findings"]] == ["manifest-copy-mismatch"]


def test_artifact_replaced_by_a_fifo_fails_the_drill_without_hanging(
    cli: Any, backup: dict[str, Any]
) -> None:
    path = backup["vault"] / artifact(backup)
    path.unlink()
    os.mkfifo(path)
    code, out = drill(cli, backup["backup_id"])
    assert code == 1 and out["ok"] is False
    (failed,) = [f for f in out["findings"] if f["code"] == "fetch-failed"]
    assert artifact(backup) in failed["message"] and "FIFO" in failed["message"]


# --- 4. a weakened lock ----------------------------------------------------------------------


def signed_retain_until(backup: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(backup["retain_until"])


def test_artifact_made_writable_again(cli: Any, backup: dict[str, Any]) -> None:
    path = backup["vault"] / artifact(backup)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)  # nothing else changes: the bytes are intact
    out = failed_with(cli, backup["backup_id"], "artifact-lock-weakened")
    (weak,) = findings(out, "artifact-lock-weakened")
    assert weak["subject"] == artifact(backup)
    assert "0600" in weak["message"]
    assert codes(out) == {"artifact-lock-weakened"}


def test_retention_sidecar_moved_earlier(cli: Any, backup: dict[str, Any]) -> None:
    path = sidecar(backup["vault"] / artifact(backup))
    earlier = datetime.now(UTC) + timedelta(days=1)  # still in the future, so still locked
    assert earlier < signed_retain_until(backup)
    path.chmod(0o644)
    path.write_text(json.dumps({"retain_until": earlier.isoformat()}))
    path.chmod(0o444)  # the lock looks as the vault leaves it, only the date moved
    out = failed_with(cli, backup["backup_id"], "artifact-lock-weakened")
    (weak,) = findings(out, "artifact-lock-weakened")
    assert weak["subject"] == artifact(backup)
    assert earlier.isoformat() in weak["message"]
    assert weak["details"]["retain_until"] == signed_retain_until(backup).isoformat()
    assert codes(out) == {"artifact-lock-weakened"}
    # deletion is still refused by the catalog's date: the finding is about the weaker lock
    assert cli("backup", "delete", backup["backup_id"], "--reason", "try").code != 0


@pytest.mark.parametrize("defect", ["deleted", "garbage", "extra-field", "writable", "fifo"])
def test_retention_sidecar_broken(cli: Any, backup: dict[str, Any], defect: str) -> None:
    """A sidecar that is gone, unreadable, padded, rewritable or a FIFO: a finding (exit 1),
    never exit 3 and never a hang."""
    path = sidecar(backup["vault"] / manifest_copy(backup))
    if defect == "deleted":
        path.unlink()
    elif defect == "fifo":
        path.unlink()
        os.mkfifo(path)
    else:
        path.chmod(0o644)
        if defect == "garbage":
            path.write_text("{not json")
        elif defect == "extra-field":
            record = json.loads(path.read_text())
            path.write_text(json.dumps({**record, "note": "x" * 1000}))
        if defect != "writable":
            path.chmod(0o444)
    out = failed_with(cli, backup["backup_id"], "artifact-lock-weakened")
    (weak,) = findings(out, "artifact-lock-weakened")
    assert weak["subject"] == manifest_copy(backup)
    if defect == "fifo":  # a FIFO is nothing the vault writes: it is in the folder, too
        (extra,) = findings(out, "artifact-unexpected")
        folder = manifest_copy(backup).rpartition("/")[0]
        assert extra["subject"] == f"{folder}/{path.name}"
        assert extra["details"]["detail"] == "FIFO"
    extra_codes = {"artifact-unexpected"} if defect == "fifo" else set()
    assert codes(out) == {"artifact-lock-weakened", *extra_codes}


def test_s3_object_lock_shortened_or_made_governance(cli: Any, s3_backup: dict[str, Any]) -> None:
    """moto lets a COMPLIANCE retention be shortened, as GOVERNANCE with bypass rights (or a
    lax S3-compatible store) would: the lock read back must still hold as it was written."""
    code, clean = verify(cli, s3_backup["backup_id"])
    assert code == 0 and clean["findings"] == [], clean["findings"]
    s3 = boto3.client("s3")
    bucket = s3_backup["bucket"]
    shortened, governed = artifact(s3_backup), manifest_copy(s3_backup)
    earlier = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    s3.put_object_retention(
        Bucket=bucket,
        Key=f"backups/{shortened}",
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": earlier},
    )
    head = s3.head_object(Bucket=bucket, Key=f"backups/{governed}")
    s3.put_object_retention(
        Bucket=bucket,
        Key=f"backups/{governed}",
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": head["ObjectLockRetainUntilDate"]},
    )
    out = failed_with(cli, s3_backup["backup_id"], "artifact-lock-weakened")
    weak = {f["subject"]: f["message"] for f in findings(out, "artifact-lock-weakened")}
    assert set(weak) == {shortened, governed}
    assert "earlier than the signed" in weak[shortened]
    assert "GOVERNANCE, not COMPLIANCE" in weak[governed]
    assert codes(out) == {"artifact-lock-weakened"}
