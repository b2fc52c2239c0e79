"""Files the server writes for a client to download: a ledger export, an access-log export,
a lineage export (OpenLineage events).

Through the API an export cannot be written where the client asked (a path on the client's
host): the server writes it in its home (``HOME/exports/ID.jsonl``, the folder 0700) under a
new id, records it as the service does (with the file's SHA-256), and answers with the id;
the client then downloads the file and checks its SHA-256 against the one recorded
(:func:`check_downloaded`). An id names only a file of its own kind in that folder.

Such files are kept :data:`KEEP` (24 hours) for the client to fetch, then they are gone: each
new file first removes the ones older than that in its folder (:func:`sweep`), and an older
one is not served even before it is removed (404: export or build it again). The same holds
for evidence packages built through the server (``HOME/evidence``,
:mod:`affidavit.services.evidence`). What a file held stays provable: the ledger recorded its
SHA-256 when it was written.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Final

from affidavit.crypto import tokens
from affidavit.crypto.digest import sha256_readable
from affidavit.errors import IntegrityError, NotFound

FOLDER: Final = "exports"
KINDS: Final = {"ledger": "lx", "access-log": "ax", "lineage": "ox"}
"""What is exported, and the prefix of its files' ids."""
_ID: Final = re.compile(r"(lx|ax|ox)-[0-9a-f]{16}")
KEEP: Final = timedelta(hours=24)
"""How long a file written for a client to download is kept."""
KEEP_TEXT: Final = "24 hours"


def expired(path: Path, *, now: float | None = None) -> bool:
    """Whether the file at ``path`` was written more than :data:`KEEP` ago (or is gone)."""
    try:
        written = path.stat().st_mtime
    except OSError:
        return True
    return (time.time() if now is None else now) - written > KEEP.total_seconds()


def sweep(folder: Path, pattern: re.Pattern[str], suffix: str) -> int:
    """Remove the files of ``folder`` named ``ID`` + ``suffix`` (``ID`` matching
    ``pattern``) written more than :data:`KEEP` ago; the number removed. Anything else in
    the folder is left alone."""
    removed = 0
    now = time.time()
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        name = path.name
        if not name.endswith(suffix) or not pattern.fullmatch(name.removesuffix(suffix)):
            continue
        if path.is_file() and not path.is_symlink() and expired(path, now=now):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def new_file(home: Path, kind: str) -> tuple[str, Path]:
    """A new id of ``kind`` (a key of :data:`KINDS`) and the path its file is written to (not
    yet existing)."""
    folder = home / FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    sweep(folder, _ID, ".jsonl")
    file_id = f"{KINDS[kind]}-{tokens.new_id()}"
    return file_id, folder / f"{file_id}.jsonl"


def served_file(home: Path, kind: str, file_id: str) -> Path:
    """The file of ``file_id``, written by :func:`new_file` for ``kind``; :class:`NotFound`
    for any other id (never a path outside the folder, never another kind's file)."""
    path = home / FOLDER / f"{file_id}.jsonl"
    if not _ID.fullmatch(file_id) or not file_id.startswith(KINDS[kind]) or not path.is_file():
        raise NotFound(
            f"no {kind} export {file_id[:40]!r}",
            hint=f"`affidavit {kind} export --out FILE` through the server names the one it wrote",
        )
    if expired(path):
        raise NotFound(
            f"the {kind} export {file_id} was written more than {KEEP_TEXT} ago and is gone",
            hint=f"export it again: `affidavit {kind} export --out FILE`",
        )
    return path


def check_downloaded(path: Path, sha256: str) -> None:
    """Raise :class:`IntegrityError`, and remove the file, when the file at ``path`` (one a
    client downloaded) is not the one whose SHA-256 ``sha256`` the ledger recorded."""
    with path.open("rb") as fh:
        stream = sha256_readable(fh)
    if stream.hexdigest() != sha256:
        path.unlink(missing_ok=True)
        raise IntegrityError(
            f"the file received has SHA-256 {stream.hexdigest()}, not the {sha256} that was "
            "written and recorded: it changed on the way, and was removed",
            hint="export it again; if it happens again, check what lies between you and the server",
        )
