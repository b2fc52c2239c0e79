"""``services.probes.load_probes``: a probe file must be a regular file; a named pipe, a socket
or a folder is refused as "not a regular file" (not "does not exist"), at once: a FIFO that
nobody writes to never blocks the drill (B3)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from affidavit.errors import InputError
from affidavit.models.records import RecordEncoding
from affidavit.services.probes import load_probes

GOOD = '[[probe]]\nname = "n"\ndataset = "db0"\nkind = "count"\nexpect = 1\n'


def _load(path: Path) -> object:
    return load_probes(path, encoding=RecordEncoding.REDIS, datasets=["db0"])


def _load_within(path: Path, seconds: float = 5.0) -> BaseException | None:
    """Run the loader in a thread and fail the test when it has not returned in time."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            _load(path)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        with open(path, "wb"):  # unblock it (a writer end), then fail
            pass
        pytest.fail(f"reading {path} blocked")
    return outcome[0]


def test_a_regular_probe_file_and_a_link_to_one_load(tmp_path: Path) -> None:
    path = tmp_path / "probes.toml"
    path.write_text(GOOD)
    link = tmp_path / "link.toml"
    link.symlink_to(path)
    assert len(_load(path)) == 1  # type: ignore[arg-type]
    assert len(_load(link)) == 1  # type: ignore[arg-type]


def test_a_missing_probe_file_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        _load(tmp_path / "nothing.toml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_is_not_a_regular_file_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "probes.toml"
    os.mkfifo(fifo)
    error = _load_within(fifo)
    assert isinstance(error, InputError)
    assert "is not a regular file" in error.message
    assert "does not exist" not in error.message
    # also behind a symbolic link
    link = tmp_path / "link.toml"
    link.symlink_to(fifo)
    error = _load_within(link)
    assert isinstance(error, InputError) and "is not a regular file" in error.message


def test_a_folder_and_a_socket_are_not_regular_files(tmp_path: Path) -> None:
    folder = tmp_path / "probes.toml"
    folder.mkdir()
    with pytest.raises(InputError, match="is not a regular file"):
        _load(folder)
    sock_path = tmp_path / "s.toml"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(sock_path))
        error = _load_within(sock_path)
    assert isinstance(error, InputError) and "is not a regular file" in error.message


def test_an_oversized_probe_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "probes.toml"
    path.write_bytes(b"#" * ((4 << 20) + 1))
    with pytest.raises(InputError, match="larger than"):
        _load(path)
