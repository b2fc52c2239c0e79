"""Where the sealed samples of export previews are kept, and the sweep that removes them once
no open request needs them (docs/exports.md, "What the approver sees").

A sample (``export-previews/<sha256>.json``, written by :mod:`.preview`) is personal data,
kept only while the request that shows it is open (pending, or approved and not yet
executed). :func:`sweep_samples` removes every sample that no open export-run request names:
its request was executed, vetoed, cancelled, superseded or expired, or no request names it
at all (a dry pass whose request was never recorded). The ledger keeps the sample's SHA-256,
so the approval still covers exactly what was shown.

The sweep is crash-proof (it judges by the requests' state, folded from the ledger, not by
remembering to remove) and is run by every export-run request, every executed request and
every decision on a request (:func:`affidavit.services.requests.sweep_decided`). It removes
only its own names (64 hex digits + ``.json``, and its writers' partial files); anything else
in the folder is left alone and does not stop it.

Two writers could race a sweep: a dry pass seals its sample a moment before its request is
recorded. So a sample that no request names is kept for :data:`GRACE` after it was written,
and a sample named only by requests that ended is removed only when it was written before
the newest of them was created (a later write is the sample of a new request, being
recorded, that happens to show the same records). A file's time is not believed when it
lies more than :data:`GRACE` in the future, or beyond what a date can hold (a clock that
ran ahead, a touched file): such a sample counts as written long ago, so that no time on a
file keeps personal data for ever; an open request's sample is kept whatever its time.

The sweep never raises: it runs inside the user's operations (an export run, a decision,
an execution) after their change is recorded, and a sweep that failed must not fail them
or keep them from their next step; what it could not remove, the next sweep tries again.

This module imports nothing of the services but the request model, so the request service
itself can call it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from affidavit.models.approval import FINAL_STATES, ApprovalRequest, GatedOperation

PREVIEW_DIR: Final = "export-previews"
"""The folder of the sealed samples, in the home."""
GRACE: Final = timedelta(hours=1)
"""How long a sample that no request names (yet) is kept after it was written."""
_SAMPLE: Final = re.compile(r"([0-9a-f]{64})\.json")
_PARTIAL: Final = re.compile(r"\.([0-9a-f]{64})\.[0-9]+(?:-[0-9a-f]{16})?\.partial")


def samples_folder(home: Path) -> Path:
    """The folder of the sealed samples."""
    return Path(home) / PREVIEW_DIR


def sample_digest(request: ApprovalRequest) -> str | None:
    """The SHA-256 of the sample an export-run request shows (None for another operation, or
    a request without a preview)."""
    if request.operation is not GatedOperation.EXPORT_RUN:
        return None
    preview = request.params.get("preview")
    digest = preview.get("sample_sha256") if isinstance(preview, dict) else None
    return digest if isinstance(digest, str) else None


@dataclass(slots=True)
class _Named:
    """What the requests say of one sample."""

    open: bool = False
    newest: datetime | None = None  # the newest request.created naming it


def _named(requests: Iterable[ApprovalRequest], now: datetime) -> dict[str, _Named]:
    out: dict[str, _Named] = {}
    for request in requests:
        digest = sample_digest(request)
        if digest is None:
            continue
        named = out.setdefault(digest, _Named())
        named.open = named.open or request.state(now) not in FINAL_STATES
        if named.newest is None or request.created_at > named.newest:
            named.newest = request.created_at
    return out


def sweep_samples(
    home: Path, requests: Iterable[ApprovalRequest], *, now: datetime | None = None
) -> list[str]:
    """Remove the samples no open request needs (see the module docstring); the digests
    removed. ``requests`` are every request (:func:`~affidavit.services.requests.
    read_requests`). Never raises for what it finds in the folder."""
    folder = samples_folder(home)
    moment = now or datetime.now(UTC)
    removed: list[str] = []
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return []  # none yet, or not a folder of the home's (a symbolic link): not ours
        named = _named(requests, moment)
        entries = list(os.scandir(folder))
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    for entry in entries:
        sample = _SAMPLE.fullmatch(entry.name)
        partial = _PARTIAL.fullmatch(entry.name)
        if sample is None and partial is None:
            continue  # not ours: left alone
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            written = _written(entry.stat(follow_symlinks=False).st_mtime, moment)
            if sample is None:  # a writer's partial file: it died between write and rename
                if moment - written > GRACE:
                    _unlink(entry.path)
                continue
            digest = sample.group(1)
            if _expired(named.get(digest), written, moment) and _unlink(entry.path):
                removed.append(digest)
        except (OSError, ValueError, TypeError, OverflowError):
            continue  # this entry cannot be judged: left for the next sweep
    return removed


_LONG_AGO: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _written(mtime: float, now: datetime) -> datetime:
    """When a file was written, as far as its time can be believed: a time beyond what a
    date holds, or more than :data:`GRACE` ahead of ``now``, reads as long ago."""
    try:
        written = datetime.fromtimestamp(mtime, UTC)
    except (ValueError, OverflowError, OSError):
        return _LONG_AGO
    return _LONG_AGO if written > now + GRACE else written


def _expired(named: _Named | None, written: datetime, now: datetime) -> bool:
    if named is None:
        return now - written > GRACE  # no request names it (yet)
    if named.open:
        return False
    return (named.newest is not None and written < named.newest) or now - written > GRACE


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except OSError:  # another sweep came first, or it cannot be removed: the next one tries
        return False
    return True
