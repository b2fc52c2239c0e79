"""The access log: who asked for what, from where, with what outcome (issue 15).

Every API request (allowed, denied, failed, in error; failed logins included) and every read
of a backup, attestation, evidence package or ledger proof is one :class:`AccessEntry`. The
entries form a Merkle log of their own beside the ledger (``access_log_entries``,
``access_log_checkpoints``), kept by the ledger's :class:`LedgerLog` over
:class:`AccessLogRepository` and signed by the ledger's key under the origin
``<ledger origin>/access-log`` (``docs/formats/access-log.md``). An auditor can be given one
log without the other. Recording an access never appends to the ledger; expiring payloads
and exporting the log are changes of state and are ledgered (``access_log.expired``,
``access_log.exported``).

How the server records requests (the HTTP middleware; one :func:`record` per request, whose
answer waits for it; the records of requests that end while another is being written share
one transaction and one signature)::

    started, clock = datetime.now(UTC), time.perf_counter()
    reads: list[AccessEntry] = []            # route handlers add their reads here:
    request.state.access_reads = reads       #   access_log.record_read(..., batch=reads)
    response = await call_next(request)      # (also for 401/403/429/5xx responses)
    entry = access_log.request_entry(
        started=started,
        identity=principal.name if principal else attempted_login_name or "anonymous",
        auth_method=principal.method.value if principal else "none",
        client_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        method=request.method,
        route=request.scope["route"].path,   # the template, never the raw path
        subject=access_log.subject_from_params(request.path_params),
        outcome=access_log.outcome_for_status(response.status_code, login=is_login_route),
        status=response.status_code,
        latency_us=int((time.perf_counter() - clock) * 1e6),
    )
    await run_in_threadpool(access_log.record, app, [entry, *reads])

A request that raised is recorded with status 500 (``outcome_for_status`` gives ``error``).
When :func:`record` raises (the catalog is unreachable, or :class:`SigningRefused` because the
access log was altered behind the signer's back) the request must fail (503): serving
requests that cannot be logged is what an attacker would want (NIST AU-5).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ua_parser import parse as parse_user_agent

from affidavit.catalog.access_log import AccessLogRepository, AccessRow
from affidavit.config import Settings
from affidavit.errors import (
    AlreadyExists,
    FormatError,
    InputError,
    IntegrityError,
    SigningRefused,
)
from affidavit.ledger import merkle
from affidavit.ledger.access_log import (
    AccessExportHeader,
    AccessExportReader,
    AccessFinding,
    AccessFindingCode,
    AccessVerifyReport,
    access_origin,
    verify_access_log,
    write_access_export,
)
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.ledger.log import LedgerLog, LogState, utc_text
from affidavit.models.access import (
    MAX_TEXT,
    MAX_USER_AGENT,
    AccessEntry,
    Device,
    DeviceType,
    Outcome,
)
from affidavit.models.identity import Principal
from affidavit.models.ledger import ClientInfo, Event
from affidavit.services.context import App, LedgerIdentity, load_ledger_identity
from affidavit.services.signer_memory import Signed, SignerMemory

__all__ = [
    "EXPIRED_ACTION",
    "EXPORTED_ACTION",
    "SIGNED_FILENAME",
    "AccessExportResult",
    "AccessVerifyReport",
    "ExpireResult",
    "RecordResult",
    "ShownAccess",
    "device_of",
    "expire",
    "export",
    "outcome_for_status",
    "record",
    "record_read",
    "request_entry",
    "show",
    "subject_from_params",
    "verify",
    "verify_file",
]

SIGNED_FILENAME = "access-log.signed"
EXPIRED_ACTION = "access_log.expired"
EXPORTED_ACTION = "access_log.exported"
_MAX_NOTE = 64 * 1024
_CONSISTENCY_BATCH = 256  # checkpoint pairs whose proofs are read in one query


def signed_path(home: Path) -> Path:
    """Where the signer keeps the newest access-log checkpoint it signed."""
    return home / "keys" / SIGNED_FILENAME


# -- entries ------------------------------------------------------------------------------------

_MOBILE_OS = frozenset(
    {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "Symbian OS",
     "webOS", "Tizen", "Sailfish", "HarmonyOS"}
)  # fmt: skip
_PROGRAM = re.compile(r"([A-Za-z][\w.+-]{0,63})/\S")


def _clip(text: str | None, limit: int) -> str | None:
    """``text`` as valid Unicode (lone surrogates replaced) cut to ``limit`` characters."""
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def _named(family: str | None, major: str | None) -> str | None:
    if not family or family == "Other":
        return None
    return f"{family} {major}" if major else family


@functools.lru_cache(maxsize=4096)
def device_of(user_agent: str | None) -> Device:
    """The device a user agent names, by the ua-parser library (the maintained port of
    Browserscope's rules): ``bot`` for crawlers, ``tablet``, ``mobile`` by the operating
    system, ``desktop`` for any other known one, ``client`` for a program (``curl/8``,
    ``affidavit-cli/0.1``), else ``unknown``. Cached: user agents repeat."""
    if not user_agent:
        return Device()
    result = parse_user_agent(user_agent)
    agent, system, device = result.user_agent, result.os, result.device
    browser = _named(agent.family, agent.major) if agent else None
    os_name = _named(system.family, system.major) if system else None
    kind = DeviceType.UNKNOWN
    family = device.family if device else ""
    brand = (device.brand or "") if device else ""
    if family == "Spider":
        kind = DeviceType.BOT
    elif family == "iPad" or "tablet" in family.lower() or "tablet" in brand.lower():
        kind = DeviceType.TABLET
    elif system is not None and system.family in _MOBILE_OS:
        kind = DeviceType.MOBILE
    elif os_name is not None:
        kind = DeviceType.DESKTOP
    elif browser is not None:
        kind = DeviceType.CLIENT
    elif (program := _PROGRAM.match(user_agent)) and program.group(1) != "Mozilla":
        kind, browser = DeviceType.CLIENT, program.group(1)
    return Device(type=kind, os=_clip(os_name, MAX_TEXT), browser=_clip(browser, MAX_TEXT))


def outcome_for_status(status: int, *, login: bool = False) -> Outcome:
    """The outcome a response status means: 5xx ``error``; 401, 403 and 429 ``denied`` (on a
    login route: ``failed``, a failed authentication); anything else ``allowed`` (the request
    was permitted, whatever became of it)."""
    if status >= 500:
        return Outcome.ERROR
    if status in (401, 403, 429):
        return Outcome.FAILED if login else Outcome.DENIED
    return Outcome.ALLOWED


def subject_from_params(params: Mapping[str, Any]) -> str | None:
    """``kind:value`` from a route's first path parameter (``backup_id=bk-1`` gives
    ``backup:bk-1``), or None for a route without one."""
    for name, value in params.items():
        return f"{name.removesuffix('_id').replace('_', '-')}:{value}"
    return None


def request_entry(
    *,
    started: datetime,
    identity: str | None,
    auth_method: str | None,
    method: str,
    route: str,
    outcome: Outcome | str,
    client_ip: str | None = None,
    user_agent: str | None = None,
    subject: str | None = None,
    status: int | None = None,
    latency_us: int = 0,
) -> AccessEntry:
    """The access entry of one request, from what the server knows of it (not yet
    numbered: :func:`record` numbers it). Text that came from the client (the user agent, a
    login name that was tried) is cut to its limit, never refused: a hostile request is
    logged, not lost."""
    agent = _clip(user_agent, MAX_USER_AGENT)
    return AccessEntry(
        time=utc_text(started.astimezone(UTC)),
        identity=_clip(identity, MAX_TEXT) or "anonymous",
        auth_method=_clip(auth_method, MAX_TEXT) or "none",
        method=method.upper() if re.fullmatch(r"[A-Za-z][A-Za-z-]{0,15}", method) else "OTHER",
        route=_clip(route, MAX_TEXT) or "/",
        outcome=Outcome(outcome),
        client_ip=_clip(client_ip, MAX_TEXT),
        user_agent=agent,
        device=device_of(agent),
        subject=_clip(subject, MAX_TEXT),
        status=status,
        latency_us=max(0, int(latency_us)),
    )


# -- recording ----------------------------------------------------------------------------------


@dataclass
class _Signer:
    """The access log's signer of one App: the ledger key under the access-log origin, its
    memory (``HOME/keys/access-log.signed``) and the log as this App last committed it."""

    identity: LedgerIdentity
    memory: SignerMemory
    lock: threading.Lock  # held by the one call writing (see record)
    resume: tuple[LogState, bytes] | None = None
    queue: list[_Call] = field(default_factory=list)  # calls waiting to be written
    queue_lock: threading.Lock = field(default_factory=threading.Lock)


_SIGNERS: weakref.WeakKeyDictionary[App, _Signer] = weakref.WeakKeyDictionary()
_SIGNERS_LOCK = threading.Lock()


def _ledger_identity(app: App) -> LedgerIdentity:
    identity = app.ledger_identity()
    if identity is None:
        raise InputError(
            f"{app.settings.home} has no ledger signing key", hint="run `affidavit init` first"
        )
    return identity


def _signer(app: App) -> _Signer:
    with _SIGNERS_LOCK:
        signer = _SIGNERS.get(app)
        if signer is None:
            ledger = _ledger_identity(app)
            identity = LedgerIdentity(origin=access_origin(ledger.origin), signer=ledger.signer)
            memory = SignerMemory(app.settings.home, identity)
            memory.path = signed_path(app.settings.home)
            signer = _Signer(identity=identity, memory=memory, lock=threading.Lock())
            _SIGNERS[app] = signer
            weakref.finalize(app, memory.close)
        return signer


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordResult:
    """Entries recorded in one batch (numbered), and the tree their checkpoint signs."""

    entries: tuple[AccessEntry, ...]
    size: int
    root: bytes


def _refuse(message: str) -> SigningRefused:
    return SigningRefused(
        f"refusing to sign the access log: {message}",
        hint="the access log was altered outside affidavit: run `affidavit access-log verify`",
    )


def _open(identity: LedgerIdentity, note: str, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, identity.verifier, identity.origin)
    except (FormatError, IntegrityError) as exc:
        raise _refuse(f"{what} is not an access-log checkpoint of this key ({exc})") from exc


def _extends(log: LedgerLog, old: Checkpoint, size: int, root: bytes, what: str) -> None:
    if old.size == 0:
        return
    try:
        proof = log.consistency_proof(old.size, size) if old.size < size else []
        merkle.verify_consistency(old.size, size, old.root, root, proof)
    except IntegrityError as exc:
        raise _refuse(
            f"{what} does not extend the tree of {old.size} entries this key last signed "
            f"({exc.message})"
        ) from exc


def _settle(
    repo: AccessLogRepository,
    log: LedgerLog,
    signer: _Signer,
    *,
    size: int,
    resumed: bool,
) -> Signed | None:
    """The signer's rule before it appends (as the ledger's, :mod:`.signer_memory`): the
    catalog's access log must be exactly the tree the key last signed (rolled forward over
    the key's own newer checkpoints), with that tree's checkpoint as its newest. Returns the
    tree last signed (None before the first); raises :class:`SigningRefused`."""
    memory = signer.memory
    last = memory.load()
    if resumed and last is not None and signer.resume is not None:
        state, root = signer.resume
        if state.size == last.size == size and root == last.root:
            return last
    newest = repo.latest_checkpoint()
    if last is None:
        if newest is None:
            if size:
                raise _refuse(f"it holds {size} entries that no checkpoint signs")
            return None
        # a memory lost with the catalog intact (or never written): the key's own newest
        checkpoint = _open(signer.identity, newest[1], f"the checkpoint of {newest[0]}")
        last = Signed(newest[1], checkpoint)
        memory.save(last)
    elif newest is not None and newest[0] > last.size:  # a commit whose memory update was lost
        checkpoint = _open(signer.identity, newest[1], f"the checkpoint of {newest[0]}")
        if checkpoint.size != newest[0]:
            raise _refuse(f"the checkpoint row of {newest[0]} signs {checkpoint.size} entries")
        _extends(log, last.checkpoint, checkpoint.size, checkpoint.root, "the catalog's log")
        last = Signed(newest[1], checkpoint)
        memory.save(last)
    if size < last.size:
        raise _refuse(
            f"it has {size} entries, fewer than the {last.size} this key last signed: "
            "entries were deleted, or the catalog was restored from an older copy"
        )
    if size > last.size:
        raise _refuse(
            f"entries {last.size}..{size - 1} were never signed by this key (it last signed "
            f"{last.size}): written into the catalog outside affidavit"
        )
    if newest is None or newest[0] != last.size:
        raise _refuse(f"its checkpoint of {last.size} entries, which this key signed, is gone")
    if newest[1] != last.note:
        stored = _open(signer.identity, newest[1], f"the checkpoint of {newest[0]}")
        if stored.root != last.root:
            raise _refuse(f"its checkpoint of {last.size} entries has another root")
    return last


def record(app: App, entries: Sequence[AccessEntry]) -> RecordResult:
    """Append ``entries`` to the access log in one transaction and sign a checkpoint of the
    new tree in it (never touching the ledger); return them numbered, with the size and root
    of the tree that checkpoint signs. Returns only once that transaction has committed.

    Calls made while another call of this App is writing wait for it, then go into the log
    together, in the order they came: one transaction and one checkpoint for all of them
    (group commit). Each call's entries are consecutive; each call returns (or raises) with
    that transaction, so no caller returns before its entries are signed and committed, and
    when the transaction fails every caller in it raises, its entries not written.

    The signer first checks that the catalog's access log is the tree it last signed
    (``HOME/keys/access-log.signed``) and that the new tree extends it, else it raises
    :class:`SigningRefused` (exit 3) and nothing is written. A batch after one this App
    committed resumes from the frontier it kept (no subtree hash is read)."""
    signer = _signer(app)
    if not entries:
        return RecordResult(entries=(), size=0, root=merkle.EMPTY_ROOT)
    mine = _Call(entries=tuple(entries))
    with signer.queue_lock:
        signer.queue.append(mine)
    with signer.lock:
        if mine.outcome is None:  # nobody wrote it meanwhile: write every call waiting
            with signer.queue_lock:
                calls, signer.queue = signer.queue, []
            _write(app, signer, calls)
    if isinstance(mine.outcome, BaseException):
        raise mine.outcome
    assert mine.outcome is not None
    return mine.outcome


@dataclass(slots=True)
class _Call:
    """One waiting :func:`record` call: its entries, then what came of them."""

    entries: tuple[AccessEntry, ...]
    outcome: RecordResult | BaseException | None = None


def _write(app: App, signer: _Signer, calls: Sequence[_Call]) -> None:
    """Append the entries of ``calls`` in one transaction with its checkpoint (the caller
    holds ``signer.lock``), and give each call its outcome: its entries numbered, or the
    error that stopped the transaction."""
    numbered: list[list[AccessEntry]] = [[] for _ in calls]  # each call's, as written
    try:
        with app.catalog.unit_of_work() as uow:
            repo = uow.access_log
            last_seq, newest = repo.head()
            size = 0 if last_seq is None else last_seq + 1
            resume = signer.resume
            resumed = (
                resume is not None
                and newest is not None
                and resume[0].size == size == newest[0]
                and resume[1] == newest[1]
            )
            log = (
                LedgerLog(repo, state=resume[0])
                if resumed and resume is not None
                else LedgerLog(repo, size=size)
            )
            last = _settle(repo, log, signer, size=size, resumed=resumed)
            for call, recorded in zip(calls, numbered, strict=True):
                for entry in call.entries:
                    numbered_entry = replace(entry, seq=log.size())
                    log.append_entry(
                        numbered_entry.canonical(),
                        time=numbered_entry.time,
                        actor=numbered_entry.identity,
                        action=numbered_entry.action,
                        subject=numbered_entry.subject or "",
                        outcome=numbered_entry.outcome.value,
                    )
                    recorded.append(numbered_entry)
            state = log.state()
            root = state.root
            if last is not None and not resumed:
                _extends(log, last.checkpoint, state.size, root, "the new tree")
            signed = signer.memory.sign(state.size, root)
            repo.add_checkpoint(
                size=state.size, root=root, note=signed.note, created_at=utc_text(datetime.now(UTC))
            )
        signer.resume = (state, root)
        signer.memory.save(signed)
    except BaseException as exc:
        for call in calls:
            call.outcome = exc
        raise
    for call, recorded in zip(calls, numbered, strict=True):
        call.outcome = RecordResult(entries=tuple(recorded), size=state.size, root=root)


def record_read(
    app: App,
    principal: Principal | None,
    subject: str,
    route: str,
    *,
    client: ClientInfo | None = None,
    method: str = "READ",
    batch: list[AccessEntry] | None = None,
) -> AccessEntry:
    """Log one read of ``subject`` (``backup:ID``, ``attestation:ID``, ``evidence:ID``,
    ``ledger-proof:SEQ``) through ``route`` by ``principal`` (None: the local OS user,
    ``app.actor``). With ``batch`` (the request's list, recorded by the middleware with the
    request itself) the entry is only added to it; otherwise it is recorded now, in a
    transaction of its own. Returns the entry (numbered when recorded now)."""
    where = client or app.client
    entry = request_entry(
        started=datetime.now(UTC),
        identity=principal.name if principal is not None else app.actor,
        auth_method=principal.method.value if principal is not None else "local-os-user",
        method=method,
        route=route,
        outcome=Outcome.ALLOWED,
        client_ip=where.address,
        user_agent=where.agent,
        subject=subject,
    )
    if batch is not None:
        batch.append(entry)
        return entry
    return record(app, [entry]).entries[0]


# -- listing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShownAccess:
    """A row for display: the entry, or what is left of an expired one (its seq, time,
    action and outcome columns), or the raw bytes of a payload that is not an entry."""

    seq: int
    time: str
    action: str
    outcome: str
    entry: AccessEntry | None
    expired_at: str | None = None
    invalid: bool = False

    def to_json(self) -> dict[str, Any]:
        """The entry's JSON; for an expired one ``{"seq", "time", "action", "outcome",
        "expired_at"}``; ``"invalid": true`` for a payload that is not an entry."""
        if self.entry is not None:
            return self.entry.to_json()
        data: dict[str, Any] = {
            "seq": self.seq,
            "time": self.time,
            "action": self.action,
            "outcome": self.outcome,
            "expired_at": self.expired_at,
        }
        if self.invalid:
            data["invalid"] = True
        return data


def parse_time(text: str, flag: str) -> str:
    """An RFC 3339 time with offset (or a date, meaning its midnight UTC) as the log's UTC
    text; :class:`InputError` naming ``flag`` otherwise."""
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += "T00:00:00Z"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(
            f"{flag} {text!r} is not an RFC 3339 time", hint="e.g. 2026-01-31T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise InputError(f"{flag} {text!r} has no UTC offset", hint="add Z or +HH:MM")
    return utc_text(moment.astimezone(UTC))


def show(
    app: App,
    *,
    since: str | None = None,
    until: str | None = None,
    identity: str | None = None,
    limit: int | None = None,
) -> list[ShownAccess]:
    """Entries with ``since <= time < until`` (RFC 3339) of ``identity``; with ``limit`` the
    newest that match; in sequence order. Expired entries show what is left of them."""
    low = parse_time(since, "--since") if since is not None else None
    high = parse_time(until, "--until") if until is not None else None
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit} is not a positive number", hint="e.g. --limit 50")
    with app.read() as uow:
        rows = uow.access_log.find(since=low, until=high, identity=identity, limit=limit)
    return [_shown(row) for row in rows]


def _shown(row: AccessRow) -> ShownAccess:
    entry: AccessEntry | None = None
    invalid = False
    if row.entry is not None:
        try:
            entry = AccessEntry.from_canonical(row.entry)
        except FormatError:
            invalid = True
    return ShownAccess(
        seq=row.seq,
        time=row.time,
        action=row.action,
        outcome=row.outcome,
        entry=entry,
        expired_at=row.expired_at,
        invalid=invalid,
    )


# -- verification -------------------------------------------------------------------------------


def _verifier_of(app: App, vkey: str | None) -> tuple[Any, str]:
    from affidavit.services.ledger import parse_vkey  # the ledger's vkey rules, exit 2 if bad

    if vkey is not None:
        return parse_vkey(vkey), "--public-key"
    return _ledger_identity(app).verifier, "the home's key file"


def _read_memory(path: Path) -> str | None:
    try:
        data = path.read_bytes()[: _MAX_NOTE + 1]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return data.decode("utf-8", "replace")


class _ExpiryWatch:
    """Passes rows on to the verifier and keeps the seqs of the expired ones."""

    def __init__(self, rows: Iterable[AccessRow]) -> None:
        self._rows = rows
        self.expired: list[int] = []

    def __iter__(self) -> Iterator[AccessRow]:
        for row in self._rows:
            if row.entry is None and row.expired_at is not None:
                self.expired.append(row.seq)
            yield row


def _expiry_ranges(app: App) -> list[tuple[int, int]]:
    """The (first, last) seq ranges the ledger's ``access_log.expired`` events record."""
    ranges: list[tuple[int, int]] = []
    with app.read() as uow:
        for stored in uow.ledger.find(action=EXPIRED_ACTION):
            try:
                details = Event.from_canonical(stored.entry).details
            except FormatError:
                continue  # the ledger's own verifier reports it
            first, last = details.get("from_seq"), details.get("to_seq")
            if isinstance(first, int) and isinstance(last, int):
                ranges.append((first, last))
    return sorted(ranges)


