"""``POST /fingerprints`` (``fingerprint.run``): the content fingerprint of a registered
``SOURCE[/DATASET]``, or of a backup file the caller uploaded first (``POST /uploads``), as
``fingerprint --json`` prints it. A target is never a path on the server's host (that would
let a caller read the server's files); no index is written (``--out`` is local only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.permissions import Permission
from affidavit.models.records import Profile
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.server.routes.uploads import owner_of
from affidavit.services import fingerprint as fps
from affidavit.services import uploads
from affidavit.services.fingerprint_report import fingerprints_json

router = APIRouter(tags=["fingerprints"])


class FingerprintRun(BaseModel):
    """What ``fingerprint`` takes through the server: a registered ``target`` or an
    ``upload`` (with the file's ``name``), and the options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str | None = Field(default=None, min_length=1, max_length=700)
    upload: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    dataset: str | None = Field(default=None, min_length=1, max_length=500)
    profile: Profile = "exact"
    format: str | None = Field(default=None, min_length=1, max_length=32)
    check_bson: bool = False


@router.post("/fingerprints")
def fingerprint(
    caller: Annotated[Caller, Depends(allow(Permission.FINGERPRINT_RUN))], body: FingerprintRun
) -> Response:
    """Fingerprint a registered source's datasets or an uploaded file (records nothing)."""
    profile = body.profile
    if (body.target is None) == (body.upload is None):
        raise InputError(
            "name either a registered SOURCE[/DATASET] (target) or an upload",
            hint="a file of yours is uploaded first (POST /api/v1/uploads)",
        )
    with caller.acting() as app:
        if body.upload is not None:
            name = body.name or "upload"
            with uploads.claimed(
                app.settings.home, body.upload, owner_of(caller.principal), name=name
            ) as path:
                results = fps.fingerprint_path(
                    path, fmt=body.format, dataset=body.dataset, profile=profile, out=None,
                    check_bson=body.check_bson,
                )  # fmt: skip
            return reply(fingerprints_json(name, results))
        assert body.target is not None
        if body.format is not None:
            raise InputError("--format applies to files", hint="drop --format for a source")
        results = fps.fingerprint_source(
            app, body.target, dataset=body.dataset, profile=profile, out=None
        )
    return reply(fingerprints_json(body.target, results))
