"""Audit engagements and evidence requests (the "provided by client" list), as their ledger
events tell them.

An **engagement** (``audit.opened``, ``audit.closed``) gives one auditor account a window of
time to look at (``--from``/``--to``), a framework and an expiry: through the server that
auditor sees the engagement's window only, and nothing once it expired or was closed. It is
bound to the auditor's **account id** (its name is kept for reading; an e-mail address is
never written to the ledger): an account renamed or recreated under the same name is not the
engagement's auditor.

An **evidence request** (``audit.request_opened``, ``..._answered``, ``..._accepted``,
``..._returned``, ``..._closed``, ``..._message``) is raised by the engagement's auditor and
answered by the people who own the evidence, with artifacts affidavit already holds
(attestations, verification and drill records, evidence packages) or uploaded files. Its
states::

    open -> in_progress -> submitted -> accepted -> closed
       \\_______________/      |   \\-> returned -> (answered again) / closed
                               answered (submit)

Reminders (``audit.reminder_sent``) are recorded once per request and kind (before the due
date, overdue), so a second run sends nothing twice.

There is no table: :func:`fold` rebuilds engagements and requests from the events and applies
the rules again, so a step the rules forbid (an answer by the auditor, an acceptance by
someone else, a step after the close, a transition the state machine does not have) counts
for nothing even when it is in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from affidavit.errors import InputError
from affidavit.models.ledger import Event
from affidavit.models.period import Period

OPENED: Final = "audit.opened"
CLOSED: Final = "audit.closed"
REQUEST_OPENED: Final = "audit.request_opened"
REQUEST_ANSWERED: Final = "audit.request_answered"
REQUEST_ACCEPTED: Final = "audit.request_accepted"
REQUEST_RETURNED: Final = "audit.request_returned"
REQUEST_CLOSED: Final = "audit.request_closed"
REQUEST_MESSAGE: Final = "audit.request_message"
REMINDER_SENT: Final = "audit.reminder_sent"
ENGAGEMENT_ACTIONS: Final = (OPENED, CLOSED)
REQUEST_ACTIONS: Final = (
    REQUEST_OPENED,
    REQUEST_ANSWERED,
    REQUEST_ACCEPTED,
    REQUEST_RETURNED,
    REQUEST_CLOSED,
    REQUEST_MESSAGE,
    REMINDER_SENT,
)
AUDIT_ACTIONS: Final = ENGAGEMENT_ACTIONS + REQUEST_ACTIONS
ENGAGEMENT_PREFIX: Final = "audit:"
REQUEST_PREFIX: Final = "audit-request:"
MAX_TITLE: Final = 200
MAX_TEXT: Final = 4000
MAX_ITEMS: Final = 50
MAX_ITEM: Final = 500
MAX_ENGAGEMENT_DAYS: Final = 400
"""How long an engagement may stay open (``--expires`` at most this many days ahead)."""


class EngagementState(StrEnum):
    """Where an engagement stands."""

    OPEN = "open"  # its auditor sees its window
    EXPIRED = "expired"  # its expiry passed: no access, by itself
    CLOSED = "closed"  # an administrator closed it


class RequestState(StrEnum):
    """Where an evidence request stands."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    RETURNED = "returned"
    CLOSED = "closed"


class Step(StrEnum):
    """A step of an evidence request's workflow."""

    ANSWER = "answer"  # with --partial: work in progress
    SUBMIT = "submit"  # an answer handed in for review
    ACCEPT = "accept"
    RETURN = "return"
    CLOSE = "close"


TRANSITIONS: Final[Mapping[Step, tuple[frozenset[RequestState], RequestState]]] = MappingProxyType(
    {
        Step.ANSWER: (
            frozenset({RequestState.OPEN, RequestState.IN_PROGRESS, RequestState.RETURNED}),
            RequestState.IN_PROGRESS,
        ),
        Step.SUBMIT: (
            frozenset({RequestState.OPEN, RequestState.IN_PROGRESS, RequestState.RETURNED}),
            RequestState.SUBMITTED,
        ),
        Step.ACCEPT: (frozenset({RequestState.SUBMITTED}), RequestState.ACCEPTED),
        Step.RETURN: (frozenset({RequestState.SUBMITTED}), RequestState.RETURNED),
        Step.CLOSE: (
            frozenset({RequestState.ACCEPTED, RequestState.RETURNED}),
            RequestState.CLOSED,
        ),
    }
)
"""From which states each step may be taken, and the state it leads to."""
AUDITOR_STEPS: Final = frozenset({Step.ACCEPT, Step.RETURN, Step.CLOSE})
"""Steps only the engagement's auditor takes (answers are never the auditor's)."""


