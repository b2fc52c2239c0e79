"""The ledger's and the access log's exports, and the access log's retention, over the API
(``affidavit ledger export``, ``affidavit access-log export|expire``).

``POST /ledger/exports`` (``ledger.export``) and ``POST /access-log/exports``
(``access_log.export``) write the export in the server's home under a new id
(:mod:`affidavit.services.server_files`), recorded with its SHA-256 as on the host, and answer
with the summary and the id; ``GET /ledger/exports/{ledger_export_id}`` and
``GET /access-log/exports/{access_log_export_id}`` (the same permissions) answer with the
file, which the CLI writes to its ``--out`` and checks against the recorded SHA-256. Each
download is an access-log entry naming the export (``ledger-export:ID``,
``access-log-export:ID``). ``POST /access-log/expire`` (``access_log.expire``) applies the
retention policy."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse, Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import access_log, ledger, server_files

router = APIRouter(tags=["exports of the logs"])
LedgerExporter = Annotated[Caller, Depends(allow(Permission.LEDGER_EXPORT))]
AccessExporter = Annotated[Caller, Depends(allow(Permission.ACCESS_LOG_EXPORT))]
_JSONL = "application/jsonl"


@router.post("/ledger/exports", status_code=201)
def export_ledger(caller: LedgerExporter) -> Response:
    """Export every entry and checkpoint (``ledger export --json``, with the export's id)."""
    with caller.acting() as app:
        export_id, path = server_files.new_file(app.settings.home, "ledger")
        result = ledger.export_ledger(app, path)
    return reply({**result.to_json(), "export": export_id}, 201)


@router.get("/ledger/exports/{ledger_export_id}")
def download_ledger(caller: LedgerExporter, ledger_export_id: str) -> Response:
    """The ledger export's bytes (JSON Lines)."""
    with caller.acting() as app:
        path = server_files.served_file(app.settings.home, "ledger", ledger_export_id)
    return FileResponse(path, media_type=_JSONL, filename=f"{ledger_export_id}.jsonl")


@router.post("/access-log/exports", status_code=201)
def export_access_log(caller: AccessExporter) -> Response:
    """Export the access log (``access-log export --json``, with the export's id)."""
    with caller.acting() as app:
        export_id, path = server_files.new_file(app.settings.home, "access-log")
        result = access_log.export(app, path)
    return reply({**result.to_json(), "export": export_id}, 201)


@router.get("/access-log/exports/{access_log_export_id}")
def download_access_log(caller: AccessExporter, access_log_export_id: str) -> Response:
    """The access-log export's bytes (JSON Lines)."""
    with caller.acting() as app:
        path = server_files.served_file(app.settings.home, "access-log", access_log_export_id)
    return FileResponse(path, media_type=_JSONL, filename=f"{access_log_export_id}.jsonl")


class Expiry(BaseModel):
    """``older_than_days``: the retention period (default: the server's setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    older_than_days: int | None = Field(default=None, ge=1, le=36500)


@router.post("/access-log/expire")
def expire(
    caller: Annotated[Caller, Depends(allow(Permission.ACCESS_LOG_EXPIRE))],
    body: Expiry | None = None,
) -> Response:
    """Drop the payloads of entries past the retention period (``access-log expire
    --json``)."""
    days = (body or Expiry()).older_than_days
    with caller.acting() as app:
        result = access_log.expire(app, older_than=None if days is None else timedelta(days))
    return reply(result.to_json())
