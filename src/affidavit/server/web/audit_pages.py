"""The audit pages (docs/web.md, docs/audit.md): the auditor's portal and the evidence
requests (PBC list) of the people who answer them. Every page reads through the
engagement-scoped services of :mod:`affidavit.services.audit`, so an auditor sees the open,
unexpired engagements it is the auditor of and, in each, only its window; anything else is
answered as absent (404), as the API does.

- ``GET /audit`` (the engagements), ``/audit/engagements/{engagement_id}`` and its views
  (``/controls``, ``/verifications``, ``/drills``, ``/attestations``, ``/checkpoints``,
  ``/proofs?seq=N``, ``/evidence-package``: built on demand, a download), ``/audit/requests``,
  ``/audit/requests/{audit_request_id}`` and a file's download (``/files/{file_id}``, always an
  attachment): ``audit.read``, scoped by the service;
- ``POST /audit/engagements/{engagement_id}/requests`` (raise a request) and
  ``POST /audit/requests/{audit_request_id}/accept|return|close``: the engagement's auditor
  (the service checks the identity, as the API's routes do); ``.../messages``: the auditor or
  someone who answers requests;
- ``POST /audit/requests/{audit_request_id}/answers`` (artifacts affidavit holds and a note)
  and ``.../upload`` (a file, ``multipart/form-data``, checked, hashed and stored encrypted by
  :mod:`affidavit.services.audit_files` as the CLI's ``--file`` is): ``audit.respond``.

A page offers only the forms its viewer may use; the server refuses the rest (403) whatever
the page showed.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, RedirectResponse, Response

from affidavit.errors import InputError
from affidavit.models.audit import (
    TRANSITIONS,
    ArtifactKind,
    Engagement,
    EvidenceRequest,
    RequestState,
    Step,
    sla_status,
)
from affidavit.models.identity import Principal
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow, allow_self
from affidavit.server.web.pages import render
from affidavit.server.web.security import field, form_of
from affidavit.services import audit, audit_files

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(allow(Permission.AUDIT_READ))]
Responder = Annotated[Caller, Depends(allow(Permission.AUDIT_RESPOND))]
Anyone = Annotated[Caller, Depends(allow_self())]
Form = Annotated[dict[str, str], Depends(form_of)]

MAX_UPLOAD_FIELDS: Final = 8
ARTIFACT_FIELDS: Final = (
    ("attestation", ArtifactKind.ATTESTATION, "Attestation (ledger seq)"),
    ("verification", ArtifactKind.VERIFICATION, "Verification record id"),
    ("drill", ArtifactKind.DRILL, "Drill record id"),
    ("package", ArtifactKind.EVIDENCE_PACKAGE, "Evidence package id"),
)
"""The answer form's artifact fields: (field, kind, label); each takes references separated
by spaces or commas."""
_SPLIT: Final = re.compile(r"[\s,]+")
_DONE: Final = "^(raised|answered|uploaded|accepted|returned|closed|message)$"


def _now() -> datetime:
    return datetime.now(UTC)


def _q(value: str) -> str:
    return quote(value, safe="")


def _auditor_of(principal: Principal, engagement: Engagement) -> bool:
    return principal.account_id is not None and principal.account_id == engagement.auditor_id


# -- engagements -------------------------------------------------------------------------------


@router.get("/audit")
def engagements_page(caller: Reader) -> Response:
    """The engagements the viewer may see (an auditor: its open ones), newest first."""
    now = _now()
    with caller.acting() as app:
        found = audit.list_engagements(app, caller.principal, now=now)
    return render(
        "audit_engagements.html.j2",
        caller=caller,
        title="Audit engagements",
        active="/audit",
        engagements=found,
        states={e.id: e.state(now).value for e in found},
    )


def _tabs(engagement: Engagement) -> list[tuple[str, str]]:
    base = f"/audit/engagements/{_q(engagement.id)}"
    return [
        (base, "Overview"),
        (f"{base}/controls", "Controls and results"),
        (f"{base}/verifications", "Verifications"),
        (f"{base}/drills", "Drills"),
        (f"{base}/attestations", "Attestations"),
        (f"{base}/checkpoints", "Checkpoints"),
        (f"{base}/proofs", "Inclusion proofs"),
    ]


def _engagement_page(
    caller: Caller, engagement: Engagement, template: str, heading: str, here: str, **context: Any
) -> Response:
    now = _now()
    return render(
        template,
        caller=caller,
        title=f"{heading} · {engagement.id}",
        active="/audit",
        engagement=engagement,
        engagement_state=engagement.state(now).value,
        tabs=_tabs(engagement),
        here=here,
        **context,
    )


@router.get("/audit/engagements/{engagement_id}")
def engagement_page(
    caller: Reader,
    engagement_id: str,
    done: Annotated[str | None, Query(pattern=_DONE)] = None,
) -> Response:
    """One engagement: its window, framework and expiry, the views of its window, its
    evidence package, its requests and (for its auditor) the form raising a new one."""
    now = _now()
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id, now=now)
        requests = audit.list_requests(app, caller.principal, engagement=found.id, now=now)
    return _engagement_page(
        caller,
        found,
        "audit_engagement.html.j2",
        "Engagement",
        f"/audit/engagements/{_q(found.id)}",
        requests=requests,
        sla={r.id: sla_status(r, now) for r in requests},
        overdue={r.id for r in requests if r.overdue(now)},
        may_raise=_auditor_of(caller.principal, found) and found.active(now),
        today=now.date().isoformat(),
        done=done,
    )


@router.get("/audit/engagements/{engagement_id}/controls")
def controls_page(caller: Reader, engagement_id: str) -> Response:
    """The framework's controls and every policy check's results of them in the window."""
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id)
        shown = audit.engagement_controls(app, caller.principal, engagement_id)
    tally: dict[str, dict[str, int]] = {}
    for run in shown["check_runs"]:
        for result in run["results"]:
            counts = tally.setdefault(str(result.get("control")), {})
            state = str(result.get("status"))
            counts[state] = counts.get(state, 0) + 1
    return _engagement_page(
        caller,
        found,
        "audit_controls.html.j2",
        "Controls and results",
        f"/audit/engagements/{_q(found.id)}/controls",
        controls=shown["controls"],
        runs=shown["check_runs"],
        tally=tally,
    )


def _records(caller: Caller, engagement_id: str, kind: str) -> Response:
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id)
        shown = audit.engagement_records(app, caller.principal, engagement_id, kind)
    return _engagement_page(
        caller,
        found,
        "audit_records.html.j2",
        "Verifications" if kind == "verifications" else "Restore drills",
        f"/audit/engagements/{_q(found.id)}/{kind}",
        kind=kind,
        records=shown[kind],
    )


@router.get("/audit/engagements/{engagement_id}/verifications")
def verifications_page(caller: Reader, engagement_id: str) -> Response:
    """The verification records that finished in the window."""
    return _records(caller, engagement_id, "verifications")


@router.get("/audit/engagements/{engagement_id}/drills")
def drills_page(caller: Reader, engagement_id: str) -> Response:
    """The restore drill records that finished in the window."""
    return _records(caller, engagement_id, "drills")


@router.get("/audit/engagements/{engagement_id}/attestations")
def attestations_page(caller: Reader, engagement_id: str) -> Response:
    """The attestations signed in the window, each with a link to its inclusion proof."""
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id)
        shown = audit.engagement_attestations(app, caller.principal, engagement_id)
    return _engagement_page(
        caller,
        found,
        "audit_attestations.html.j2",
        "Attestations",
        f"/audit/engagements/{_q(found.id)}/attestations",
        attestations=shown["attestations"],
    )


@router.get("/audit/engagements/{engagement_id}/checkpoints")
def checkpoints_page(caller: Reader, engagement_id: str) -> Response:
    """The ledger's newest signed checkpoint and the one at the end of the window."""
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id)
        shown = audit.engagement_checkpoints(app, caller.principal, engagement_id)
    return _engagement_page(
        caller,
        found,
        "audit_checkpoints.html.j2",
        "Checkpoints",
        f"/audit/engagements/{_q(found.id)}/checkpoints",
        current=shown["current"],
        window_end=shown["window_end"],
    )