class ArtifactKind(StrEnum):
    """What an answer hands over."""

    ATTESTATION = "attestation"  # the seq of an attestation.created event
    VERIFICATION = "verification"  # a verification record's id
    DRILL = "drill"  # a drill record's id
    EVIDENCE_PACKAGE = "evidence-package"  # a package built through the server (ev-...)
    FILE = "file"  # an uploaded file, stored encrypted in a vault


def parse_time(text: Any) -> datetime:
    """An RFC 3339 time with an offset (raises TypeError or ValueError)."""
    if not isinstance(text, str):
        raise TypeError("not a time")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time without an offset")
    return value


def due_end(due: date) -> datetime:
    """When a request due on ``due`` becomes overdue: the end of that day (UTC)."""
    return datetime(due.year, due.month, due.day, tzinfo=UTC) + timedelta(days=1)


def one_line(text: str, *, what: str, limit: int, required: bool = True) -> str:
    """``text`` without leading and trailing space; :class:`InputError` when empty (and
    ``required``), too long or holding control characters other than newlines and tabs."""
    value = text.strip()
    if required and not value:
        raise InputError(f"an evidence request needs a {what}", hint=f"give the {what}")
    if len(value) > limit:
        raise InputError(f"the {what} holds at most {limit} characters, not {len(value)}")
    if any(not (ch.isprintable() or ch in "\n\t") for ch in value):
        raise InputError(f"the {what} holds control characters", hint="send plain text")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Engagement:
    """One audit engagement."""

    id: str
    framework: str
    window: Period
    expires_at: datetime
    auditor: str  # the auditor account's name when it was opened
    auditor_id: str
    opened_by: str
    opened_at: datetime
    seq: int
    reason: str = ""
    closed_by: str | None = None
    closed_at: datetime | None = None
    closed_seq: int | None = None
    problems: tuple[str, ...] = ()

    def state(self, now: datetime) -> EngagementState:
        """Closed, expired (at and after ``expires_at``) or open."""
        if self.closed_at is not None and self.closed_at <= now:
            return EngagementState.CLOSED
        if now >= self.expires_at:
            return EngagementState.EXPIRED
        return EngagementState.OPEN

    def active(self, now: datetime) -> bool:
        """Whether its auditor may see it at ``now``."""
        return self.state(now) is EngagementState.OPEN

    def covers(self, moment: datetime | None) -> bool:
        """Whether ``moment`` lies in the window."""
        return moment is not None and moment in self.window

    def to_json(self, now: datetime) -> dict[str, Any]:
        """JSON-ready, with the state at ``now``."""
        return {
            "id": self.id,
            "state": self.state(now).value,
            "framework": self.framework,
            "window": {
                "from": self.window.start.isoformat(),
                "to": self.window.end.isoformat(),
            },
            "expires_at": self.expires_at.isoformat(),
            "auditor": self.auditor,
            "auditor_id": self.auditor_id,
            "opened_by": self.opened_by,
            "opened_at": self.opened_at.isoformat(),
            "seq": self.seq,
            "reason": self.reason,
            "closed_by": self.closed_by,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """One thing an answer hands over. For an uploaded file: its name as given, size,
    SHA-256 of the plaintext, sniffed media type, the vault and path of its age ciphertext,
    and the file's age identity wrapped by the identity keystore (never shown)."""

    kind: ArtifactKind
    ref: str  # the record's id, the attestation's seq, the package's id, the file's id
    name: str | None = None
    size: int | None = None
    sha256: str | None = None
    media_type: str | None = None
    vault: str | None = None
    path: str | None = None
    wrapped: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, without the wrapped key."""
        out: dict[str, Any] = {"kind": self.kind.value, "ref": self.ref}
        if self.kind is ArtifactKind.FILE:
            out |= {
                "name": self.name,
                "size": self.size,
                "sha256": self.sha256,
                "media_type": self.media_type,
                "vault": self.vault,
            }
        return out

    def to_event(self) -> dict[str, Any]:
        """What the ``audit.request_answered`` event records (with the wrapped key)."""
        out = self.to_json()
        if self.kind is ArtifactKind.FILE:
            out |= {"path": self.path, "wrapped": dict(self.wrapped or {})}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artifact:
        """The artifact ``data`` describes (raises KeyError, TypeError or ValueError)."""
        wrapped = data.get("wrapped")
        size = data.get("size")
        return cls(
            kind=ArtifactKind(str(data["kind"])),
            ref=str(data["ref"]),
            name=_opt(data.get("name")),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            sha256=_opt(data.get("sha256")),
            media_type=_opt(data.get("media_type")),
            vault=_opt(data.get("vault")),
            path=_opt(data.get("path")),
            wrapped=MappingProxyType(dict(wrapped)) if isinstance(wrapped, Mapping) else None,
        )


def _opt(value: Any) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadEntry:
    """One entry of a request's thread: a step or a message, who, when, what."""

    kind: str  # answer, submit, accept, return, close, message
    by: str
    by_id: str
    at: datetime
    seq: int
    text: str = ""
    artifacts: tuple[Artifact, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kind": self.kind,
            "by": self.by,
            "at": self.at.isoformat(),
            "seq": self.seq,
            "text": self.text,
            "artifacts": [a.to_json() for a in self.artifacts],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Reminder:
    """A reminder recorded as sent."""

    kind: str  # before, overdue
    at: datetime
    seq: int
    channels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kind": self.kind,
            "at": self.at.isoformat(),
            "seq": self.seq,
            "channels": list(self.channels),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceRequest:
    """One evidence request of an engagement."""

    id: str
    engagement: str
    title: str
    detail: str
    due: date
    items: tuple[str, ...]
    opened_by: str
    opened_at: datetime
    seq: int
    state: RequestState = RequestState.OPEN
    thread: tuple[ThreadEntry, ...] = ()
    submitted_at: datetime | None = None  # of the submission that stands (none after a return)
    accepted_at: datetime | None = None
    reminders: tuple[Reminder, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def due_by(self) -> datetime:
        """The end of the due day (UTC)."""
        return due_end(self.due)

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        """Every artifact its answers handed over, oldest first."""
        return tuple(a for entry in self.thread for a in entry.artifacts)

    def file(self, file_id: str) -> Artifact | None:
        """The uploaded file ``file_id`` of one of its answers."""
        return next(
            (a for a in self.artifacts if a.kind is ArtifactKind.FILE and a.ref == file_id), None
        )

    def answered_in_time(self) -> bool | None:
        """Whether the submission that stands came by the due date (None: none stands)."""
        if self.submitted_at is None:
            return None
        return self.submitted_at < self.due_by

    def overdue(self, now: datetime) -> bool:
        """Past its due date with no submission standing (returned ones count as not
        handed in), and not closed."""
        if self.state is RequestState.CLOSED:
            return self.accepted_at is None and self.submitted_at is None and now >= self.due_by
        return self.submitted_at is None and now >= self.due_by

    def reminded(self, kind: str) -> bool:
        """Whether a reminder of ``kind`` was recorded already."""
        return any(r.kind == kind for r in self.reminders)

    def to_json(self, now: datetime) -> dict[str, Any]:
        """JSON-ready, with whether it is overdue at ``now``."""
        in_time = self.answered_in_time()
        return {
            "id": self.id,
            "engagement": self.engagement,
            "state": self.state.value,
            "title": self.title,
            "detail": self.detail,
            "due": self.due.isoformat(),
            "due_by": self.due_by.isoformat(),
            "overdue": self.overdue(now),
            "items": list(self.items),
            "opened_by": self.opened_by,
            "opened_at": self.opened_at.isoformat(),
            "seq": self.seq,
            "submitted_at": self.submitted_at.isoformat() if self.submitted_at else None,
            "accepted_at": self.accepted_at.isoformat() if self.accepted_at else None,
            "answered_in_time": in_time,
            "artifacts": [a.to_json() for a in self.artifacts],
            "thread": [t.to_json() for t in self.thread],
            "reminders": [r.to_json() for r in self.reminders],
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True)
class Folded:
    """The engagements and requests a ledger's ``audit.*`` events tell of, by id, and the
    events that tell of none (they count for nothing)."""

    engagements: dict[str, Engagement]
    requests: dict[str, EvidenceRequest]
    orphans: tuple[str, ...]


def _engagement(event: Event) -> Engagement:
    d = event.details
    window = d["window"]
    if not isinstance(window, Mapping):
        raise TypeError("window is an object")
    return Engagement(
        id=event.subject.removeprefix(ENGAGEMENT_PREFIX),
        framework=str(d["framework"]),
        window=Period(parse_time(window["from"]), parse_time(window["to"])),
        expires_at=parse_time(d["expires_at"]),
        auditor=str(d["auditor"]),
        auditor_id=str(d["auditor_id"]),
        opened_by=event.actor,
        opened_at=parse_time(d.get("at", event.time)),
        seq=event.seq,
        reason=str(d.get("reason", "")),
    )


def _request(event: Event) -> EvidenceRequest:
    d = event.details
    items = d.get("items", [])
    if not isinstance(items, list):
        raise TypeError("items is a list")
    return EvidenceRequest(
        id=event.subject.removeprefix(REQUEST_PREFIX),
        engagement=str(d["engagement"]),
        title=str(d["title"]),
        detail=str(d.get("detail", "")),
        due=date.fromisoformat(str(d["due"])),
        items=tuple(str(i) for i in items),
        opened_by=event.actor,
        opened_at=parse_time(d.get("at", event.time)),
        seq=event.seq,
    )


def fold(events: Iterable[Event]) -> Folded:
    """The engagements and requests that ``events`` (any ``audit.*`` events, in any order)
    tell of; only what the rules allow counts (see the module docstring)."""
    engagements: dict[str, Engagement] = {}
    requests: dict[str, EvidenceRequest] = {}
    orphans: list[str] = []
    for event in sorted(events, key=lambda e: e.seq):
        try:
            if event.action == OPENED:
                key = event.subject.removeprefix(ENGAGEMENT_PREFIX)
                if key in engagements:
                    orphans.append(f"{OPENED} #{event.seq} opens {key} again")
                else:
                    engagements[key] = _engagement(event)
            elif event.action == CLOSED:
                key = event.subject.removeprefix(ENGAGEMENT_PREFIX)
                found = engagements.get(key)
                if found is None:
                    orphans.append(f"{CLOSED} #{event.seq} names no engagement")
                elif found.closed_at is not None:
                    engagements[key] = replace(
                        found, problems=(*found.problems, f"{CLOSED} #{event.seq}: closed twice")
                    )
                else:
                    engagements[key] = replace(
                        found,
                        closed_by=event.actor,
                        closed_at=parse_time(event.details.get("at", event.time)),
                        closed_seq=event.seq,
                    )
            elif event.action == REQUEST_OPENED:
                _opened(event, engagements, requests, orphans)
            elif event.action in REQUEST_ACTIONS:
                key = event.subject.removeprefix(REQUEST_PREFIX)
                request = requests.get(key)
                if request is None:
                    orphans.append(f"{event.action} #{event.seq} names no evidence request")
                    continue
                requests[key] = _apply(request, engagements[request.engagement], event)
        except (KeyError, TypeError, ValueError, InputError):
            orphans.append(f"{event.action} #{event.seq} does not parse")
    return Folded(engagements, requests, tuple(orphans))


def _opened(
    event: Event,
    engagements: Mapping[str, Engagement],
    requests: dict[str, EvidenceRequest],
    orphans: list[str],
) -> None:
    request = _request(event)
    engagement = engagements.get(request.engagement)
    if request.id in requests:
        orphans.append(f"{REQUEST_OPENED} #{event.seq} opens {request.id} again")
    elif engagement is None:
        orphans.append(f"{REQUEST_OPENED} #{event.seq} names no engagement")
    elif str(event.details.get("by_id")) != engagement.auditor_id:
        orphans.append(f"{REQUEST_OPENED} #{event.seq}: not by the engagement's auditor")
    elif not engagement.active(request.opened_at):
        orphans.append(f"{REQUEST_OPENED} #{event.seq}: the engagement was not open")
    else:
        requests[request.id] = request


def _step_of(event: Event) -> Step | None:
    if event.action == REQUEST_ANSWERED:
        return Step.SUBMIT if event.details.get("submit") is True else Step.ANSWER
    return {
        REQUEST_ACCEPTED: Step.ACCEPT,
        REQUEST_RETURNED: Step.RETURN,
        REQUEST_CLOSED: Step.CLOSE,
    }.get(event.action)


def _apply(request: EvidenceRequest, engagement: Engagement, event: Event) -> EvidenceRequest:
    d = event.details
    at = parse_time(d.get("at", event.time))
    by_id = str(d.get("by_id", ""))

    def refused(why: str) -> EvidenceRequest:
        return replace(request, problems=(*request.problems, f"{event.action} #{event.seq}: {why}"))

    if event.action == REMINDER_SENT:
        channels = d.get("channels", [])
        reminder = Reminder(
            kind=str(d["kind"]),
            at=at,
            seq=event.seq,
            channels=tuple(str(c) for c in channels) if isinstance(channels, list) else (),
        )
        if request.reminded(reminder.kind):
            return refused(f"a second {reminder.kind} reminder")
        return replace(request, reminders=(*request.reminders, reminder))
    if not engagement.active(at):
        return refused(f"the engagement was {engagement.state(at).value}")
    if request.state is RequestState.CLOSED:
        return refused("after the request was closed")
    text = str(d.get("text", ""))
    if event.action == REQUEST_MESSAGE:
        entry = ThreadEntry(kind="message", by=event.actor, by_id=by_id, at=at, seq=event.seq,
                            text=text)  # fmt: skip
        return replace(request, thread=(*request.thread, entry))
    step = _step_of(event)
    if step is None:
        return refused("not a request step")
    allowed, after = TRANSITIONS[step]
    if request.state not in allowed:
        return refused(f"{step.value} while {request.state.value}")
    if (step in AUDITOR_STEPS) != (by_id == engagement.auditor_id):
        return refused(
            f"{step.value} by {event.actor}"
            + (": only the auditor" if step in AUDITOR_STEPS else ": never the auditor")
        )
    raw = d.get("artifacts", [])
    artifacts = tuple(Artifact.from_json(a) for a in raw) if isinstance(raw, list) else ()
    entry = ThreadEntry(kind=step.value, by=event.actor, by_id=by_id, at=at, seq=event.seq,
                        text=text, artifacts=artifacts)  # fmt: skip
    submitted, accepted = request.submitted_at, request.accepted_at
    if step is Step.SUBMIT:
        submitted = at
    elif step is Step.RETURN:
        submitted = None
    elif step is Step.ACCEPT:
        accepted = at
    return replace(
        request,
        state=after,
        thread=(*request.thread, entry),
        submitted_at=submitted,
        accepted_at=accepted,
    )


def sla_status(request: EvidenceRequest, now: datetime) -> tuple[bool | None, str]:
    """The SLA of one request at ``now``: (True: met, False: missed, None: not due yet) and
    why, in words."""
    due = request.due.isoformat()
    in_time = request.answered_in_time()
    if in_time is True:
        return True, f"submitted {request.submitted_at:%Y-%m-%d %H:%M} UTC, due {due}"
    if in_time is False:
        return (
            False,
            f"submitted {request.submitted_at:%Y-%m-%d %H:%M} UTC, after its due date {due}",
        )
    if request.overdue(now):
        days = (now - request.due_by).total_seconds() / 86400
        return False, f"overdue: due {due}, {request.state.value} {days:.1f} days past it"
    if request.state is RequestState.CLOSED:
        return None, f"closed without a standing submission, due {due}"
    return None, f"{request.state.value}, due {due}"


def state_of_request(text: str) -> RequestState:
    """``text`` as a request state; :class:`InputError` otherwise."""
    try:
        return RequestState(text)
    except ValueError:
        raise InputError(
            f"{text[:40]!r} is not a request state",
            hint="one of: " + ", ".join(s.value for s in RequestState),
        ) from None
