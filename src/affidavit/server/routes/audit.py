"""Audit engagements and evidence requests over the API (docs/audit.md).

Engagements: ``GET /audit/engagements[/{id}]`` and the engagement's views (``/controls``,
``/verifications``, ``/drills``, ``/checkpoints``, ``/proofs/{seq}``, ``/evidence-package``)
need ``audit.read``, and the service scopes an auditor to the open engagements it is the
auditor of and to their windows (anything else: 404); ``POST /audit/engagements`` and
``.../close`` need ``audit.manage``; ``POST /audit/reminders`` sends the reminders that are
due (``schedule.run``, like ``run-due``).

Evidence requests: ``GET /audit/requests[/{id}]`` and a file's download (``audit.read``,
scoped); ``POST .../answers`` (``audit.respond``; its files are uploads of the caller's,
``POST /uploads``); raising a request and accepting, returning
or closing one are the engagement's auditor's (the service checks the identity: the auditor
role itself changes nothing, so these routes name no permission), messages either side's.

Every request is an access-log entry naming the engagement or request it read
(``engagement:ID``, ``audit-request:ID``); a file is only ever a download
(``application/octet-stream``, ``attachment``)."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse, Response

from affidavit.models.audit import state_of_request
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow, allow_self
from affidavit.server.replies import reply
from affidavit.server.routes.uploads import owner_of
from affidavit.services import audit, audit_files, audit_notify, uploads

router = APIRouter(tags=["audit"])
Reader = Annotated[Caller, Depends(allow(Permission.AUDIT_READ))]
Manager = Annotated[Caller, Depends(allow(Permission.AUDIT_MANAGE))]
Responder = Annotated[Caller, Depends(allow(Permission.AUDIT_RESPOND))]
Anyone = Annotated[Caller, Depends(allow_self())]


class Opening(BaseModel):
    """What ``audit open`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: str = Field(alias="from", min_length=1, max_length=64)
    end: str = Field(alias="to", min_length=1, max_length=64)
    framework: str = Field(min_length=1, max_length=64)
    auditor: str = Field(min_length=1, max_length=320)
    expires: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=4000)


class Reason(BaseModel):
    """A note or reason (optional unless the step needs one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(default="", max_length=4000)


class NewRequest(BaseModel):
    """What ``audit request open`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engagement: str = Field(min_length=1, max_length=64)
    title: str = Field(max_length=400)
    detail: str = Field(default="", max_length=8000)
    due: str = Field(min_length=1, max_length=32)
    items: list[str] = Field(default_factory=list, max_length=50)


class Handed(BaseModel):
    """One artifact affidavit holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(min_length=1, max_length=32)
    ref: str = Field(min_length=1, max_length=200)


class UploadedFile(BaseModel):
    """A file of an answer: an upload of the caller's (``POST /uploads``) and its name
    (whose extension must fit its content, as for a local file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)


class Answer(BaseModel):
    """An answer: artifacts affidavit holds, files uploaded first (a request body is small
    JSON: the files travel through ``POST /uploads``), the vault that keeps them, a note."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifacts: list[Handed] = Field(default_factory=list, max_length=50)
    files: list[UploadedFile] = Field(default_factory=list, max_length=20)
    vault: str | None = Field(default=None, min_length=1, max_length=200)
    note: str = Field(default="", max_length=4000)
    submit: bool = True


class Note(BaseModel):
    """A note on an acceptance or close."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str = Field(default="", max_length=4000)


