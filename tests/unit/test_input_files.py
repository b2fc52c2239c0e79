"""``affidavit.input_files.open_regular``: a regular file opens; a named pipe, socket, device,
folder or symbolic link is refused (exit 2, saying what it is) without being opened in a way
that blocks. The pipe cases run in a process of their own under a timeout, so that a
regression fails the test instead of hanging it."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from affidavit.constants import ExitCode
from affidavit.errors import InputError
from affidavit.input_files import describe_mode, open_regular

TIMEOUT = 30  # seconds; the refusal takes milliseconds


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        yield path


def refusal(path: Path, **kwargs: str) -> InputError:
    with pytest.raises(InputError) as caught:
        open_regular(path, **kwargs)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return caught.value


def test_a_regular_file_opens_for_blocking_reads(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"abc")
    with open_regular(path) as fh:
        assert os.get_blocking(fh.fileno())
        assert fh.read() == b"abc"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    code = (
        "import sys; from pathlib import Path; from affidavit.errors import InputError\n"
        "from affidavit.input_files import open_regular\n"
        "try:\n"
        "    open_regular(Path(sys.argv[1]), what='the export file', hint='give a file')\n"
        "except InputError as exc:\n"
        "    print(exc.message); print(exc.hint)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(pipe)],
        capture_output=True, text=True, timeout=TIMEOUT, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.stdout.splitlines() == [
        f"the export file {pipe} is a named pipe (FIFO), not a regular file",
        "give a file",
    ]


def test_a_link_is_not_followed_even_to_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"abc")
    link = tmp_path / "link"
    link.symlink_to(target)
    error = refusal(link, what="the secret file")
    assert error.message == f"the secret file {link} is a symbolic link, not a regular file"


def test_follow_takes_a_link_to_a_regular_file_and_nothing_else(tmp_path: Path) -> None:
    """``follow=True`` (a file another reader opens by name, following links): a link to a
    regular file opens; a link to a FIFO or a folder is still refused, without blocking."""
    target = tmp_path / "data"
    target.write_bytes(b"abc")
    link = tmp_path / "link"
    link.symlink_to(target)
    with open_regular(link, follow=True) as fh:
        assert os.get_blocking(fh.fileno()) and fh.read() == b"abc"
    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    to_pipe = tmp_path / "to-pipe"
    to_pipe.symlink_to(pipe)
    with pytest.raises(InputError, match="named pipe"):
        open_regular(to_pipe, follow=True)
    to_folder = tmp_path / "to-folder"
    to_folder.symlink_to(tmp_path)
    with pytest.raises(InputError, match="a folder"):
        open_regular(to_folder, follow=True)


def test_a_folder_socket_and_device_are_refused(tmp_path: Path, unix_socket: Path) -> None:
    assert refusal(tmp_path).message == f"{tmp_path} is a folder, not a regular file"
    assert refusal(unix_socket).message == f"{unix_socket} is a socket, not a regular file"
    assert refusal(Path("/dev/null")).message == (
        "/dev/null is a character device, not a regular file"
    )


def test_a_fifo_swapped_in_after_the_check_is_closed_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lstat saw a regular file; by the open a pipe is there: O_NONBLOCK returns at once
    and fstat refuses it."""
    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    regular = os.lstat(__file__)
    monkeypatch.setattr(os, "lstat", lambda _path: regular)
    opened: list[int] = []
    real_open = os.open

    def recording_open(path: Path, flags: int) -> int:
        fd = real_open(path, flags)
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    error = refusal(pipe)
    assert error.message == f"{pipe} is a named pipe (FIFO), not a regular file"
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(opened[0])  # closed again


def test_a_link_swapped_in_after_the_check_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    regular = os.lstat(__file__)
    monkeypatch.setattr(os, "lstat", lambda _path: regular)
    assert refusal(link).message == f"{link} is a symbolic link, not a regular file"


def test_other_failures_are_the_os_error_for_the_caller_to_word(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")
    with pytest.raises(NotADirectoryError) as caught:
        (tmp_path / "file").write_bytes(b"")
        open_regular(tmp_path / "file" / "below")
    assert caught.value.errno == errno.ENOTDIR


def test_describe_mode_names_every_kind(tmp_path: Path) -> None:
    assert describe_mode(os.lstat(__file__).st_mode) == "a regular file"
    assert describe_mode(os.lstat(tmp_path).st_mode) == "a folder"
    assert describe_mode(os.lstat("/dev/null").st_mode) == "a character device"