def _uncovered(expired: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    at = 0
    for seq in expired:  # ascending, as the rows
        while at < len(ranges) and ranges[at][1] < seq:
            at += 1
        if not any(first <= seq <= last for first, last in ranges[at:]):
            out.append(seq)
    return out


def _inconsistent(
    repo: AccessLogRepository, notes: list[tuple[int, str]], origin: str, size: int
) -> list[AccessFinding]:
    """Consistency proofs between consecutive checkpoints, built from the stored subtree
    hashes (what a consistency proof handed out would be), a batch per query. Signatures are
    not checked again here: the verifier has judged every note already."""
    good: list[Checkpoint] = []
    for _size, note in notes:
        with contextlib.suppress(FormatError):
            checkpoint = Checkpoint.from_text(note[: note.rfind("\n\n") + 1])
            if checkpoint.origin == origin and 0 < checkpoint.size <= size:
                good.append(checkpoint)
    pairs = list(itertools.pairwise(good))
    log = LedgerLog(repo, size=size)
    found: list[AccessFinding] = []
    for start in range(0, len(pairs), _CONSISTENCY_BATCH):
        chunk = pairs[start : start + _CONSISTENCY_BATCH]
        plans = [merkle.consistency_proof_ranges(a.size, b.size) for a, b in chunk]
        try:
            hashes: list[bytes] | None = log.range_hashes([r for plan in plans for r in plan])
        except IntegrityError:
            hashes = None  # a hash is missing: judge pair by pair below
        at = 0
        for (old, new), plan in zip(chunk, plans, strict=True):
            try:
                proof = log.range_hashes(plan) if hashes is None else hashes[at : at + len(plan)]
                merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
            except IntegrityError as exc:
                found.append(
                    AccessFinding(
                        code=AccessFindingCode.CHECKPOINT_INCONSISTENT,
                        seq=old.size,
                        message=f"no consistency proof from the checkpoint of {old.size} to "
                        f"the one of {new.size} from the stored subtree hashes ({exc.message})",
                    )
                )
            at += len(plan)
    return found


def _row_size_findings(notes: list[tuple[int, str]]) -> list[AccessFinding]:
    wrong = []
    for size, note in notes:
        try:
            signed = Checkpoint.from_text(note[: note.rfind("\n\n") + 1]).size
        except FormatError:
            continue  # the verifier's checkpoint-malformed
        if signed != size:
            wrong.append(f"row {size} holds a checkpoint of {signed}")
    if not wrong:
        return []
    return [
        AccessFinding(
            code=AccessFindingCode.COLUMN_MISMATCH,
            seq=None,
            message="checkpoint rows hold checkpoints of other sizes: " + "; ".join(wrong[:5]),
        )
    ]


def verify(app: App, *, vkey: str | None = None) -> AccessVerifyReport:
    """Verify the catalog's access log with the home's key (or ``vkey``); never raises for a
    discrepancy. Recomputes every leaf from its payload (expired entries count by their
    stored leaf hash), every stored subtree hash, the root at every checkpoint and each
    checkpoint's signature and origin; checks consistency proofs between consecutive
    checkpoints, the query copies, the signer's memory (``HOME/keys/access-log.signed``) as
    one more checkpoint, and that every expired payload was expired by an
    ``access_log.expired`` event of the ledger. Reports every finding."""
    verifier, source = _verifier_of(app, vkey)
    origin = access_origin(verifier.name)
    remembered = _read_memory(signed_path(app.settings.home)) if vkey is None else None
    with app.read() as uow:
        repo = uow.access_log
        notes = repo.checkpoints()
        watch = _ExpiryWatch(repo.rows())
        report = verify_access_log(
            watch,
            [note for _size, note in notes],
            verifier,
            origin=origin,
            remembered=remembered,
            rows=True,
        )
        extra = _inconsistent(repo, notes, origin, report.size)
    extra += _row_size_findings(notes)
    if watch.expired:
        uncovered = _uncovered(watch.expired, _expiry_ranges(app))
        if uncovered:
            more = f" and {len(uncovered) - 1} more" if len(uncovered) > 1 else ""
            extra.append(
                AccessFinding(
                    code=AccessFindingCode.PAYLOAD_MISSING,
                    seq=uncovered[0],
                    message=f"the payload of seq {uncovered[0]}{more} was dropped as expired "
                    f"but no {EXPIRED_ACTION} event of the ledger covers it",
                )
            )
    return replace(
        report, findings=(*report.findings, *extra), vkey=verifier.vkey(), key_source=source
    )


def verify_file(
    path: Path, *, vkey: str | None, settings: Settings | None = None
) -> AccessVerifyReport:
    """Verify an export file with a verifier key alone (the auditor's path; no catalog).
    ``vkey`` defaults to the key of ``settings.home`` when it has one; the key in the file is
    never trusted. A malformed or truncated file raises :class:`FormatError` (exit 2)."""
    from affidavit.services.ledger import parse_vkey

    if vkey is not None:
        verifier, source = parse_vkey(vkey), "--public-key"
    else:
        identity = load_ledger_identity(settings.home) if settings is not None else None
        if identity is None:
            raise InputError(
                "verifying an export file needs the verifier key",
                hint="pass --public-key with the key the log's owner gave you "
                "(the key inside the file is not trusted)",
            )
        verifier, source = identity.verifier, "the home's key file"
    with AccessExportReader(path) as reader:
        report = verify_access_log(reader.records(), reader.checkpoints, verifier)
    return replace(report, vkey=verifier.vkey(), key_source=source)


# -- retention ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireResult:
    """What an expiry dropped: the payloads of entries ``first..last`` (None: nothing was
    older than ``older_than``), and the ledger event that records it."""

    older_than: str
    count: int
    first: int | None = None
    last: int | None = None
    ledger_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"older_than", "count", "first", "last", "ledger_seq"}``."""
        return {
            "older_than": self.older_than,
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "ledger_seq": self.ledger_seq,
        }


def expire(
    app: App, *, older_than: timedelta | None = None, now: datetime | None = None
) -> ExpireResult:
    """Drop the payloads of the entries older than ``older_than`` (default: the setting
    ``access_log_retention_days``); their leaf and subtree hashes stay, so the log still
    verifies. Only a prefix expires (from the first entry that still has its payload up to
    the last before the first entry at or after the cutoff, by each payload's own time), and
    it is recorded as ``access_log.expired`` in the ledger in the same transaction. Refuses
    (exit 1, nothing changed) when the access log does not verify: expiring would destroy
    the evidence of what was altered."""
    if older_than is None:
        older_than = timedelta(days=app.settings.access_log_retention_days)
    if older_than <= timedelta(0):
        raise InputError("the retention period must be positive", hint="e.g. --older-than-days 400")
    moment = now or datetime.now(UTC)
    cutoff = utc_text(moment - older_than)
    report = verify(app)
    if not report.ok:
        first = report.findings[0]
        raise IntegrityError(
            f"refusing to expire access-log entries: the access log does not verify "
            f"({len(report.findings)} finding(s); first: {first.code.value}: {first.message})",
            hint="run `affidavit access-log verify`; nothing was expired",
        )
    origin = access_origin(_ledger_identity(app).origin)
    with app.change() as change:
        repo = change.uow.access_log
        first_seq: int | None = None
        last_seq: int | None = None
        for stored in repo.unexpired():
            assert stored.entry is not None
            if AccessEntry.from_canonical(stored.entry).time >= cutoff:
                break
            first_seq = stored.seq if first_seq is None else first_seq
            last_seq = stored.seq
        if first_seq is None or last_seq is None:
            return ExpireResult(older_than=cutoff, count=0)
        count = repo.expire(first_seq, last_seq, when=utc_text(moment))
        event = change.record(
            EXPIRED_ACTION,
            f"access-log:{origin}",
            {
                "from_seq": first_seq,
                "to_seq": last_seq,
                "count": count,
                "older_than": cutoff,
                "retention_days": older_than.days,
            },
        )
    return ExpireResult(
        older_than=cutoff, count=count, first=first_seq, last=last_seq, ledger_seq=event.seq
    )


# -- export -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessExportResult:
    """An export file written and recorded."""

    path: Path
    entries: int
    expired: int
    checkpoints: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """``{"path", "entries", "expired", "checkpoints", "sha256"}``."""
        return {
            "path": str(self.path),
            "entries": self.entries,
            "expired": self.expired,
            "checkpoints": self.checkpoints,
            "sha256": self.sha256,
        }


def export(app: App, out: Path) -> AccessExportResult:
    """Write the access log (entries, expired ones by their leaf hash, checkpoints, and the
    verifier key in the header) to ``out`` for an auditor, who checks it with
    ``affidavit access-log verify --file F --public-key K``. Recorded as
    ``access_log.exported`` in the ledger with the file's SHA-256; the file exists exactly
    when that event does."""
    ledger = _ledger_identity(app)
    if out.exists():
        raise AlreadyExists(f"{out} already exists", hint="choose another --out path")
    origin = access_origin(ledger.origin)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with app.read() as uow:
            repo = uow.access_log
            notes = [note for _size, note in repo.checkpoints()]
            size, expired = repo.counts()
            header = AccessExportHeader(
                origin=origin,
                vkey=ledger.vkey,
                size=size,
                checkpoints=len(notes),
                expired=expired,
                exported_at=utc_text(datetime.now(UTC)),
            )
            try:
                with tmp.open("xb") as fh:
                    summary = write_access_export(fh, header, notes, repo.rows())
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise InputError(f"cannot write {out}: {exc.strerror}") from exc
        try:
            with app.change() as change:
                change.record(
                    EXPORTED_ACTION,
                    f"access-log:{origin}",
                    {
                        "file": str(out),
                        "sha256": summary.sha256,
                        "entries": summary.entries,
                        "expired": summary.expired,
                        "checkpoints": summary.checkpoints,
                    },
                )
                tmp.replace(out)
        except BaseException:
            with contextlib.suppress(OSError):
                out.unlink()
            raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return AccessExportResult(
        path=out,
        entries=summary.entries,
        expired=summary.expired,
        checkpoints=summary.checkpoints,
        sha256=summary.sha256,
    )
