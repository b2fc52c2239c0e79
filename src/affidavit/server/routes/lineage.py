"""Lineage over the API (``affidavit lineage show|verify|export|emit``; docs/lineage.md).

``GET /lineage?subject=S`` and ``POST /lineage/verify`` (``ledger.read``: lineage is derived
from the ledger) answer with what ``lineage show --json`` and ``lineage verify --json`` print;
a lineage that does not verify is a result (``"ok": false``), the CLI's exit 1.
``POST /lineage/exports`` (``ledger.export``: it discloses every operation's digests) writes
the OpenLineage events as JSON lines in the server's home under a new id
(:mod:`affidavit.services.server_files`) and answers with their number, the file's SHA-256
and the id; ``GET /lineage/exports/{lineage_export_id}`` answers with the file, which the CLI
checks against that SHA-256 (the download is in the access log as ``lineage-export:ID``).
``POST /lineage/emit`` (``ledger.export``) sends the events not sent yet to the server's own
``openlineage_url``, never to a URL the caller names (the server would otherwise POST the
ledger's digests wherever it is told), and answers with what it sent.

``lineage verify --events FILE`` names a file on the client's host: the CLI refuses it in
client mode (docs/lineage.md says why) and the route takes no file."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse, Response

from affidavit.errors import InputError
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import lineage, server_files

router = APIRouter(tags=["lineage"])
Reader = Annotated[Caller, Depends(allow(Permission.LEDGER_READ))]
Exporter = Annotated[Caller, Depends(allow(Permission.LEDGER_EXPORT))]
_JSONL = "application/jsonl"


class Since(BaseModel):
    """``since``: only the events of ledger entries after this seq (``--since SEQ``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: int | None = Field(default=None, ge=-1)


@router.get("/lineage")
def show(caller: Reader, subject: Annotated[str, Query(min_length=1, max_length=1000)]) -> Response:
    """The graph around a dataset, backup or export (``lineage show SUBJECT --json``)."""
    with caller.acting() as app:
        graph = lineage.show(app, subject)
    return reply(graph.to_json())


@router.post("/lineage/verify")
def verify(caller: Reader) -> Response:
    """Check every edge on the server's host (``lineage verify --json``)."""
    with caller.acting() as app:
        report = lineage.verify(app)
    return reply(report.to_json())


@router.post("/lineage/exports", status_code=201)
def export(caller: Exporter, body: Since | None = None) -> Response:
    """Write the events in the server's home (``{"events", "sha256", "export"}``)."""
    since = (body or Since()).since
    with caller.acting() as app:
        export_id, path = server_files.new_file(app.settings.home, "lineage")
        written = lineage.write_events(app, path, since=-1 if since is None else since)
    return reply({**written.to_json(), "export": export_id}, 201)


@router.get("/lineage/exports/{lineage_export_id}")
def download(caller: Exporter, lineage_export_id: str) -> Response:
    """The lineage export's bytes (JSON lines)."""
    with caller.acting() as app:
        path = server_files.served_file(app.settings.home, "lineage", lineage_export_id)
    return FileResponse(path, media_type=_JSONL, filename=f"{lineage_export_id}.jsonl")


@router.post("/lineage/emit")
def emit(caller: Exporter, body: Since | None = None) -> Response:
    """POST the events not sent yet to the server's ``openlineage_url`` (``lineage emit
    --json``)."""
    since = (body or Since()).since
    with caller.acting() as app:
        if not app.settings.openlineage_url:
            raise InputError(
                "the server has no OpenLineage endpoint set",
                hint="its administrator sets openlineage_url in the server's affidavit.toml "
                "(or AFFIDAVIT_OPENLINEAGE_URL) and restarts it",
            )
        result = lineage.emit(app, since=since)
    return reply(result.to_json())
