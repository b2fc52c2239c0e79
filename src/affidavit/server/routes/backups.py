"""``GET /backups`` (``?source=``), ``GET /backups/{backup_id}`` (``backup.read``) and
``POST /backups`` (``backup.run``): the backups and taking one; ``DELETE /backups/{backup_id}``
(``backup.delete``, a gated operation: 202 with the approval request when it needs one);
``POST /backups/ingests`` (``backup.ingest``): ingest a backup file uploaded first
(``POST /uploads``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.server.routes.uploads import owner_of
from affidavit.services import backup as backups
from affidavit.services import uploads
from affidavit.services.views import backup_json

router = APIRouter(tags=["backups"])
Reader = Annotated[Caller, Depends(allow(Permission.BACKUP_READ))]


class BackupRun(BaseModel):
    """What ``backup run`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, max_length=200)
    vault: str | None = Field(default=None, min_length=1, max_length=200)
    datasets: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        default=None, max_length=1000
    )
    retain_days: int | None = Field(default=None, ge=1, le=36500)


@router.get("/backups")
def list_backups(
    caller: Reader,
    source: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The version history of backups (of one source), newest first (``backup list
    --json``)."""
    with caller.acting() as app:
        found = backups.list_backups(app, source)
    return reply({"backups": [backup_json(b) for b in found]})


@router.get("/backups/{backup_id}")
def show_backup(caller: Reader, backup_id: str) -> Response:
    """Everything recorded about one backup, with its signed envelope (``backup show
    --json``)."""
    with caller.acting() as app:
        found = backups.get_backup(app, backup_id)
    return reply(backup_json(found, full=True))


@router.post("/backups", status_code=201)
def run_backup(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_RUN))], body: BackupRun
) -> Response:
    """Take a backup of a registered source now (``backup run --json``); answers when it
    is recorded. FastAPI runs this (like every synchronous route) in its thread pool."""
    with caller.acting() as app:
        result = backups.run_backup(
            app,
            body.source,
            datasets=body.datasets,
            vault_name=body.vault,
            retain_days=body.retain_days,
        )
    return reply(backup_json(result), 201)


class BackupDelete(BaseModel):
    """Why a backup is deleted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=500)


@router.delete("/backups/{backup_id}")
def delete_backup(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_DELETE))],
    backup_id: str,
    body: BackupDelete,
) -> Response:
    """Delete a backup's artifacts after its retention and with no hold (``backup delete
    --json``); 202 with the approval request when its rule needs approvers."""
    with caller.acting() as app:
        receipt = backups.delete_backup(app, backup_id, reason=body.reason)
    return reply(receipt.to_json())


class BackupIngest(BaseModel):
    """What ``backup ingest`` takes through the server: the upload that holds the backup
    file (``POST /uploads``), the name it had (as the local command sees it) and the
    options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    format: str = Field(min_length=1, max_length=32)
    source: str | None = Field(default=None, min_length=1, max_length=200)
    vault: str | None = Field(default=None, min_length=1, max_length=200)
    retain_days: int | None = Field(default=None, ge=1, le=36500)


@router.post("/backups/ingests", status_code=201)
def ingest_backup(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_INGEST))], body: BackupIngest
) -> Response:
    """Ingest a backup file uploaded by the caller (``backup ingest --json``): the upload is
    used up, whatever the outcome, and its file removed once the backup is recorded (or
    refused)."""
    with (
        caller.acting() as app,
        uploads.claimed(
            app.settings.home, body.upload, owner_of(caller.principal), name=body.name
        ) as path,
    ):
        result = backups.ingest_backup(
            app,
            path,
            fmt=body.format,
            source_name=body.source,
            vault_name=body.vault,
            retain_days=body.retain_days,
        )
    return reply(backup_json(result), 201)