@router.get("/audit/engagements/{engagement_id}/proofs")
def proofs_page(
    caller: Reader,
    engagement_id: str,
    seq: Annotated[int | None, Query(ge=0, le=2**53)] = None,
) -> Response:
    """The inclusion proof of a ledger event recorded in the window (the form asks for its
    seq; an event outside the window is answered as absent, 404)."""
    with caller.acting() as app:
        found = audit.get_engagement(app, caller.principal, engagement_id)
        proof = (
            audit.engagement_proof(app, caller.principal, engagement_id, seq)
            if seq is not None
            else None
        )
    return _engagement_page(
        caller,
        found,
        "audit_proofs.html.j2",
        "Inclusion proofs",
        f"/audit/engagements/{_q(found.id)}/proofs",
        seq="" if seq is None else seq,
        proof=json.dumps(proof, indent=2, sort_keys=True) if proof is not None else None,
    )


@router.get("/audit/engagements/{engagement_id}/evidence-package")
def package_download(caller: Reader, engagement_id: str) -> Response:
    """The signed evidence package of the window and framework, built now by the evidence
    service (recorded ``evidence.built``): a download, never shown inline."""
    with caller.acting() as app:
        package_id, path, sha256 = audit.engagement_package(app, caller.principal, engagement_id)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{package_id}.tar.gz",
        content_disposition_type="attachment",
        headers={"X-Affidavit-SHA256": sha256, "X-Affidavit-Package": package_id},
    )


