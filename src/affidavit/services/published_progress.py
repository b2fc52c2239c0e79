"""Published progress: a signed JSON summary for stakeholders (``affidavit progress publish``),
checked offline with the ledger's public key alone (``affidavit progress verify``;
docs/calendar.md, "Published progress").

The summary is an in-toto Statement (predicate type :data:`PROGRESS_PREDICATE_TYPE`) in a DSSE
envelope signed with the ledger key, like every other affidavit attestation
(:func:`affidavit.services.ledger.attest_and_record`, which also records
``attestation.created``). Its one subject is the ledger checkpoint it reflects (name
``ledger-checkpoint:ORIGIN:SIZE``, digest the tree's root hash), and its predicate holds:

- ``controls``: per control, per day of the window (90 days by default), the status of the
  day's last policy check the ledger vouches for (a ``policy.checked`` event whose
  ``results_sha256`` is the digest of the catalog's results: a check whose row was edited does
  not count, and ``checks.unvouched`` says how many were skipped): ``fail`` when any subject
  failed, else ``excepted`` when an exception covered one, else ``pass``, else what it was
  (``not-applicable``, ``not-evaluated``);
- ``findings``: the open (and acknowledged) findings by severity;
- ``drills``: the newest drill of each source, from ``drill.completed`` events;
- ``generated_at``, ``origin`` and the ``checkpoint`` (size and root).

Publishing writes ``progress-<size>.dsse.json`` (never overwritten) and ``latest.dsse.json``
to a folder, or the write-once ``progress-<size>.dsse.json`` object to
``s3://BUCKET[/PREFIX]`` through the S3 vault backend, and records ``progress.published``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import Envelope
from affidavit.durable import write_atomic
from affidavit.errors import FormatError, InputError, IntegrityError, VaultError
from affidavit.input_files import open_regular
from affidavit.ledger.attestation import Statement, Subject, verify_attestation
from affidavit.ledger.checkpoint import open_checkpoint
from affidavit.models.governance import CheckRun, FindingStatus, Severity
from affidavit.models.identity import Principal
from affidavit.models.inventory import Vault, VaultName, parse_vault_url
from affidavit.models.ledger import Event
from affidavit.models.permissions import Permission
from affidavit.services.backends import vault_backend
from affidavit.services.calendar import auth_details, require_unless_local
from affidavit.services.context import App
from affidavit.services.ledger import attest_and_record, current_checkpoint, parse_vkey
from affidavit.services.policy import list_controls
from affidavit.services.policy_vouch import event_time, read_events, signed_source

PROGRESS_PREDICATE_TYPE: Final = "https://affidavit.dev/attestations/progress/v1"
SUMMARY_VERSION: Final = 1
DEFAULT_DAYS: Final = 90
MAX_DAYS: Final = 400
MAX_FILE: Final = 16 * 1024 * 1024
LATEST: Final = "latest.dsse.json"
_ORDER: Final = ("fail", "excepted", "pass", "not-applicable", "not-evaluated")
_NO_SOURCE: Final = "(no source)"


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# -- the summary ------------------------------------------------------------------------------


def _day_status(results: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Per control, the worst status among its subjects (fail, excepted, pass, other)."""
    out: dict[str, str] = {}
    for result in results:
        control, status = str(result.get("control", "")), str(result.get("status", ""))
        if not control or status not in _ORDER:
            continue
        known = out.get(control)
        if known is None or _ORDER.index(status) < _ORDER.index(known):
            out[control] = status
    return out


def _controls(
    runs: Sequence[CheckRun], vouched: Mapping[str, str], start: date
) -> tuple[dict[str, Any], int, int, int | None]:
    """``controls``, how many runs counted and were skipped, and the newest policy
    version."""
    last_of_day: dict[date, CheckRun] = {}
    counted = skipped = 0
    version = None
    for run in runs:  # oldest first
        digest = sha256_hex(rfc8785.dumps(list(run.results)))
        if vouched.get(run.id) != digest:
            skipped += 1
            continue
        counted += 1
        version = run.policy_version
        day = run.at.astimezone(UTC).date()
        if day >= start:
            last_of_day[day] = run
    titles = {c.id: c.title for c in list_controls()}
    controls: dict[str, Any] = {}
    for day in sorted(last_of_day):
        for control, status in _day_status(last_of_day[day].results).items():
            entry = controls.setdefault(
                control, {"title": titles.get(control, ""), "days": {}, "totals": {}}
            )
            entry["days"][day.isoformat()] = status
            entry["totals"][status] = entry["totals"].get(status, 0) + 1
    return dict(sorted(controls.items())), counted, skipped, version