class Message(BaseModel):
    """A message of a request's thread."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(max_length=4000)


def _now() -> datetime:
    return datetime.now(UTC)


# -- engagements -------------------------------------------------------------------------------


@router.get("/audit/engagements")
def list_engagements(caller: Reader) -> Response:
    """The engagements the caller may see (``audit list --json``)."""
    now = _now()
    with caller.acting() as app:
        found = audit.list_engagements(app, caller.principal, now=now)
    return reply({"engagements": [e.to_json(now) for e in found]})


@router.post("/audit/engagements", status_code=201)
def open_engagement(caller: Manager, body: Opening) -> Response:
    """Open an engagement (``audit open --json``)."""
    now = _now()
    with caller.acting() as app:
        opened = audit.open_engagement(
            app, caller.principal, start=body.start, end=body.end, framework=body.framework,
            auditor=body.auditor, expires=body.expires, reason=body.reason, now=now,
        )  # fmt: skip
    return reply(opened.to_json(now), 201)


@router.get("/audit/engagements/{engagement_id}")
def show_engagement(caller: Reader, engagement_id: str) -> Response:
    """One engagement with its requests (``audit show --json``)."""
    now = _now()
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id, now=now)
        requests = audit.list_requests(app, caller.principal, engagement=found.id, now=now)
    return reply({**found.to_json(now), "requests": [r.to_json(now) for r in requests]})


@router.post("/audit/engagements/{engagement_id}/close")
def close_engagement(caller: Manager, engagement_id: str, body: Reason | None = None) -> Response:
    """Close an engagement now (``audit close --json``)."""
    now = _now()
    with caller.acting() as app:
        closed = audit.close_engagement(
            app, caller.principal, engagement_id, reason=(body or Reason()).reason, now=now
        )
    return reply(closed.to_json(now))


@router.get("/audit/engagements/{engagement_id}/controls")
def controls(caller: Reader, engagement_id: str) -> Response:
    """The framework's controls and the policy checks' results in the window."""
    with caller.acting() as app:
        return reply(audit.engagement_controls(app, caller.principal, engagement_id))


@router.get("/audit/engagements/{engagement_id}/verifications")
def verifications(caller: Reader, engagement_id: str) -> Response:
    """The verification records that finished in the window."""
    with caller.acting() as app:
        return reply(
            audit.engagement_records(app, caller.principal, engagement_id, "verifications")
        )


@router.get("/audit/engagements/{engagement_id}/drills")
def drills(caller: Reader, engagement_id: str) -> Response:
    """The drill records that finished in the window."""
    with caller.acting() as app:
        return reply(audit.engagement_records(app, caller.principal, engagement_id, "drills"))


@router.get("/audit/engagements/{engagement_id}/checkpoints")
def checkpoints(caller: Reader, engagement_id: str) -> Response:
    """The newest signed checkpoint and the one at the end of the window."""
    with caller.acting() as app:
        return reply(audit.engagement_checkpoints(app, caller.principal, engagement_id))


@router.get("/audit/engagements/{engagement_id}/proofs/{seq}")
def proof(caller: Reader, engagement_id: str, seq: int) -> Response:
    """The inclusion proof of an event recorded in the window."""
    with caller.acting() as app:
        return reply(audit.engagement_proof(app, caller.principal, engagement_id, seq))


@router.get("/audit/engagements/{engagement_id}/evidence-package")
def evidence_package(caller: Reader, engagement_id: str) -> Response:
    """The evidence package of the window, built now (``application/gzip``, a download)."""
    with caller.acting() as app:
        package_id, path, sha256 = audit.engagement_package(app, caller.principal, engagement_id)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{package_id}.tar.gz",
        headers={"X-Affidavit-SHA256": sha256, "X-Affidavit-Package": package_id},
    )


@router.post("/audit/reminders")
def remind(caller: Annotated[Caller, Depends(allow(Permission.SCHEDULE_RUN))]) -> Response:
    """Send the reminders that are due (``audit remind --json``; for cron, like
    ``run-due``): each is recorded once, so a rerun sends nothing twice."""
    now = _now()
    with caller.acting() as app:
        result = audit_notify.remind(app, caller.principal, now=now)
    return reply(result.to_json())


# -- evidence requests -------------------------------------------------------------------------


@router.get("/audit/requests")
def list_requests(
    caller: Reader, engagement: str | None = None, state: str | None = None
) -> Response:
    """The requests the caller may see (``audit request list --json``)."""
    now = _now()
    wanted = state_of_request(state) if state else None
    with caller.acting() as app:
        found = audit.list_requests(app, caller.principal, engagement=engagement, state=wanted,
                                    now=now)  # fmt: skip
    return reply({"requests": [r.to_json(now) for r in found]})


@router.post("/audit/requests", status_code=201)
def open_request(caller: Anyone, body: NewRequest) -> Response:
    """Raise an evidence request: the engagement's auditor (``audit request open --json``)."""
    now = _now()
    with caller.acting() as app:
        opened = audit.open_request(
            app, caller.principal, body.engagement, title=body.title, detail=body.detail,
            due=body.due, items=body.items, now=now,
        )  # fmt: skip
    return reply(opened.to_json(now), 201)


