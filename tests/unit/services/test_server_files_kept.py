"""Files the server writes for clients to download (ledger and access-log exports, evidence
packages) are kept ``server_files.KEEP`` and then gone: never served once older, removed by
the next file of their folder, and nothing else in the folder is touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from affidavit.errors import NotFound
from affidavit.models.period import Period
from affidavit.services import evidence, server_files
from affidavit.services.context import App

OLD = time.time() - server_files.KEEP.total_seconds() - 60


def _age(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def test_an_export_older_than_the_keep_period_is_not_served_and_is_swept(home: Path) -> None:
    old_id, old = server_files.new_file(home, "ledger")
    old.write_text("{}\n")
    assert server_files.served_file(home, "ledger", old_id) == old
    _age(old)
    with pytest.raises(NotFound, match="gone"):
        server_files.served_file(home, "ledger", old_id)
    assert old.exists()  # not served, and removed by the next file written
    new_id, new = server_files.new_file(home, "access-log")
    new.write_text("{}\n")
    assert not old.exists()
    assert server_files.served_file(home, "access-log", new_id) == new


def test_the_sweep_leaves_what_it_did_not_write(home: Path, tmp_path: Path) -> None:
    folder = home / server_files.FOLDER
    folder.mkdir(mode=0o700)
    strangers = [folder / "notes.jsonl", folder / "lx-0123456789abcdef.txt"]
    for path in strangers:
        path.write_text("x")
        _age(path)
    outside = tmp_path / "precious.jsonl"
    outside.write_text("keep me")
    _age(outside)
    link = folder / "lx-aaaaaaaaaaaaaaaa.jsonl"
    link.symlink_to(outside)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    server_files.new_file(home, "ledger")
    assert all(path.exists() for path in strangers)
    assert outside.read_text() == "keep me"
    assert link.is_symlink()


def test_an_evidence_package_is_kept_then_gone(app: App) -> None:
    period = Period.parse("2026-01-01", "2026-12-31")
    first, _ = evidence.build_evidence_package(app, period=period)
    path = evidence.evidence_package(app, first)
    assert path.is_file()
    _age(path)
    with pytest.raises(NotFound, match="gone"):
        evidence.evidence_package(app, first)
    second, _ = evidence.build_evidence_package(app, period=period)
    assert not path.exists()
    assert evidence.evidence_package(app, second).is_file()