def _drills(started: Mapping[str, Event], drills: Sequence[Event]) -> dict[str, Any]:
    """The newest ``drill.completed`` of each source (by the backup's ``backup.started``)."""
    out: dict[str, Any] = {}
    for event in drills:  # seq order: a later one replaces an earlier one
        backup_id = event.subject.removeprefix("backup:")
        begun = started.get(backup_id)
        source = (signed_source(begun) if begun is not None else None) or _NO_SOURCE
        d = event.details
        out[source] = {
            "drill_id": d.get("drill_id"),
            "backup_id": backup_id,
            "at": event_time(event).isoformat(),
            "ok": d.get("ok"),
            "restore_seconds": d.get("restore_seconds"),
            "rto_seconds": d.get("rto_seconds"),
            "seq": event.seq,
        }
    return dict(sorted(out.items()))


def build_summary(
    app: App, *, now: datetime, days: int, origin: str, size: int, root: bytes
) -> dict[str, Any]:
    """The predicate of a progress statement (see the module docstring)."""
    start = (now - timedelta(days=days - 1)).astimezone(UTC).date()
    with app.read() as uow:
        runs = uow.governance.check_runs(since=datetime.combine(start, datetime.min.time(), UTC))
        vouched = {
            str(e.details.get("run_id")): str(e.details.get("results_sha256"))
            for e in read_events(uow.ledger, "policy.checked")
        }
        findings = uow.governance.findings(status=[FindingStatus.OPEN, FindingStatus.ACKNOWLEDGED])
        started = {
            e.subject.removeprefix("backup:"): e for e in read_events(uow.ledger, "backup.started")
        }
        drills = read_events(uow.ledger, "drill.completed")
    controls, counted, skipped, version = _controls(runs, vouched, start)
    by_severity = {s.value: 0 for s in Severity}
    for finding in findings:
        by_severity[finding.severity.value] += 1
    return {
        "summary_version": SUMMARY_VERSION,
        "origin": origin,
        "generated_at": now.isoformat(),
        "checkpoint": {"size": size, "root": root.hex()},
        "window": {
            "from": start.isoformat(),
            "to": now.astimezone(UTC).date().isoformat(),
            "days": days,
        },
        "policy_version": version,
        "checks": {"vouched": counted, "unvouched": skipped},
        "controls": controls,
        "findings": {"open": by_severity, "total": len(findings)},
        "drills": _drills(started, drills),
    }


def _subject(origin: str, size: int, root: bytes) -> Subject:
    return Subject(f"ledger-checkpoint:{origin}:{size}", root.hex())


# -- publishing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """What ``progress publish`` wrote and recorded."""

    destination: str
    files: tuple[str, ...]
    envelope_sha256: str
    checkpoint_size: int
    seq: int
    summary: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (``progress publish --json``)."""
        return {
            "destination": self.destination,
            "files": list(self.files),
            "envelope_sha256": self.envelope_sha256,
            "checkpoint_size": self.checkpoint_size,
            "seq": self.seq,
            "summary": dict(self.summary),
        }


class _Target:
    """Where the envelope goes: a folder or an S3 bucket (prefix)."""

    def __init__(self, destination: str) -> None:
        self.s3 = destination.startswith("s3://")
        if "://" in destination and not self.s3:
            raise InputError(
                f"cannot publish to {destination[:60]!r}",
                hint="give a folder path or s3://BUCKET/PREFIX",
            )
        self.written: list[Path] = []
        if self.s3:
            kind, normal = parse_vault_url(destination)
            self.name = normal
            self.backend = vault_backend(
                Vault(
                    name=VaultName("progress"),
                    kind=kind,
                    url=normal,
                    region=os.environ.get("AWS_DEFAULT_REGION") or None,
                    immutable_days=None,
                    created_at=datetime.now(UTC),
                )
            )
        else:
            self.folder = Path(destination).expanduser()
            if not self.folder.is_dir():
                raise InputError(
                    f"the folder {self.folder} does not exist",
                    hint="create it first; nothing changed",
                )
            self.name = str(self.folder)

    def write(self, size: int, data: bytes) -> tuple[str, ...]:
        name = f"progress-{size}.dsse.json"
        if self.s3:
            self.backend.put(name, [data], retain_until=None)
            return (f"{self.name}/{name}",)
        target = self.folder / name
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise InputError(
                f"{target} exists already", hint="publish again: the ledger has grown since"
            ) from None
        except OSError as exc:
            raise VaultError(f"cannot write {target}: {exc.strerror}") from exc
        self.written.append(target)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        latest = self.folder / LATEST
        try:
            write_atomic(latest, data, mode=0o644)
        except OSError as exc:
            raise VaultError(f"cannot write {latest}: {exc.strerror}") from exc
        return (str(target), str(latest))

    def undo(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


def publish_progress(
    app: App,
    principal: Principal | None,
    destination: str,
    *,
    days: int = DEFAULT_DAYS,
    now: datetime | None = None,
) -> Published:
    """Sign the progress summary and write it to ``destination`` (``progress.publish``);
    recorded ``attestation.created`` and ``progress.published`` in one transaction. A write
    or a recording that fails leaves no file behind in a folder."""
    require_unless_local(principal if principal is not None else app.principal,
                         Permission.PROGRESS_PUBLISH)  # fmt: skip
    if not 1 <= days <= MAX_DAYS:
        raise InputError(f"--days must lie between 1 and {MAX_DAYS}, not {days}")
    identity = app.ledger_identity()
    if identity is None:
        raise InputError("this home has no ledger key yet", hint="run `affidavit init`")
    target = _Target(destination)
    at = _now(now)
    checkpoint = open_checkpoint(current_checkpoint(app), identity.verifier, identity.origin)
    summary = build_summary(
        app, now=at, days=days, origin=identity.origin, size=checkpoint.size, root=checkpoint.root
    )
    statement = Statement(
        subjects=(_subject(identity.origin, checkpoint.size, checkpoint.root),),
        predicate_type=PROGRESS_PREDICATE_TYPE,
        predicate=summary,
    )
    try:
        with app.change() as change:
            if principal is not None:
                change.actor = principal.name
            envelope = attest_and_record(change, statement)
            data = envelope.to_json().encode("utf-8")
            files = target.write(checkpoint.size, data)
            digest = sha256_hex(data)
            event = change.record(
                "progress.published",
                f"progress:{checkpoint.size}",
                {
                    "destination": target.name,
                    "files": [f.rsplit("/", 1)[-1] for f in files],
                    "envelope_sha256": digest,
                    "checkpoint_size": checkpoint.size,
                    "window_days": days,
                    **auth_details(principal),
                },
            )
    except BaseException:
        target.undo()
        raise
    return Published(
        destination=target.name,
        files=files,
        envelope_sha256=digest,
        checkpoint_size=checkpoint.size,
        seq=event.seq,
        summary=summary,
    )


# -- verifying --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressReport:
    """A summary whose signature verified with the key given."""

    origin: str
    keyid: str
    checkpoint_size: int
    summary: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (``progress verify --json``)."""
        return {
            "ok": True,
            "origin": self.origin,
            "keyid": self.keyid,
            "checkpoint_size": self.checkpoint_size,
            "summary": dict(self.summary),
        }


