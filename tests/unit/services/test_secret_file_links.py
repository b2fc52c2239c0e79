"""A secret file may be a link (mounted secrets, e.g. Kubernetes', are links), but what it
leads to must be a regular file only its owner can read; a pipe behind a link never blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from affidavit.errors import InputError
from affidavit.models.inventory import SecretKind, SecretRef
from affidavit.services.secrets import resolve_secret


def _ref(path: Path) -> SecretRef:
    return SecretRef(kind=SecretKind.FILE, locator=str(path))


def test_a_link_to_a_private_regular_file_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "..data" / "password"
    target.parent.mkdir()
    target.write_text("s3cret\n")
    target.chmod(0o600)
    link = tmp_path / "password"
    link.symlink_to(target)
    assert resolve_secret(_ref(link)) == "s3cret"


def test_a_link_to_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    link = tmp_path / "password"
    link.symlink_to(fifo)
    with pytest.raises(InputError, match="named pipe"):
        resolve_secret(_ref(link))


def test_a_link_to_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "password.txt"
    target.write_text("s3cret\n")
    target.chmod(0o644)
    link = tmp_path / "password"
    link.symlink_to(target)
    with pytest.raises(InputError, match="readable by other users"):
        resolve_secret(_ref(link))
