"""Governed exports over the API (docs/exports.md): recipients, export specs and runs
(``affidavit recipient add|verify|list``, ``export spec add|approve|list|show``,
``export run|list``).

Files the client names stay on the client's host and travel as content: ``recipient add``
receives its challenge (``challenge``: the age file, base64) and writes it to its
``--challenge-out``; ``recipient verify`` sends the response's text; ``export spec add`` sends
the spec's text with its file name. The services read and write files, so the route hands them
a private temporary folder for the one request. An export run delivers where its approved
spec says, on the server's host, as locally. ``export verify`` needs no home: it runs at the
destination."""

from __future__ import annotations

import base64
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services.exports import recipients, specs
from affidavit.services.exports import run as runs
from affidavit.services.exports.files import write_new

router = APIRouter(tags=["exports"])
RecipientManager = Annotated[Caller, Depends(allow(Permission.RECIPIENT_MANAGE))]
PolicyReader = Annotated[Caller, Depends(allow(Permission.POLICY_READ))]
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


@contextmanager
def _scratch() -> Iterator[Path]:
    """A private folder (0700) for the files one request's service reads or writes."""
    with tempfile.TemporaryDirectory(prefix="affidavit-api-") as folder:
        yield Path(folder)


class NewRecipient(BaseModel):
    """What ``recipient add`` takes (the challenge comes back in the answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    org: str = Field(max_length=1000)
    contact: str = Field(max_length=1000)
    public_key: str = Field(min_length=1, max_length=200)
    dpa: str | None = Field(default=None, max_length=1000)


class Response_(BaseModel):
    """The recipient's answer: the decrypted challenge's text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    response: str = Field(max_length=4096)


class NewSpec(BaseModel):
    """An export spec's text and its file's name (which the service's messages name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=60 * 1024)


class ExportRun(BaseModel):
    """What ``export run`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str = Field(min_length=1, max_length=200)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    backup: str | None = Field(default=None, max_length=200)
    output: str | None = Field(default=None, max_length=255)
    reason: str = Field(default="", max_length=4000)
    workers: int | None = Field(default=None, ge=1, le=64)


@router.get("/recipients")
def list_recipients(caller: Annotated[Caller, Depends(allow(Permission.SOURCE_READ))]) -> Response:
    """Every recipient (``recipient list --json``)."""
    with caller.acting() as app:
        found = recipients.list_recipients(app)
    return reply({"recipients": [r.to_json() for r in found]})


@router.post("/recipients", status_code=201)
def add_recipient(caller: RecipientManager, body: NewRecipient) -> Response:
    """Add a recipient (``recipient add --json``); its challenge (the age file, base64) is in
    this answer only, for the client to write and send."""
    with _scratch() as folder, caller.acting() as app:
        challenge = folder / "challenge.age"
        recipient = recipients.add_recipient(
            app,
            body.name,
            organisation=body.org,
            contact=body.contact,
            public_key=body.public_key,
            dpa=body.dpa,
            challenge_path=challenge,
        )
        sealed = challenge.read_bytes()
    return reply(
        {**recipient.to_json(), "challenge": base64.b64encode(sealed).decode("ascii")}, 201
    )


@router.post("/recipients/{name}/verify")
def verify_recipient(caller: RecipientManager, name: str, body: Response_) -> Response:
    """Check the recipient's answer to its challenge (``recipient verify --json``)."""
    with _scratch() as folder, caller.acting() as app:
        answer = folder / "response.txt"
        write_new(answer, body.response.encode("utf-8"), "the challenge response")
        recipient = recipients.verify_recipient(app, name, answer)
    return reply(recipient.to_json())


@router.get("/export-specs")
def list_specs(caller: PolicyReader) -> Response:
    """Every version of every spec (``export spec list --json``)."""
    with caller.acting() as app:
        found = specs.list_specs(app)
    return reply({"specs": [v.to_json() for v in found]})


@router.get("/export-specs/{name}")
def show_spec(
    caller: PolicyReader,
    name: str,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """One version (default: the newest approved) with its text (``export spec show
    --json``)."""
    with caller.acting() as app:
        found = specs.spec_version(app, name, version)
    return reply({**found.to_json(), "text": found.text})


@router.post("/export-specs", status_code=201)
def add_spec(
    caller: Annotated[Caller, Depends(allow(Permission.EXPORT_PROPOSE))], body: NewSpec
) -> Response:
    """Propose a new version of a spec (``export spec add FILE --json``: the CLI reads the
    file and sends its text)."""
    if not _FILE_NAME.fullmatch(body.name):
        raise InputError(
            f"{body.name[:60]!r} is not a spec file's name",
            hint="the file's own name, e.g. orders-to-analytics.toml",
        )
    with _scratch() as folder, caller.acting() as app:
        spec_file = folder / body.name
        write_new(spec_file, body.text.encode("utf-8"), "the export spec")
        version = specs.add_spec(app, spec_file)
    return reply(version.to_json(), 201)


@router.post("/export-specs/{name}/versions/{version}/approve")
def approve_spec(
    caller: Annotated[Caller, Depends(allow(Permission.EXPORT_APPROVE, mfa=True))],
    name: str,
    version: int,
) -> Response:
    """Approve a proposed version, not one's own (``export spec approve --json``)."""
    with caller.acting() as app:
        approved = specs.approve_spec(app, name, version)
    return reply(approved.to_json())


@router.get("/exports")
def list_exports(
    caller: PolicyReader, spec: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    """Every export run, or one spec's (``export list --json``)."""
    with caller.acting() as app:
        found = runs.list_exports(app, spec)
    return reply({"exports": [r.to_json() for r in found]})


@router.post("/exports")
def run_export(
    caller: Annotated[Caller, Depends(allow(Permission.EXPORT_RUN))], body: ExportRun
) -> Response:
    """Run an approved spec (``export run --json``): a gated operation, answered ``202``
    with the request while it waits for approval; a contract that blocks the export is a
    result (``"ok": false``, exit 1)."""
    with caller.acting() as app:
        result = runs.run_export(
            app,
            body.spec,
            version=body.version,
            backup_id=body.backup,
            output=body.output,
            reason=body.reason,
            workers=body.workers,
        )
    return reply(result.to_json())