def _read(path: Path) -> bytes:
    hint = "give the .dsse.json file `affidavit progress publish` wrote"
    try:
        with open_regular(path, what="the progress file", hint=hint) as fh:
            data = fh.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", hint=hint) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint=hint) from exc
    if len(data) > MAX_FILE:
        raise FormatError(f"{path} is larger than {MAX_FILE // (1024 * 1024)} MiB", hint=hint)
    return data


def verify_progress(path: Path, public_key: str) -> ProgressReport:
    """Check a published summary offline (no home, no catalog): its DSSE signature with the
    ledger's verifier key ``public_key``, its predicate type, and that its subject is the
    checkpoint its summary names. :class:`IntegrityError` (exit 1) when it does not verify,
    :class:`FormatError` (exit 2) when it is not a progress envelope at all."""
    verifier = parse_vkey(public_key)
    envelope = Envelope.from_json(_read(path.expanduser()))
    keyid = f"{verifier.key_id:08x}"
    try:
        statement = verify_attestation(
            envelope, {keyid: verifier.key}, predicate_type=PROGRESS_PREDICATE_TYPE
        )
    except IntegrityError as exc:
        raise IntegrityError(
            f"{path}: {exc.message}: the summary was changed or signed by another key",
            hint="get the file again from where it was published, and the key from "
            "`affidavit ledger key` of its home",
        ) from exc
    summary = statement.predicate
    checkpoint = summary.get("checkpoint")
    origin = summary.get("origin")
    if not isinstance(checkpoint, Mapping) or not isinstance(origin, str):
        raise IntegrityError(f"{path}: the signed summary names no checkpoint")
    size, root = checkpoint.get("size"), checkpoint.get("root")
    try:
        expected = _subject(origin, int(str(size)), bytes.fromhex(str(root)))
    except (ValueError, FormatError) as exc:
        raise IntegrityError(f"{path}: the signed summary's checkpoint is malformed") from exc
    if statement.subjects != (expected,) or origin != verifier.name:
        raise IntegrityError(
            f"{path}: the signed subject is not the checkpoint of {verifier.name!r} that the "
            "summary names"
        )
    return ProgressReport(
        origin=origin, keyid=keyid, checkpoint_size=int(str(size)), summary=summary
    )


def summary_text(summary: Mapping[str, Any]) -> str:
    """One line about a summary, for people."""
    controls = summary.get("controls", {})
    failing = sorted(
        c for c, e in controls.items() if e.get("days") and list(e["days"].values())[-1] == "fail"
    )
    findings = summary.get("findings", {}).get("total", 0)
    return (
        f"{len(controls)} controls over {summary.get('window', {}).get('days')} days "
        f"({len(failing)} failing on their last day), {findings} open finding(s), "
        f"{len(summary.get('drills', {}))} source(s) drilled; ledger checkpoint "
        f"{summary.get('checkpoint', {}).get('size')}"
    )
