"""Ingest's head start: the large files of an ingest are encrypted into staging files of the
vault (:func:`~affidavit.services.artifacts.stage_file`) while the input is still being
checked, so the encryption runs on another core instead of after the check.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from affidavit.errors import OperationError
from affidavit.services.artifacts import Staged, stage_file, worth_a_process
from affidavit.vaults.base import VaultBackend


class Spooler:
    """Encrypts the large files of an ingest into staging files of the vault while the input
    is being checked: a thread runs :func:`~affidavit.services.artifacts.stage_file` per file
    (a child that reads the file, encrypts, hashes both sides and writes the staging file
    itself, on another core). After the check the artifact writer stores each one
    (:meth:`~affidavit.services.artifacts.ArtifactWriter.store_file`): a folder vault takes it
    over without copying; other vaults upload it.

    A spool file is no artifact: nothing is recorded for it, a folder vault never lists it,
    and :meth:`discard` removes every one not taken over. A spool that fails for any reason
    (or whose file changed meanwhile) is dropped quietly: the file is then copied the
    ordinary way, which meets the error again where it always was. :meth:`abort` stops the
    encryption (a refused input)."""

    def __init__(
        self, recipient: str, files: list[tuple[Path, tuple[int, int]]], vault: VaultBackend
    ) -> None:
        self._recipient = recipient
        self._files = [(file, seen) for file, seen in files if worth_a_process(seen[0])]
        self._vault = vault
        self._stop = threading.Event()
        self._ended = threading.Event()  # the spooling thread ended (see join)
        self._thread: threading.Thread | None = None
        self._staged: list[Path] = []
        self.spooled: dict[Path, Staged] = {}

    def start(self) -> None:
        if self._files:
            thread = threading.Thread(target=self._run, name="affidavit-spool", daemon=True)
            thread.start()  # (then joined: a thread that did not start never ends its run)
            self._thread = thread

    def _run(self) -> None:
        try:
            for file, seen in self._files:
                spooled = self.spool_now(file, seen)
                if spooled is not None:
                    self.spooled[file] = spooled
        finally:
            self._ended.set()

    def spool_now(self, file: Path, seen: tuple[int, int] | None = None) -> Staged | None:
        """Encrypt ``file`` into a spool file, in the calling thread (the spooler's own for
        the input files; the indexer's for an index just folded). ``seen``: the file's (size,
        mtime) when it was listed, which it must still have afterwards. None when the spooler
        was stopped or anything fails: the spool is dropped, and the caller stores the file
        the ordinary way, which meets any error again where it always was."""
        if self._stop.is_set():
            return None
        staged: Staged | None = None
        try:
            if seen is not None and stat_key(file) != seen:
                raise changed(file)
            staged = stage_file(self._vault, self._recipient, file, stop=self._stop)
            self._staged.append(staged.cipher)
            done = staged.encryption
            if seen is not None and (stat_key(file) != seen or done.plain_size != seen[0]):
                raise changed(file)
        except Exception:  # dropped (see above)
            if staged is not None:
                _drop(staged)
            return None
        return staged

    def join(self) -> None:
        """Wait for the spooling to end."""
        if self._thread is not None:
            # on an Event: a Ctrl-C that interrupts Thread.join leaves Python 3.11 taking the
            # thread for stopped, and the join of the discard after it returned at once
            self._ended.wait()
            self._thread.join()
            self._thread = None

    def abort(self) -> None:
        """Stop spooling (the encryption process is ended) and wait for the thread."""
        self._stop.set()
        self.join()

    def discard(self) -> None:
        """Stop, and remove every spool file that was not taken over (and stop the reads of
        their tables' plaintext sides)."""
        self.abort()
        for staged in self.spooled.values():
            if staged.plain is not None:
                staged.plain.stop()
        for cipher in self._staged:
            with contextlib.suppress(OSError):
                cipher.unlink(missing_ok=True)


def _drop(staged: Staged) -> None:
    """A spool not taken: its plaintext side's read stopped, its file removed."""
    if staged.plain is not None:
        staged.plain.stop()
    staged.cipher.unlink(missing_ok=True)


def stat_key(file: Path) -> tuple[int, int]:
    info = file.stat()
    return info.st_size, info.st_mtime_ns


def changed(file: Path) -> OperationError:
    """The error for an input file that changed while it was being ingested."""
    return OperationError(
        f"{file} changed while it was being ingested",
        hint="ingest a copy that nothing writes to",
    )
