"""Consent for an export: a JSON-lines file with one consent per line::

    {"subject": "person7@example.com", "purpose": "churn analysis",
     "valid_from": "2026-01-01T00:00:00Z", "valid_to": "2027-01-01T00:00:00Z"}

``subject`` is a string or an integer (compared with the text of the source document's
subject field: a string as it is, an integer or ObjectId as its digits); ``valid_to`` may be
null or absent (no end). A record whose subject holds no consent for the spec's purpose that
is valid at the run's time is excluded, counted by reason: ``no_consent`` (none for this
purpose) or ``consent_not_valid`` (not yet valid, or expired). A line that is not such an
object is bad input, named by its line number: the run is refused before anything is
recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import InputError
from affidavit.input_files import open_regular

NO_CONSENT: Final = "no_consent"
NOT_VALID: Final = "consent_not_valid"
_MAX_LINE: Final = 64 * 1024
_KEYS: Final = frozenset({"subject", "purpose", "valid_from", "valid_to"})


@dataclass(slots=True)
class Consents:
    """The consents of one file for one purpose, by subject, and the file's SHA-256."""

    path: Path
    purpose: str
    sha256: str = ""
    lines: int = 0
    by_subject: dict[str, list[tuple[datetime, datetime | None]]] = field(default_factory=dict)

    def judge(self, subject: str | None, at: datetime) -> str | None:
        """None when ``subject`` holds a consent valid at ``at``; else the reason."""
        windows = self.by_subject.get(subject) if subject is not None else None
        if not windows:
            return NO_CONSENT
        if any(start <= at and (end is None or at < end) for start, end in windows):
            return None
        return NOT_VALID

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the manifest predicate's ``consent``)."""
        return {"file": self.path.name, "sha256": self.sha256, "lines": self.lines}


def subject_text(value: Any) -> str | None:
    """The text a consent's ``subject`` is compared with, of a canonical Extended JSON
    value: a string as it is; an Int32/Int64 or ObjectId as its digits; None for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in ("$numberInt", "$numberLong", "$oid") and isinstance(inner, str):
            return inner
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _moment(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {value[:40]!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} needs a time zone (e.g. Z)")
    return moment


def _parse(raw: bytes) -> tuple[str, str, datetime, datetime | None]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    unknown = set(value) - _KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    subject = value.get("subject")
    if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
        raise ValueError("subject must be a non-empty string or an integer")
    purpose = value.get("purpose")
    if not isinstance(purpose, str) or not purpose.strip():
        raise ValueError("purpose must be a non-empty string")
    start = _moment(value.get("valid_from"), "valid_from")
    end_raw = value.get("valid_to")
    end = _moment(end_raw, "valid_to") if end_raw is not None else None
    if end is not None and end <= start:
        raise ValueError("valid_to is not after valid_from")
    return str(subject), purpose.strip(), start, end


def load_consents(path: Path, purpose: str) -> Consents:
    """Read and check a consent file, keeping the consents for ``purpose``. Raises
    :class:`InputError` naming the first malformed line by its number."""
    consents = Consents(path=path, purpose=purpose)
    digest = Sha256Stream()
    try:
        fh = open_regular(path, what="the consent file")
    except FileNotFoundError:
        raise InputError(f"the consent file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read the consent file {path}: {exc.strerror}") from None
    with fh:
        for number, line in enumerate(iter(lambda: fh.readline(_MAX_LINE + 1), b""), start=1):
            digest.update(line)
            if len(line) > _MAX_LINE:
                raise InputError(
                    f"the consent file {path.name} line {number}: longer than 64 KiB",
                    hint="one consent per line",
                )
            if not line.strip():
                continue
            try:
                subject, for_purpose, start, end = _parse(line)
            except ValueError as exc:
                raise InputError(
                    f"the consent file {path.name} line {number}: {exc}",
                    hint='each line: {"subject": ..., "purpose": ..., "valid_from": ..., '
                    '"valid_to": ...} (docs/exports.md)',
                ) from None
            consents.lines += 1
            if for_purpose == purpose:
                consents.by_subject.setdefault(subject, []).append((start, end))
    consents.sha256 = digest.hexdigest()
    return consents