@router.post("/audit/engagements/{engagement_id}/requests")
def raise_request(caller: Anyone, engagement_id: str, form: Form) -> Response:
    """Raise an evidence request (the engagement's auditor): title, detail, due date and the
    items wanted, one a line."""
    items = [line for line in form.get("items", "")[:25_000].splitlines() if line.strip()]
    with caller.acting() as app:
        made = audit.open_request(
            app,
            caller.principal,
            engagement_id,
            title=field(form, "title", limit=400),
            detail=field(form, "detail", limit=8000),
            due=field(form, "due", limit=32),
            items=items,
        )
    return RedirectResponse(f"/audit/requests/{_q(made.id)}?done=raised", status_code=303)


# -- evidence requests -------------------------------------------------------------------------


@router.get("/audit/requests")
def requests_page(
    caller: Reader,
    state: RequestState | None = None,
    engagement: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The evidence requests the viewer may see, by due date, with their SLA state (overdue
    ones marked)."""
    now = _now()
    with caller.acting() as app:
        found = audit.list_requests(
            app, caller.principal, engagement=engagement or None, state=state, now=now
        )
    return render(
        "audit_requests.html.j2",
        caller=caller,
        title="Evidence requests",
        active="/audit/requests",
        requests=found,
        sla={r.id: sla_status(r, now) for r in found},
        overdue={r.id for r in found if r.overdue(now)},
        overdue_count=sum(1 for r in found if r.overdue(now)),
        state=state.value if state else "",
        states=[s.value for s in RequestState],
        engagement=engagement or "",
    )


@dataclass(frozen=True, slots=True)
class _Offered:
    """The forms a request's page offers its viewer."""

    message: bool
    accept: bool
    close: bool
    answer: bool


def _offered(principal: Principal, request: EvidenceRequest, engagement: Engagement) -> _Offered:
    now = _now()
    open_ = engagement.active(now)
    auditor = _auditor_of(principal, engagement) and open_
    responder = principal.holds(Permission.AUDIT_RESPOND) and not _auditor_of(principal, engagement)
    return _Offered(
        message=open_ and request.state is not RequestState.CLOSED and (auditor or responder),
        accept=auditor and request.state in TRANSITIONS[Step.ACCEPT][0],
        close=auditor and request.state in TRANSITIONS[Step.CLOSE][0],
        answer=open_ and responder and request.state in TRANSITIONS[Step.SUBMIT][0],
    )


def _request_page(caller: Caller, audit_request_id: str, *, done: str | None = None) -> Response:
    now = _now()
    with caller.acting() as app:
        found = audit.get_request(app, caller.principal, audit_request_id, now=now)
        engagement = audit.get_engagement(app, caller.principal, found.engagement, now=now)
    met, why = sla_status(found, now)
    return render(
        "audit_request.html.j2",
        caller=caller,
        title=f"Evidence request {found.id}",
        active="/audit/requests",
        request=found,
        engagement=engagement,
        overdue=found.overdue(now),
        sla_met=met,
        sla_text=why,
        offered=_offered(caller.principal, found, engagement),
        artifact_fields=ARTIFACT_FIELDS,
        max_bytes=audit_files.MAX_FILE_BYTES,
        accept_types=",".join(sorted({s for v in audit_files.ALLOWED.values() for s in v})),
        done=done,
    )


@router.get("/audit/requests/{audit_request_id}")
def request_page(
    caller: Reader,
    audit_request_id: str,
    done: Annotated[str | None, Query(pattern=_DONE)] = None,
) -> Response:
    """One request: what was asked, its state and SLA, its thread with every answer's
    artifacts and files, and the forms its viewer may use."""
    return _request_page(caller, audit_request_id, done=done)


def _back(audit_request_id: str, done: str) -> Response:
    return RedirectResponse(
        f"/audit/requests/{_q(audit_request_id)}?done={done}#thread", status_code=303
    )


@router.post("/audit/requests/{audit_request_id}/messages")
def post_message(caller: Anyone, audit_request_id: str, form: Form) -> Response:
    """A message on the thread: the engagement's auditor, or someone who answers requests."""
    with caller.acting() as app:
        audit.message(app, caller.principal, audit_request_id, text=field(form, "text", limit=4000))
    return _back(audit_request_id, "message")


@router.post("/audit/requests/{audit_request_id}/accept")
def accept(caller: Anyone, audit_request_id: str, form: Form) -> Response:
    """Accept the submitted answer (the engagement's auditor)."""
    with caller.acting() as app:
        audit.accept(app, caller.principal, audit_request_id, note=field(form, "note", limit=4000))
    return _back(audit_request_id, "accepted")


@router.post("/audit/requests/{audit_request_id}/return")
def return_request(caller: Anyone, audit_request_id: str, form: Form) -> Response:
    """Return the submitted answer with a reason (the engagement's auditor)."""
    with caller.acting() as app:
        audit.return_request(
            app, caller.principal, audit_request_id, reason=field(form, "reason", limit=4000)
        )
    return _back(audit_request_id, "returned")


@router.post("/audit/requests/{audit_request_id}/close")
def close_request(caller: Anyone, audit_request_id: str, form: Form) -> Response:
    """Close an accepted or returned request (the engagement's auditor)."""
    with caller.acting() as app:
        audit.close_request(
            app, caller.principal, audit_request_id, note=field(form, "note", limit=4000)
        )
    return _back(audit_request_id, "closed")


def _artifacts(form: dict[str, str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name, kind, _ in ARTIFACT_FIELDS:
        found += [(kind.value, ref) for ref in _SPLIT.split(field(form, name, limit=2000)) if ref]
    return found


@router.post("/audit/requests/{audit_request_id}/answers")
def answer(caller: Responder, audit_request_id: str, form: Form) -> Response:
    """Answer with artifacts affidavit holds and a note: submitted for review, or (``keep
    working``) marked in progress."""
    with caller.acting() as app:
        audit.answer(
            app,
            caller.principal,
            audit_request_id,
            artifacts=_artifacts(form),
            text=field(form, "note", limit=4000),
            submit=form.get("submit", "yes") != "no",
        )
    return _back(audit_request_id, "answered")


@dataclass(frozen=True, slots=True)
class Upload:
    """A file-upload form: the file's name as sent, its bytes (at most one more than the
    limit: the service refuses it) and the other fields."""

    name: str
    data: bytes
    fields: dict[str, str]


async def upload_of(request: Request) -> Upload:
    """The upload form's file and fields (a dependency: the gate before it has run)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        raise InputError("an upload is a multipart/form-data form", hint="use the page's form")
    try:
        form = await request.form(max_files=1, max_fields=MAX_UPLOAD_FIELDS)
    except Exception as exc:  # starlette's MultiPartException, or a body that is not one
        raise InputError("the upload form could not be read", hint="send it again") from exc
    try:
        sent = form.get("file")
        if not isinstance(sent, UploadFile) or not sent.filename:
            raise InputError("choose a file to upload", hint="the form's file field")
        data = await sent.read(audit_files.MAX_FILE_BYTES + 1)
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        return Upload(name=sent.filename, data=data, fields=fields)
    finally:
        await form.close()


@router.post("/audit/requests/{audit_request_id}/upload")
def upload(
    caller: Responder, audit_request_id: str, sent: Annotated[Upload, Depends(upload_of)]
) -> Response:
    """Answer with an uploaded file (and a note): checked (size, type by content, name),
    hashed and stored encrypted in the vault by :mod:`affidavit.services.audit_files`, as
    the CLI's ``--file``; a file it refuses is refused here alike, nothing stored."""
    name = PurePosixPath(sent.name.replace("\\", "/")).name
    if name in ("", ".", ".."):
        raise InputError(f"{sent.name[:60]!r} is not a usable file name", hint="rename the file")
    with tempfile.TemporaryDirectory(prefix="affidavit-upload-") as folder:
        path = Path(folder) / name
        try:
            path.write_bytes(sent.data)
        except (OSError, ValueError) as exc:  # a name the file system refuses
            raise InputError(f"{name[:60]!r} is not a usable file name", hint="rename it") from exc
        with caller.acting() as app:
            audit_files.answer_with_files(
                app,
                caller.principal,
                audit_request_id,
                files=[path],
                text=field(sent.fields, "note", limit=4000),
                submit=sent.fields.get("submit", "yes") != "no",
            )
    return _back(audit_request_id, "uploaded")


@router.get("/audit/requests/{audit_request_id}/files/{file_id}")
def download_file(caller: Reader, audit_request_id: str, file_id: str) -> Response:
    """An uploaded file, decrypted and checked against its recorded SHA-256: always a
    download (``application/octet-stream``, ``attachment``), never shown inline."""
    with caller.acting() as app:
        artifact, data = audit_files.read_file(app, caller.principal, audit_request_id, file_id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{artifact.ref}.bin"',
            "X-Affidavit-SHA256": artifact.sha256 or "",
        },
    )