@router.get("/audit/requests/{audit_request_id}")
def show_request(caller: Reader, audit_request_id: str) -> Response:
    """One request with its thread (``audit request show --json``)."""
    now = _now()
    with caller.acting() as app:
        found = audit.get_request(app, caller.principal, audit_request_id, now=now)
    return reply(found.to_json(now))


@router.get("/audit/requests/{audit_request_id}/files/{file_id}")
def download_file(caller: Reader, audit_request_id: str, file_id: str) -> Response:
    """An uploaded file, decrypted and checked: always a download, never shown inline."""
    with caller.acting() as app:
        artifact, data = audit_files.read_file(app, caller.principal, audit_request_id, file_id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{artifact.ref}.bin"',
            "X-Affidavit-SHA256": artifact.sha256 or "",
            "X-Affidavit-Media-Type": artifact.media_type or "",
        },
    )


@router.post("/audit/requests/{audit_request_id}/answers")
def answer(caller: Responder, audit_request_id: str, body: Answer) -> Response:
    """Answer a request with artifacts affidavit holds and files the caller uploaded
    (``audit request answer --json``): each upload is used up, whatever the outcome, and
    stored as the local command stores a file (checked by content, encrypted, recorded)."""
    now = _now()
    owner = owner_of(caller.principal)
    with caller.acting() as app, ExitStack() as stack:
        paths = [
            stack.enter_context(
                uploads.claimed(app.settings.home, f.upload, owner, name=f.name, now=now)
            )
            for f in body.files
        ]
        done = audit_files.answer_with_files(
            app, caller.principal, audit_request_id, files=paths, vault=body.vault,
            artifacts=[(a.kind, a.ref) for a in body.artifacts], text=body.note,
            submit=body.submit, now=now,
        )  # fmt: skip
    return reply(done.to_json(now))


@router.post("/audit/requests/{audit_request_id}/accept")
def accept(caller: Anyone, audit_request_id: str, body: Note | None = None) -> Response:
    """Accept the submitted answer: the engagement's auditor."""
    now = _now()
    with caller.acting() as app:
        done = audit.accept(app, caller.principal, audit_request_id,
                            note=(body or Note()).note, now=now)  # fmt: skip
    return reply(done.to_json(now))


@router.post("/audit/requests/{audit_request_id}/return")
def return_request(caller: Anyone, audit_request_id: str, body: Reason) -> Response:
    """Return the submitted answer with a reason: the engagement's auditor."""
    now = _now()
    with caller.acting() as app:
        done = audit.return_request(app, caller.principal, audit_request_id,
                                    reason=body.reason, now=now)  # fmt: skip
    return reply(done.to_json(now))


@router.post("/audit/requests/{audit_request_id}/close")
def close_request(caller: Anyone, audit_request_id: str, body: Note | None = None) -> Response:
    """Close an accepted or returned request: the engagement's auditor."""
    now = _now()
    with caller.acting() as app:
        done = audit.close_request(app, caller.principal, audit_request_id,
                                   note=(body or Note()).note, now=now)  # fmt: skip
    return reply(done.to_json(now))


@router.post("/audit/requests/{audit_request_id}/messages")
def post_message(caller: Anyone, audit_request_id: str, body: Message) -> Response:
    """A message on the request's thread: its auditor, or someone who answers requests."""
    now = _now()
    with caller.acting() as app:
        done = audit.message(app, caller.principal, audit_request_id, text=body.text, now=now)
    return reply(done.to_json(now))
